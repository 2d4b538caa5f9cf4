package zfsmodel

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
)

// countingReader counts the bytes the receive consumed.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func saveBytes(t tb, m *Model) []byte {
	var b bytes.Buffer
	require.NoError(t, m.Save(&b))
	return b.Bytes()
}

func loadBytes(t tb, b []byte) *Model {
	m, err := Load(bytes.NewReader(b), Options{})
	require.NoError(t, err)
	return m
}

type checkpoint struct {
	at    int64 // stream bytes consumed when it was taken
	state []byte
}

// A resumable receive that checkpoints, at random intervals, leaves at
// each checkpoint exactly the state a stream cut at that byte leaves (the
// same saved state, so the same token); a model loaded from a checkpoint
// resumes from its token to the state of an uninterrupted receive, and the
// checkpointing receive itself ends in that state too, with no partial
// state left. Covered: full and incremental receives, -F, receives that
// are themselves resumes of an earlier cut.
func TestCheckpointIsCutState(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		src := New(Options{Seed: 3})
		require.NoError(t, src.CreatePool("srcp"))
		fs := zfs.MustDatasetPath("srcp/fs")
		require.NoError(t, src.CreateFilesystem(fs, FSOptions{}))
		require.NoError(t, src.WriteData(fs, 1, rapid.IntRange(1, 12).Draw(t, "blocks1")))
		require.NoError(t, src.Snapshot(bg, fs, "s1"))
		require.NoError(t, src.WriteData(fs, 2, rapid.IntRange(1, 12).Draw(t, "blocks2")))
		require.NoError(t, src.Snapshot(bg, fs, "s2"))
		vs, err := src.ListVersions(bg, fs)
		require.NoError(t, err)
		s1, s2 := vs[0], vs[1]

		var cks []checkpoint
		var counter *countingReader
		var dst *Model
		dst = New(Options{Seed: 9, OnCheckpoint: func() {
			if counter != nil {
				cks = append(cks, checkpoint{at: counter.n, state: saveBytes(t, dst)})
			}
		}})
		require.NoError(t, dst.CreatePool("dstp"))
		target := zfs.MustDatasetPath("dstp/fs")
		opts := zfs.RecvOptions{Resumable: true, ForceRollback: rapid.Bool().Draw(t, "force")}
		args := zfs.SendArgs{FS: fs, To: s1}
		if rapid.Bool().Draw(t, "incremental") {
			require.NoError(t, dst.Receive(bg, target, bytes.NewReader(readAll(t, src, args)), opts))
			args = zfs.SendArgs{FS: fs, From: &s1, To: s2}
		}
		stream := readAll(t, src, args)
		if rapid.Bool().Draw(t, "resume") {
			// The receive under test continues an earlier cut.
			cut := rapid.IntRange(0, len(stream)-1).Draw(t, "firstCut")
			err := dst.Receive(bg, target, bytes.NewReader(stream[:cut]), opts)
			require.Error(t, err)
			if info, err := dst.Info(target); err == nil && info.ReceiveResumeToken != "" {
				args.ResumeToken = info.ReceiveResumeToken
				stream = readAll(t, src, args)
			}
		}
		before := saveBytes(t, dst)

		// The same receive without checkpoints.
		plain := loadBytes(t, before)
		require.NoError(t, plain.Receive(bg, target, bytes.NewReader(stream), opts))

		every := rapid.Int64Range(1, int64(len(stream))).Draw(t, "every")
		dst.ckEvery = every // as Options.CheckpointEvery; set here to leave the setup's receives alone
		counter = &countingReader{r: bytes.NewReader(stream)}
		require.NoError(t, dst.Receive(bg, target, counter, opts))
		counter = nil
		info, err := dst.Info(target)
		require.NoError(t, err)
		assert.Empty(t, info.ReceiveResumeToken, "a completed receive leaves no partial state")
		assert.Equal(t, string(saveBytes(t, plain)), string(saveBytes(t, dst)), "checkpoints change nothing of the end state")

		// A checkpoint follows each record that makes the stream verified
		// so far at least every bytes longer: every ceil(every/recLen)
		// records, up to the second-last record's end (the last is
		// verified only by the trailer).
		n := int64(len(stream)-trailerLen) / recLen
		stride := (every + recLen - 1) / recLen
		require.Len(t, cks, int((n-1)/stride), "a stream of %d records, a checkpoint every %d bytes", n, every)
		if len(cks) == 0 {
			return
		}
		ck := cks[rapid.IntRange(0, len(cks)-1).Draw(t, "checkpoint")]

		// A stream cut at the checkpoint's byte leaves the same state.
		cutm := loadBytes(t, before)
		err = cutm.Receive(bg, target, bytes.NewReader(stream[:ck.at]), opts)
		require.ErrorIs(t, err, zfs.ErrPartialReceive)
		require.Equal(t, string(ck.state), string(saveBytes(t, cutm)), "checkpoint at byte %d", ck.at)

		// Killed there: the saved state resumes to the uninterrupted end.
		killed := loadBytes(t, ck.state)
		info, err = killed.Info(target)
		require.NoError(t, err)
		require.NotEmpty(t, info.ReceiveResumeToken)
		rargs := args
		rargs.ResumeToken = info.ReceiveResumeToken
		rest := readAll(t, src, rargs)
		// It re-sends the records after the checkpoint and the one read
		// but not yet verified there.
		assert.Equal(t, (int64(len(stream))-ck.at-trailerLen)/recLen+1, int64(len(rest)-trailerLen)/recLen, "records re-sent")
		require.NoError(t, killed.Receive(bg, target, bytes.NewReader(rest), opts))
		assert.Equal(t, string(saveBytes(t, plain)), string(saveBytes(t, killed)))
		want, err := src.Checksum(s2.Ref(fs))
		if args.To.GUID == s1.GUID {
			want, err = src.Checksum(s1.Ref(fs))
		}
		require.NoError(t, err)
		got, err := killed.Checksum(args.To.Ref(target))
		require.NoError(t, err)
		assert.Equal(t, want, got)
	})
}

