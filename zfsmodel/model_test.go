package zfsmodel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var bg = context.Background()

// tb is what the helpers need of a test: both *testing.T and *rapid.T
// have it.
type tb interface {
	require.TestingT
	Helper()
	Fatalf(format string, args ...any)
}

// world is a model with pools srcp and dstp and a filesystem srcp/fs with
// snapshots s1 and s2 (data written before each).
type world struct {
	t   tb
	m   *Model
	src zfs.DatasetPath
}

func newWorld(t tb) *world {
	w := &world{t: t, m: New(Options{Seed: 7}), src: zfs.MustDatasetPath("srcp/fs")}
	require.NoError(t, w.m.CreatePool("srcp"))
	require.NoError(t, w.m.CreatePool("dstp"))
	require.NoError(t, w.m.CreateFilesystem(w.src, FSOptions{}))
	require.NoError(t, w.m.WriteData(w.src, 1, 4))
	require.NoError(t, w.m.Snapshot(bg, w.src, "s1"))
	require.NoError(t, w.m.WriteData(w.src, 2, 3))
	require.NoError(t, w.m.Snapshot(bg, w.src, "s2"))
	return w
}

func (w *world) v(fs zfs.DatasetPath, name string) zfs.FilesystemVersion {
	vs, err := w.m.ListVersions(bg, fs)
	require.NoError(w.t, err)
	for _, v := range vs {
		if v.Name == name {
			return v
		}
	}
	w.t.Fatalf("%s: no version %s", fs, name)
	return zfs.FilesystemVersion{}
}

func readAll(t tb, m *Model, args zfs.SendArgs) []byte {
	s, err := m.Send(bg, args)
	require.NoError(t, err)
	defer s.Close()
	b, err := io.ReadAll(s)
	require.NoError(t, err)
	return b
}

func TestSendSizeIsExact(t *testing.T) {
	w := newWorld(t)
	s1, s2 := w.v(w.src, "s1"), w.v(w.src, "s2")
	require.NoError(t, w.m.Bookmark(bg, s1.Ref(w.src), "b1"))
	b1 := w.v(w.src, "b1")
	for _, args := range []zfs.SendArgs{
		{FS: w.src, To: s1},
		{FS: w.src, To: s2, Flags: zfs.SendFlags{Raw: true}},
		{FS: w.src, From: &s1, To: s2},
		{FS: w.src, From: &b1, To: s2},
	} {
		n, err := w.m.SendSize(bg, args)
		require.NoError(t, err)
		assert.Equal(t, n, int64(len(readAll(t, w.m, args))))
	}
	// Incremental streams carry only changed blocks.
	fullN, _ := w.m.SendSize(bg, zfs.SendArgs{FS: w.src, To: s2})
	incrN, _ := w.m.SendSize(bg, zfs.SendArgs{FS: w.src, From: &s1, To: s2})
	assert.Less(t, incrN, fullN)

	// And a resumed stream is exactly the rest.
	dst := zfs.MustDatasetPath("dstp/fs")
	full := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s2})
	err := w.m.Receive(bg, dst, bytes.NewReader(full[:len(full)/2]), zfs.RecvOptions{Resumable: true})
	require.ErrorIs(t, err, zfs.ErrPartialReceive)
	info, err := w.m.Info(dst)
	require.NoError(t, err)
	rargs := zfs.SendArgs{FS: w.src, To: s2, ResumeToken: info.ReceiveResumeToken}
	n, err := w.m.SendSize(bg, rargs)
	require.NoError(t, err)
	rest := readAll(t, w.m, rargs)
	assert.Equal(t, n, int64(len(rest)))
	assert.Less(t, n, int64(len(full)))
	require.NoError(t, w.m.Receive(bg, dst, bytes.NewReader(rest), zfs.RecvOptions{Resumable: true}))
	c1, _ := w.m.Checksum(s2.Ref(w.src))
	c2, _ := w.m.Checksum(s2.Ref(dst))
	assert.Equal(t, c1, c2)
}

