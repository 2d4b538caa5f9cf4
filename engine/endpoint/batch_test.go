package endpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// batchFixture: n sender filesystems with snapshots a and b, a replicated
// (cursor at a, last-received hold on q/p/fsNN@a), b not yet.
type batchFixture struct {
	src, dst *zfsmodel.Model
	sc, rc   *callCounter
	s        *Sender
	r        *Receiver
	job      JobID
	fss      []string
	v        []map[string]zfs.FilesystemVersion
}

func newBatchFixture(t *testing.T, n int) *batchFixture {
	t.Helper()
	f := &batchFixture{src: zfsmodel.New(zfsmodel.Options{Seed: 1}), dst: zfsmodel.New(zfsmodel.Options{Seed: 2}), job: MustJobID("j")}
	require.NoError(t, f.src.CreatePool("p"))
	require.NoError(t, f.dst.CreatePool("q"))
	require.NoError(t, f.dst.CreateFilesystem(zfs.MustDatasetPath("q/p"), zfsmodel.FSOptions{}))
	for i := range n {
		fs := fmt.Sprintf("p/fs%02d", i)
		f.fss = append(f.fss, fs)
		require.NoError(t, f.src.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{}))
		for _, s := range []string{"a", "b"} {
			require.NoError(t, f.src.WriteData(zfs.MustDatasetPath(fs), int64(i), 1))
			require.NoError(t, f.src.Snapshot(ctx, zfs.MustDatasetPath(fs), s))
		}
	}
	f.sc, f.rc = &callCounter{z: f.src, calls: map[string]int{}}, &callCounter{z: f.dst, calls: map[string]int{}}
	f.s = &Sender{ZFS: f.sc, Job: f.job, Roots: []zfs.DatasetPath{zfs.MustDatasetPath("p")}, Filter: func(p zfs.DatasetPath) bool { return p.String() != "p" }}
	f.r = &Receiver{ZFS: f.rc, Job: f.job, Root: zfs.MustDatasetPath("q")}
	f.list(t)
	for i, fs := range f.fss {
		f.step(t, fs, nil, f.v[i]["a"], nil)
	}
	f.list(t)
	return f
}

func (f *batchFixture) list(t *testing.T) {
	t.Helper()
	list, err := f.s.ListFilesystems(ctx)
	require.NoError(t, err)
	f.v = nil
	for _, l := range list {
		m := map[string]zfs.FilesystemVersion{}
		for _, x := range l.Versions {
			m[x.Name] = x
		}
		f.v = append(f.v, m)
	}
	_, err = f.r.ListFilesystems(ctx)
	require.NoError(t, err)
	f.sc.take()
	f.rc.take()
}

// step sends, receives and completes one last step, batched where b is
// not nil.
func (f *batchFixture) step(t *testing.T, fs string, from *zfs.FilesystemVersion, to zfs.FilesystemVersion, b *Batch) {
	t.Helper()
	req := SendRequest{FS: fs, From: from, To: to}
	bctx := ctx
	if b != nil {
		bctx = WithBatch(ctx, b)
	}
	stream, err := f.s.Send(bctx, req)
	require.NoError(t, err)
	require.NoError(t, f.r.Receive(bctx, ReceiveRequest{FS: fs, From: from, To: to, Full: from == nil}, stream))
	require.NoError(t, stream.Close())
	require.NoError(t, f.s.StepCompleted(bctx, req, true))
}

// holds lists the holds of fs's snapshots on z, "name:tag".
func holdsOf(t *testing.T, z *zfsmodel.Model, fs string) []string {
	t.Helper()
	vs, err := z.ListVersions(ctx, zfs.MustDatasetPath(fs))
	require.NoError(t, err)
	var out []string
	for _, v := range vs {
		if v.Kind != zfs.Snapshot {
			continue
		}
		h, err := z.Holds(ctx, []zfs.VersionRef{v.Ref(zfs.MustDatasetPath(fs))})
		require.NoError(t, err)
		for _, tag := range h[v.Name] {
			out = append(out, v.Name+":"+tag)
		}
	}
	return out
}

