package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
			_, err = p.prune(ctx, senderTarget{sender(m, j)}, time.Now(), func(fs string) (uint64, bool) {
				return cursorTXG, fs == "pool/data"
			})
			require.NoError(t, err)
			assert.Equal(t, tc.want, snapshots(t, m, "pool/data"))
		})
	}
}