func TestStreamsAreDeterministic(t *testing.T) {
	a, b := newWorld(t), newWorld(t)
	args := zfs.SendArgs{FS: a.src, To: a.v(a.src, "s2")}
	assert.Equal(t, readAll(t, a.m, args), readAll(t, b.m, args))
	other := New(Options{Seed: 8})
	require.NoError(t, other.CreatePool("srcp"))
	require.NoError(t, other.CreateFilesystem(a.src, FSOptions{}))
	require.NoError(t, other.Snapshot(bg, a.src, "s2"))
	assert.NotEqual(t, a.v(a.src, "s2").GUID, (&world{t: t, m: other}).v(a.src, "s2").GUID)
}

func TestFillBlockAnyRangeMatchesWholeBlock(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		key := rapid.Uint64().Draw(t, "key")
		mask := rapid.SampledFrom([]uint64{0, splitmix(3) | 1}).Draw(t, "mask")
		base := maskedBase(mask)
		whole := make([]byte, BlockSize)
		fillBlock(whole, key, mask, base, 0)
		off := rapid.IntRange(0, BlockSize-1).Draw(t, "off")
		n := rapid.IntRange(0, BlockSize-off).Draw(t, "n")
		part := make([]byte, n)
		fillBlock(part, key, mask, base, off)
		if !bytes.Equal(part, whole[off:off+n]) {
			t.Fatalf("bytes [%d,%d) differ from the whole block's", off, off+n)
		}
	})
}

func TestRawSumAdjust(t *testing.T) {
	mask := splitmix(99) | 1
	plain := make([]byte, BlockSize)
	enc := make([]byte, BlockSize)
	fillBlock(plain, 5, 0, baseBlock, 0)
	fillBlock(enc, 5, mask, maskedBase(mask), 0)
	assert.NotEqual(t, plain, enc)
	assert.Equal(t, crc32.Checksum(enc, castagnoli), crc32.Checksum(plain, castagnoli)^rawSumAdjust(mask))
	// Blocks with other keys differ in every 512-byte sector.
	other := make([]byte, BlockSize)
	fillBlock(other, 6, 0, baseBlock, 0)
	for s := 0; s < BlockSize; s += 512 {
		assert.NotEqual(t, plain[s:s+8], other[s:s+8], "sector at %d", s)
	}
}

func TestCorruptStreamIsRejectedPerRecord(t *testing.T) {
	w := newWorld(t)
	s2 := w.v(w.src, "s2")
	stream := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s2})
	hdrLen := len(stream) - 7*recLen - trailerLen
	require.Positive(t, hdrLen)
	// Corrupt the data of the fourth record: records 1-3 verify, the
	// fourth is caught by the fifth's checksum.
	bad := bytes.Clone(stream)
	bad[hdrLen+3*recLen+recHeaderLen+100] ^= 1
	dst := zfs.MustDatasetPath("dstp/fs")
	err := w.m.Receive(bg, dst, bytes.NewReader(bad), zfs.RecvOptions{Resumable: true})
	require.ErrorIs(t, err, zfs.ErrPartialReceive)
	info, err := w.m.Info(dst)
	require.NoError(t, err)
	tok, err := resumetoken.Decode(info.ReceiveResumeToken)
	require.NoError(t, err)
	assert.Equal(t, uint64(hdrLen+3*recLen), tok.Bytes, "three verified records")
	// The rest completes it with the right content.
	rest := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s2, ResumeToken: info.ReceiveResumeToken})
	require.NoError(t, w.m.Receive(bg, dst, bytes.NewReader(rest), zfs.RecvOptions{}))
	c1, _ := w.m.Checksum(s2.Ref(w.src))
	c2, _ := w.m.Checksum(s2.Ref(dst))
	assert.Equal(t, c1, c2)

	// A corrupt trailer fails a non-resumable receive and leaves nothing.
	bad = bytes.Clone(stream)
	bad[len(bad)-1] ^= 1
	dst2 := zfs.MustDatasetPath("dstp/fs2")
	err = w.m.Receive(bg, dst2, bytes.NewReader(bad), zfs.RecvOptions{})
	require.Error(t, err)
	assert.Equal(t, "cannot receive new filesystem stream: invalid stream (checksum mismatch)", err.(*zfs.Error).Msg)
	_, err = w.m.Info(dst2)
	assert.ErrorIs(t, err, zfs.ErrDatasetNotExist)

	// A corrupt header is refused before anything is created.
	bad = bytes.Clone(stream)
	bad[20] ^= 1
	err = w.m.Receive(bg, dst2, bytes.NewReader(bad), zfs.RecvOptions{Resumable: true})
	assert.Equal(t, "cannot receive: invalid stream (header checksum mismatch)", err.(*zfs.Error).Msg)
	_, err = w.m.Info(dst2)
	assert.ErrorIs(t, err, zfs.ErrDatasetNotExist)

	// Garbage is not a stream at all.
	err = w.m.Receive(bg, dst2, bytes.NewReader([]byte("hello, this is not a stream")), zfs.RecvOptions{})
	assert.Equal(t, "cannot receive: invalid stream (bad magic number)", err.(*zfs.Error).Msg)
	err = w.m.Receive(bg, dst2, bytes.NewReader(nil), zfs.RecvOptions{})
	assert.Equal(t, "cannot receive: failed to read from stream", err.(*zfs.Error).Msg)
}

