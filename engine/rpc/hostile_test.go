package rpc

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
)

// hostileSource is a source with src/data/fs@a, b, c pulled by "puller"
// (the source's cursor marks @c), @d and @e not yet pulled, and a client
// to call it directly, as a buggy or hostile pull client would.
type hostileSource struct {
	*hosts
	fs     zfs.DatasetPath
	client *RemoteSender
	zfs    *holdFailer
}

// holdFailer fails every hold on the snapshot named failOn.
type holdFailer struct {
	zfs.ZFS
	mu     sync.Mutex
	failOn string
}

func (f *holdFailer) Hold(ctx context.Context, snap zfs.VersionRef, tag string) error {
	f.mu.Lock()
	fail := snap.Name == f.failOn
	f.mu.Unlock()
	if fail {
		return &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "hold", Dataset: snap.String(), Msg: "planted failure"}
	}
	return f.ZFS.Hold(ctx, snap, tag)
}

func (f *holdFailer) HoldAll(ctx context.Context, tag string, snaps []zfs.VersionRef) error {
	var errs []error
	for _, s := range snaps {
		if err := f.Hold(ctx, s, tag); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func newHostileSource(t *testing.T) *hostileSource {
	h := newHosts(t)
	h.create("src/data/fs")
	for i, s := range []string{"a", "b", "c"} {
		h.writeSnap("src/data/fs", int64(i), 2, s)
	}
	hf := &holdFailer{ZFS: h.src}
	sender := &endpoint.Sender{ZFS: hf, Job: h.job, Roots: h.sender.Roots, Filter: h.sender.Filter}
	srv := newServer(t, ServerConfig{Sender: Source(sender)})
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "pipe", "puller")})
	dst := &endpoint.Receiver{ZFS: h.dst, Job: h.job, Root: zfs.MustDatasetPath("dst/pulled")}
	requireOK(t, replication.NewRun(c.Sender(), dst, replication.Config{
		Sleep: noSleep, Policy: planner.Policy{InitialReplication: planner.AllSnapshots},
	}).Do(context.Background()))
	// @d is large, so that its stream stays open on the server until the
	// client reads it.
	h.writeSnap("src/data/fs", 10, 256, "d")
	h.writeSnap("src/data/fs", 11, 2, "e")
	return &hostileSource{hosts: h, fs: zfs.MustDatasetPath("src/data/fs"), client: c.Sender(), zfs: hf}
}

func (s *hostileSource) versions() map[string]zfs.FilesystemVersion {
	vs, err := s.src.ListVersions(context.Background(), s.fs)
	require.NoError(s.t, err)
	m := map[string]zfs.FilesystemVersion{}
	for _, v := range vs {
		m[v.RelName()] = v
	}
	return m
}

// protection lists the job's step holds ("@x") and bookmarks ("#x") on fs.
func (s *hostileSource) protection() []string {
	var out, held []string
	var refs []zfs.VersionRef
	for rel, v := range s.versions() {
		switch {
		case v.Kind == zfs.Bookmark:
			if p, ok := endpoint.ParseBookmarkName(v.Name); ok && p.Job == s.job {
				out = append(out, rel)
			}
		case v.UserRefs > 0:
			refs = append(refs, v.Ref(s.fs))
		}
	}
	if len(refs) > 0 {
		holds, err := s.src.Holds(context.Background(), refs)
		require.NoError(s.t, err)
		for snap, tags := range holds {
			if slices.Contains(tags, endpoint.StepHoldTag(s.job)) {
				held = append(held, "@"+snap)
			}
		}
	}
	out = append(out, held...)
	slices.Sort(out)
	return out
}

