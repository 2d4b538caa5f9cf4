package endpoint

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

func abstractionNames(t *testing.T, z zfs.ZFS, fs zfs.DatasetPath) []string {
	t.Helper()
	all, err := ListAbstractions(ctx, z, []zfs.DatasetPath{fs}, AbstractionFilter{})
	require.NoError(t, err)
	var out []string
	for _, a := range all {
		out = append(out, fmt.Sprintf("%s %s", a.Kind, a.Version.Kind.Delimiter()+a.Version.Name))
	}
	slices.Sort(out)
	return out
}

func TestStepCompletedLeavesOnlyTheCursor(t *testing.T) {
	m, fs, v := modelWithSnapshots(t, "a", "b", "c")
	job := MustJobID("push")
	s := &Sender{ZFS: m, Job: job, Roots: []zfs.DatasetPath{fs}, Filter: func(zfs.DatasetPath) bool { return true }}
	// Leftovers of earlier attempts: step holds on all three, a step
	// bookmark, a cursor at a and one at c (c's outlived a rollback on
	// the receiver), and another job's cursor, which must stay.
	for _, n := range []string{"a", "b", "c"} {
		require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, n), StepHoldTag(job)))
	}
	require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "a"), "admin"))
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "a"), StepBookmarkName(v["a"].GUID, job)))
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "a"), CursorBookmarkName(v["a"].GUID, job)))
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "c"), CursorBookmarkName(v["c"].GUID, job)))
	other := MustJobID("other")
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "c"), CursorBookmarkName(v["c"].GUID, other)))

	// Not the last step: older protection goes, b's and c's stays.
	require.NoError(t, s.StepCompleted(ctx, SendRequest{FS: fs.String(), To: v["b"]}, false))
	assert.ElementsMatch(t, []string{
		"replication-cursor-v2 #" + CursorBookmarkName(v["b"].GUID, job),
		"replication-cursor-v2 #" + CursorBookmarkName(v["c"].GUID, other),
		"step-hold @b",
		"step-hold @c",
	}, abstractionNames(t, m, fs))

	// The last step: nothing of the job but the cursor.
	require.NoError(t, s.StepCompleted(ctx, SendRequest{FS: fs.String(), To: v["b"]}, true))
	assert.ElementsMatch(t, []string{
		"replication-cursor-v2 #" + CursorBookmarkName(v["b"].GUID, job),
		"replication-cursor-v2 #" + CursorBookmarkName(v["c"].GUID, other),
	}, abstractionNames(t, m, fs))
	holds, err := m.Holds(ctx, []zfs.VersionRef{zfs.SnapshotRef(fs, "a")})
	require.NoError(t, err)
	assert.Equal(t, []string{"admin"}, holds["a"], "holds of others stay")

	list, err := s.ListFilesystems(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, JobMarks{Cursors: []uint64{v["b"].GUID}}, list[0].Marks)
}

func TestStepCompletedOnABookmark(t *testing.T) {
	m, fs, v := modelWithSnapshots(t, "a", "b")
	job := MustJobID("push")
	s := &Sender{ZFS: m, Job: job, Roots: []zfs.DatasetPath{fs}, Filter: func(zfs.DatasetPath) bool { return true }}
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "b"), StepBookmarkName(v["b"].GUID, job)))
	require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "a"), CursorBookmarkName(v["a"].GUID, job)))
	require.NoError(t, m.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(fs, "b")}))
	vs, err := m.ListVersions(ctx, fs)
	require.NoError(t, err)
	var bm zfs.FilesystemVersion
	for _, x := range vs {
		if x.Kind == zfs.Bookmark && x.GUID == v["b"].GUID {
			bm = x
		}
	}
	require.Equal(t, zfs.Bookmark, bm.Kind)

	list, err := s.ListFilesystems(ctx)
	require.NoError(t, err)
	assert.Equal(t, JobMarks{Cursors: []uint64{v["a"].GUID}, StepBookmarks: true}, list[0].Marks)

	// The receiver has b: the sender confirms the bookmark as the base.
	require.NoError(t, s.StepCompleted(ctx, SendRequest{FS: fs.String(), To: bm}, true))
	assert.Equal(t, []string{"replication-cursor-v2 #" + CursorBookmarkName(v["b"].GUID, job)}, abstractionNames(t, m, fs))
}