func TestFaultHooks(t *testing.T) {
	w := newWorld(t)
	s2 := w.v(w.src, "s2")
	boom := errors.New("boom")
	require.NoError(t, w.m.FailNext("Send", 2, boom))
	for i := 0; i < 2; i++ {
		_, err := w.m.Send(bg, zfs.SendArgs{FS: w.src, To: s2})
		assert.ErrorIs(t, err, boom)
	}
	readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s2})
	assert.Error(t, w.m.FailNext("Sned", 1, boom))
	assert.Error(t, w.m.FailNext("Send", 1, nil))
	require.NoError(t, w.m.FailNext("Snapshot", 1, boom))
	assert.ErrorIs(t, w.m.Snapshot(bg, w.src, "x"), boom)
	require.NoError(t, w.m.Snapshot(bg, w.src, "x"))

	// A cut stream: the reader gets ErrStreamCut after exactly N bytes.
	require.NoError(t, w.m.CutNextSend(1000))
	s, err := w.m.Send(bg, zfs.SendArgs{FS: w.src, To: s2})
	require.NoError(t, err)
	b, err := io.ReadAll(s)
	assert.ErrorIs(t, err, ErrStreamCut)
	assert.Len(t, b, 1000)
	require.NoError(t, s.Close())

	// Receiving a cut stream leaves resumable state; the next (uncut)
	// send resumes it.
	require.NoError(t, w.m.CutNextSend(3*recLen))
	s, err = w.m.Send(bg, zfs.SendArgs{FS: w.src, To: s2})
	require.NoError(t, err)
	dst := zfs.MustDatasetPath("dstp/fs")
	err = w.m.Receive(bg, dst, s, zfs.RecvOptions{Resumable: true})
	var ze *zfs.Error
	require.ErrorAs(t, err, &ze)
	assert.Equal(t, zfs.ErrPartialReceive, ze.Kind)
	assert.ErrorIs(t, err, ErrStreamCut)
	info, _ := w.m.Info(dst)
	rest := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s2, ResumeToken: info.ReceiveResumeToken})
	require.NoError(t, w.m.Receive(bg, dst, bytes.NewReader(rest), zfs.RecvOptions{Resumable: true}))
}

