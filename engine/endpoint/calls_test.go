package endpoint

import (
	"context"
	"fmt"
	"io"
	"maps"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// callCounter counts every zfs.ZFS call (each is a zfs process on a real
// host, a receive or send the whole stream's).
type callCounter struct {
	z     zfs.ZFS
	mu    sync.Mutex
	calls map[string]int
}

func (c *callCounter) count(m string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[m]++
}

// take returns the calls so far and starts counting anew.
func (c *callCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := maps.Clone(c.calls)
	clear(c.calls)
	return out
}

func (c *callCounter) ListPools(ctx context.Context) ([]zfs.DatasetPath, error) {
	c.count("ListPools")
	return c.z.ListPools(ctx)
}
func (c *callCounter) ListFilesystems(ctx context.Context, root zfs.DatasetPath) ([]zfs.FilesystemInfo, error) {
	c.count("ListFilesystems")
	return c.z.ListFilesystems(ctx, root)
}
func (c *callCounter) ListVersions(ctx context.Context, fs zfs.DatasetPath) ([]zfs.FilesystemVersion, error) {
	c.count("ListVersions")
	return c.z.ListVersions(ctx, fs)
}
func (c *callCounter) ListTree(ctx context.Context, root zfs.DatasetPath) ([]zfs.Listing, error) {
	c.count("ListTree")
	return c.z.ListTree(ctx, root)
}
func (c *callCounter) CreatePlaceholder(ctx context.Context, fs zfs.DatasetPath, o zfs.PlaceholderOptions) error {
	c.count("CreatePlaceholder")
	return c.z.CreatePlaceholder(ctx, fs, o)
}
func (c *callCounter) SetUserProperty(ctx context.Context, fs zfs.DatasetPath, p, v string) error {
	c.count("SetUserProperty")
	return c.z.SetUserProperty(ctx, fs, p, v)
}
func (c *callCounter) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	c.count("Snapshot")
	return c.z.Snapshot(ctx, fs, name)
}
func (c *callCounter) Bookmark(ctx context.Context, from zfs.VersionRef, name string) error {
	c.count("Bookmark")
	return c.z.Bookmark(ctx, from, name)
}
func (c *callCounter) Destroy(ctx context.Context, vs []zfs.VersionRef) error {
	c.count("Destroy")
	return c.z.Destroy(ctx, vs)
}
func (c *callCounter) Rollback(ctx context.Context, s zfs.VersionRef, r bool) error {
	c.count("Rollback")
	return c.z.Rollback(ctx, s, r)
}
func (c *callCounter) Hold(ctx context.Context, s zfs.VersionRef, tag string) error {
	c.count("Hold")
	return c.z.Hold(ctx, s, tag)
}
func (c *callCounter) Release(ctx context.Context, s zfs.VersionRef, tag string) error {
	c.count("Release")
	return c.z.Release(ctx, s, tag)
}
func (c *callCounter) HoldAll(ctx context.Context, tag string, s []zfs.VersionRef) error {
	c.count("HoldAll")
	return c.z.HoldAll(ctx, tag, s)
}
func (c *callCounter) ReleaseAll(ctx context.Context, tag string, s []zfs.VersionRef) error {
	c.count("ReleaseAll")
	return c.z.ReleaseAll(ctx, tag, s)
}
func (c *callCounter) Holds(ctx context.Context, s []zfs.VersionRef) (map[string][]string, error) {
	c.count("Holds")
	return c.z.Holds(ctx, s)
}
func (c *callCounter) Send(ctx context.Context, a zfs.SendArgs) (io.ReadCloser, error) {
	c.count("Send")
	return c.z.Send(ctx, a)
}
func (c *callCounter) SendSize(ctx context.Context, a zfs.SendArgs) (int64, error) {
	c.count("SendSize")
	return c.z.SendSize(ctx, a)
}
func (c *callCounter) Receive(ctx context.Context, fs zfs.DatasetPath, r io.Reader, o zfs.RecvOptions) error {
	c.count("Receive")
	return c.z.Receive(ctx, fs, r, o)
}
func (c *callCounter) ReadStreamHeader(ctx context.Context, r io.Reader) (zfs.StreamHeader, io.Reader, error) {
	c.count("ReadStreamHeader")
	return c.z.ReadStreamHeader(ctx, r)
}
func (c *callCounter) AbortReceive(ctx context.Context, fs zfs.DatasetPath) error {
	c.count("AbortReceive")
	return c.z.AbortReceive(ctx, fs)
}

