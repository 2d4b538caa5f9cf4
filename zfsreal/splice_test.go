package zfsreal

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

// counting is a StreamWrapper that counts like a progress meter; its
// Read fails the test when splice was expected.
type counting struct {
	t        *testing.T
	r        io.Reader
	n        atomic.Int64
	readable bool
}

func (c *counting) Read(p []byte) (int, error) {
	if !c.readable {
		c.t.Errorf("Read called: the stream should have been spliced past this wrapper")
	}
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
func (c *counting) Unwrap() io.Reader { return c.r }
func (c *counting) Passed(n int64)    { c.n.Add(n) }

// hiding hides what it wraps: Receive must read it.
type hiding struct{ io.Reader }

// sendRecvFake is a fake with a send of n bytes and a receive that reads
// its stdin, hashing it.
func sendRecvFake(t *testing.T, send, recv fakeRule) *fake {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", send)
	recv.ReadStdin = true
	f.on("recv -s -u pool/b/fs", recv)
	return f
}

var dstFS = zfs.MustDatasetPath("pool/b/fs")

func recvStdin(t *testing.T, f *fake) fakeStdin {
	t.Helper()
	for _, c := range f.calls() {
		if c.Args[0] == "recv" {
			in, ok := f.stdin(c.Pid)
			require.True(t, ok, "recv recorded no stdin")
			return in
		}
	}
	t.Fatal("no recv call")
	return fakeStdin{}
}

// TestSpliceSendToRecv: a stream of Send, bare or below counting
// wrappers, arrives whole at zfs recv; the wrappers are never read but
// are told every byte; a wrapper that does not unwrap is read.
func TestSpliceSendToRecv(t *testing.T) {
	const n = 9<<20 + 4321
	for _, how := range []string{"bare", "wrapped twice", "hidden"} {
		t.Run(how, func(t *testing.T) {
			f := sendRecvFake(t, fakeRule{StreamBytes: n}, fakeRule{})
			c := f.cli()
			r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
			require.NoError(t, err)
			var stream io.Reader = r
			var outer, inner *counting
			switch how {
			case "wrapped twice":
				inner = &counting{t: t, r: r}
				outer = &counting{t: t, r: inner}
				stream = outer
			case "hidden":
				inner = &counting{t: t, r: r, readable: true}
				stream = hiding{inner}
			}
			require.NoError(t, c.Receive(ctx, dstFS, stream, zfs.RecvOptions{Resumable: true}))
			require.NoError(t, r.Close())
			in := recvStdin(t, f)
			assert.EqualValues(t, n, in.Bytes)
			assert.Equal(t, sha(streamBytes(n)), in.SHA256)
			if outer != nil {
				assert.EqualValues(t, n, outer.n.Load())
			}
			if inner != nil {
				assert.EqualValues(t, n, inner.n.Load())
			}
			for _, call := range f.calls() {
				assert.True(t, gone(call.Pid), "%v left behind", call.Args)
			}
		})
	}
}

// TestSpliceSendFails: a send that dies part way shows zfs recv a cut-off
// stream, and the error carries both: the send's and the receive's.
func TestSpliceSendFails(t *testing.T) {
	sendMsg := "warning: cannot send 'pool/a/fs@s1': Input/output error\n"
	f := sendRecvFake(t, fakeRule{StreamBytes: 3 << 20, Stderr: sendMsg, Exit: 1},
		fakeRule{Stderr: partialSaved, Exit: 1})
	f.on("get -H -p -o value keystatus pool/a/fs", fakeRule{Stdout: "-\n"})
	c := f.cli()
	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	defer r.Close()
	w := &counting{t: t, r: r}
	err = c.Receive(ctx, dstFS, w, zfs.RecvOptions{Resumable: true})
	e := zerr(t, err, zfs.ErrPartialReceive)
	assert.Equal(t, strings.TrimSpace(partialSaved), e.Msg)
	assert.Equal(t, "recv", e.Op)
	var sendErr *zfs.Error
	require.True(t, errors.As(e.Err, &sendErr), "the send's error is in %v", err)
	assert.Equal(t, "send", sendErr.Op)
	assert.Equal(t, strings.TrimSpace(sendMsg), sendErr.Msg)
	assert.EqualValues(t, 3<<20, recvStdin(t, f).Bytes)
	assert.EqualValues(t, 3<<20, w.n.Load())
}

// TestSpliceRecvFailsEarly: zfs recv refusing the stream ends the
// receive although the send would go on; closing the stream then ends
// the send.
func TestSpliceRecvFailsEarly(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: 64 << 20, Hang: true})
	msg := "cannot receive new filesystem stream: destination 'pool/b/fs' exists\nmust specify -F to overwrite it\n"
	f.on("recv -s -u pool/b/fs", fakeRule{ReadStdin: true, StdinLimit: 100000, Stderr: msg, Exit: 1})
	c := f.cli()
	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	e := zerr(t, c.Receive(ctx, dstFS, &counting{t: t, r: r}, zfs.RecvOptions{Resumable: true}), zfs.ErrDestinationExists)
	assert.Equal(t, strings.TrimSpace(msg), e.Msg)
	require.NoError(t, r.Close())
	for _, call := range f.calls() {
		assert.True(t, gone(call.Pid), "%v left behind", call.Args)
	}
}

// TestSpliceCancel: cancelling the receive while the send has nothing to
// give closes zfs recv's input (it saves the partial state) and Receive
// returns; closing the stream ends the send and the mover.
func TestSpliceCancel(t *testing.T) {
	f := sendRecvFake(t, fakeRule{StreamBytes: 1000, Hang: true}, fakeRule{Stderr: partialSaved, Exit: 1})
	c := f.cli()
	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	w := &counting{t: t, r: r}
	go func() { done <- c.Receive(cctx, dstFS, w, zfs.RecvOptions{Resumable: true}) }()
	calls := f.waitCalls(3)
	cancel()
	err = <-done
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, zfs.ErrPartialReceive)
	require.NoError(t, r.Close())
	assert.EqualValues(t, 1000, recvStdin(t, f).Bytes)
	for _, call := range calls {
		assert.True(t, gone(call.Pid), "%v left behind", call.Args)
	}
}
