package endpoint

import (
	"testing"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// A sink asked to prune snapshots of a filesystem that is gone (its
// administrator destroyed it since the client listed it) has nothing left
// to do: as for a vanished snapshot, the client got what it wanted.
func TestReceiverPruneOfVanishedFilesystemIsDone(t *testing.T) {
	m := zfsmodel.New(zfsmodel.Options{Seed: 1})
	require.NoError(t, m.CreatePool("d"))
	require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("d/sink/client/p/a"), zfsmodel.FSOptions{Parents: true}))
	require.NoError(t, m.Snapshot(ctx, zfs.MustDatasetPath("d/sink/client/p/a"), "s1"))
	vs, err := m.ListVersions(ctx, zfs.MustDatasetPath("d/sink/client/p/a"))
	require.NoError(t, err)
	require.Len(t, vs, 1)
	r := &Receiver{ZFS: m, Job: MustJobID("sink"), Root: zfs.MustDatasetPath("d/sink/client")}

	require.NoError(t, m.Destroy(ctx, []zfs.VersionRef{vs[0].Ref(zfs.MustDatasetPath("d/sink/client/p/a"))}))
	require.NoError(t, m.DestroyFilesystem(zfs.MustDatasetPath("d/sink/client/p/a"), false))
	require.NoError(t, r.DestroySnapshots(ctx, "p/a", vs), "the filesystem is gone")

	// Also when the whole client root went.
	require.NoError(t, m.DestroyFilesystem(zfs.MustDatasetPath("d/sink/client/p"), true))
	require.NoError(t, r.DestroySnapshots(ctx, "p/a", vs))

	// A filesystem that is there is still checked as before.
	require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("d/sink/client/p/b"), zfsmodel.FSOptions{Parents: true}))
	require.NoError(t, m.Snapshot(ctx, zfs.MustDatasetPath("d/sink/client/p/b"), "s1"))
	wrong := vs[0]
	wrong.GUID++
	require.ErrorIs(t, r.DestroySnapshots(ctx, "p/b", []zfs.FilesystemVersion{wrong}), ErrNotAllowed)
}
