package daemon

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// freeTCPAddr is a loopback address nobody listens on right now.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// runDaemon starts a daemon with its control API on an in-memory
// listener (unless opts has one); the test's end stops it and requires a
// clean exit.
func runDaemon(t *testing.T, opts Options) *Daemon {
	t.Helper()
	if opts.Control == nil {
		opts.Control = newPipeListener()
	}
	d, err := New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return d
}

// waitRuns waits (bounded) until j finished its n-th run and is idle. A
// run counts from its start, while the job may still show idle for a
// moment: the run ended once its end is not before its start.
func waitRuns(t *testing.T, j *job.Active, n int) job.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := j.Status()
		if st.Runs >= n && st.State == job.StateIdle && !st.LastRunEnd.Before(st.LastRunStart) {
			return st
		}
		require.True(t, time.Now().Before(deadline), "run %d did not end: %+v", n, st)
		time.Sleep(10 * time.Millisecond)
	}
}

// snapData writes a little data into fs before each snapshot named.
func snapData(t *testing.T, m *zfsmodel.Model, fs string, names ...string) {
	t.Helper()
	p := zfs.MustDatasetPath(fs)
	for i, n := range names {
		require.NoError(t, m.WriteData(p, int64(i), 1))
		require.NoError(t, m.Snapshot(context.Background(), p, n))
	}
}

// pipeListener is an in-memory net.Listener: Dial hands one end of a
// net.Pipe to Accept. Unlike a socket, a goroutine blocked in its Accept
// is durably blocked in a synctest bubble (made there), so that a daemon
// serving its control API on it lets virtual time advance.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// Dial connects to the listener.
func (l *pipeListener) Dial(ctx context.Context) (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case l.conns <- s:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-memory" }
