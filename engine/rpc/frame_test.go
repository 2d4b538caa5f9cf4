package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// chunkedReader returns data in the given read sizes, then fails with err
// (io.EOF for a clean end).
type chunkedReader struct {
	data  []byte
	sizes []int
	err   error
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, c.err
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, c.sizes[0])
		c.sizes = c.sizes[1:]
	}
	n = min(n, len(p))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func frames(t *rapid.T, data []byte, srcErr error) []byte {
	var buf bytes.Buffer
	sizes := rapid.SliceOf(rapid.IntRange(0, 3*chunkSize)).Draw(t, "readSizes")
	n, gotSrcErr, dstErr := copyFrames(&buf, &chunkedReader{data: data, sizes: sizes, err: srcErr})
	if dstErr != nil {
		t.Fatalf("write to a buffer failed: %v", dstErr)
	}
	if srcErr == io.EOF {
		srcErr = nil
	}
	if !errors.Is(gotSrcErr, srcErr) || (srcErr == nil) != (gotSrcErr == nil) {
		t.Fatalf("source error %v, want %v", gotSrcErr, srcErr)
	}
	if n != int64(len(data)) {
		t.Fatalf("copied %d bytes of %d", n, len(data))
	}
	return buf.Bytes()
}

func randomData(t *rapid.T) []byte {
	n := rapid.IntRange(0, 3*MaxFrame).Draw(t, "len")
	seed := rapid.Byte().Draw(t, "seed")
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7) ^ seed
	}
	return data
}

// A complete framed stream reads back exactly, in any read sizes.
func TestFramesRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := randomData(t)
		wire := frames(t, data, io.EOF)
		var src io.Reader = bytes.NewReader(wire)
		if rapid.Bool().Draw(t, "oneByteReads") && len(wire) < 1<<16 {
			src = iotest.OneByteReader(src)
		}
		r := newFrameReader(src)
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, differ from the %d written", len(got), len(data))
		}
		// After the end, reads keep saying io.EOF.
		if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("read after end: %d, %v", n, err)
		}
	})
}

// Cutting the wire anywhere before the end marker's last byte is always
// seen as truncation: never a clean io.EOF, never data that was not sent.
func TestFramesCutAnywhereIsTruncated(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := randomData(t)
		wire := frames(t, data, io.EOF)
		cut := rapid.IntRange(0, len(wire)-1).Draw(t, "cut")
		r := newFrameReader(bytes.NewReader(wire[:cut]))
		got, err := io.ReadAll(r)
		if err == nil {
			t.Fatalf("a stream cut at %d of %d wire bytes read as complete", cut, len(wire))
		}
		if !errors.Is(err, ErrTruncated) || errors.Is(err, io.EOF) {
			t.Fatalf("cut stream: error %v is not a truncation", err)
		}
		if !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("cut stream returned bytes that differ from the sent prefix")
		}
	})
}

// A source that fails part way yields an error frame: the reader gets the
// source's error (with its zfs kind) as a truncation.
func TestFramesSourceFailure(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := randomData(t)
		srcErr := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "send", Dataset: "pool/fs@s1", Msg: "dataset is busy"}
		wire := frames(t, data, srcErr)
		got, err := io.ReadAll(newFrameReader(bytes.NewReader(wire)))
		if !errors.Is(err, ErrTruncated) || !errors.Is(err, zfs.ErrDatasetBusy) {
			t.Fatalf("error %v: want a truncation of kind dataset busy", err)
		}
		var ze *zfs.Error
		if !errors.As(err, &ze) || ze.Dataset != "pool/fs@s1" {
			t.Fatalf("error %v carries no *zfs.Error for pool/fs@s1", err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes before the failure, want the %d sent", len(got), len(data))
		}
	})
}

func header(typ byte, size uint32) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], size)
	return b
}

