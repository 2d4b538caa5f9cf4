package zfsreal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

func TestRecvArgv(t *testing.T) {
	cases := []struct {
		opts zfs.RecvOptions
		want string
	}{
		{zfs.RecvOptions{}, "recv -u pool/a/fs"},
		{zfs.RecvOptions{Resumable: true}, "recv -s -u pool/a/fs"},
		{zfs.RecvOptions{Resumable: true, ForceRollback: true}, "recv -s -u -F pool/a/fs"},
		{zfs.RecvOptions{
			SetProperties:     map[string]string{"mountpoint": "none", "canmount": "off", "zrepl:x": "a b"},
			InheritProperties: []string{"keylocation", "com.sun:auto-snapshot"},
		}, "recv -u -o canmount=off -o mountpoint=none -o zrepl:x=a b -x keylocation -x com.sun:auto-snapshot pool/a/fs"},
	}
	for _, c := range cases {
		argv, err := recvArgv(fs, c.opts)
		require.NoError(t, err)
		assert.Equal(t, c.want, strings.Join(argv, " "))
	}
}

func TestReceiveRefusesBadArgs(t *testing.T) {
	f := newFake(t)
	c := f.cli()
	bad := []zfs.RecvOptions{
		{SetProperties: map[string]string{"-F": "x"}},
		{SetProperties: map[string]string{"Mountpoint": "x"}},
		{SetProperties: map[string]string{"a=b": "x"}},
		{SetProperties: map[string]string{"zrepl:x": "line\nbreak"}},
		{SetProperties: map[string]string{"zrepl:x": strings.Repeat("v", maxPropValueLen)}},
		{InheritProperties: []string{"-o"}},
		{InheritProperties: []string{""}},
		{SetProperties: map[string]string{"mountpoint": "none"}, InheritProperties: []string{"mountpoint"}},
	}
	for _, opts := range bad {
		zerr(t, c.Receive(ctx, fs, strings.NewReader(""), opts), zfs.ErrInvalidName)
	}
	zerr(t, c.Receive(ctx, zfs.DatasetPath{}, strings.NewReader(""), zfs.RecvOptions{}), zfs.ErrInvalidName)
	zerr(t, c.Receive(ctx, fs, nil, zfs.RecvOptions{}), zfs.ErrInvalidName)
	assert.Empty(t, f.calls())
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestReceiveFeedsStream(t *testing.T) {
	f := newFake(t)
	f.on("recv -s -u pool/a/fs", fakeRule{ReadStdin: true})
	data := streamBytes(5<<20 + 3)
	require.NoError(t, f.cli().Receive(ctx, fs, bytes.NewReader(data), zfs.RecvOptions{Resumable: true}))
	calls := f.calls()
	require.Len(t, calls, 1)
	in, ok := f.stdin(calls[0].Pid)
	require.True(t, ok)
	assert.EqualValues(t, len(data), in.Bytes)
	assert.Equal(t, sha(data), in.SHA256)
	assert.True(t, gone(calls[0].Pid))
}

// failingReader yields n pattern bytes, then err.
type failingReader struct {
	n, off int64
	err    error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, r.err
	}
	k := min(int64(len(p)), r.n-r.off)
	for i := range k {
		p[i] = patternByte(r.off + i)
	}
	r.off += k
	return int(k), nil
}

const partialSaved = "cannot receive new filesystem stream: checksum mismatch or incomplete stream.\n" +
	"Partially received snapshot is saved.\nA resuming stream can be generated on the sending system by running:\n" +
	"    zfs send -t 1-b88d7b776-b8-789c6360\n"

