package daemon

import (
	"context"
	"net"
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

// runDaemon starts a daemon without control socket and with retries that
// do not sleep; the test's end stops it and requires a clean exit.
func runDaemon(t *testing.T, opts Options) *Daemon {
	t.Helper()
	opts.noControlSocket = true
	opts.replicationSleep = func(context.Context, time.Duration) error { return nil }
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
