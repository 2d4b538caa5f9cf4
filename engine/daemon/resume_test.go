package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

const slowPushConfig = `
global: {zfs_backend: model}
jobs:
  - name: push
    type: push
    connect: {type: local, listener_name: sink, client_identity: laptop}
    filesystems: {"pool/data": true}
    send: {bandwidth_limit: {max: 1 MiB}}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 1h}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 3}]
      keep_receiver: [{type: last_n, count: 3}]
  - name: sink
    type: sink
    serve: {type: local, listener_name: sink}
    root_fs: backup
`

// A daemon stopped in the middle of a (bandwidth-limited) full send leaves
// the receiver's partial state and the sender's step hold; the next daemon
// on the same ZFS resumes at once and sends only the rest. Virtual time.
func TestShutdownMidStreamThenResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := model(t)
		data := zfs.MustDatasetPath("pool/data")
		require.NoError(t, m.WriteData(data, 1, 8<<20/zfsmodel.BlockSize)) // 8s at 1 MiB/s
		start := func() (*Daemon, func()) {
			d, err := New(Options{Config: parse(t, slowPushConfig), ZFS: m, Control: newPipeListener()})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- d.Run(ctx) }()
			return d, func() {
				cancel()
				require.NoError(t, <-done)
			}
		}

		d, stop := start()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		st := d.Status()[0]
		require.Equal(t, job.StateReplicating, st.State)
		require.NotNil(t, st.Replication)
		full := st.Replication.BytesExpected
		assert.GreaterOrEqual(t, full, int64(8<<20), "the estimate covers the data")
		assert.InDelta(t, 3<<20, st.Replication.BytesDone, 1<<20, "about 3 MiB after 3s at 1 MiB/s")
		stop()

		infos, err := m.ListFilesystems(context.Background(), zfs.MustDatasetPath("backup/laptop/pool/data"))
		require.NoError(t, err)
		require.NotEmpty(t, infos[0].ReceiveResumeToken, "the cancelled receive kept its partial state")
		holds, err := d.Holds(context.Background(), "push")
		require.NoError(t, err)
		require.Len(t, holds, 1)
		assert.Equal(t, "step-hold", holds[0].Kind, "the step hold keeps the snapshot for the resume")

		d, stop = start()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		st = d.Status()[0]
		require.Empty(t, st.LastError)
		require.NotNil(t, st.Replication)
		assert.True(t, st.Replication.Finished)
		assert.Less(t, st.Replication.BytesDone, full-(2<<20), "resumed: only the rest was sent")
		sent, recv := snapshots(t, m, "pool/data"), snapshots(t, m, "backup/laptop/pool/data")
		require.Len(t, recv, 1)
		assert.Equal(t, sent, recv)
		ref := func(fs zfs.DatasetPath) zfs.VersionRef { return zfs.SnapshotRef(fs, recv[0]) }
		want, err := m.Checksum(ref(data))
		require.NoError(t, err)
		have, err := m.Checksum(ref(zfs.MustDatasetPath("backup/laptop/pool/data")))
		require.NoError(t, err)
		assert.Equal(t, want, have)
		holds, err = d.Holds(context.Background(), "push")
		require.NoError(t, err)
		require.Len(t, holds, 1)
		assert.Equal(t, "replication-cursor-v2", holds[0].Kind, "the step hold is gone, the cursor is there")
		stop()
	})
}

// `signal reset` cancels the running replication; the job stays up and its
// next run (here a wakeup) resumes from the partial state.
func TestResetThenWakeupResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := model(t)
		data := zfs.MustDatasetPath("pool/data")
		require.NoError(t, m.WriteData(data, 1, 8<<20/zfsmodel.BlockSize))
		d, err := New(Options{Config: parse(t, slowPushConfig), ZFS: m, Control: newPipeListener()})
		require.NoError(t, err)
		c := NewClientHandler(d.controlHandler())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()

		time.Sleep(3 * time.Second)
		synctest.Wait()
		full := d.Status()[0].Replication.BytesExpected
		require.NoError(t, c.Signal(context.Background(), SignalRequest{Job: "push", Signal: "reset"}))
		synctest.Wait()
		st := d.Status()[0]
		assert.Equal(t, job.StateIdle, st.State)
		assert.Contains(t, st.LastError, "replication")
		infos, err := m.ListFilesystems(context.Background(), zfs.MustDatasetPath("backup/laptop/pool/data"))
		require.NoError(t, err)
		require.NotEmpty(t, infos[0].ReceiveResumeToken)

		require.NoError(t, c.Signal(context.Background(), SignalRequest{Job: "push", Signal: "wakeup"}))
		time.Sleep(10 * time.Second)
		synctest.Wait()
		st = d.Status()[0]
		assert.Empty(t, st.LastError)
		assert.True(t, st.Replication.Finished)
		assert.Less(t, st.Replication.BytesDone, full-(2<<20), "resumed")
		assert.Len(t, snapshots(t, m, "backup/laptop/pool/data"), 1)
		cancel()
		require.NoError(t, <-done)
	})
}

// A push whose sink does not answer: the run fails with an error that says
// where, status and metrics show it, and the job goes on. In a bubble, so
// that the driver's retries wait out their backoff in virtual time.
func TestUnreachableSinkIsAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - name: push
    type: push
    connect: {type: tcp, address: "%s"}
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: last_n, count: 1}]
      keep_receiver: [{type: last_n, count: 1}]
`, addr))
		m := model(t)
		require.NoError(t, m.Snapshot(context.Background(), zfs.MustDatasetPath("pool/data"), "a"))
		d, err := New(Options{Config: cfg, ZFS: m, Control: newPipeListener()})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()
		p, err := d.Job("push")
		require.NoError(t, err)
		p.Wakeup()
		deadline := time.Now().Add(10 * time.Minute)
		for st := p.Status(); st.Runs < 1 || st.State != job.StateIdle || st.LastRunEnd.Before(st.LastRunStart); st = p.Status() {
			require.True(t, time.Now().Before(deadline), "the run did not end: %+v", st)
			time.Sleep(10 * time.Millisecond)
		}
		st := p.Status()
		assert.Contains(t, st.LastError, "list receiver")
		assert.Contains(t, st.LastError, "prune receiver", "pruning the receiver fails too, and says so")
		assert.Equal(t, []string{"a"}, snapshots(t, m, "pool/data"), "the sender keeps its only snapshot")
		rec := httptest.NewRecorder()
		d.metrics.handler(d).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		assert.Contains(t, rec.Body.String(), `zrepl_job_run_errors_total{zrepl_job="push"} 1`)
		cancel()
		require.NoError(t, <-done)
	})
}