func TestStreamCloseAndCancel(t *testing.T) {
	w := newWorld(t)
	s2 := w.v(w.src, "s2")
	s, err := w.m.Send(bg, zfs.SendArgs{FS: w.src, To: s2})
	require.NoError(t, err)
	buf := make([]byte, 10)
	_, err = s.Read(buf)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	_, err = s.Read(buf)
	assert.Error(t, err)

	ctx, cancel := context.WithCancel(bg)
	s, err = w.m.Send(ctx, zfs.SendArgs{FS: w.src, To: s2})
	require.NoError(t, err)
	_, err = s.Read(buf)
	require.NoError(t, err)
	cancel()
	_, err = s.Read(buf)
	assert.ErrorIs(t, err, context.Canceled)

	// A receive cancelled before it starts reads nothing and creates
	// nothing (TestReceiveCancelWhileBlocked cancels one half way).
	ctx, cancel = context.WithCancel(bg)
	cancel()
	full := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s2})
	dst := zfs.MustDatasetPath("dstp/fs")
	err = w.m.Receive(ctx, dst, bytes.NewReader(full), zfs.RecvOptions{Resumable: true})
	assert.ErrorIs(t, err, context.Canceled)
	_, err = w.m.Info(dst)
	assert.ErrorIs(t, err, zfs.ErrDatasetNotExist)
}

// TestSendStreamsLazily sends 512 MiB and checks the model allocated a small
// fraction of that: blocks are produced as they are read.
func TestSendStreamsLazily(t *testing.T) {
	m := New(Options{Seed: 1})
	require.NoError(t, m.CreatePool("p"))
	fs := zfs.MustDatasetPath("p/big")
	require.NoError(t, m.CreateFilesystem(fs, FSOptions{}))
	require.NoError(t, m.WriteData(fs, 1, (512<<20)/BlockSize))
	require.NoError(t, m.Snapshot(bg, fs, "s"))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s, err := m.Send(bg, zfs.SendArgs{FS: fs, To: zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "s"}})
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, s)
	require.NoError(t, err)
	runtime.ReadMemStats(&after)
	assert.Greater(t, n, int64(512<<20))
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8<<20), "bytes allocated to send 512 MiB")
}

func TestConcurrentSendsAndReceives(t *testing.T) {
	m := New(Options{Seed: 3})
	require.NoError(t, m.CreatePool("p"))
	require.NoError(t, m.CreatePool("q"))
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := 0; i < n; i++ {
		src := zfs.MustDatasetPath("p/fs" + string(rune('a'+i)))
		dst := zfs.MustDatasetPath("q/fs" + string(rune('a'+i)))
		require.NoError(t, m.CreateFilesystem(src, FSOptions{}))
		require.NoError(t, m.WriteData(src, int64(i), 5))
		require.NoError(t, m.Snapshot(bg, src, "s"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := m.Send(bg, zfs.SendArgs{FS: src, To: zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "s"}})
			if err != nil {
				errs <- err
				return
			}
			pr, pw := io.Pipe()
			go func() { _, err := io.Copy(pw, s); pw.CloseWithError(err) }()
			errs <- m.Receive(bg, dst, pr, zfs.RecvOptions{})
			pr.Close()
			s.Close()
			// Meanwhile others list and snapshot.
			_, err = m.ListFilesystems(bg, zfs.MustDatasetPath("q"))
			errs <- err
			errs <- m.Snapshot(bg, src, "t")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	for i := 0; i < n; i++ {
		src := zfs.MustDatasetPath("p/fs" + string(rune('a'+i)))
		dst := zfs.MustDatasetPath("q/fs" + string(rune('a'+i)))
		c1, err := m.Checksum(zfs.SnapshotRef(src, "s"))
		require.NoError(t, err)
		c2, err := m.Checksum(zfs.SnapshotRef(dst, "s"))
		require.NoError(t, err)
		assert.Equal(t, c1, c2)
	}
}

// TestReceiveIntoBusyTarget: a second receive into a filesystem with a
// receive in flight is refused.
func TestReceiveIntoBusyTarget(t *testing.T) {
	w := newWorld(t)
	s1 := w.v(w.src, "s1")
	full := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s1})
	dst := zfs.MustDatasetPath("dstp/fs")
	pr, pw := io.Pipe()
	done := make(chan error)
	go func() { done <- w.m.Receive(bg, dst, pr, zfs.RecvOptions{}) }()
	// The header is read and checked before the first block is.
	_, err := pw.Write(full[:len(full)-4*recLen])
	require.NoError(t, err)
	err = w.m.Receive(bg, dst, bytes.NewReader(full), zfs.RecvOptions{})
	assert.ErrorIs(t, err, zfs.ErrDatasetBusy)
	_, err = pw.Write(full[len(full)-4*recLen:])
	require.NoError(t, err)
	pw.Close()
	require.NoError(t, <-done)
}

