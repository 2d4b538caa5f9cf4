package platformtest

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsreal"
	"zrepl.dev/zrepl/zfsreal/zfsrealtest"
)

// cancelAfter is a counting zfsreal.StreamWrapper that cancels once at
// least limit bytes went by.
type cancelAfter struct {
	progressWrapper
	limit  int64
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelAfter) Passed(n int64) {
	if c.n.Add(n) >= c.limit {
		c.once.Do(c.cancel)
	}
}

// TestSpliceOnRealZFS: zfsreal's spliced send into receive on real ZFS.
// Cancelled part way, zfs recv saves the partial state and no child is
// left; the resumed send, spliced too, completes it with the sender's
// GUID and content; a send that fails is reported by Receive.
func TestSpliceOnRealZFS(t *testing.T) {
	RequireZFS(t)
	pool := zfsrealtest.NewPool(t, 1<<30)
	z := zfsreal.New(zfsreal.Options{})
	h := zfsrealtest.NewHarness(t, pool, z)
	root := h.NewRoot(t)
	ctx := context.Background()
	src, dst := zfs.MustDatasetPath(root.String()+"/src"), zfs.MustDatasetPath(root.String()+"/dst")
	require.NoError(t, h.CreateFilesystem(ctx, src, false))
	require.NoError(t, h.WriteData(ctx, src, 7, 32<<20))
	require.NoError(t, z.Snapshot(ctx, src, "s"))
	vs, err := z.ListVersions(ctx, src)
	require.NoError(t, err)
	s := vs[0]

	// Cancelled after 4 MiB went by.
	r, err := z.Send(ctx, zfs.SendArgs{FS: src, To: s})
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &cancelAfter{progressWrapper: progressWrapper{r: r, n: new(atomic.Int64)}, limit: 4 << 20, cancel: cancel}
	err = z.Receive(cctx, dst, w, zfs.RecvOptions{Resumable: true})
	require.NoError(t, r.Close())
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, zfs.ErrPartialReceive)
	moved := w.n.Load()
	assert.GreaterOrEqual(t, moved, int64(4<<20))
	assert.Less(t, moved, int64(32<<20), "cancelled before the end")
	infos, err := z.ListFilesystems(ctx, dst)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	tok := infos[0].ReceiveResumeToken
	require.NotEmpty(t, tok, "partial state saved")

	// Resumed from the token, bare stream.
	r, err = z.Send(ctx, zfs.SendArgs{FS: src, To: s, ResumeToken: tok})
	require.NoError(t, err)
	require.NoError(t, z.Receive(ctx, dst, r, zfs.RecvOptions{Resumable: true}))
	require.NoError(t, r.Close())
	got, err := z.ListVersions(ctx, dst)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, s.GUID, got[0].GUID)
	a, err := h.Checksum(ctx, s.Ref(src))
	require.NoError(t, err)
	b, err := h.Checksum(ctx, got[0].Ref(dst))
	require.NoError(t, err)
	assert.Equal(t, a, b, "content after the resumed receive")

	// An incremental onto a target that is not its source: zfs recv
	// refuses; the send it stopped reading is ended by Close.
	require.NoError(t, h.WriteData(ctx, src, 8, 1<<20))
	require.NoError(t, z.Snapshot(ctx, src, "t"))
	require.NoError(t, h.WriteData(ctx, src, 9, 1<<20))
	require.NoError(t, z.Snapshot(ctx, src, "u"))
	vs, err = z.ListVersions(ctx, src)
	require.NoError(t, err)
	from := vs[1] // t, which dst does not have
	r, err = z.Send(ctx, zfs.SendArgs{FS: src, From: &from, To: vs[2]})
	require.NoError(t, err)
	err = z.Receive(ctx, dst, &progressWrapper{r: r, n: new(atomic.Int64)}, zfs.RecvOptions{Resumable: true})
	require.NoError(t, r.Close())
	var ze *zfs.Error
	require.True(t, errors.As(err, &ze), "%v", err)
	assert.Equal(t, "recv", ze.Op)
	assert.NotEmpty(t, ze.Msg, "zfs recv's words")
	_, err = io.ReadAll(r)
	assert.Error(t, err, "the stream is used up")
}