// TestReceiveReaderFails: the reader's failure shows zfs a cut-off
// stream, and the error carries both sides.
func TestReceiveReaderFails(t *testing.T) {
	f := newFake(t)
	f.on("recv -s -u pool/a/fs", fakeRule{ReadStdin: true, Stderr: partialSaved, Exit: 1})
	cut := errors.New("connection reset")
	err := f.cli().Receive(ctx, fs, &failingReader{n: 100000, err: cut}, zfs.RecvOptions{Resumable: true})
	e := zerr(t, err, zfs.ErrPartialReceive)
	assert.ErrorIs(t, err, cut)
	assert.Equal(t, strings.TrimSpace(partialSaved), e.Msg)
	assert.Equal(t, "recv", e.Op)
	assert.Equal(t, "pool/a/fs", e.Dataset)
	assert.Contains(t, err.Error(), "connection reset")
	in, ok := f.stdin(f.calls()[0].Pid)
	require.True(t, ok)
	assert.EqualValues(t, 100000, in.Bytes)
	assert.Equal(t, sha(streamBytes(100000)), in.SHA256)
}

// TestReceiveReaderFailsAfterSuccess: zfs took the stream as complete but
// the reader failed; success is not claimed.
func TestReceiveReaderFailsAfterSuccess(t *testing.T) {
	f := newFake(t)
	f.on("recv -u pool/a/fs", fakeRule{ReadStdin: true})
	cut := errors.New("sender failed")
	err := f.cli().Receive(ctx, fs, &failingReader{n: 10, err: cut}, zfs.RecvOptions{})
	zerr(t, err, 0)
	assert.ErrorIs(t, err, cut)
}

// endless never ends.
type endless struct{ off int64 }

func (r *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = patternByte(r.off + int64(i))
	}
	r.off += int64(len(p))
	return len(p), nil
}

// TestReceiveZfsFailsEarly: zfs refusing the stream ends the receive even
// though the stream would go on for ever.
func TestReceiveZfsFailsEarly(t *testing.T) {
	f := newFake(t)
	msg := "cannot receive new filesystem stream: destination 'pool/a/fs' exists\nmust specify -F to overwrite it\n"
	f.on("recv -u pool/a/fs", fakeRule{Stderr: msg, Exit: 1})
	e := zerr(t, f.cli().Receive(ctx, fs, &endless{}, zfs.RecvOptions{}), zfs.ErrDestinationExists)
	assert.Equal(t, strings.TrimSpace(msg), e.Msg)

	f.on("recv -u -F pool/a/fs", fakeRule{ReadStdin: true, StdinLimit: 70000,
		Stderr: "cannot receive incremental stream: most recent snapshot of pool/a/fs does not\nmatch incremental source\n", Exit: 1})
	zerr(t, f.cli().Receive(ctx, fs, &endless{}, zfs.RecvOptions{ForceRollback: true}), zfs.ErrIncrementalSourceMismatch)
	in, ok := f.stdin(f.calls()[1].Pid)
	require.True(t, ok)
	assert.EqualValues(t, 70000, in.Bytes)
}

// TestReceiveCancel: cancelling closes zfs's input, so zfs ends as for a
// cut-off stream and says the partial state is saved; Receive returns
// although the stream's Read is blocked.
func TestReceiveCancel(t *testing.T) {
	f := newFake(t)
	f.on("recv -s -u pool/a/fs", fakeRule{ReadStdin: true, Stderr: partialSaved, Exit: 1})
	pr, pw := io.Pipe()
	defer pw.Close() // lets the blocked Read, and so the feeding goroutine, end
	go func() { _, _ = pw.Write(streamBytes(1000)) }()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- f.cli().Receive(cctx, fs, pr, zfs.RecvOptions{Resumable: true}) }()
	pid := f.waitCalls(1)[0].Pid
	cancel()
	err := <-done
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, zfs.ErrPartialReceive)
	assert.True(t, gone(pid))
}

// TestReceiveCancelKillsStuckZfs: a zfs that does not end when its input
// closes is killed after the grace period.
func TestReceiveCancelKillsStuckZfs(t *testing.T) {
	f := newFake(t)
	f.on("recv -u pool/a/fs", fakeRule{Hang: true})
	pr, pw := io.Pipe()
	defer pw.Close()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	c := New(Options{ZFSBinary: f.bin, CancelGrace: 20 * time.Millisecond})
	go func() { done <- c.Receive(cctx, fs, pr, zfs.RecvOptions{}) }()
	pid := f.waitCalls(1)[0].Pid
	cancel()
	err := <-done
	assert.ErrorIs(t, err, context.Canceled)
	assert.True(t, gone(pid))
}
