package netsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ExitPoint says when a scripted Process exits.
type ExitPoint int

const (
	// ExitOnRemoteClose: the process exits when the remote end closes the
	// connection, like ssh when the remote command ends.
	ExitOnRemoteClose ExitPoint = iota
	// ExitBeforeStdout: the process exits at once, without connecting and
	// without any stdout byte, like ssh failing authentication.
	ExitBeforeStdout
	// ExitAfterStdout: the process exits once the remote end has written
	// StdoutBytes bytes; the reader of Stdout gets exactly those, then EOF.
	ExitAfterStdout
	// ExitOnStdinClose: the process exits when Stdin is closed.
	ExitOnStdinClose
	// ExitAfterStdin: the process exits once StdinBytes bytes were
	// written to Stdin, like ssh dying while a push streams into it. The
	// remote end reads exactly those bytes, then EOF. The Write that
	// reaches byte StdinBytes keeps the bytes up to it: if it ends there
	// it succeeds, otherwise it returns that count with EPIPE; every later
	// Write fails with EPIPE. With StdinBytes 0 the process exits as soon
	// as it has connected.
	ExitAfterStdin
)

// ProcessScript scripts a Process's end. Whatever the exit point, a reset
// of the underlying connection ends the process with status 255, and the
// remote end closing the connection first ends it with Status.
type ProcessScript struct {
	Exit        ExitPoint
	StdoutBytes int64  // for ExitAfterStdout
	StdinBytes  int64  // for ExitAfterStdin
	Status      int    // exit status, 0..255
	Stderr      string // what the process writes to stderr when it exits
}

func (s ProcessScript) validate() error {
	if s.Exit < ExitOnRemoteClose || s.Exit > ExitAfterStdin {
		return fmt.Errorf("netsim: process script: unknown exit point %d", int(s.Exit))
	}
	if s.StdoutBytes < 0 {
		return fmt.Errorf("netsim: process script: StdoutBytes %d is negative", s.StdoutBytes)
	}
	if s.StdinBytes < 0 {
		return fmt.Errorf("netsim: process script: StdinBytes %d is negative", s.StdinBytes)
	}
	if s.Status < 0 || s.Status > 255 {
		return fmt.Errorf("netsim: process script: exit status %d outside 0..255", s.Status)
	}
	return nil
}

// ExitError reports a process that exited with a non-zero status, like
// *exec.ExitError.
type ExitError struct {
	Status int // -1 if killed
	Stderr []byte
}

func (e *ExitError) Error() string {
	if e.Status < 0 {
		return "signal: killed"
	}
	return "exit status " + strconv.Itoa(e.Status)
}

// ExitCode returns the exit status, -1 if the process was killed.
func (e *ExitError) ExitCode() int { return e.Status }

// Process stands in for an exec.Cmd running `ssh host command`: its stdin
// and stdout are the two directions of a simulated connection to the
// remote end, which a Listener on the target address accepts.
type Process struct {
	script ProcessScript
	conn   *Conn // nil when the process never connected

	mu       sync.Mutex // guards the fields below; taken after the pipe lock
	done     bool
	status   int
	stderr   []byte
	exited   chan struct{}
	inClosed bool
}

// StartProcess starts a process on host from that connects to address. A
// failed connection does not fail StartProcess: the process exits with
// status 255 and ssh's complaint on stderr, as ssh would. The error is only
// for a bad script.
func (n *Network) StartProcess(ctx context.Context, from, address string, script ProcessScript) (*Process, error) {
	if err := script.validate(); err != nil {
		return nil, err
	}
	pr := &Process{script: script, exited: make(chan struct{})}
	if script.Exit == ExitBeforeStdout {
		pr.finish(script.Status, script.Stderr)
		return pr, nil
	}
	// The exit trigger goes in before the server end exists: a server that
	// writes at once must not get more than StdoutBytes past it (and an
	// exit at stdin byte 0 happens before the server can write at all).
	_, err := n.dial(ctx, from, address, func(c *Conn) {
		pr.conn = c
		p := c.p
		p.mu.Lock()
		defer p.mu.Unlock()
		p.onReset = func(now time.Time) {
			pr.exitLocked(now, 255, "client_loop: send disconnect: Connection reset by peer\n")
		}
		p.onClose[1] = func(now time.Time) { pr.exitLocked(now, script.Status, script.Stderr) }
		if script.Exit == ExitAfterStdout {
			p.s[Down].addTrigger(trigger{off: script.StdoutBytes, kind: trigExit, exit: func(now time.Time) {
				pr.exitLocked(now, script.Status, script.Stderr)
			}})
			_ = p.fireTriggers(int(Down), time.Now())
		}
		if script.Exit == ExitAfterStdin {
			p.s[Up].addTrigger(trigger{off: script.StdinBytes, kind: trigExit, exit: func(now time.Time) {
				pr.exitLocked(now, script.Status, script.Stderr)
			}})
			_ = p.fireTriggers(int(Up), time.Now())
		}
	})
	if err != nil {
		host, port, _ := net.SplitHostPort(address)
		var msg string
		var se *os.SyscallError
		if errors.As(err, &se) {
			msg = se.Err.Error()
		} else {
			msg = err.Error()
		}
		pr.finish(255, fmt.Sprintf("ssh: connect to host %s port %s: %s\n", host, port, capitalize(msg)))
		return pr, nil
	}
	return pr, nil
}