// A resumable receive of a bad stream fails as it does without
// checkpoints (same error, same saved state), though it checkpointed before
// the damage; a non-resumable receive never checkpoints.
func TestCheckpointBadStreamAsBefore(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t)
		s1 := w.v(w.src, "s1")
		stream := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s1})
		hdr := len(stream) - 4*recLen - trailerLen
		at := rapid.IntRange(hdr+recLen, len(stream)-1).Draw(t, "flip")
		stream[at] ^= 1 << rapid.IntRange(0, 7).Draw(t, "bit")
		resumable := rapid.Bool().Draw(t, "resumable")
		opts := zfs.RecvOptions{Resumable: resumable}
		target := zfs.MustDatasetPath("dstp/fs")

		before := saveBytes(t, w.m)
		plain := loadBytes(t, before)
		perr := plain.Receive(bg, target, bytes.NewReader(stream), opts)
		require.Error(t, perr)

		calls := 0
		ck := loadBytes(t, before)
		ck.ckEvery, ck.onCk = 1, func() { calls++ }
		cerr := ck.Receive(bg, target, bytes.NewReader(stream), opts)
		require.Error(t, cerr)
		assert.Equal(t, perr.Error(), cerr.Error())
		assert.Equal(t, errors.Is(perr, zfs.ErrPartialReceive), errors.Is(cerr, zfs.ErrPartialReceive))
		assert.Equal(t, string(saveBytes(t, plain)), string(saveBytes(t, ck)))
		if !resumable {
			assert.Zero(t, calls, "no checkpoint without -s")
		}
	})
}

// A checkpoint callback may use the model (here Save and a listing): it
// runs without the model's lock.
func TestCheckpointCallbackMayUseModel(t *testing.T) {
	w := newWorld(t)
	s1 := w.v(w.src, "s1")
	stream := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s1})
	var tokens []string
	w.m.ckEvery = recLen
	w.m.onCk = func() {
		saveBytes(t, w.m)
		info, err := w.m.Info(zfs.MustDatasetPath("dstp/fs"))
		require.NoError(t, err)
		tokens = append(tokens, info.ReceiveResumeToken)
	}
	require.NoError(t, w.m.Receive(bg, zfs.MustDatasetPath("dstp/fs"), bytes.NewReader(stream), zfs.RecvOptions{Resumable: true}))
	// 4 blocks: checkpoints after the second, third and fourth record
	// were read (each keeps the records before it).
	require.Len(t, tokens, 3)
	for _, tok := range tokens {
		assert.NotEmpty(t, tok)
	}
	assert.NotEqual(t, tokens[0], tokens[2])
}

// Options.CheckpointEvery reaches the receive.
func TestCheckpointOptions(t *testing.T) {
	calls := 0
	m := New(Options{Seed: 1, CheckpointEvery: 1, OnCheckpoint: func() { calls++ }})
	require.NoError(t, m.CreatePool("p"))
	fs := zfs.MustDatasetPath("p/fs")
	require.NoError(t, m.CreateFilesystem(fs, FSOptions{}))
	require.NoError(t, m.WriteData(fs, 1, 3))
	require.NoError(t, m.Snapshot(bg, fs, "s"))
	vs, err := m.ListVersions(bg, fs)
	require.NoError(t, err)
	stream := readAll(t, m, zfs.SendArgs{FS: fs, To: vs[0]})
	require.NoError(t, m.Receive(bg, zfs.MustDatasetPath("p/copy"), bytes.NewReader(stream), zfs.RecvOptions{Resumable: true}))
	assert.Equal(t, 2, calls)
	assert.Zero(t, New(Options{CheckpointEvery: -5}).ckEvery, "a negative interval is off")
}

// An overwriting full receive (-F) whose end is refused leaves no partial
// state, as without checkpoints: the checkpoints it took are undone.
func TestCheckpointRefusedOverwriteLeavesNoState(t *testing.T) {
	w := newWorld(t)
	s1 := w.v(w.src, "s1")
	stream := readAll(t, w.m, zfs.SendArgs{FS: w.src, To: s1})
	target := zfs.MustDatasetPath("dstp/fs")
	require.NoError(t, w.m.CreateFilesystem(target, FSOptions{}))
	snapped := false
	w.m.ckEvery = 1
	w.m.onCk = func() {
		info, err := w.m.Info(target)
		require.NoError(t, err)
		assert.NotEmpty(t, info.ReceiveResumeToken, "checkpointed")
		if !snapped {
			// Someone snapshots the target meanwhile: the end is refused.
			require.NoError(t, w.m.Snapshot(bg, target, "mine"))
			snapped = true
		}
	}
	err := w.m.Receive(bg, target, bytes.NewReader(stream), zfs.RecvOptions{Resumable: true, ForceRollback: true})
	require.ErrorIs(t, err, zfs.ErrDestinationExists)
	require.True(t, snapped)
	info, err := w.m.Info(target)
	require.NoError(t, err)
	assert.Empty(t, info.ReceiveResumeToken)
	vs, err := w.m.ListVersions(bg, target)
	require.NoError(t, err)
	require.Len(t, vs, 1)
	assert.Equal(t, "mine", vs[0].Name)
}
