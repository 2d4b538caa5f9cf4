package endpoint

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

var ctx = context.Background()

func modelWithSnapshots(t *testing.T, snaps ...string) (*zfsmodel.Model, zfs.DatasetPath, map[string]zfs.FilesystemVersion) {
	t.Helper()
	m := zfsmodel.New(zfsmodel.Options{Seed: 7})
	require.NoError(t, m.CreatePool("p"))
	fs := zfs.MustDatasetPath("p/fs")
	require.NoError(t, m.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	for i, s := range snaps {
		require.NoError(t, m.WriteData(fs, int64(i), 1))
		require.NoError(t, m.Snapshot(ctx, fs, s))
	}
	vs, err := m.ListVersions(ctx, fs)
	require.NoError(t, err)
	byName := map[string]zfs.FilesystemVersion{}
	for _, v := range vs {
		byName[v.Name] = v
	}
	return m, fs, byName
}

func TestRepeatedOperationsSucceed(t *testing.T) {
	m, fs, v := modelWithSnapshots(t, "a", "b")
	a := zfs.SnapshotRef(fs, "a")
	for range 2 {
		require.NoError(t, holdIdempotent(ctx, m, a, "tag"))
	}
	for range 2 {
		require.NoError(t, releaseIdempotent(ctx, m, a, "tag"))
	}
	for range 2 {
		require.NoError(t, bookmarkIdempotent(ctx, m, a, v["a"].GUID, "bm"))
	}
	bm := zfs.BookmarkRef(fs, "bm")
	for range 2 {
		require.NoError(t, destroyIdempotent(ctx, m, []zfs.VersionRef{bm, a}))
	}
	require.NoError(t, releaseIdempotent(ctx, m, a, "tag"), "release on a destroyed snapshot is done")
	require.NoError(t, destroyIdempotent(ctx, m, nil))
}

func TestIdempotencyKeepsRealErrors(t *testing.T) {
	m, fs, v := modelWithSnapshots(t, "a", "b")
	a, b := zfs.SnapshotRef(fs, "a"), zfs.SnapshotRef(fs, "b")
	require.NoError(t, bookmarkIdempotent(ctx, m, a, v["a"].GUID, "bm"))
	err := bookmarkIdempotent(ctx, m, b, v["b"].GUID, "bm")
	require.Error(t, err, "a same-named bookmark of another snapshot is not what we wanted")
	assert.ErrorContains(t, err, "marks GUID")

	require.NoError(t, holdIdempotent(ctx, m, a, "keep"))
	err = destroyIdempotent(ctx, m, []zfs.VersionRef{a, b, zfs.SnapshotRef(fs, "gone")})
	require.Error(t, err)
	assert.ErrorIs(t, err, zfs.ErrDatasetBusy, "a held snapshot's destroy stays an error")
	assert.NotErrorIs(t, err, zfs.ErrDatasetNotExist, "the absent snapshot is not reported")
	vs, lerr := m.ListVersions(ctx, fs)
	require.NoError(t, lerr)
	names := []string{}
	for _, x := range vs {
		names = append(names, x.RelName())
	}
	assert.ElementsMatch(t, []string{"@a", "#bm"}, names, "the destroyable snapshot went, the held one stayed")

	injected := errors.New("injected")
	require.NoError(t, m.FailNext("Hold", 1, injected))
	assert.ErrorIs(t, holdIdempotent(ctx, m, a, "other"), injected)
}
