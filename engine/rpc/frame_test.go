package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"testing/iotest"
	"testing/synctest"
	"time"

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

// bufConn is a net.Conn that reads r and writes w; deadlines are ignored.
type bufConn struct {
	r  io.Reader
	mu sync.Mutex
	w  io.Writer
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}
func (c *bufConn) Close() error                     { return nil }
func (c *bufConn) LocalAddr() net.Addr              { return chanAddr{} }
func (c *bufConn) RemoteAddr() net.Addr             { return chanAddr{} }
func (c *bufConn) SetDeadline(time.Time) error      { return nil }
func (c *bufConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bufConn) SetWriteDeadline(time.Time) error { return nil }

// frameBytes is the wire form of one frame, per zrepl's layout: type and
// payload length, 4 bytes each, big endian, then the payload.
func frameBytes(typ uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// wantStream is the wire form of data as a stream of type typ: frames of
// framePayload bytes (the last one shorter), then an end frame; with
// srcErr, its text as a trailer instead of the end frame.
func wantStream(typ uint32, data []byte, srcErr error) []byte {
	var b []byte
	for len(data) > 0 {
		n := min(len(data), framePayload)
		b = append(b, frameBytes(typ, data[:n])...)
		data = data[n:]
	}
	if srcErr != nil {
		b = append(b, frameBytes(frameStreamErrTrailer, []byte(srcErr.Error()))...)
	}
	return append(b, frameBytes(frameEnd, nil)...)
}

// written runs writeStream of src into a buffer and returns the bytes.
func written(t interface{ Fatalf(string, ...any) }, src io.Reader) (wire []byte, n int64, srcErr error) {
	var buf bytes.Buffer
	c := newDataConn(&bufConn{r: eofReader{}, w: &buf})
	n, srcErr, connErr := c.writeStream(frameZFSStream, src)
	if connErr != nil {
		t.Fatalf("write to a buffer: %v", connErr)
	}
	c.abort()
	// A heartbeat never comes within a test's milliseconds; drop one if
	// the machine stalled.
	return bytes.ReplaceAll(buf.Bytes(), frameBytes(frameHeartbeat, nil), nil), n, srcErr
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// reader wraps wire in a data connection and returns its stream of type
// ZFSStream.
func reader(wire io.Reader) (io.Reader, *dataConn) {
	c := newDataConn(&bufConn{r: wire, w: io.Discard})
	return c.streamReader(frameZFSStream), c
}

func randomData(t *rapid.T) []byte {
	n := rapid.IntRange(0, 3*framePayload).Draw(t, "len")
	seed := rapid.Byte().Draw(t, "seed")
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7) ^ seed
	}
	return data
}

// The writer frames a stream exactly as zrepl does, whatever the read
// sizes of its source, and a reader gets the same bytes back in any read
// sizes, then io.EOF.
func TestStreamRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := randomData(t)
		sizes := rapid.SliceOf(rapid.IntRange(0, 3*framePayload)).Draw(t, "readSizes")
		wire, n, srcErr := written(t, &chunkedReader{data: data, sizes: sizes, err: io.EOF})
		if srcErr != nil || n != int64(len(data)) {
			t.Fatalf("wrote %d of %d bytes, source error %v", n, len(data), srcErr)
		}
		if !bytes.Equal(wire, wantStream(frameZFSStream, data, nil)) {
			t.Fatalf("the %d wire bytes are not zrepl's framing of %d bytes", len(wire), len(data))
		}
		var src io.Reader = bytes.NewReader(wire)
		if rapid.Bool().Draw(t, "oneByteReads") && len(wire) < 1<<16 {
			src = iotest.OneByteReader(src)
		}
		r, c := reader(src)
		defer c.abort()
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, differ from the %d written", len(got), len(data))
		}
		if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("read after end: %d, %v", n, err)
		}
	})
}

