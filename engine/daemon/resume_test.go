package daemon

import (
	"context"
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
			d, err := New(Options{Config: parse(t, slowPushConfig), ZFS: m, NoControlSocket: true})
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
		assert.Greater(t, full, int64(8<<20))
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