func TestSaveLoadRoundTrip(t *testing.T) {
	w := newWorld(t)
	m := w.m
	s1, s2 := w.v(w.src, "s1"), w.v(w.src, "s2")
	require.NoError(t, m.Hold(bg, s1.Ref(w.src), "keep"))
	require.NoError(t, m.Bookmark(bg, s1.Ref(w.src), "b1"))
	enc := zfs.MustDatasetPath("srcp/enc")
	require.NoError(t, m.CreateFilesystem(enc, FSOptions{Encrypted: true}))
	require.NoError(t, m.CreatePlaceholder(bg, zfs.MustDatasetPath("dstp/ph"), zfs.PlaceholderOptions{}))
	require.NoError(t, m.SetUserProperty(bg, w.src, "zrepl:test", "v"))
	dst := zfs.MustDatasetPath("dstp/fs")
	full := readAll(t, m, zfs.SendArgs{FS: w.src, To: s2})
	require.ErrorIs(t, m.Receive(bg, dst, bytes.NewReader(full[:len(full)/2]), zfs.RecvOptions{Resumable: true}), zfs.ErrPartialReceive)
	require.NoError(t, m.UnloadKey(enc))

	var buf bytes.Buffer
	require.NoError(t, m.Save(&buf))
	saved := buf.String()
	m2, err := Load(&buf, Options{Clock: func() time.Time { return time.Unix(1e9, 0) }})
	require.NoError(t, err)
	var buf2 bytes.Buffer
	require.NoError(t, m2.Save(&buf2))
	assert.Equal(t, saved, buf2.String(), "save after load is identical")

	for _, root := range []string{"srcp", "dstp"} {
		l1, err := m.ListFilesystems(bg, zfs.MustDatasetPath(root))
		require.NoError(t, err)
		l2, err := m2.ListFilesystems(bg, zfs.MustDatasetPath(root))
		require.NoError(t, err)
		assert.Equal(t, l1, l2)
	}
	v1, _ := m.ListVersions(bg, w.src)
	v2, _ := m2.ListVersions(bg, w.src)
	require.Equal(t, len(v1), len(v2))
	for i := range v1 {
		assert.True(t, v1[i].Creation.Equal(v2[i].Creation))
		v1[i].Creation, v2[i].Creation = time.Time{}, time.Time{}
	}
	assert.Equal(t, v1, v2)

	// The loaded model carries on: resume the partial receive, hold
	// blocks destroy, new GUIDs are fresh.
	info, err := m2.Info(dst)
	require.NoError(t, err)
	rest := readAll(t, m2, zfs.SendArgs{FS: w.src, To: s2, ResumeToken: info.ReceiveResumeToken})
	require.NoError(t, m2.Receive(bg, dst, bytes.NewReader(rest), zfs.RecvOptions{}))
	c1, _ := m2.Checksum(s2.Ref(w.src))
	c2, _ := m2.Checksum(s2.Ref(dst))
	assert.Equal(t, c1, c2)
	assert.ErrorIs(t, m2.Destroy(bg, []zfs.VersionRef{s1.Ref(w.src)}), zfs.ErrDatasetBusy)
	require.NoError(t, m2.Snapshot(bg, w.src, "s3"))
	require.NoError(t, m.Snapshot(bg, w.src, "s3"))
	assert.Equal(t, w.v(w.src, "s3").GUID, (&world{t: t, m: m2}).v(w.src, "s3").GUID, "same seed and counter: same next GUID")
	v, _ := m2.UserProperty(w.src, "zrepl:test")
	assert.Equal(t, "v", v)

	_, err = Load(bytes.NewReader([]byte(`{"Format":2}`)), Options{})
	assert.Error(t, err)
	_, err = Load(bytes.NewReader([]byte(`not json`)), Options{})
	assert.Error(t, err)
	_, err = Load(bytes.NewReader([]byte(`{"Format":1,"State":{"Pools":{},"Datasets":{"x/y":{"Name":"x/y"}}}}`)), Options{})
	assert.Error(t, err)
	_, err = Load(bytes.NewReader([]byte(`{"Format":1,"State":{"Pools":{"x":{"Name":"x"}},"Datasets":{"x":{"Name":"x","GUID":1,"Encrypted":true,"EncRoot":"x/gone"}}}}`)), Options{})
	assert.ErrorContains(t, err, "encryption root")
}

