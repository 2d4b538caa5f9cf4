package rpc

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// A client that speaks as zrepl v0.7 does (no extensions: every receive
// asks the sink to clear partial receive state first) replicates full
// and incremental to our sink, whose target does not exist before the
// full receive. zrepl's push against our sink failed here on real ZFS
// ("clear the resume token: ... dataset does not exist").
func TestZreplClientPushesToOurSink(t *testing.T) {
	h := newHosts(t)
	srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	asZrepl := banner{version: ProtocolVersion}
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "tcp", "alice"), banner: &asZrepl})
	h.create("src/data")
	h.writeSnap("src/data", 1, 8, "s1")
	requireOK(t, run(h.sender, c.Receiver()))
	h.assertReplicated("src/data", "dst/sinks/alice/src/data", "s1")
	h.writeSnap("src/data", 2, 8, "s2")
	requireOK(t, run(h.sender, c.Receiver()))
	h.assertReplicated("src/data", "dst/sinks/alice/src/data", "s1", "s2")
}

// A client that speaks as zrepl does pulls an encrypted filesystem raw
// from our source, full then incremental. Its listing of the source has
// no encryption properties and no send policy (extensions off), so the
// planner cannot tell a raw stream from a plain one and must not refuse
// the incremental step into the received filesystem, whose key is not
// loaded. Against zrepl v0.7.0's source on real ZFS it did
// (platformtest TestInteropPullOursFromZreplSource); on the model this
// passed before the fix too (the model's listing differs there: see
// the wire notes).
func TestZreplClientPullsRawIncremental(t *testing.T) {
	h := newHosts(t)
	require.NoError(t, h.src.CreateFilesystem(zfs.MustDatasetPath("src/data"), zfsmodel.FSOptions{Parents: true, Encrypted: true}))
	h.sender.Policy = zfs.SendPolicy{Encrypted: true}
	srv := newServer(t, ServerConfig{Sender: Source(h.sender)})
	asZrepl := banner{version: ProtocolVersion}
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "pipe", "puller"), banner: &asZrepl})
	dst := &endpoint.Receiver{ZFS: h.dst, Job: h.job, Root: zfs.MustDatasetPath("dst/pulled")}
	for i, s := range []string{"s1", "s2"} {
		h.writeSnap("src/data", int64(i), 4, s)
		requireOK(t, run(c.Sender(), dst))
	}
	info, err := h.dst.Info(zfs.MustDatasetPath("dst/pulled/src/data"))
	require.NoError(t, err)
	assert.Equal(t, zfs.KeyStatusUnavailable, info.KeyStatus, "received raw")
	require.NoError(t, h.dst.LoadKey(zfs.MustDatasetPath(info.EncryptionRoot)))
	h.assertReplicated("src/data", "dst/pulled/src/data", "s1", "s2")
}

// A source that speaks as zrepl v0.7 does (no extensions) marks no
// cursors in its listing; asked as zrepl's pruner asks (ReplicationCursor),
// it names its job's cursor: the snapshot replicated last. Our pull job's
// not_replicated rule against a zrepl source kept every snapshot before
// it asked (platformtest TestInterop/OursPullFromZreplSource, pruning).
func TestZreplServerTellsReplicationCursor(t *testing.T) {
	ctx := context.Background()
	h := newHosts(t)
	asZrepl := banner{version: ProtocolVersion}
	srv := newServer(t, ServerConfig{Sender: Source(h.sender), banner: &asZrepl})
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "pipe", "puller")})
	s := c.Sender()
	dst := &endpoint.Receiver{ZFS: h.dst, Job: h.job, Root: zfs.MustDatasetPath("dst/pulled")}
	h.create("src/data")
	h.writeSnap("src/data", 1, 4, "s1")
	_, ok, err := s.ReplicationCursor(ctx, "src/data")
	require.NoError(t, err)
	assert.False(t, ok, "a cursor before the first replication")
	for i, snap := range []string{"s1", "s2"} {
		if i > 0 {
			h.writeSnap("src/data", int64(i+1), 4, snap)
		}
		requireOK(t, run(s, dst))
		fss, err := s.ListFilesystems(ctx)
		require.NoError(t, err)
		require.Len(t, fss, 1)
		assert.Empty(t, fss[0].Marks.Cursors, "a zrepl source's listing marks no cursors")
		guid, ok, err := s.ReplicationCursor(ctx, "src/data")
		require.NoError(t, err)
		require.True(t, ok, "no cursor after replicating %s", snap)
		vs, err := h.src.ListVersions(ctx, zfs.MustDatasetPath("src/data"))
		require.NoError(t, err)
		var want uint64
		for _, v := range vs {
			if v.Kind == zfs.Snapshot && v.Name == snap {
				want = v.GUID
			}
		}
		assert.Equal(t, want, guid, "the cursor after replicating %s", snap)
	}
}
