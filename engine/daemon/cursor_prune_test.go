package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// TestKeepSnapshotAtCursor: a push job's not_replicated rule keeps the
// snapshot at the replication cursor by default, and lets it go with
// keep_snapshot_at_cursor: false (the cursor bookmark is the incremental
// base then), as zrepl does; on the model, through the job's sender.
func TestKeepSnapshotAtCursor(t *testing.T) {
	for _, tc := range []struct {
		setting string
		want    []string
	}{
		{"", []string{"zrepl_2", "zrepl_3"}},
		{"keep_snapshot_at_cursor: true", []string{"zrepl_2", "zrepl_3"}},
		{"keep_snapshot_at_cursor: false", []string{"zrepl_3"}},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			ctx := context.Background()
			m := model(t)
			data := zfs.MustDatasetPath("pool/data")
			for _, s := range []string{"zrepl_1", "zrepl_2", "zrepl_3"} {
				require.NoError(t, m.Snapshot(ctx, data, s))
			}
			vs, err := m.ListVersions(ctx, data)
			require.NoError(t, err)
			var cursorTXG uint64
			for _, v := range vs {
				if v.Name == "zrepl_2" {
					cursorTXG = v.CreateTXG
				}
			}
			require.NotZero(t, cursorTXG)
			cfg := parse(t, fmt.Sprintf(`
jobs:
  - name: push
    type: push
    connect: {type: local, listener_name: sink, client_identity: laptop}
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
    pruning:
      keep_sender:
        - {type: not_replicated, %s}
      keep_receiver: [{type: regex, regex: ".*"}]
  - {name: sink, type: sink, serve: {type: local, listener_name: sink}, root_fs: backup}
`, tc.setting))
			j := &cfg.Jobs[0]
			p := newPrune(j.Pruning.KeepSender)
			_, err = p.prune(ctx, sender(m, j), time.Now(), func(fs string) (uint64, bool) {
				return cursorTXG, fs == "pool/data"
			})
			require.NoError(t, err)
			assert.Equal(t, tc.want, snapshots(t, m, "pool/data"))
		})
	}
}

// TestPullKeepSnapshotAtCursor: keep_snapshot_at_cursor is the pruner's
// rule on the source's side too: a pull job's keep_sender with false lets
// the cursor's snapshot go through the source (its cursor bookmark stays
// the incremental base); the default keeps it.
func TestPullKeepSnapshotAtCursor(t *testing.T) {
	for _, tc := range []struct {
		setting string
		want    []string
	}{
		{"", []string{"zrepl_2", "zrepl_3"}},
		{"keep_snapshot_at_cursor: false", []string{"zrepl_3"}},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			ctx := context.Background()
			m := model(t)
			data := zfs.MustDatasetPath("pool/data")
			for _, s := range []string{"zrepl_1", "zrepl_2", "zrepl_3"} {
				require.NoError(t, m.Snapshot(ctx, data, s))
			}
			cfg := parse(t, fmt.Sprintf(`
jobs:
  - name: pull
    type: pull
    connect: {type: local, listener_name: src, client_identity: backup}
    root_fs: backup
    interval: manual
    pruning:
      keep_sender:
        - {type: not_replicated, %s}
      keep_receiver: [{type: regex, regex: ".*"}]
  - name: src
    type: source
    serve: {type: local, listener_name: src}
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
`, tc.setting))
			src := &cfg.Jobs[1]
			vs, err := m.ListVersions(ctx, data)
			require.NoError(t, err)
			var cursor zfs.FilesystemVersion
			for _, v := range vs {
				if v.Name == "zrepl_2" {
					cursor = v
				}
			}
			require.NotZero(t, cursor.CreateTXG)
			// The source's own cursor bookmark on zrepl_2, as a completed
			// step leaves it.
			require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(data, "zrepl_2"), endpoint.CursorBookmarkName(cursor.GUID, endpoint.MustJobID(src.Name))))
			p := newPrune(cfg.Jobs[0].Pruning.KeepSender)
			_, err = p.prune(ctx, limitedSender{jobSender: sender(m, src)}, time.Now(), func(fs string) (uint64, bool) {
				return cursor.CreateTXG, fs == "pool/data"
			})
			require.NoError(t, err)
			assert.Equal(t, tc.want, snapshots(t, m, "pool/data"))
		})
	}
}