// Cutting the wire anywhere before the end frame's last byte is always
// seen as truncation: never a clean io.EOF, never data that was not sent.
func TestStreamCutAnywhereIsTruncated(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := randomData(t)
		wire := wantStream(frameZFSStream, data, nil)
		cut := rapid.IntRange(0, len(wire)-1).Draw(t, "cut")
		r, c := reader(bytes.NewReader(wire[:cut]))
		defer c.abort()
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

// A source that fails part way ends the stream with its error as a
// trailer: the reader gets what came before, then the error's text.
func TestStreamSourceFailure(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := randomData(t)
		boom := errors.New("zfs send: dataset is busy")
		wire, _, srcErr := written(t, &chunkedReader{data: data, err: boom})
		if !errors.Is(srcErr, boom) {
			t.Fatalf("source error %v, want %v", srcErr, boom)
		}
		if !bytes.Equal(wire, wantStream(frameZFSStream, data, boom)) {
			t.Fatalf("the wire bytes are not zrepl's framing of a failed stream")
		}
		r, c := reader(bytes.NewReader(wire))
		defer c.abort()
		got, err := io.ReadAll(r)
		var se *SourceError
		if !errors.As(err, &se) || se.Text != boom.Error() {
			t.Fatalf("error %v: want the source's error %q", err, boom)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes before the failure, want the %d sent", len(got), len(data))
		}
	})
}

func TestStreamCorrupt(t *testing.T) {
	cases := map[string]struct {
		wire []byte
		want string
	}{
		"unknown type":    {frameBytes(0x51, nil), "frame of type 0x51 in a stream"},
		"oversized frame": {binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, frameZFSStream), maxFramePayload+1), "the limit is"},
		"wrong stream":    {frameBytes(frameResHeader, []byte("HANDLER OK\n")), "frame of type 0x3 in a stream of type 0x5"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r, dc := reader(bytes.NewReader(c.wire))
			defer dc.abort()
			_, err := io.ReadAll(r)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrCorruptStream)
			assert.ErrorContains(t, err, c.want)
		})
	}
}

// Heartbeats: an idle direction carries a heartbeat frame every
// HeartbeatInterval, the reader skips them, and a peer that sends nothing
// for PeerTimeout fails the read.
func TestHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		ca := newDataConn(a)
		defer ca.abort()
		// b reads raw frames: after 12 s, two heartbeats, nothing else.
		got := make(chan []byte, 1)
		go func() {
			var raw []byte
			buf := make([]byte, 64)
			b.SetReadDeadline(time.Now().Add(12 * time.Second))
			for {
				n, err := b.Read(buf)
				raw = append(raw, buf[:n]...)
				if err != nil {
					got <- raw
					return
				}
			}
		}()
		raw := <-got
		hb := frameBytes(frameHeartbeat, nil)
		assert.Equal(t, append(append([]byte{}, hb...), hb...), raw, "12 s idle: two heartbeat frames (type 1<<24, no payload)")

		b.Close()
		ca.abort()

		// Heartbeats interleaved with data are skipped; the peer going
		// silent afterwards fails the read after PeerTimeout.
		a, b = net.Pipe()
		ca = newDataConn(a)
		defer ca.abort()
		go io.Copy(io.Discard, b)
		go func() {
			b.Write(hb)
			b.Write(frameBytes(frameZFSStream, []byte("ab")))
			b.Write(hb)
			b.Write(frameBytes(frameZFSStream, []byte("cd")))
		}()
		r := ca.streamReader(frameZFSStream)
		data, err := io.ReadAll(io.LimitReader(r, 4))
		require.NoError(t, err)
		start := time.Now()
		rest, err := io.ReadAll(r)
		data = append(data, rest...)
		assert.Equal(t, "abcd", string(data))
		assert.ErrorIs(t, err, ErrTruncated)
		assert.ErrorIs(t, err, errPeerTimeoutForTest(err))
		assert.Equal(t, PeerTimeout, time.Since(start).Round(time.Second), "read gave up after the peer timeout")
		b.Close()
	})
}

// errPeerTimeoutForTest returns the deadline error inside err, so the
// test asserts the read failed by the peer timeout.
func errPeerTimeoutForTest(err error) error {
	if isTimeout(err) {
		return err
	}
	return fmt.Errorf("not a timeout: %w", err)
}

// Close sends zrepl's shutdown frame and waits for the peer's; the peer
// reading it sees the connection end, not a reset.
func TestCloseShutdownFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		ca, cb := newDataConn(a), newDataConn(b)
		done := make(chan error, 1)
		go func() { done <- ca.Close() }()
		// cb learns of the shutdown, then closes in turn.
		<-cb.peerDone
		require.NoError(t, cb.Close())
		require.NoError(t, <-done)
	})
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