var _ zfs.ZFS = (*callCounter)(nil)

// The zfs calls (processes on a real host) the endpoints make: one listing
// per root whatever the number of filesystems; per incremental step on the
// sender one hold of both of its snapshots, the send, and at completion a
// listing, the cursor, one release of the older holds and one destroy (the
// send policy's look-up of the filesystem comes from the listing); on the
// receiver the receive, the last-received hold and one release of the
// previous one (ReadStreamHeader runs no process: it reads the stream's
// header in the receiver, which then needs no listing after the receive).
// A first full step into a new filesystem whose parents exist asks zfs
// nothing before its receive either.
func TestCallsPerListingAndStep(t *testing.T) {
	src := zfsmodel.New(zfsmodel.Options{Seed: 1})
	dst := zfsmodel.New(zfsmodel.Options{Seed: 2})
	require.NoError(t, src.CreatePool("p"))
	require.NoError(t, dst.CreatePool("q"))
	const n = 20
	for i := range n {
		fs := zfs.MustDatasetPath(fmt.Sprintf("p/fs%02d", i))
		require.NoError(t, src.CreateFilesystem(fs, zfsmodel.FSOptions{}))
		for _, s := range []string{"a", "b", "c"} {
			require.NoError(t, src.WriteData(fs, int64(i), 1))
			require.NoError(t, src.Snapshot(ctx, fs, s))
		}
	}
	require.NoError(t, src.Snapshot(ctx, zfs.MustDatasetPath("p"), "r"))
	sc, rc := &callCounter{z: src, calls: map[string]int{}}, &callCounter{z: dst, calls: map[string]int{}}
	job := MustJobID("j")
	s := &Sender{ZFS: sc, Job: job, Roots: []zfs.DatasetPath{zfs.MustDatasetPath("p")}, Filter: func(zfs.DatasetPath) bool { return true }}
	r := &Receiver{ZFS: rc, Job: job, Root: zfs.MustDatasetPath("q")}

	list, err := s.ListFilesystems(ctx)
	require.NoError(t, err)
	require.Len(t, list, n+1)
	assert.Equal(t, map[string]int{"ListTree": 1}, sc.take(), "sender listing of %d filesystems", n)
	_, err = r.ListFilesystems(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"ListTree": 1}, rc.take(), "receiver listing")

	v := map[string]zfs.FilesystemVersion{}
	for _, x := range list[1].Versions {
		v[x.Name] = x
	}
	step := func(fs string, from *zfs.FilesystemVersion, to zfs.FilesystemVersion, last bool) {
		t.Helper()
		req := SendRequest{FS: fs, From: from, To: to}
		stream, err := s.Send(ctx, req)
		require.NoError(t, err)
		require.NoError(t, r.Receive(ctx, ReceiveRequest{FS: fs, From: from, To: to, Full: from == nil}, stream))
		require.NoError(t, stream.Close())
		require.NoError(t, s.StepCompleted(ctx, req, last))
	}
	a, b, c := v["a"], v["b"], v["c"]
	// Size estimates come from the listing's sizes, without a dry run.
	for _, from := range []*zfs.FilesystemVersion{nil, &a} {
		est, err := s.SendSize(ctx, SendRequest{FS: "p/fs00", From: from, To: b})
		require.NoError(t, err)
		assert.Empty(t, sc.take(), "calls of a size estimate")
		dry, err := src.SendSize(ctx, zfs.SendArgs{FS: zfs.MustDatasetPath("p/fs00"), From: from, To: b})
		require.NoError(t, err)
		assert.InDelta(t, dry, est, float64(dry)/2, "estimate from the listing vs the dry run (from %v)", from)
	}
	// q/p exists: the full step's placeholder; q/p/fs00 below it then
	// needs none.
	step("p", nil, list[0].Versions[0], true)
	sc.take()
	rc.take()
	step("p/fs00", nil, a, false)
	assert.Equal(t, map[string]int{"HoldAll": 1, "Send": 1, "Bookmark": 1}, sc.take(), "sender, first full step")
	assert.Equal(t, map[string]int{"ReadStreamHeader": 1, "Receive": 1, "Hold": 1}, rc.take(), "receiver, first full step")
	step("p/fs00", &a, b, false)
	assert.Equal(t, map[string]int{"HoldAll": 1, "Send": 1, "Bookmark": 1, "ReleaseAll": 1, "Destroy": 1}, sc.take(), "sender, incremental step")
	assert.Equal(t, map[string]int{"ReadStreamHeader": 1, "Receive": 1, "Hold": 1, "ReleaseAll": 1}, rc.take(), "receiver, incremental step")
	step("p/fs00", &b, c, true)
	sc.take()
	rc.take()
	// The sender's bookkeeping followed its steps without listings: the
	// cursor at @c alone, no step holds or bookmarks left.
	abs, err := ListAbstractions(ctx, src, []zfs.DatasetPath{zfs.MustDatasetPath("p/fs00")}, AbstractionFilter{})
	require.NoError(t, err)
	var owned []string
	for _, x := range abs {
		owned = append(owned, x.Kind.String()+" "+x.Version.String())
	}
	assert.Equal(t, []string{ReplicationCursorV2.String() + " p/fs00#" + CursorBookmarkName(c.GUID, job)}, owned)
	// The last-received hold moved with each step, though no listing
	// followed the receives: only @c carries it.
	got, err := dst.ListVersions(ctx, zfs.MustDatasetPath("q/p/fs00"))
	require.NoError(t, err)
	for _, x := range got {
		holds, err := dst.Holds(ctx, []zfs.VersionRef{x.Ref(zfs.MustDatasetPath("q/p/fs00"))})
		require.NoError(t, err)
		if x.Name == "c" {
			assert.Equal(t, []string{LastReceivedHoldTag(job)}, holds[x.Name], "@%s", x.Name)
		} else {
			assert.Empty(t, holds[x.Name], "@%s", x.Name)
		}
	}
}