func TestFramesCorrupt(t *testing.T) {
	endOf := func(n uint64) []byte {
		b := header(frameEnd, 8)
		return binary.BigEndian.AppendUint64(b, n)
	}
	cases := map[string]struct {
		wire []byte
		want string
	}{
		"unknown type":    {append(header('Q', 0), endOf(0)...), "unknown frame type 0x51"},
		"oversized frame": {header(frameData, MaxFrame+1), "exceeds the limit"},
		"end miscounts":   {append(append(header(frameData, 3), 1, 2, 3), endOf(4)...), "end marker says 4 bytes, 3 arrived"},
		"short end":       {header(frameEnd, 4), "end marker of 4 bytes"},
		"huge error":      {header(frameError, 1<<30), "error frame of"},
		"garbage error":   {append(header(frameError, 2), 0xff, 0xff), "undecodable error frame"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := io.ReadAll(newFrameReader(bytes.NewReader(c.wire)))
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrCorruptStream)
			assert.ErrorContains(t, err, c.want)
		})
	}
}

// Errors keep their kinds across the wire, and their text.
func TestErrorInfoRoundTrip(t *testing.T) {
	for _, k := range []zfs.Kind{zfs.ErrDatasetNotExist, zfs.ErrResumeTokenCorrupt, zfs.ErrIncrementalSourceMismatch} {
		orig := &zfs.Error{Kind: k, Op: "recv", Dataset: "p/x", Msg: "m"}
		wrapped := errors.Join(errors.New("context"), orig)
		got := remoteError(errorInfo(wrapped))
		assert.ErrorIs(t, got, k)
		assert.Equal(t, wrapped.Error(), got.Error())
		require.NotNil(t, got.ZFS)
		assert.Equal(t, "p/x", got.ZFS.Dataset)
	}
	nameErr := zfs.ValidateDatasetPath("a//b")
	require.Error(t, nameErr)
	assert.ErrorIs(t, remoteError(errorInfo(nameErr)), zfs.ErrInvalidName)
	for _, s := range sentinels {
		got := remoteError(errorInfo(errors.Join(errors.New("x"), s.err)))
		assert.ErrorIs(t, got, s.err, s.name)
	}
	assert.ErrorIs(t, remoteError(errorInfo(endpoint.ErrNotAllowed)), endpoint.ErrNotAllowed)
	// Every zfs kind (those with a name of their own) has a wire name.
	for k := zfs.Kind(1); k < 100; k++ {
		if k.Error() == fmt.Sprintf("zfs error kind %d", int(k)) {
			continue
		}
		assert.Contains(t, zfsKinds, k, "zfs kind %q has no wire name", k.Error())
	}
	// Wire names are distinct.
	seen := map[string]bool{}
	for k, n := range zfsKinds {
		assert.False(t, seen[n], "wire name %s twice", n)
		seen[n] = true
		back, ok := zfsKindByName(n)
		assert.True(t, ok)
		assert.Equal(t, k, back)
	}
}

// Whatever arrives on a data connection, the reader neither panics nor
// allocates beyond its limits, and reports a clean end only after an end
// marker that counts the bytes it returned.
func FuzzFrameReader(f *testing.F) {
	var buf bytes.Buffer
	copyFrames(&buf, bytes.NewReader([]byte("hello, stream")))
	f.Add(buf.Bytes())
	buf.Reset()
	copyFrames(&buf, &chunkedReader{data: []byte("partial"), err: errors.New("boom")})
	f.Add(buf.Bytes())
	f.Add([]byte{frameEnd, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, wire []byte) {
		got, err := io.ReadAll(newFrameReader(bytes.NewReader(wire)))
		if err != nil {
			return
		}
		// A clean end: the wire must hold an end marker counting len(got).
		if len(wire) < frameHeader+8 {
			t.Fatalf("clean end from %d wire bytes", len(wire))
		}
		var total [8]byte
		binary.BigEndian.PutUint64(total[:], uint64(len(got)))
		if !bytes.Contains(wire, append([]byte{frameEnd, 0, 0, 0, 8}, total[:]...)) {
			t.Fatalf("clean end of %d bytes without a matching end marker", len(got))
		}
	})
}
