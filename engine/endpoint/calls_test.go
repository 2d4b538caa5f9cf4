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
// sender a look-up of the filesystem (for the send policy), one hold of
// both of its snapshots, the send, and at completion a listing, the
// cursor, one release of the older holds and one destroy;
// on the receiver the receive, a listing to check it, the last-received
// hold and one release of the previous one.
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

	fs := "p/fs00"
	v := map[string]zfs.FilesystemVersion{}
	for _, x := range list[1].Versions {
		v[x.Name] = x
	}
	step := func(from *zfs.FilesystemVersion, to zfs.FilesystemVersion, last bool) {
		t.Helper()
		req := SendRequest{FS: fs, From: from, To: to}
		stream, err := s.Send(ctx, req)
		require.NoError(t, err)
		require.NoError(t, r.Receive(ctx, ReceiveRequest{FS: fs, From: from, To: to, Full: from == nil}, stream))
		require.NoError(t, stream.Close())
		require.NoError(t, s.StepCompleted(ctx, req, last))
	}
	a, b := v["a"], v["b"]
	step(nil, a, false)
	sc.take()
	rc.take()
	step(&a, b, false)
	// ListFilesystems: the send policy looks up the filesystem's
	// encryption (Sender.sendArgs).
	assert.Equal(t, map[string]int{"ListFilesystems": 1, "HoldAll": 1, "Send": 1, "ListVersions": 1, "Bookmark": 1, "ReleaseAll": 1, "Destroy": 1}, sc.take(), "sender, incremental step")
	assert.Equal(t, map[string]int{"Receive": 1, "ListVersions": 1, "Hold": 1, "ReleaseAll": 1}, rc.take(), "receiver, incremental step")
}
