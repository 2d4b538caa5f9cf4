package daemon

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

const everyPoolConfig = `
jobs:
  - name: all
    type: snap
    filesystems: {"<": true, "tank/skip<": false}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 10s}
    pruning: {keep: [{type: last_n, count: 5}]}
`

// The every-pool filter "<" takes every filesystem of every pool imported
// at the time of the run: a pool imported while the daemon runs is
// snapshotted from the next run on, and exclusions still hold.
func TestEveryPoolFilter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := zfsmodel.New(zfsmodel.Options{Seed: 4, Clock: time.Now})
		for _, p := range []string{"pool", "tank"} {
			require.NoError(t, m.CreatePool(p))
		}
		for _, fs := range []string{"pool/a", "tank/b", "tank/skip", "tank/skip/c"} {
			require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{}))
		}
		cfg := parse(t, everyPoolConfig)
		got, err := MatchFilesystems(ctx, m, cfg.Jobs[0].Filesystems)
		require.NoError(t, err)
		assert.ElementsMatch(t, []zfs.DatasetPath{
			zfs.MustDatasetPath("pool"), zfs.MustDatasetPath("pool/a"),
			zfs.MustDatasetPath("tank"), zfs.MustDatasetPath("tank/b"),
		}, got)

		d, err := New(Options{Config: cfg, ZFS: m, Control: newPipeListener()})
		require.NoError(t, err)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- d.Run(runCtx) }()
		time.Sleep(time.Second) // the run at 0s
		synctest.Wait()
		require.NoError(t, m.CreatePool("late"))
		time.Sleep(10 * time.Second) // the run at 10s
		synctest.Wait()
		cancel()
		require.NoError(t, <-done)

		for fs, want := range map[string]int{"pool": 2, "pool/a": 2, "tank": 2, "tank/b": 2, "tank/skip": 0, "tank/skip/c": 0, "late": 1} {
			assert.Len(t, snapshots(t, m, fs), want, fs)
		}
		st := d.Status()
		assert.Empty(t, st[0].LastError)

		// The sender endpoint lists the pools at each listing too.
		s := sender(m, &cfg.Jobs[0])
		fss, err := s.ListFilesystems(ctx)
		require.NoError(t, err)
		var names []string
		for _, f := range fss {
			names = append(names, f.Path)
		}
		slices.Sort(names)
		assert.Equal(t, []string{"late", "pool", "pool/a", "tank", "tank/b"}, names)

		// Holds and bookmarks are looked for in every pool.
		roots, err := hostRoots(ctx, m, cfg)
		require.NoError(t, err)
		assert.Equal(t, []zfs.DatasetPath{zfs.MustDatasetPath("late"), zfs.MustDatasetPath("pool"), zfs.MustDatasetPath("tank")}, roots)
	})
}
