package rpc

import (
	"context"
	"fmt"
	"slices"
	"strings"
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

// A pull job prunes the source over the wire (keep_sender); the source
// keeps held snapshots (another client's open step), bookmarks (the
// cursor among them), re-created snapshots and everything it does not
// serve; the snapshot of a replication cursor goes if the client asks.
func TestSourceDestroySnapshotsOverRPC(t *testing.T) {
	h := newHosts(t)
	h.create("src/data")
	h.create("src/other")
	for i, s := range []string{"a", "b", "c", "d", "e"} {
		h.writeSnap("src/data", int64(i), 2, s)
	}
	h.writeSnap("src/other", 9, 1, "x")
	srv := newServer(t, ServerConfig{Sender: Source(h.sender)})
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "pipe", "puller")})
	rs := c.Sender()
	ctx := context.Background()
	// Replicate so the source has its job's cursor on @e.
	requireOK(t, replication.NewRun(rs, &endpoint.Receiver{ZFS: h.dst, Job: h.job, Root: zfs.MustDatasetPath("dst/pulled")},
		replication.Config{Sleep: noSleep}).Do(ctx))
	fs := zfs.MustDatasetPath("src/data")
	byName := func() map[string]zfs.FilesystemVersion {
		vs, err := h.src.ListVersions(ctx, fs)
		require.NoError(t, err)
		m := map[string]zfs.FilesystemVersion{}
		for _, v := range vs {
			m[v.RelName()] = v
		}
		return m
	}
	v := byName()
	require.Contains(t, v, "#"+endpoint.CursorBookmarkName(v["@e"].GUID, h.job), "the cursor marks @e")
	// Another client's open step holds @c.
	require.NoError(t, h.src.Hold(ctx, zfs.SnapshotRef(fs, "c"), endpoint.StepHoldTag(endpoint.MustJobID("other"))))
	v = byName()

	err := rs.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{v["@a"], v["@c"], v["@e"]})
	require.Error(t, err)
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	assert.ErrorContains(t, err, "@c is held")
	assert.NotContains(t, err.Error(), "@e", "the cursor's snapshot is the pruner's to keep (keep_snapshot_at_cursor), not the source's")
	after := byName()
	assert.NotContains(t, after, "@a", "an unprotected snapshot goes")
	assert.Contains(t, after, "@c")
	assert.NotContains(t, after, "@e")
	assert.Contains(t, after, "#"+endpoint.CursorBookmarkName(v["@e"].GUID, h.job), "the cursor bookmark stays the incremental base")

	// A stale GUID (the snapshot was re-created) is refused.
	stale := v["@b"]
	stale.GUID++
	assert.ErrorIs(t, rs.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{stale}), endpoint.ErrNotAllowed)
	assert.Contains(t, byName(), "@b")

	// Bookmarks (the cursor among them) are not the client's to prune.
	cursor := v["#"+endpoint.CursorBookmarkName(v["@e"].GUID, h.job)]
	assert.ErrorIs(t, rs.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{cursor}), endpoint.ErrNotAllowed)
	assert.Contains(t, byName(), cursor.RelName())

	// Filesystems the source does not serve, and bad names, are refused
	// before any ZFS call.
	xs, err := h.src.ListVersions(ctx, zfs.MustDatasetPath("src/other"))
	require.NoError(t, err)
	assert.ErrorIs(t, rs.DestroySnapshots(ctx, "src/other", xs), endpoint.ErrNotAllowed)
	xs2, err := h.src.ListVersions(ctx, zfs.MustDatasetPath("src/other"))
	require.NoError(t, err)
	assert.Len(t, xs2, 1, "src/other keeps its snapshot")
	for _, bad := range []string{"../src/data", "", "src/data@b"} {
		assert.Error(t, rs.DestroySnapshots(ctx, bad, []zfs.FilesystemVersion{v["@b"]}), bad)
	}

	// Already gone is fine, and what may go goes.
	require.NoError(t, rs.DestroySnapshots(ctx, "src/data", []zfs.FilesystemVersion{v["@a"], v["@b"], v["@d"]}))
	assert.Equal(t, []string{"@c"}, snapNames(byName()))
}

func snapNames(m map[string]zfs.FilesystemVersion) []string {
	var out []string
	for n := range m {
		if strings.HasPrefix(n, "@") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// noPrune is the pruning of test endpoints that do not prune: they
// refuse every request, as an endpoint.Pruner may.
type noPrune struct{}

func (noPrune) DestroySnapshots(context.Context, string, []zfs.FilesystemVersion) error {
	return fmt.Errorf("this endpoint does not prune: %w", endpoint.ErrNotAllowed)
}

// An endpoint that refuses a whole prune request: the client gets its
// refusal, with its kind, for every snapshot it asked for.
func TestSourceRefusingPruning(t *testing.T) {
	h := newHosts(t)
	h.create("src/data")
	h.writeSnap("src/data", 1, 1, "a")
	srv := newServer(t, ServerConfig{Sender: Source(&fakeSender{})})
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "pipe", "puller")})
	vs, err := h.src.ListVersions(context.Background(), zfs.MustDatasetPath("src/data"))
	require.NoError(t, err)
	err = c.Sender().DestroySnapshots(context.Background(), "src/data", vs)
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	assert.ErrorContains(t, err, "this endpoint does not prune")
	after, err := h.src.ListVersions(context.Background(), zfs.MustDatasetPath("src/data"))
	require.NoError(t, err)
	assert.Equal(t, vs, after, "nothing went")
}
