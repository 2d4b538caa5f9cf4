// Package sshproc stands simulated processes (netsim.Process) in for ssh:
// a transport.ProcessStarter whose processes connect from one host of a
// netsim.Network to an address on it, each with a script of its own (exit
// with a status after so many bytes, a complaint on stderr), so that the
// ssh transport and everything above it can be tested over the simulated
// network in virtual time. It is the one adapter the transport's tests and
// the simulator (scenarios) share.
package sshproc

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/netsim"
)

// Starter starts the simulated ssh processes of one dialer and remembers
// them, in start order, for the test to inspect.
type Starter struct {
	N          *netsim.Network
	From, Addr string
	// Script gives the i-th process's script (from 0); nil: the zero
	// script (a process that lives as long as its connection).
	Script func(i int) netsim.ProcessScript

	mu    sync.Mutex
	procs []*netsim.Process
}

// Dialer dials by starting a process per connection.
func (s *Starter) Dialer() transport.Dialer { return transport.ProcessDialer(s.Start) }

// Start is a transport.ProcessStarter.
func (s *Starter) Start(ctx context.Context, stderr io.Writer) (*transport.Process, error) {
	s.mu.Lock()
	i := len(s.procs)
	s.procs = append(s.procs, nil)
	s.mu.Unlock()
	var script netsim.ProcessScript
	if s.Script != nil {
		script = s.Script(i)
	}
	pr, err := s.N.StartProcess(ctx, s.From, s.Addr, script)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs[i] = pr
	s.mu.Unlock()
	return &transport.Process{
		Stdin:  stdin{pr.Stdin(), pr},
		Stdout: stdout{pr.Stdout(), pr},
		Wait: func() error {
			err := pr.Wait()
			// A netsim process writes its stderr as it exits.
			_, _ = stderr.Write(pr.Stderr())
			return err
		},
		Kill: pr.Kill,
		Name: "ssh",
	}, nil
}

// Proc is the i-th process started (nil while it is starting); it panics
// if fewer were started.
func (s *Starter) Proc(i int) *netsim.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[i]
}

// Started is how many processes were started.
func (s *Starter) Started() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.procs)
}

// Wait waits for every process started to exit (the transport kills those
// that linger after their connection closed).
func (s *Starter) Wait() {
	s.mu.Lock()
	procs := append([]*netsim.Process(nil), s.procs...)
	s.mu.Unlock()
	for _, pr := range procs {
		if pr != nil {
			_ = pr.Wait()
		}
	}
}

// Status is the i-th process's exit status, or -2 if it has not exited
// (or never started).
func (s *Starter) Status(i int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.procs) || s.procs[i] == nil {
		return -2
	}
	pr := s.procs[i]
	select {
	case <-pr.Exited():
	default:
		return -2
	}
	var xe *netsim.ExitError
	if errors.As(pr.Wait(), &xe) {
		return xe.ExitCode()
	}
	return 0
}

// The process's pipes take the deadlines of its connection, as the ends
// of an os.Pipe have their own.
type stdin struct {
	io.WriteCloser
	pr *netsim.Process
}

func (s stdin) SetWriteDeadline(t time.Time) error {
	if c := s.pr.Conn(); c != nil {
		return c.SetWriteDeadline(t)
	}
	return nil
}

type stdout struct {
	io.ReadCloser
	pr *netsim.Process
}

func (s stdout) SetReadDeadline(t time.Time) error {
	if c := s.pr.Conn(); c != nil {
		return c.SetReadDeadline(t)
	}
	return nil
}
