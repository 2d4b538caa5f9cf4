package daemon

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

// TestCronSnapshotting: a snap job with cron snapshotting takes no
// snapshot at start (zrepl waits for the schedule too), then one at each
// time of the schedule: here every second, by the optional seconds field.
func TestCronSnapshotting(t *testing.T) {
	m := hookModel(t, "pool/a")
	d := runDaemon(t, Options{Config: parse(t, `
global:
  zfs_backend: model
jobs:
  - name: snap
    type: snap
    filesystems: {"pool/a": true}
    snapshotting:
      type: cron
      prefix: zrepl_
      cron: "*/1 * * * * *"
      timestamp_format: unix-seconds
    pruning:
      keep: [{type: last_n, count: 100}]
`), ZFS: m})
	j, err := d.Job("snap")
	require.NoError(t, err)
	// The first wake-up is the next whole second.
	var next time.Time
	require.Eventually(t, func() bool { next = j.Status().NextRun; return !next.IsZero() }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, next.Nanosecond(), "next run %v is not a time of the schedule", next)
	assert.Less(t, time.Until(next), 1100*time.Millisecond)

	snaps := func() []string {
		vs, err := m.ListVersions(context.Background(), zfs.MustDatasetPath("pool/a"))
		require.NoError(t, err)
		var out []string
		for _, v := range vs {
			if v.Kind == zfs.Snapshot {
				out = append(out, v.Name)
			}
		}
		return out
	}
	require.Eventually(t, func() bool { return len(snaps()) >= 2 }, 10*time.Second, 20*time.Millisecond)
	got := snaps()
	for _, s := range got {
		require.True(t, strings.HasPrefix(s, "zrepl_"), s)
		sec, err := strconv.ParseInt(strings.TrimPrefix(s, "zrepl_"), 10, 64)
		require.NoError(t, err)
		assert.False(t, time.Unix(sec, 0).Before(next.Truncate(time.Second)), "%s was taken before the first time of the schedule (%v)", s, next)
	}
}
