package daemon

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// TestJobNameWithSpaces: a push job called "my push", as zrepl allows,
// replicates on the model, and the cursor and hold it leaves are listed
// as its own (zfs-abstraction list --job "my push").
func TestJobNameWithSpaces(t *testing.T) {
	m := model(t)
	ctx := context.Background()
	require.NoError(t, m.Snapshot(ctx, zfs.MustDatasetPath("pool/data"), "zrepl_1"))
	d := runDaemon(t, Options{Config: parse(t, `
global:
  zfs_backend: model
jobs:
  - name: my push
    type: push
    connect: {type: local, listener_name: my sink, client_identity: laptop}
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: regex, regex: ".*"}]
      keep_receiver: [{type: regex, regex: ".*"}]
  - {name: my sink, type: sink, serve: {type: local, listener_name: my sink}, root_fs: backup}
`), ZFS: m})
	j, err := d.Job("my push")
	require.NoError(t, err)
	j.Wakeup()
	st := waitRuns(t, j, 1)
	require.Empty(t, st.LastError)
	assert.Equal(t, []string{"zrepl_1"}, snapshots(t, m, "backup/laptop/pool/data"))

	holds, err := d.Holds(ctx, "my push")
	require.NoError(t, err)
	var got []string
	for _, h := range holds {
		assert.Equal(t, "my push", h.Job, "%v", h)
		got = append(got, h.Kind+" "+h.Version)
	}
	assert.Contains(t, got, "replication-cursor-v2 pool/data#"+endpoint.CursorBookmarkName(guidOf(m, zfs.SnapshotRef(zfs.MustDatasetPath("pool/data"), "zrepl_1")), endpoint.MustJobID("my push")), "%v", got)
}