func TestEncryptionDetails(t *testing.T) {
	m := New(Options{Seed: 1})
	require.NoError(t, m.CreatePool("p"))
	enc := zfs.MustDatasetPath("p/enc")
	child := zfs.MustDatasetPath("p/enc/child")
	require.NoError(t, m.CreateFilesystem(enc, FSOptions{Encrypted: true}))
	require.NoError(t, m.CreateFilesystem(child, FSOptions{}))
	fi, err := m.Info(child)
	require.NoError(t, err)
	assert.Equal(t, "p/enc", fi.EncryptionRoot)
	assert.Equal(t, zfs.KeyStatusAvailable, fi.KeyStatus)
	assert.Error(t, m.LoadKey(enc), "already loaded")
	assert.Error(t, m.UnloadKey(child), "not an encryption root")
	require.NoError(t, m.UnloadKey(enc))
	fi, _ = m.Info(child)
	assert.Equal(t, zfs.KeyStatusUnavailable, fi.KeyStatus)
	assert.ErrorIs(t, m.CreateFilesystem(zfs.MustDatasetPath("p/enc/c2"), FSOptions{}), zfs.ErrKeyNotLoaded)
	assert.ErrorIs(t, m.WriteData(child, 1, 1), zfs.ErrKeyNotLoaded)
	// Snapshots need no key.
	require.NoError(t, m.Snapshot(bg, child, "s"))
	_, err = m.Checksum(zfs.SnapshotRef(child, "s"))
	assert.ErrorIs(t, err, zfs.ErrKeyNotLoaded)
	// Full -F receive cannot overwrite an encrypted filesystem.
	require.NoError(t, m.LoadKey(enc))
	plain := zfs.MustDatasetPath("p/plain")
	require.NoError(t, m.CreateFilesystem(plain, FSOptions{}))
	require.NoError(t, m.Snapshot(bg, plain, "x"))
	stream := readAll(t, m, zfs.SendArgs{FS: plain, To: zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "x"}})
	empty := zfs.MustDatasetPath("p/enc/empty")
	require.NoError(t, m.CreateFilesystem(empty, FSOptions{}))
	err = m.Receive(bg, empty, bytes.NewReader(stream), zfs.RecvOptions{ForceRollback: true})
	assert.ErrorIs(t, err, zfs.ErrEncryptionMismatch)
	// A non-raw full receive below an encrypted parent inherits its
	// encryption.
	require.NoError(t, m.Receive(bg, zfs.MustDatasetPath("p/enc/recv"), bytes.NewReader(stream), zfs.RecvOptions{}))
	fi, _ = m.Info(zfs.MustDatasetPath("p/enc/recv"))
	assert.Equal(t, "p/enc", fi.EncryptionRoot)
}