func TestMoveLastReceivedHold(t *testing.T) {
	m, fs, v := modelWithSnapshots(t, "a", "b")
	job := MustJobID("sink")
	r := &Receiver{ZFS: m, Job: job, Root: zfs.MustDatasetPath("p")}
	tag := LastReceivedHoldTag(job)
	require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "a"), tag))
	require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "a"), "admin"))

	for range 2 { // idempotent
		require.NoError(t, r.MoveLastReceivedHold(ctx, "fs", v["b"]))
		holds, err := m.Holds(ctx, []zfs.VersionRef{zfs.SnapshotRef(fs, "a"), zfs.SnapshotRef(fs, "b")})
		require.NoError(t, err)
		assert.Equal(t, []string{"admin"}, holds["a"])
		assert.Equal(t, []string{tag}, holds["b"])
	}

	wrong := v["a"]
	wrong.Name = "b"
	err := r.MoveLastReceivedHold(ctx, "fs", wrong)
	assert.ErrorIs(t, err, ErrReceivedWrongVersion)
	assert.ErrorContains(t, err, "p/fs@b has GUID")

	gone := v["a"]
	gone.Name = "zz"
	assert.ErrorIs(t, r.MoveLastReceivedHold(ctx, "fs", gone), ErrReceivedWrongVersion)

	// The same GUID created at another time is another snapshot (a
	// sender whose state went back in time drew the GUID again).
	other := v["b"]
	other.Creation = other.Creation.Add(time.Hour)
	err = r.MoveLastReceivedHold(ctx, "fs", other)
	assert.ErrorIs(t, err, ErrReceivedWrongVersion)
	assert.ErrorContains(t, err, "not the same snapshot")

	bm := v["a"]
	bm.Kind = zfs.Bookmark
	assert.ErrorIs(t, r.MoveLastReceivedHold(ctx, "fs", bm), ErrNotAllowed)
	assert.Error(t, r.MoveLastReceivedHold(ctx, "../x", v["a"]))
}

// countingZFS counts the calls an endpoint makes (each is a zfs process on
// a real host).
type countingZFS struct {
	zfs.ZFS
	calls map[string]int
}

func (c *countingZFS) ListVersions(ctx context.Context, fs zfs.DatasetPath) ([]zfs.FilesystemVersion, error) {
	c.calls["ListVersions"]++
	return c.ZFS.ListVersions(ctx, fs)
}

func (c *countingZFS) ListFilesystems(ctx context.Context, root zfs.DatasetPath) ([]zfs.FilesystemInfo, error) {
	c.calls["ListFilesystems"]++
	return c.ZFS.ListFilesystems(ctx, root)
}

// An incremental receive goes into a filesystem that exists: no lookups of
// its parents, one listing to check what arrived.
func TestIncrementalReceiveLooksUpNothingElse(t *testing.T) {
	src, fs, v := modelWithSnapshots(t, "a", "b")
	dst := zfsmodel.New(zfsmodel.Options{Seed: 8})
	require.NoError(t, dst.CreatePool("q"))
	job := MustJobID("sink")
	r := &Receiver{ZFS: dst, Job: job, Root: zfs.MustDatasetPath("q/sink")}
	full, err := src.Send(ctx, zfs.SendArgs{FS: fs, To: v["a"]})
	require.NoError(t, err)
	require.NoError(t, r.Receive(ctx, ReceiveRequest{FS: "p/fs", To: v["a"], Full: true}, full))
	full.Close()

	counting := &countingZFS{ZFS: dst, calls: map[string]int{}}
	r.ZFS = counting
	from := v["a"]
	incr, err := src.Send(ctx, zfs.SendArgs{FS: fs, From: &from, To: v["b"]})
	require.NoError(t, err)
	defer incr.Close()
	require.NoError(t, r.Receive(ctx, ReceiveRequest{FS: "p/fs", From: &from, To: v["b"]}, incr))
	assert.Equal(t, map[string]int{"ListVersions": 1}, counting.calls)
}
