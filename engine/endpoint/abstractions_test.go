package endpoint

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

func TestListAbstractions(t *testing.T) {
	m, fs, v := modelWithSnapshots(t, "a", "b")
	push, other := MustJobID("push"), MustJobID("other")
	require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "a"), StepHoldTag(push)))
	require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "a"), "admin-keep")) // not ours
	require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "b"), LastReceivedHoldTag(other)))
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "b"), CursorBookmarkName(v["b"].GUID, push)))
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "a"), CursorV1BookmarkName))
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "a"), "manual"))

	all, err := ListAbstractions(ctx, m, []zfs.DatasetPath{zfs.MustDatasetPath("p")}, AbstractionFilter{})
	require.NoError(t, err)
	var got []string
	for _, a := range all {
		got = append(got, a.String())
	}
	assert.Equal(t, []string{
		"replication-cursor-v1 job=- p/fs#zrepl_replication_cursor",
		"step-hold job=push p/fs@a tag=zrepl_STEP_J_push",
		"last-received-hold job=other p/fs@b tag=zrepl_last_received_J_other",
		"replication-cursor-v2 job=push p/fs#" + CursorBookmarkName(v["b"].GUID, push),
	}, got)

	mine, err := ListAbstractions(ctx, m, []zfs.DatasetPath{fs}, AbstractionFilter{Job: &push, Kinds: []AbstractionKind{StepHold}})
	require.NoError(t, err)
	require.Len(t, mine, 1)
	assert.Equal(t, "zrepl_STEP_J_push", mine[0].Tag)
	assert.Equal(t, v["a"].GUID, mine[0].GUID)

	_, err = ListAbstractions(ctx, m, []zfs.DatasetPath{zfs.MustDatasetPath("nope")}, AbstractionFilter{})
	assert.ErrorIs(t, err, zfs.ErrDatasetNotExist)
}