// A pull client cannot strip the source's protections: every version it
// names is checked against the source's filesystem before anything is
// done (a bogus GUID used to create a mislabelled cursor, destroy the real
// one and release every step hold, after which the formerly protected
// snapshots could be pruned), and no call lowers the protection of a step
// in flight (its step holds stay, whatever StepCompleted says).
func TestPullClientCannotStripProtection(t *testing.T) {
	s := newHostileSource(t)
	ctx := context.Background()
	v := s.versions()
	cursor := "#" + endpoint.CursorBookmarkName(v["@c"].GUID, s.job)
	require.Equal(t, []string{cursor}, s.protection())

	// A step c -> d in flight: the client read a little of it.
	c, d := v["@c"], v["@d"]
	stream, err := s.client.Send(ctx, endpoint.SendRequest{FS: s.fs.String(), From: &c, To: d})
	require.NoError(t, err)
	_, err = io.ReadFull(stream, make([]byte, 1024))
	require.NoError(t, err)
	inFlight := []string{cursor, "@c", "@d"}
	require.Equal(t, inFlight, s.protection())

	bogus := c
	bogus.GUID = 0x1234
	err = s.client.StepCompleted(ctx, endpoint.SendRequest{FS: s.fs.String(), To: bogus}, true)
	assert.ErrorIs(t, err, zfs.ErrVersionMismatch, "a GUID that is not the snapshot's")
	older := c
	older.CreateTXG = 1 << 50
	err = s.client.StepCompleted(ctx, endpoint.SendRequest{FS: s.fs.String(), To: older}, false)
	assert.ErrorIs(t, err, zfs.ErrVersionMismatch, "a createtxg that is not the snapshot's")
	noGUID := c
	noGUID.GUID = 0
	assert.ErrorIs(t, s.client.StepCompleted(ctx, endpoint.SendRequest{FS: s.fs.String(), To: noGUID}, true), endpoint.ErrNotAllowed)
	assert.Equal(t, inFlight, s.protection(), "refused calls change nothing")

	// A genuine StepCompleted (of another client, or a confused one)
	// while the step is in flight: the cursor may move, the step's
	// holds stay.
	require.NoError(t, s.client.StepCompleted(ctx, endpoint.SendRequest{FS: s.fs.String(), To: v["@b"]}, true))
	assert.Equal(t, []string{"#" + endpoint.CursorBookmarkName(v["@b"].GUID, s.job), "@c", "@d"}, s.protection(),
		"the step in flight keeps its holds")

	// Pruning: held snapshots stay, and a snapshot named without its GUID
	// is refused.
	err = s.client.DestroySnapshots(ctx, s.fs.String(), []zfs.FilesystemVersion{c, d})
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	noGUID = v["@a"]
	noGUID.GUID = 0
	assert.ErrorIs(t, s.client.DestroySnapshots(ctx, s.fs.String(), []zfs.FilesystemVersion{noGUID}), endpoint.ErrNotAllowed)
	after := s.versions()
	for _, snap := range []string{"@a", "@c", "@d"} {
		assert.Contains(t, after, snap)
	}

	// The interrupted step keeps its protection until a later step of the
	// filesystem completes.
	require.NoError(t, stream.Close())
	assert.Equal(t, []string{"#" + endpoint.CursorBookmarkName(v["@b"].GUID, s.job), "@c", "@d"}, s.protection())
}

// A Send refused for a GUID that is not the named snapshot's, or that
// fails while it takes its protection, leaves no step hold or bookmark of
// its own (item 7 of issue 12).
func TestRefusedSendLeavesNoProtection(t *testing.T) {
	s := newHostileSource(t)
	ctx := context.Background()
	v := s.versions()
	before := s.protection()
	d, e := v["@d"], v["@e"]
	wrongTo := e
	wrongTo.GUID++
	_, err := s.client.Send(ctx, endpoint.SendRequest{FS: s.fs.String(), From: &d, To: wrongTo})
	assert.ErrorIs(t, err, zfs.ErrVersionMismatch)
	wrongFrom := d
	wrongFrom.GUID++
	_, err = s.client.Send(ctx, endpoint.SendRequest{FS: s.fs.String(), From: &wrongFrom, To: e})
	assert.ErrorIs(t, err, zfs.ErrVersionMismatch)
	bookmarkFrom := zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: endpoint.CursorBookmarkName(v["@c"].GUID, s.job), GUID: v["@b"].GUID, CreateTXG: v["@c"].CreateTXG}
	_, err = s.client.Send(ctx, endpoint.SendRequest{FS: s.fs.String(), From: &bookmarkFrom, To: e, Protection: endpoint.GuaranteeIncremental})
	assert.ErrorIs(t, err, zfs.ErrVersionMismatch)
	assert.Equal(t, before, s.protection(), "refused sends hold nothing")

	// The source hold fails after the target's was placed: the target's
	// goes again.
	s.zfs.mu.Lock()
	s.zfs.failOn = "d"
	s.zfs.mu.Unlock()
	_, err = s.client.Send(ctx, endpoint.SendRequest{FS: s.fs.String(), From: &d, To: e})
	assert.Error(t, err)
	assert.Equal(t, before, s.protection(), "a send that failed half way gives up what it took")
}