// A run's steps put their releases, and the receiver's last-received
// hold, off to Batch.Finish: per incremental step the sender's hold, send,
// cursor and destroy of the old cursor, the receiver's receive; then one
// zfs release on the sender and one hold and one release on the receiver
// for all filesystems. Until Finish nothing lost protection (the step
// holds stay, the receiver's older snapshot keeps its hold); after it, the
// same holds and bookmarks are left as by steps that did it themselves.
func TestBatchedSteps(t *testing.T) {
	const n = 5
	f := newBatchFixture(t, n)
	b := &Batch{}
	for i, fs := range f.fss {
		a := f.v[i]["a"]
		f.step(t, fs, &a, f.v[i]["b"], b)
	}
	assert.Equal(t, map[string]int{"HoldAll": n, "Send": n, "Bookmark": n, "Destroy": n}, f.sc.take(), "sender, %d incremental steps", n)
	assert.Equal(t, map[string]int{"ReadStreamHeader": n, "Receive": n}, f.rc.take(), "receiver, %d incremental steps", n)
	step := StepHoldTag(f.job)
	last := LastReceivedHoldTag(f.job)
	for _, fs := range f.fss {
		assert.ElementsMatch(t, []string{"a:" + step, "b:" + step}, holdsOf(t, f.src, fs), "sender %s before Finish", fs)
		assert.Equal(t, []string{"a:" + last}, holdsOf(t, f.dst, "q/"+fs), "receiver %s before Finish", fs)
	}

	require.Empty(t, b.Finish(ctx))
	assert.Equal(t, map[string]int{"ReleaseAll": 1}, f.sc.take(), "sender at Finish")
	assert.Equal(t, map[string]int{"HoldAll": 1, "ReleaseAll": 1}, f.rc.take(), "receiver at Finish")
	for i, fs := range f.fss {
		assert.Empty(t, holdsOf(t, f.src, fs), "sender %s after Finish", fs)
		assert.Equal(t, []string{"b:" + last}, holdsOf(t, f.dst, "q/"+fs), "receiver %s after Finish", fs)
		abs, err := ListAbstractions(ctx, f.src, []zfs.DatasetPath{zfs.MustDatasetPath(fs)}, AbstractionFilter{})
		require.NoError(t, err)
		var owned []string
		for _, x := range abs {
			owned = append(owned, x.Kind.String()+" "+x.Version.String())
		}
		assert.Equal(t, []string{ReplicationCursorV2.String() + " " + fs + "#" + CursorBookmarkName(f.v[i]["b"].GUID, f.job)}, owned)
	}
	require.Empty(t, b.Finish(ctx), "an empty batch")
	assert.Empty(t, f.sc.take())
	assert.Empty(t, f.rc.take())

	// What the endpoints know followed Finish: the next run's steps
	// (unbatched) release and destroy what is there, and no more.
	f.list(t)
	for i, fs := range f.fss {
		require.NoError(t, f.src.WriteData(zfs.MustDatasetPath(fs), 9, 1))
		require.NoError(t, f.src.Snapshot(ctx, zfs.MustDatasetPath(fs), "c"))
		_ = i
	}
	f.list(t)
	for i, fs := range f.fss {
		bv := f.v[i]["b"]
		f.step(t, fs, &bv, f.v[i]["c"], nil)
		assert.Empty(t, holdsOf(t, f.src, fs))
		assert.Equal(t, []string{"c:" + last}, holdsOf(t, f.dst, "q/"+fs))
	}
}

// Finish leaves the step holds of a send in flight (another client's, on
// a source) where they are, as StepCompleted does.
func TestBatchFinishKeepsSendsInFlight(t *testing.T) {
	f := newBatchFixture(t, 1)
	fs := f.fss[0]
	a, bv := f.v[0]["a"], f.v[0]["b"]
	b := &Batch{}
	f.step(t, fs, &a, bv, b)
	// Another client sends a->b again and is still reading.
	other, err := f.s.Send(ctx, SendRequest{FS: fs, From: &a, To: bv})
	require.NoError(t, err)
	require.Empty(t, b.Finish(ctx))
	step := StepHoldTag(f.job)
	assert.ElementsMatch(t, []string{"a:" + step, "b:" + step}, holdsOf(t, f.src, fs), "the send in flight keeps its holds")
	require.NoError(t, other.Close())
}

// failHold fails every HoldAll.
type failHold struct{ zfs.ZFS }

func (failHold) HoldAll(context.Context, string, []zfs.VersionRef) error {
	return errors.New("hold failed (test)")
}

