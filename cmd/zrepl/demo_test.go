package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// The quickstart's demo: through the daemon's ZFS every snapshot has new
// data; the model itself (what offline commands see) is not decorated,
// and a failed write does not cost the snapshot.
func TestDemoZFSWritesBeforeEachSnapshot(t *testing.T) {
	ctx := context.Background()
	m := zfsmodel.New(zfsmodel.Options{Seed: 1})
	require.NoError(t, m.CreatePool("pool"))
	fs := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	var seed int64
	d := demoZFS{ZFS: m, write: func(fs zfs.DatasetPath) error { seed++; return m.WriteData(fs, seed, 4) }, log: slog.New(slog.DiscardHandler)}

	var sums []string
	for _, name := range []string{"a", "b"} {
		require.NoError(t, d.Snapshot(ctx, fs, name))
		sum, err := m.Checksum(zfs.SnapshotRef(fs, name))
		require.NoError(t, err)
		sums = append(sums, sum)
	}
	assert.NotEqual(t, sums[0], sums[1], "each snapshot has new data")

	require.NoError(t, m.Snapshot(ctx, fs, "c"))
	modified, err := m.Modified(fs)
	require.NoError(t, err)
	assert.False(t, modified, "the model alone writes nothing")

	failing := demoZFS{ZFS: m, write: func(zfs.DatasetPath) error { return errors.New("full") }, log: slog.New(slog.DiscardHandler)}
	require.NoError(t, failing.Snapshot(ctx, fs, "d"), "the snapshot is taken without the demo data")
}
