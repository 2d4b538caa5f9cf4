package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
)

// A pull job pulls from a source over loopback TCP (both in one daemon)
// on wakeup, and applies keep_sender to the source over the wire: what
// not_replicated and last_n keep stays, the rest goes, and the snapshot
// another client's open step holds survives.
func TestPullOverTCPPrunesTheSource(t *testing.T) {
	addr := freeTCPAddr(t)
	cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - name: src
    type: source
    serve: {type: tcp, listen: "%[1]s", clients: {"127.0.0.1": "backup"}}
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
  - name: pull
    type: pull
    connect: {type: tcp, address: "%[1]s"}
    root_fs: backup/pulled
    interval: manual
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 2}]
      keep_receiver: [{type: last_n, count: 3}]
`, addr))
	m := model(t)
	var logs lockedBuffer
	d := runDaemon(t, Options{Config: cfg, ZFS: m, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	pull, err := d.Job("pull")
	require.NoError(t, err)
	snap := func(names ...string) { snapData(t, m, "pool/data", names...) }
	runs := func(n int) job.Status { return waitRuns(t, pull, n) }

	snap("a", "b", "c", "d", "e")
	// Another client of the source has a step open on @b.
	require.NoError(t, m.Hold(context.Background(), zfs.SnapshotRef(zfs.MustDatasetPath("pool/data"), "b"), endpoint.StepHoldTag(endpoint.MustJobID("laptop"))))
	pull.Wakeup()
	st := runs(1)
	require.Empty(t, st.LastError)
	assert.Equal(t, []string{"e"}, snapshots(t, m, "backup/pulled/pool/data"), "the first replication pulls the newest only")
	assert.Equal(t, []string{"b", "d", "e"}, snapshots(t, m, "pool/data"), "keep_sender applied to the source over the wire; the held @b stays")

	snap("f", "g", "h")
	pull.Wakeup()
	st = runs(2)
	require.Empty(t, st.LastError)
	assert.Equal(t, []string{"f", "g", "h"}, snapshots(t, m, "backup/pulled/pool/data"), "keep_receiver")
	assert.Equal(t, []string{"b", "g", "h"}, snapshots(t, m, "pool/data"))
	assert.Equal(t, map[string]int{"sender": 2 + 3, "receiver": 1}, st.Pruned, "@a @c, then @d @e @f on the source; @e on the receiver")
	assert.NotContains(t, logs.String(), "keep_sender", "no warning that keep_sender is not applied")
}

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