// Whatever arrives on a data connection, the stream reader neither panics
// nor allocates beyond its limits, and reports a clean end only after an
// end frame.
func FuzzStreamReader(f *testing.F) {
	f.Add(wantStream(frameZFSStream, []byte("hello, stream"), nil))
	f.Add(wantStream(frameZFSStream, []byte("partial"), errors.New("boom")))
	f.Add(frameBytes(frameEnd, nil))
	f.Fuzz(func(t *testing.T, wire []byte) {
		r, c := reader(bytes.NewReader(wire))
		defer c.abort()
		_, err := io.ReadAll(r)
		if err != nil {
			return
		}
		if !bytes.Contains(wire, frameBytes(frameEnd, nil)) {
			t.Fatalf("clean end without an end frame")
		}
	})
}

// A stream of frames of any sizes (those of at least directMin are read
// straight into the reader's buffer, the rest through the read
// goroutine) with heartbeats anywhere reads back as its bytes in any read
// sizes, and then as its end says: io.EOF, the trailer, or truncated.
func TestStreamMixedFrames(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var wire, data []byte
		hb := frameBytes(frameHeartbeat, nil)
		for i := range rapid.IntRange(0, 8).Draw(t, "frames") {
			if rapid.Bool().Draw(t, fmt.Sprintf("hb%d", i)) {
				wire = append(wire, hb...)
			}
			n := rapid.SampledFrom([]int{1, directMin - 1, directMin, 100 << 10, framePayload, 2 * framePayload}).Draw(t, fmt.Sprintf("size%d", i))
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(i + j*13)
			}
			wire = append(wire, frameBytes(frameZFSStream, p)...)
			data = append(data, p...)
		}
		end := rapid.SampledFrom([]string{"end", "trailer", "cut"}).Draw(t, "end")
		switch end {
		case "end":
			wire = append(wire, frameBytes(frameEnd, nil)...)
		case "trailer":
			wire = append(wire, frameBytes(frameStreamErrTrailer, []byte("boom"))...)
			wire = append(wire, frameBytes(frameEnd, nil)...)
		case "cut":
			wire = wire[:len(wire)-rapid.IntRange(0, min(len(wire), 5)).Draw(t, "cut")]
		}
		sizes := rapid.SliceOfN(rapid.IntRange(1, 3*directMin), 1, 20).Draw(t, "reads")
		r, c := reader(&chunkedReader{data: wire, sizes: sizes, err: io.EOF})
		defer c.abort()
		var got []byte
		buf := make([]byte, 3*directMin)
		var err error
		for i := 0; err == nil; i++ {
			var n int
			n, err = r.Read(buf[:sizes[i%len(sizes)]])
			got = append(got, buf[:n]...)
		}
		switch end {
		case "end":
			if err != io.EOF || !bytes.Equal(got, data) {
				t.Fatalf("read %d of %d bytes, then %v; want all, then io.EOF", len(got), len(data), err)
			}
		case "trailer":
			var se *SourceError
			if !errors.As(err, &se) || se.Text != "boom" || !bytes.Equal(got, data) {
				t.Fatalf("read %d of %d bytes, then %v; want all, then the trailer", len(got), len(data), err)
			}
		case "cut":
			if !errors.Is(err, ErrTruncated) || !bytes.Equal(got, data[:len(got)]) {
				t.Fatalf("read %d bytes, then %v; want a prefix of the data, then truncated", len(got), err)
			}
		}
	})
}

// A reader that stops in the middle of a frame read straight into its
// buffer does not hold Close up: the read goroutine takes the connection
// back, skips the rest, and sees the peer's shutdown; a later read fails.
func TestCloseWhileStreamFrameHalfRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		ca, cb := newDataConn(a), newDataConn(b)
		go cb.writeFrame(frameZFSStream, make([]byte, framePayload))
		r := ca.streamReader(frameZFSStream)
		_, err := io.ReadFull(r, make([]byte, 1000))
		require.NoError(t, err)
		go func() {
			<-cb.peerDone
			cb.Close()
		}()
		start := time.Now()
		require.NoError(t, ca.Close())
		assert.Less(t, time.Since(start), PeerTimeout, "Close waited for the peer timeout")
		_, err = r.Read(make([]byte, 10))
		assert.ErrorIs(t, err, ErrTruncated)
	})
}