// A receiver's listing may be behind what is on disk (an administrator
// created or destroyed something since). What it remembers only spares
// questions whose stale answer ZFS refuses: the step fails, nothing is
// lost, the receiver forgets its listing, and the step's retry asks zfs.
func TestReceiverListingBehind(t *testing.T) {
	src := zfsmodel.New(zfsmodel.Options{Seed: 1})
	dst := zfsmodel.New(zfsmodel.Options{Seed: 2})
	require.NoError(t, src.CreatePool("p"))
	require.NoError(t, dst.CreatePool("q"))
	for _, fs := range []string{"p/a", "p/x/y"} {
		require.NoError(t, src.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{Parents: true}))
		require.NoError(t, src.WriteData(zfs.MustDatasetPath(fs), 1, 1))
		require.NoError(t, src.Snapshot(ctx, zfs.MustDatasetPath(fs), "s"))
	}
	job := MustJobID("j")
	s := &Sender{ZFS: src, Job: job, Roots: []zfs.DatasetPath{zfs.MustDatasetPath("p")}, Filter: func(zfs.DatasetPath) bool { return true }}
	r := &Receiver{ZFS: dst, Job: job, Root: zfs.MustDatasetPath("q")}
	list, err := s.ListFilesystems(ctx)
	require.NoError(t, err)
	snap := map[string]zfs.FilesystemVersion{}
	for _, f := range list {
		if len(f.Versions) > 0 {
			snap[f.Path] = f.Versions[0]
		}
	}
	receive := func(fs string) error {
		t.Helper()
		stream, err := s.Send(ctx, SendRequest{FS: fs, To: snap[fs]})
		require.NoError(t, err)
		defer stream.Close()
		return r.Receive(ctx, ReceiveRequest{FS: fs, To: snap[fs], Full: true}, stream)
	}

	// q/p/x is in the listing, then destroyed: the listing says the
	// parent of q/p/x/y exists, the receive fails; its retry makes the
	// placeholder.
	require.NoError(t, dst.CreateFilesystem(zfs.MustDatasetPath("q/p/x"), zfsmodel.FSOptions{Parents: true}))
	_, err = r.ListFilesystems(ctx)
	require.NoError(t, err)
	require.NoError(t, dst.DestroyFilesystem(zfs.MustDatasetPath("q/p/x"), true))
	assert.ErrorIs(t, receive("p/x/y"), zfs.ErrDatasetNotExist)
	require.NoError(t, receive("p/x/y"))
	info, err := dst.Info(zfs.MustDatasetPath("q/p/x"))
	require.NoError(t, err)
	assert.True(t, info.Placeholder, "q/p/x is a placeholder")

	// q/p/a is created after the listing: the listing says it is absent,
	// so the full receive goes without -F and zfs refuses to overwrite it.
	_, err = r.ListFilesystems(ctx)
	require.NoError(t, err)
	require.NoError(t, dst.CreateFilesystem(zfs.MustDatasetPath("q/p/a"), zfsmodel.FSOptions{}))
	require.NoError(t, dst.WriteData(zfs.MustDatasetPath("q/p/a"), 7, 1))
	require.Error(t, receive("p/a"))
	vs, err := dst.ListVersions(ctx, zfs.MustDatasetPath("q/p/a"))
	require.NoError(t, err)
	assert.Empty(t, vs, "q/p/a untouched")
}