// A receiver whose put-off hold fails releases nothing: its older
// snapshots keep their last-received holds, and Finish says so.
func TestBatchFinishHoldFails(t *testing.T) {
	f := newBatchFixture(t, 2)
	b := &Batch{}
	for i, fs := range f.fss {
		a := f.v[i]["a"]
		f.step(t, fs, &a, f.v[i]["b"], b)
	}
	f.r.ZFS = failHold{f.rc}
	failed := b.Finish(ctx)
	require.Len(t, failed, 2, "both filesystems of the failed hold")
	for _, fs := range f.fss {
		require.ErrorContains(t, failed[fs], "hold failed (test)", fs)
	}
	last := LastReceivedHoldTag(f.job)
	for _, fs := range f.fss {
		assert.Equal(t, []string{"a:" + last}, holdsOf(t, f.dst, "q/"+fs), "receiver %s keeps its older hold", fs)
		assert.Empty(t, holdsOf(t, f.src, fs), "the sender released all the same")
	}
	// The receiver forgot its listing: a receive now asks zfs.
	_, _, known := f.r.listed.lookup(zfs.MustDatasetPath("q/p/fs00"))
	assert.False(t, known)
}

// A step that comes with a batch already finished (a wrapper's late call)
// does its bookkeeping at once: nothing waits for a Finish that is over.
func TestBatchAfterFinish(t *testing.T) {
	f := newBatchFixture(t, 1)
	fs := f.fss[0]
	b := &Batch{}
	require.Empty(t, b.Finish(ctx))
	a := f.v[0]["a"]
	f.step(t, fs, &a, f.v[0]["b"], b)
	assert.Empty(t, holdsOf(t, f.src, fs), "sender released at once")
	assert.Equal(t, []string{"b:" + LastReceivedHoldTag(f.job)}, holdsOf(t, f.dst, "q/"+fs), "receiver moved its hold at once")
}

// A receive that finds the listing forgotten (another filesystem's receive
// failed meanwhile: the ssh carrying it died) goes to the batch all the
// same. Before, it moved the hold at once, and Finish then put the hold
// of the filesystem's earlier step back on that older snapshot: two
// last-received holds after a completed run (the simulator's
// testdata/found/end-of-run-batch-hold-leak.fail).
func TestBatchReceiveAfterForgottenListing(t *testing.T) {
	f := newBatchFixture(t, 2)
	fs, other := f.fss[0], f.fss[1]
	require.NoError(t, f.src.WriteData(zfs.MustDatasetPath(fs), 7, 1))
	require.NoError(t, f.src.Snapshot(ctx, zfs.MustDatasetPath(fs), "c"))
	f.list(t)
	a, bv, c := f.v[0]["a"], f.v[0]["b"], f.v[0]["c"]
	b := &Batch{}
	f.step(t, fs, &a, bv, b)
	oa := f.v[1]["a"]
	bctx := WithBatch(ctx, b)
	require.Error(t, f.r.Receive(bctx, ReceiveRequest{FS: other, From: &oa, To: f.v[1]["b"]}, strings.NewReader("not a stream")))
	_, _, known := f.r.listed.lookup(zfs.MustDatasetPath("q/" + fs))
	require.False(t, known, "a failed receive forgets the listing")
	f.step(t, fs, &bv, c, b)
	require.Empty(t, b.Finish(ctx))
	last := LastReceivedHoldTag(f.job)
	assert.Equal(t, []string{"c:" + last}, holdsOf(t, f.dst, "q/"+fs), "only the newest snapshot keeps the hold")
	assert.Equal(t, []string{"a:" + last}, holdsOf(t, f.dst, "q/"+other), "the failed filesystem keeps its own")
	assert.Empty(t, holdsOf(t, f.src, fs))
}

// A Send of the run that takes step holds again after an earlier step of
// the filesystem put their release off keeps them: its step did not
// complete, and its holds stay as they would without the batch.
func TestBatchSendRetakesStepHolds(t *testing.T) {
	f := newBatchFixture(t, 1)
	fs := f.fss[0]
	a, bv := f.v[0]["a"], f.v[0]["b"]
	b := &Batch{}
	f.step(t, fs, &a, bv, b)
	stream, err := f.s.Send(WithBatch(ctx, b), SendRequest{FS: fs, From: &a, To: bv})
	require.NoError(t, err)
	require.NoError(t, stream.Close()) // the receive failed: no StepCompleted
	require.Empty(t, b.Finish(ctx))
	step := StepHoldTag(f.job)
	assert.ElementsMatch(t, []string{"a:" + step, "b:" + step}, holdsOf(t, f.src, fs), "the failed step's holds stay")
}
