package rpc

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
)

// A push job prunes its received snapshots over the wire; the sink keeps
// held snapshots, bookmarks, re-created snapshots and other clients' data.
func TestDestroySnapshotsOverRPC(t *testing.T) {
	h := newHosts(t)
	h.create("src/data")
	for i, s := range []string{"a", "b", "c"} {
		h.writeSnap("src/data", int64(i), 2, s)
	}
	srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "pipe", "laptop")})
	rr := c.Receiver()
	requireOK(t, replication.NewRun(h.sender, rr, replication.Config{
		Sleep: noSleep, Policy: planner.Policy{InitialReplication: planner.AllSnapshots},
	}).Do(context.Background()))
	ctx := context.Background()
	dstFS := zfs.MustDatasetPath("dst/sinks/laptop/src/data")
	byName := func() map[string]zfs.FilesystemVersion {
		vs, err := h.dst.ListVersions(ctx, dstFS)
		require.NoError(t, err)
		m := map[string]zfs.FilesystemVersion{}
		for _, v := range vs {
			m[v.RelName()] = v
		}
		return m
	}
	v := byName()
	require.Contains(t, v, "@a")
	require.Contains(t, v, "@c")
	assert.NotZero(t, v["@c"].UserRefs, "the newest snapshot carries the last-received hold")

	// The held newest snapshot is refused; the others go.
	err := rr.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{v["@a"], v["@c"]})
	require.Error(t, err)
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	assert.ErrorContains(t, err, "held")
	after := byName()
	assert.NotContains(t, after, "@a")
	assert.Contains(t, after, "@c")

	// A stale GUID (the snapshot was re-created) is refused.
	stale := v["@b"]
	stale.GUID++
	err = rr.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{stale})
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	assert.Contains(t, byName(), "@b")

	// Bookmarks are not the client's to prune.
	require.NoError(t, h.dst.Bookmark(ctx, zfs.SnapshotRef(dstFS, "b"), "bm"))
	err = rr.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{{Kind: zfs.Bookmark, Name: "bm"}})
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	assert.Contains(t, byName(), "#bm")

	// Names that climb out of the client's root are refused before any
	// ZFS call.
	for _, bad := range []string{"../other", "", "a@b"} {
		err = rr.DestroySnapshots(ctx, bad, []zfs.FilesystemVersion{v["@b"]})
		assert.Error(t, err, bad)
	}
	// Already gone is fine.
	require.NoError(t, rr.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{v["@a"]}))
	require.NoError(t, rr.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{v["@b"]}))
	assert.NotContains(t, byName(), "@b")
}