// stallingList runs hook inside the next ListTree, after the listing was
// taken and before it returns: a step that changes the filesystem while
// a listing is on its way.
type stallingList struct {
	zfs.ZFS
	hook func()
}

func (s *stallingList) ListTree(ctx context.Context, root zfs.DatasetPath) ([]zfs.Listing, error) {
	l, err := s.ZFS.ListTree(ctx, root)
	if h := s.hook; h != nil {
		s.hook = nil
		h()
	}
	return l, err
}

// A listing taken before a step changed the filesystem and returned after
// is not what the sender then knows of it: the next step's completion
// asks zfs, and no cursor or step hold is left behind.
func TestSenderListingRacesStep(t *testing.T) {
	src := zfsmodel.New(zfsmodel.Options{Seed: 1})
	dst := zfsmodel.New(zfsmodel.Options{Seed: 2})
	require.NoError(t, src.CreatePool("p"))
	require.NoError(t, dst.CreatePool("q"))
	fs := zfs.MustDatasetPath("p/fs")
	require.NoError(t, src.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	for i, name := range []string{"a", "b", "c"} {
		require.NoError(t, src.WriteData(fs, int64(i), 1))
		require.NoError(t, src.Snapshot(ctx, fs, name))
	}
	job := MustJobID("j")
	sl := &stallingList{ZFS: src}
	s := &Sender{ZFS: sl, Job: job, Roots: []zfs.DatasetPath{zfs.MustDatasetPath("p")}, Filter: func(p zfs.DatasetPath) bool { return p == fs }}
	r := &Receiver{ZFS: dst, Job: job, Root: zfs.MustDatasetPath("q")}
	list, err := s.ListFilesystems(ctx)
	require.NoError(t, err)
	v := map[string]zfs.FilesystemVersion{}
	for _, x := range list[0].Versions {
		v[x.Name] = x
	}
	a, b, c := v["a"], v["b"], v["c"]
	step := func(from *zfs.FilesystemVersion, to zfs.FilesystemVersion) {
		t.Helper()
		req := SendRequest{FS: fs.String(), From: from, To: to}
		stream, err := s.Send(ctx, req)
		require.NoError(t, err)
		require.NoError(t, r.Receive(ctx, ReceiveRequest{FS: fs.String(), From: from, To: to, Full: from == nil}, stream))
		require.NoError(t, stream.Close())
		require.NoError(t, s.StepCompleted(ctx, req, false))
	}
	step(nil, a)
	// The listing sees the cursor at @a; the step to @b runs before it
	// returns.
	sl.hook = func() { step(&a, b) }
	_, err = s.ListFilesystems(ctx)
	require.NoError(t, err)
	req := SendRequest{FS: fs.String(), From: &b, To: c}
	stream, err := s.Send(ctx, req)
	require.NoError(t, err)
	require.NoError(t, r.Receive(ctx, ReceiveRequest{FS: fs.String(), From: &b, To: c}, stream))
	require.NoError(t, stream.Close())
	require.NoError(t, s.StepCompleted(ctx, req, true))

	abs, err := ListAbstractions(ctx, src, []zfs.DatasetPath{fs}, AbstractionFilter{})
	require.NoError(t, err)
	var owned []string
	for _, x := range abs {
		owned = append(owned, x.Kind.String()+" "+x.Version.String())
	}
	assert.Equal(t, []string{ReplicationCursorV2.String() + " p/fs#" + CursorBookmarkName(c.GUID, job)}, owned)
}
