package daemon

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/job"
)

// A push job with manual snapshotting replicates on wakeup to a sink over
// loopback TCP (both in one daemon), and prunes the sink over the wire.
func TestPushOverTCPPrunesTheSink(t *testing.T) {
	addr := freeTCPAddr(t)
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
	d := runDaemon(t, Options{Config: cfg, ZFS: m})
	push, err := d.Job("push")
	require.NoError(t, err)
	snap := func(names ...string) { snapData(t, m, "pool/data", names...) }
	runs := func(n int) job.Status { return waitRuns(t, push, n) }

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
