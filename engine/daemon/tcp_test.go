package daemon

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
)

// A push job with manual snapshotting replicates on wakeup to a sink over
// loopback TCP (both in one daemon), and prunes the sink over the wire.
func TestPushOverTCPPrunesTheSink(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - name: push
    type: push
    connect: {type: tcp, address: "%[1]s"}
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 3}]
      keep_receiver: [{type: last_n, count: 2}]
  - name: sink
    type: sink
    serve: {type: tcp, listen: "%[1]s", clients: {"127.0.0.1": "laptop"}}
    root_fs: backup
`, addr))
	m := model(t)
	d, err := New(Options{Config: cfg, ZFS: m, NoControlSocket: true, ReplicationSleep: func(context.Context, time.Duration) error { return nil }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	push, err := d.Job("push")
	require.NoError(t, err)
	fs := zfs.MustDatasetPath("pool/data")
	snap := func(names ...string) {
		for i, n := range names {
			require.NoError(t, m.WriteData(fs, int64(i), 1))
			require.NoError(t, m.Snapshot(context.Background(), fs, n))
		}
	}
	runs := func(n int) job.Status {
		var st job.Status
		deadline := time.Now().Add(30 * time.Second)
		for {
			st = push.Status()
			if st.Runs >= n && st.State == job.StateIdle {
				return st
			}
			require.True(t, time.Now().Before(deadline), "run %d did not end: %+v", n, st)
			time.Sleep(10 * time.Millisecond)
		}
	}

	snap("a", "b", "c", "d", "e")
	push.Wakeup()
	st := runs(1)
	require.Empty(t, st.LastError)
	assert.Equal(t, []string{"e"}, snapshots(t, m, "backup/laptop/pool/data"), "the first replication sends the newest only")
	assert.Equal(t, []string{"c", "d", "e"}, snapshots(t, m, "pool/data"))

	snap("f", "g", "h")
	push.Wakeup()
	st = runs(2)
	require.Empty(t, st.LastError)
	assert.Equal(t, []string{"g", "h"}, snapshots(t, m, "backup/laptop/pool/data"), "keep_receiver applied over the wire")
	assert.Equal(t, []string{"f", "g", "h"}, snapshots(t, m, "pool/data"))
	assert.Equal(t, map[string]int{"sender": 2 + 3, "receiver": 2}, st.Pruned)
}
