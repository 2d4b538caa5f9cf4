package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
)

// link is one replicate action's network: the server of the job's pair
// (the sink on the receiver host for a push, the source on the sender
// host for a pull) and its client on the other host, over a fresh seeded
// netsim.
type link struct {
	n      *netsim.Network
	srv    *rpc.Server
	served chan struct{}
	client *rpc.Client
	ssh    *sshProcesses // nil without the ssh transport
}

// controlReset reports whether the network reset connection 1, the
// control connection (the first listing dials it).
func (lk *link) controlReset() bool {
	for _, e := range lk.n.Trace() {
		if strings.HasPrefix(e.Msg, "conn#1 ") && strings.Contains(e.Msg, ": reset at byte") {
			return true
		}
	}
	return false
}

// linkOpts shape a run's network beyond its fault plan.
type linkOpts struct {
	plan netsim.FaultPlan
	// bandwidth of the links in bytes per second (0: 64 MiB/s).
	bandwidth int64
	// ssh: the client connects as over the ssh transport, one simulated
	// ssh process per connection; victim is the number (from 0, in the
	// order they start) of the process that runs script, the others run
	// until the server closes their connection.
	ssh    bool
	victim int
	script netsim.ProcessScript
}

// hosts are the server's and the client's host for j.
func (j job) hosts() (server, client string) {
	if j.pull {
		return senderHost, sinkHost
	}
	return sinkHost, senderHost
}

func (w *world) connect(t *rapid.T, j job, seed int64, o linkOpts) *link {
	n := netsim.New(seed)
	bw := o.bandwidth
	if bw == 0 {
		bw = 64 << 20
	}
	must(t, n.SetDefaultLink(netsim.Link{Latency: 2 * time.Millisecond, Bandwidth: bw, Buffer: 64 << 10}))
	must(t, n.Schedule(o.plan))
	serverHost, clientHost := j.hosts()
	port := 7000
	if o.ssh {
		port = 22
	}
	nl, err := n.Listen(serverHost, port)
	must(t, err)
	// With ssh, sshd's forced command (stdinserver) would introduce the
	// identity; the listener stands in for both.
	l, err := transport.Fixed(nl, j.identity)
	must(t, err)
	cfg := rpc.ServerConfig{Receiver: rpc.Sink(w.dst, sinkJob, zfs.MustDatasetPath(sinkRoot))}
	if j.pull {
		cfg = rpc.ServerConfig{Sender: rpc.Source(rpc.SourceSender{Sender: w.sender(j)})}
	}
	srv, err := rpc.NewServer(cfg)
	must(t, err)
	lk := &link{n: n, srv: srv, served: make(chan struct{})}
	go func() {
		defer close(lk.served)
		_ = srv.Serve(l)
	}()
	addr := fmt.Sprintf("%s:%d", serverHost, port)
	var dial transport.Dialer
	if o.ssh {
		lk.ssh = &sshProcesses{n: n, from: clientHost, addr: addr, victim: o.victim, script: o.script}
		dial = transport.ProcessDialer(lk.ssh.start)
	} else {
		d := n.DialFunc(clientHost)
		dial = func(ctx context.Context) (net.Conn, error) { return d(ctx, addr) }
	}
	lk.client, err = rpc.NewClient(rpc.ClientConfig{Dial: dial})
	must(t, err)
	return lk
}

// endpoints are what the job's run talks to: the local side directly, the
// remote side through the link's client.
func (w *world) endpoints(j job, lk *link) (replication.Sender, replication.Receiver) {
	if j.pull {
		return lk.client.Sender(), &endpoint.Receiver{ZFS: w.dst, Job: j.recv, Root: j.root()}
	}
	return w.sender(j), lk.client.Receiver()
}

func (lk *link) close() {
	_ = lk.client.Close()
	lk.srv.Stop()
	<-lk.served
	if lk.ssh != nil {
		lk.ssh.wait()
	}
	_ = lk.n.Close()
}

// sshProcesses starts the simulated ssh processes of one link.
type sshProcesses struct {
	n          *netsim.Network
	from, addr string
	victim     int
	script     netsim.ProcessScript
	mu         sync.Mutex
	procs      []*netsim.Process
}

func (s *sshProcesses) start(ctx context.Context, stderr io.Writer) (*transport.Process, error) {
	s.mu.Lock()
	i := len(s.procs)
	s.procs = append(s.procs, nil)
	s.mu.Unlock()
	script := netsim.ProcessScript{}
	if i == s.victim {
		script = s.script
	}
	pr, err := s.n.StartProcess(ctx, s.from, s.addr, script)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs[i] = pr
	s.mu.Unlock()
	return &transport.Process{
		Stdin:  sshStdin{pr.Stdin(), pr},
		Stdout: sshStdout{pr.Stdout(), pr},
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

// wait waits for every process to exit (the transport kills those that
// linger after their connection closed).
func (s *sshProcesses) wait() {
	s.mu.Lock()
	procs := append([]*netsim.Process(nil), s.procs...)
	s.mu.Unlock()
	for _, pr := range procs {
		if pr != nil {
			_ = pr.Wait()
		}
	}
}

// victimStatus is the scripted process's exit status, or -2 if it has
// not exited (or never started).
func (s *sshProcesses) victimStatus() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.victim >= len(s.procs) || s.procs[s.victim] == nil {
		return -2
	}
	pr := s.procs[s.victim]
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
type sshStdin struct {
	io.WriteCloser
	pr *netsim.Process
}

func (s sshStdin) SetWriteDeadline(t time.Time) error {
	if c := s.pr.Conn(); c != nil {
		return c.SetWriteDeadline(t)
	}
	return nil
}

type sshStdout struct {
	io.ReadCloser
	pr *netsim.Process
}

func (s sshStdout) SetReadDeadline(t time.Time) error {
	if c := s.pr.Conn(); c != nil {
		return c.SetReadDeadline(t)
	}
	return nil
}
