package zfsreal_test

// Tests of zfsreal's own behaviour on real ZFS, beyond the conformance
// suite: streams cut short from either end, cancellation, batching. They
// skip without real ZFS, like TestConformance.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsreal"
	"zrepl.dev/zrepl/zfsreal/zfsrealtest"
)

type realEnv struct {
	t    *testing.T
	ctx  context.Context
	z    *zfsreal.CLI
	h    *zfsrealtest.Harness
	root zfs.DatasetPath
}

func newRealEnv(t *testing.T, opts zfsreal.Options) *realEnv {
	if why := zfsrealtest.Usable(); why != "" {
		if os.Getenv("ZREPL_PLATFORMTEST") != "" {
			t.Fatalf("real ZFS required but not usable: %s", why)
		}
		t.Skipf("real ZFS not usable (%s)", why)
	}
	pool := zfsrealtest.NewPool(t, 512<<20)
	z := zfsreal.New(opts)
	h := zfsrealtest.NewHarness(t, pool, z)
	return &realEnv{t: t, ctx: context.Background(), z: z, h: h, root: h.NewRoot(t)}
}

// fsWithData creates root/name holding size bytes and snapshots it @s.
func (e *realEnv) fsWithData(name string, size int) (zfs.DatasetPath, zfs.FilesystemVersion) {
	e.t.Helper()
	fs, err := e.root.Join(name)
	require.NoError(e.t, err)
	require.NoError(e.t, e.h.CreateFilesystem(e.ctx, fs, false))
	require.NoError(e.t, e.h.WriteData(e.ctx, fs, 1, size))
	require.NoError(e.t, e.z.Snapshot(e.ctx, fs, "s"))
	vs, err := e.z.ListVersions(e.ctx, fs)
	require.NoError(e.t, err)
	require.Len(e.t, vs, 1)
	return fs, vs[0]
}

// childCount counts this process's children, zombies included.
func childCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	me, n := os.Getpid(), 0
	for _, ent := range ents {
		if _, err := strconv.Atoi(ent.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(me) {
			n++
		}
	}
	return n
}

// TestRealSendClosedEarly: closing a send stream mid-way ends zfs send
// (no child left) and leaves the snapshot free to destroy.
func TestRealSendClosedEarly(t *testing.T) {
	e := newRealEnv(t, zfsreal.Options{})
	fs, s := e.fsWithData("src", 16<<20)
	r, err := e.z.Send(e.ctx, zfs.SendArgs{FS: fs, To: s})
	require.NoError(t, err)
	_, err = io.CopyN(io.Discard, r, 1<<20)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	assert.Equal(t, 0, childCount(t), "zfs children left after Close")
	require.NoError(t, e.z.Destroy(e.ctx, []zfs.VersionRef{s.Ref(fs)}))
}

// blockingReader passes r through until n bytes, then signals reached and
// blocks until release is closed (a stalled network stream).
type blockingReader struct {
	r       io.Reader
	n       int64
	reached chan struct{}
	release chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		select {
		case <-b.reached:
		default:
			close(b.reached)
		}
		<-b.release
		return 0, errors.New("stream abandoned")
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	k, err := b.r.Read(p)
	b.n -= int64(k)
	return k, err
}

// TestRealReceiveCancelResumes: cancelling a resumable receive while its
// stream stalls saves the partial state, which a resumed send completes.
func TestRealReceiveCancelResumes(t *testing.T) {
	e := newRealEnv(t, zfsreal.Options{})
	src, s := e.fsWithData("src", 16<<20)
	sink, err := e.root.Join("sink")
	require.NoError(t, err)
	require.NoError(t, e.h.CreateFilesystem(e.ctx, sink, false))
	dst, err := sink.Join("dst")
	require.NoError(t, err)

	stream, err := e.z.Send(e.ctx, zfs.SendArgs{FS: src, To: s})
	require.NoError(t, err)
	br := &blockingReader{r: stream, n: 4 << 20, reached: make(chan struct{}), release: make(chan struct{})}
	defer close(br.release)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error)
	go func() { done <- e.z.Receive(ctx, dst, br, zfs.RecvOptions{Resumable: true}) }()
	<-br.reached
	cancel()
	err = <-done
	require.NoError(t, stream.Close())
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, zfs.ErrPartialReceive, "cancelled resumable receive: %v", err)

	infos, err := e.z.ListFilesystems(e.ctx, sink)
	require.NoError(t, err)
	var token string
	for _, fi := range infos {
		if fi.Path == dst {
			token = fi.ReceiveResumeToken
		}
	}
	require.NotEmpty(t, token, "no resume token after the cancelled receive: %+v", infos)

	// The estimate of a resumed send (zfs prints the token's contents and
	// no total) is what is left, at most the whole stream.
	full, err := e.z.SendSize(e.ctx, zfs.SendArgs{FS: src, To: s})
	require.NoError(t, err)
	left, err := e.z.SendSize(e.ctx, zfs.SendArgs{FS: src, To: s, ResumeToken: token})
	require.NoError(t, err)
	assert.True(t, left > 0 && left <= full, "resumed estimate %d, full %d", left, full)
	t.Logf("send size: full %d, resumed %d", full, left)

	resumed, err := e.z.Send(e.ctx, zfs.SendArgs{FS: src, To: s, ResumeToken: token})
	require.NoError(t, err)
	require.NoError(t, e.z.Receive(e.ctx, dst, resumed, zfs.RecvOptions{Resumable: true}))
	require.NoError(t, resumed.Close())
	got, err := e.h.Checksum(e.ctx, s.Ref(dst))
	require.NoError(t, err)
	want, err := e.h.Checksum(e.ctx, s.Ref(src))
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, 0, childCount(t))
}

// TestRealDestroyBatches: with small batches, a held snapshot in one
// batch keeps only itself.
func TestRealDestroyBatches(t *testing.T) {
	e := newRealEnv(t, zfsreal.Options{MaxArgBytes: 64})
	fs, _ := e.fsWithData("fs", 1<<10)
	var refs []zfs.VersionRef
	for i := range 12 {
		name := fmt.Sprintf("snap%02d", i)
		require.NoError(t, e.z.Snapshot(e.ctx, fs, name))
		refs = append(refs, zfs.SnapshotRef(fs, name))
	}
	held := refs[5]
	require.NoError(t, e.z.Hold(e.ctx, held, "-keep"))
	holds, err := e.z.Holds(e.ctx, refs)
	require.NoError(t, err)
	assert.Equal(t, []string{"-keep"}, holds["snap05"])
	assert.Equal(t, []string{}, holds["snap04"])

	err = e.z.Destroy(e.ctx, refs)
	require.ErrorIs(t, err, zfs.ErrDatasetBusy)
	var ze *zfs.Error
	require.ErrorAs(t, err, &ze)
	assert.Equal(t, held.String(), ze.Dataset)
	vs, err := e.z.ListVersions(e.ctx, fs)
	require.NoError(t, err)
	var names []string
	for _, v := range vs {
		names = append(names, v.Name)
	}
	assert.Equal(t, []string{"s", "snap05"}, names)
	require.NoError(t, e.z.Release(e.ctx, held, "-keep"))
}