func capitalize(s string) string {
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		return string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

// exitLocked ends the process (pipe lock held): the remote end reads what
// stdin carried so far, then EOF, and its writes fail with EPIPE; Stdout
// yields what the remote wrote before the exit, then EOF.
func (pr *Process) exitLocked(now time.Time, status int, stderr string) {
	if pr.isDone() {
		return
	}
	p := pr.conn.p
	if !p.reset { // after a reset, the reset already says it all
		p.s[Up].shutAt(now)
		down := p.s[Down]
		down.shutAt(now)
		down.sinkGone = true
		down.sinkGoneAt = now
		down.triggers = nil
		p.broadcast()
	}
	p.n.record(now, "conn#%d: process exited with status %d", p.id, status)
	pr.finish(status, stderr)
}

func (pr *Process) isDone() bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.done
}

func (pr *Process) finish(status int, stderr string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.done {
		return
	}
	pr.done = true
	pr.status = status
	pr.stderr = append(pr.stderr, stderr...)
	close(pr.exited)
}

// exit ends the process from outside the pipe's hooks.
func (pr *Process) exit(status int, stderr string) {
	if pr.conn == nil {
		pr.finish(status, stderr)
		return
	}
	p := pr.conn.p
	p.mu.Lock()
	defer p.mu.Unlock()
	pr.exitLocked(time.Now(), status, stderr)
}

// Conn returns the process's end of its connection (for Stats and fault
// injection), or nil if it never connected.
func (pr *Process) Conn() *Conn { return pr.conn }

// Stdin returns the process's standard input.
func (pr *Process) Stdin() io.WriteCloser { return stdin{pr} }

// Stdout returns the process's standard output.
func (pr *Process) Stdout() io.ReadCloser { return stdout{pr} }

// Stderr returns what the process wrote to stderr so far.
func (pr *Process) Stderr() []byte {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return append([]byte(nil), pr.stderr...)
}

// Exited is closed when the process has exited.
func (pr *Process) Exited() <-chan struct{} { return pr.exited }

// Wait waits for the process to exit. It returns nil for status 0 and an
// *ExitError otherwise. Unlike exec.Cmd.Wait it leaves Stdout readable.
func (pr *Process) Wait() error {
	<-pr.exited
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.status == 0 {
		return nil
	}
	return &ExitError{Status: pr.status, Stderr: append([]byte(nil), pr.stderr...)}
}

// Kill ends the process at once with status -1 (killed by a signal).
func (pr *Process) Kill() { pr.exit(-1, "") }

type stdin struct{ pr *Process }

func (s stdin) Write(b []byte) (int, error) {
	pr := s.pr
	if pr.conn == nil {
		return 0, &os.PathError{Op: "write", Path: "|1", Err: syscall.EPIPE}
	}
	n, err := pr.conn.Write(b)
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return n, os.ErrClosed
		}
		// A pipe to a dead process reports a broken pipe, whatever
		// happened to the connection behind it.
		return n, &os.PathError{Op: "write", Path: "|1", Err: syscall.EPIPE}
	}
	return n, nil
}

func (s stdin) Close() error {
	pr := s.pr
	pr.mu.Lock()
	again := pr.inClosed
	pr.inClosed = true
	pr.mu.Unlock()
	if again {
		return os.ErrClosed
	}
	if pr.conn == nil {
		return nil
	}
	if err := pr.conn.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	if pr.script.Exit == ExitOnStdinClose {
		pr.exit(pr.script.Status, pr.script.Stderr)
	}
	return nil
}

type stdout struct{ pr *Process }

func (s stdout) Read(b []byte) (int, error) {
	pr := s.pr
	if pr.conn == nil {
		return 0, io.EOF
	}
	n, err := pr.conn.Read(b)
	switch {
	case err == nil || err == io.EOF:
		return n, err
	case errors.Is(err, net.ErrClosed):
		return n, os.ErrClosed
	case errors.Is(err, syscall.ECONNRESET):
		// The process saw the reset and exited; its pipe just ends.
		return n, io.EOF
	default:
		return n, err
	}
}

// Close closes the process's side of the connection (both pipes): the
// remote end reads EOF.
func (s stdout) Close() error {
	if s.pr.conn == nil {
		return nil
	}
	if err := s.pr.conn.Close(); err != nil {
		return os.ErrClosed
	}
	return nil
}