func TestHeaderLengthIsBounded(t *testing.T) {
	m := New(Options{})
	require.NoError(t, m.CreatePool("p"))
	var b bytes.Buffer
	b.Write(streamMagic[:])
	binary.Write(&b, binary.BigEndian, uint32(1<<31))
	err := m.Receive(bg, zfs.MustDatasetPath("p/x"), &b, zfs.RecvOptions{})
	assert.Error(t, err)
}

func TestDestroyFilesystem(t *testing.T) {
	w := newWorld(t)
	child := zfs.MustDatasetPath("srcp/fs/child")
	require.NoError(t, w.m.CreateFilesystem(child, FSOptions{}))
	err := w.m.DestroyFilesystem(w.src, false)
	assert.ErrorIs(t, err, zfs.ErrDatasetBusy)
	assert.Contains(t, err.Error(), "srcp/fs/child")
	require.NoError(t, w.m.Hold(bg, zfs.SnapshotRef(w.src, "s1"), "t"))
	assert.ErrorIs(t, w.m.DestroyFilesystem(w.src, true), zfs.ErrDatasetBusy)
	require.NoError(t, w.m.Release(bg, zfs.SnapshotRef(w.src, "s1"), "t"))
	require.NoError(t, w.m.DestroyFilesystem(w.src, true))
	for _, fs := range []zfs.DatasetPath{w.src, child} {
		_, err := w.m.Info(fs)
		assert.ErrorIs(t, err, zfs.ErrDatasetNotExist)
	}
	assert.ErrorIs(t, w.m.DestroyFilesystem(zfs.MustDatasetPath("srcp"), true), zfs.ErrUnsupported)
	// Bookmarks alone also keep a non-recursive destroy from happening.
	bfs := zfs.MustDatasetPath("srcp/b")
	require.NoError(t, w.m.CreateFilesystem(bfs, FSOptions{}))
	require.NoError(t, w.m.Snapshot(bg, bfs, "s"))
	require.NoError(t, w.m.Bookmark(bg, zfs.SnapshotRef(bfs, "s"), "bm"))
	require.NoError(t, w.m.Destroy(bg, []zfs.VersionRef{zfs.SnapshotRef(bfs, "s")}))
	assert.ErrorIs(t, w.m.DestroyFilesystem(bfs, false), zfs.ErrDatasetBusy)
	err = w.m.Receive(bg, bfs, nil, zfs.RecvOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nil reader")
}

// TestReceiveCancelWhileBlocked: cancelling the context ends a receive
// whose stream delivers nothing more, keeping resumable state.
func TestReceiveCancelWhileBlocked(t *testing.T) {
	w := newWorld(t)
	s2 := w.v(w.src, "s2")
	full := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s2})
	dst := zfs.MustDatasetPath("dstp/fs")
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- w.m.Receive(ctx, dst, pr, zfs.RecvOptions{Resumable: true}) }()
	// Header, two records and a bit of the third, then the sender stalls.
	// Once the write returns, the receiver has processed the second record
	// and waits inside the third.
	hdrLen := len(full) - 7*recLen - trailerLen
	_, err := pw.Write(full[:hdrLen+2*recLen+100])
	require.NoError(t, err)
	cancel()
	err = <-done
	assert.ErrorIs(t, err, zfs.ErrPartialReceive)
	assert.ErrorIs(t, err, context.Canceled)
	info, err := w.m.Info(dst)
	require.NoError(t, err)
	tok, err := resumetoken.Decode(info.ReceiveResumeToken)
	require.NoError(t, err)
	assert.Equal(t, uint64(hdrLen+recLen), tok.Bytes, "the second record is not verified yet")
	// Closing the stream lets the abandoned read return (goleak checks the
	// helper goroutine is gone at the end of the tests).
	pw.Close()
	require.NoError(t, w.m.AbortReceive(bg, dst))
	_, err = w.m.Info(dst)
	assert.ErrorIs(t, err, zfs.ErrDatasetNotExist, "aborting a full receive removes the filesystem")
}
