package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Frame types of a data connection (zrepl's). The four most significant
// bits are the frame layer's, the next four the heartbeat layer's, the next
// four the stream layer's; the rest belong to the requests.
const (
	frameReqHeader     uint32 = 1
	frameReqStructured uint32 = 2
	frameResHeader     uint32 = 3
	frameResStructured uint32 = 4
	frameZFSStream     uint32 = 5
	// frameErrorInfo carries a pb.ErrorInfo (extension zrepl.dev/errors-v1).
	frameErrorInfo uint32 = 0x8000

	frameStreamErrTrailer uint32 = 1 << 16
	frameEnd              uint32 = 1 << 17
	frameHeartbeat        uint32 = 1 << 24
	frameShutdown         uint32 = 1 << 28

	frameHeaderLen = 8
	// framePayload is what a writer puts in one frame of a streamed
	// message or stream (zrepl: 512 KiB).
	framePayload = 1 << 19
	// maxFramePayload bounds what a reader accepts in one frame.
	maxFramePayload = 1 << 23

	// HeartbeatInterval: a side that wrote nothing for this long sends a
	// heartbeat frame. PeerTimeout: a read or write that makes no
	// progress for this long fails; a heartbeat from the peer renews the
	// write side's. Both are zrepl's and bind either side of a mixed
	// pair: a zrepl peer gives up on us after PeerTimeout of silence.
	HeartbeatInterval = 5 * time.Second
	PeerTimeout       = 10 * time.Second
)

var (
	// ErrTruncated means a stream or message ended before its end frame.
	ErrTruncated = errors.New("data stream truncated")
	// ErrCorruptStream means the data connection broke the framing rules.
	ErrCorruptStream = errors.New("data stream corrupt")
	// errPeerShutdown: the peer announced the end of the connection.
	errPeerShutdown = errors.New("the peer shut the data connection down")
)

var payloadPool = sync.Pool{New: func() any { b := make([]byte, framePayload); return &b }}

type frame struct {
	typ uint32
	buf *[]byte // from payloadPool if cap == framePayload
	n   int
	// body, if not nil, is the payload still on the connection: the
	// reader of a stream reads it straight into its own buffer, and the
	// stream frames that follow it as well, until a frame of another kind
	// comes (see frameBody).
	body *frameBody
}

// directMin: stream frames with at least this much payload are read
// straight into the stream reader's buffer.
const directMin = 32 << 10

// frameBody lends the connection's read side to a stream's reader: the
// read goroutine waits until done is closed (or the connection closes,
// then it skips the rest of the frame), and goes on with hdr if hdrReady.
// lock (a channel, for synctest) guards the other fields.
type frameBody struct {
	lock     chan struct{}
	left     int                  // payload bytes of the current frame unread
	hdr      [frameHeaderLen]byte // a header read that is not the stream's
	hdrReady bool
	err      error
	done     chan struct{}
	doneOnce sync.Once
}

func (b *frameBody) finish() { b.doneOnce.Do(func() { close(b.done) }) }

func (f frame) payload() []byte {
	if f.buf == nil {
		return nil
	}
	return (*f.buf)[:f.n]
}

func (f frame) free() {
	if f.body != nil {
		// What the consumer left unread the read goroutine skips.
		f.body.finish()
		return
	}
	if f.buf != nil && cap(*f.buf) == framePayload {
		payloadPool.Put(f.buf)
	}
}

// dataConn is a data connection's frame layer: frames each way, heartbeats
// while a direction is idle, idle timeouts, and zrepl's shutdown (a
// shutdown frame, half-close, then wait for the peer's end). One goroutine
// reads frames ahead; one request or stream reads them at a time. Stream
// frames of directMin bytes or more it lends to the stream's reader, which
// reads them, and the stream frames after them, without a copy or a
// goroutine switch per frame (see frameBody).
type dataConn struct {
	nc net.Conn

	// wlock serializes frame writes. A channel, not a sync.Mutex: a
	// goroutine waiting on a mutex does not count as durably blocked
	// under testing/synctest, whose virtual clock would stop.
	wlock    chan struct{}
	hdr      [frameHeaderLen]byte
	lastSent atomic.Int64 // unix nanoseconds of the last frame written

	frames   chan frame
	readErr  error // valid once frames is closed
	closing  chan struct{}
	stopHB   chan struct{}
	peerDone chan struct{} // closed at the peer's shutdown frame or end
	peerOnce sync.Once
	closed   atomic.Bool
	done     chan struct{} // closed when Close or abort finished
}

func newDataConn(nc net.Conn) *dataConn {
	c := &dataConn{
		nc: nc, wlock: make(chan struct{}, 1), frames: make(chan frame, 4), closing: make(chan struct{}), stopHB: make(chan struct{}),
		peerDone: make(chan struct{}), done: make(chan struct{}),
	}
	c.lastSent.Store(time.Now().UnixNano())
	go c.readLoop()
	go c.heartbeats()
	return c
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func (c *dataConn) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// readFull reads len(p) bytes, each Read under a fresh PeerTimeout (not
// after Close began, which set a deadline of its own).
func (c *dataConn) readFull(p []byte) error {
	for len(p) > 0 {
		n, err := c.readSome(p)
		p = p[n:]
		if err != nil {
			if len(p) == 0 {
				return nil
			}
			return err
		}
	}
	return nil
}

// readSome reads into p until at least one byte came or reading failed,
// renewing the read deadline before each read: a timeout that came with
// data is none (the peer is alive), one without data is the peer's silence
// for PeerTimeout.
func (c *dataConn) readSome(p []byte) (int, error) {
	for {
		if !c.isClosing() {
			c.nc.SetReadDeadline(time.Now().Add(PeerTimeout))
		}
		n, err := c.nc.Read(p)
		switch {
		case err == nil && n == 0:
		case err == nil || n > 0 && isTimeout(err):
			return n, nil
		case isTimeout(err):
			return 0, fmt.Errorf("no data from the peer for %v: %w", PeerTimeout, err)
		default:
			return n, err
		}
	}
}

func (c *dataConn) readLoop() {
	defer c.peerOnce.Do(func() { close(c.peerDone) })
	var err error
	defer func() {
		c.readErr = err
		close(c.frames)
	}()
	var hdr [frameHeaderLen]byte
	shut, pending := false, false
	for {
		if !pending {
			if err = c.readFull(hdr[:]); err != nil {
				if shut {
					err = errPeerShutdown
				}
				return
			}
		}
		pending = false
		typ, n := binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:])
		if n > maxFramePayload {
			err = fmt.Errorf("%w: frame of type %#x with %d bytes of payload, the limit is %d", ErrCorruptStream, typ, n, maxFramePayload)
			return
		}
		f := frame{typ: typ, n: int(n)}
		if typ == frameZFSStream && n >= directMin && !shut {
			f.body = &frameBody{lock: make(chan struct{}, 1), left: int(n), done: make(chan struct{})}
			select {
			case c.frames <- f:
				select {
				case <-f.body.done:
				case <-c.closing:
				}
			case <-c.closing:
			}
			if err = c.skipBody(f.body); err != nil {
				return
			}
			hdr, pending = f.body.hdr, f.body.hdrReady
			continue
		}
		if n > 0 {
			if n < directMin {
				// Exactly sized: a pooled buffer is framePayload
				// bytes, and when the pool is empty (after a GC) making
				// and zeroing one for a small frame cost more than the
				// frame (a twentieth of the simulator's time).
				b := make([]byte, n)
				f.buf = &b
			} else if n <= framePayload {
				f.buf = payloadPool.Get().(*[]byte)
			} else {
				b := make([]byte, n)
				f.buf = &b
			}
			if err = c.readFull(f.payload()); err != nil {
				f.free()
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return
			}
		}
		switch {
		case typ == frameHeartbeat:
			// The peer is alive: grant our blocked writes more time
			// (it may be busy, e.g. in zfs recv, and not reading).
			if !c.isClosing() {
				c.nc.SetWriteDeadline(time.Now().Add(PeerTimeout))
			}
			f.free()
			continue
		case typ == frameShutdown:
			// Nothing more comes that matters; keep reading until the
			// peer's end so our close does not reset what we sent.
			shut = true
			c.peerOnce.Do(func() { close(c.peerDone) })
			f.free()
			continue
		case shut:
			f.free()
			continue
		}
		select {
		case c.frames <- f:
		case <-c.closing:
			f.free()
		}
	}
}

// skipBody takes the read side back from b's reader: it reads and drops
// what is left of b's current frame and returns the connection's error,
// if reading failed.
func (c *dataConn) skipBody(b *frameBody) error {
	b.lock <- struct{}{}
	defer func() { <-b.lock }()
	defer b.finish()
	skipped := b.err == nil && b.left > 0
	for b.err == nil && b.left > 0 {
		bp := payloadPool.Get().(*[]byte)
		k := min(b.left, len(*bp))
		if err := c.readFull((*bp)[:k]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.err = err
		}
		payloadPool.Put(bp)
		b.left -= k
	}
	if b.err == nil {
		if skipped || !b.hdrReady {
			// Later reads of the stream fail rather than lose data.
			b.err = errBodyGone
		}
		return nil
	}
	return b.err
}

var errBodyGone = errors.New("the data connection closed")

// readBody reads at most len(p) bytes of the stream from b's frames. At
// the end of a frame it reads the next header: a stream frame of at least
// directMin continues, a heartbeat renews the write deadline, and any
// other frame goes back to the read goroutine, and readBody returns 0.
func (c *dataConn) readBody(b *frameBody, p []byte) (int, error) {
	b.lock <- struct{}{}
	defer func() { <-b.lock }()
	for b.left == 0 {
		if b.err != nil || b.hdrReady {
			return 0, b.err
		}
		if err := c.readFull(b.hdr[:]); err != nil {
			b.err = err
			b.finish()
			if err == io.EOF {
				// The end before the frame that was due.
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		typ, n := binary.BigEndian.Uint32(b.hdr[:4]), binary.BigEndian.Uint32(b.hdr[4:])
		switch {
		case typ == frameZFSStream && n >= directMin && n <= maxFramePayload:
			b.left = int(n)
		case typ == frameHeartbeat && n == 0:
			if !c.isClosing() {
				c.nc.SetWriteDeadline(time.Now().Add(PeerTimeout))
			}
		default:
			b.hdrReady = true
			b.finish()
			return 0, nil
		}
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := c.readSome(p[:min(len(p), b.left)])
	b.left -= n
	if err != nil && !(n > 0 && b.left == 0) {
		// (An error with the frame's last bytes is the next read's.)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
	}
	if b.err != nil {
		b.finish()
	}
	return n, b.err
}

func (c *dataConn) heartbeats() {
	t := time.NewTimer(HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stopHB:
			return
		case <-t.C:
		}
		since := time.Since(time.Unix(0, c.lastSent.Load()))
		if since >= HeartbeatInterval {
			// Errors show at the next real write; a heartbeat that
			// failed is not retried sooner than the next interval.
			c.writeFrame(frameHeartbeat, nil)
			since = 0
		}
		t.Reset(HeartbeatInterval - since)
	}
}

// writeFrame writes one frame; a write that makes no progress for
// PeerTimeout fails (a heartbeat of the peer renews the deadline).
func (c *dataConn) writeFrame(typ uint32, p []byte) error {
	c.wlock <- struct{}{}
	defer func() { <-c.wlock }()
	binary.BigEndian.PutUint32(c.hdr[:4], typ)
	binary.BigEndian.PutUint32(c.hdr[4:], uint32(len(p)))
	bufs := net.Buffers{c.hdr[:], p}
	for {
		if !c.isClosing() {
			c.nc.SetWriteDeadline(time.Now().Add(PeerTimeout))
		}
		n, err := bufs.WriteTo(c.nc)
		if err == nil {
			c.lastSent.Store(time.Now().UnixNano())
			return nil
		}
		if isTimeout(err) && n > 0 {
			continue
		}
		if isTimeout(err) {
			return fmt.Errorf("the peer took no data for %v: %w", PeerTimeout, err)
		}
		return err
	}
}

// next returns the next frame the reader goroutine delivered.
func (c *dataConn) next() (frame, error) {
	f, ok := <-c.frames
	if !ok {
		// A bare EOF is the connection's end before the frame that was
		// due; a transport's error wrapping EOF (an ssh exit) says more.
		err := c.readErr
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return f, nil
}

// writeMessage writes p as a streamed message of type typ: frames of at
// most framePayload bytes, then an end frame.
func (c *dataConn) writeMessage(typ uint32, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), framePayload)
		if err := c.writeFrame(typ, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return c.writeFrame(frameEnd, nil)
}

// writeTrailer ends a stream whose source failed: the error's text as an
// error trailer message.
func (c *dataConn) writeTrailer(msg string) error {
	if !utf8.ValidString(msg) {
		msg = fmt.Sprintf("%q", msg)
	}
	return c.writeMessage(frameStreamErrTrailer, []byte(truncateText(msg, 32<<10)))
}

// writeStream copies src onto the connection as frames of type typ and
// ends with an end frame, or, if src fails, with src's error as a
// trailer. It returns the bytes copied, src's error and the connection's.
func (c *dataConn) writeStream(typ uint32, src io.Reader) (n int64, srcErr, connErr error) {
	bp := payloadPool.Get().(*[]byte)
	defer payloadPool.Put(bp)
	buf := *bp
	for {
		k, err := io.ReadFull(src, buf)
		if k > 0 {
			if werr := c.writeFrame(typ, buf[:k]); werr != nil {
				return n, nil, werr
			}
			n += int64(k)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return n, nil, c.writeFrame(frameEnd, nil)
		default:
			return n, err, c.writeTrailer(err.Error())
		}
	}
}

// SourceError is a stream's failure at its source, as its trailer said.
type SourceError struct{ Text string }

func (e *SourceError) Error() string { return e.Text }

// readMessage reads a streamed message of type typ of at most max bytes.
// A trailer instead is returned as a *SourceError.
func (c *dataConn) readMessage(typ uint32, max int) ([]byte, error) {
	var out []byte
	for {
		f, err := c.next()
		if err != nil {
			return nil, fmt.Errorf("%w: message ended early: %w", ErrTruncated, err)
		}
		switch f.typ {
		case typ:
			if len(out)+f.n > max {
				f.free()
				return nil, fmt.Errorf("%w: message of type %d longer than %d bytes", ErrCorruptStream, typ, max)
			}
			out = append(out, f.payload()...)
			f.free()
		case frameEnd:
			f.free()
			return out, nil
		case frameStreamErrTrailer:
			return nil, c.readTrailer(f)
		default:
			f.free()
			return nil, fmt.Errorf("%w: frame of type %#x, expected %#x", ErrCorruptStream, f.typ, typ)
		}
	}
}

// readTrailer reads the rest of an error trailer whose first frame is f.
func (c *dataConn) readTrailer(f frame) error {
	text := append([]byte(nil), f.payload()...)
	f.free()
	more, err := c.readMessage(frameStreamErrTrailer, 64<<10)
	if err != nil {
		return fmt.Errorf("the stream failed at its source, and its error trailer broke off: %w", err)
	}
	text = append(text, more...)
	if !utf8.Valid(text) {
		return &SourceError{Text: fmt.Sprintf("%q", text)}
	}
	return &SourceError{Text: string(text)}
}

// streamReader returns the stream of type typ that comes next. Its Read
// returns io.EOF only at the stream's end frame; a connection that ends
// earlier reads as ErrTruncated, a trailer as a *SourceError. Only one
// stream or message is read at a time.
func (c *dataConn) streamReader(typ uint32) io.Reader { return &streamReader{c: c, typ: typ} }

type streamReader struct {
	c   *dataConn
	typ uint32
	err error
	// cur is the frame being read, off how far.
	cur frame
	off int
}

func (r *streamReader) Read(p []byte) (int, error) {
	c := r.c
	for r.err == nil {
		if b := r.cur.body; b != nil {
			if len(p) == 0 {
				return 0, nil
			}
			n, err := c.readBody(b, p)
			if err != nil {
				r.err = fmt.Errorf("%w: %w", ErrTruncated, err)
				return n, r.err
			}
			if n > 0 {
				return n, nil
			}
			r.cur = frame{}
			continue
		}
		if r.cur.buf != nil && r.off < r.cur.n {
			n := copy(p, r.cur.payload()[r.off:])
			r.off += n
			return n, nil
		}
		if r.cur.buf != nil {
			r.cur.free()
			r.cur = frame{}
		}
		f, err := c.next()
		if err != nil {
			r.err = fmt.Errorf("%w: %w", ErrTruncated, err)
			break
		}
		switch f.typ {
		case r.typ:
			r.cur, r.off = f, 0
		case frameEnd:
			f.free()
			r.err = io.EOF
		case frameStreamErrTrailer:
			r.err = c.readTrailer(f)
		default:
			f.free()
			r.err = fmt.Errorf("%w: frame of type %#x in a stream of type %#x", ErrCorruptStream, f.typ, r.typ)
		}
	}
	return 0, r.err
}

// Close ends the connection as zrepl does: a shutdown frame, a half-close
// where the transport has one, then it waits (at most PeerTimeout) for the
// peer's shutdown frame or end, so that closing resets nothing the peer
// has yet to read; then it closes.
func (c *dataConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		<-c.done
		return nil
	}
	defer close(c.done)
	close(c.stopHB)
	dl := time.Now().Add(PeerTimeout)
	c.nc.SetDeadline(dl)
	close(c.closing)
	err := c.writeFrame(frameShutdown, nil)
	if err == nil {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		t := time.NewTimer(time.Until(dl))
		select {
		case <-c.peerDone:
		case <-t.C:
		}
		t.Stop()
	}
	cerr := c.nc.Close()
	c.drain()
	if errors.Is(cerr, net.ErrClosed) {
		cerr = nil
	}
	return cerr
}

// abort closes the connection at once (a cancelled or failed request).
func (c *dataConn) abort() {
	if !c.closed.CompareAndSwap(false, true) {
		<-c.done
		return
	}
	defer close(c.done)
	close(c.stopHB)
	close(c.closing)
	c.nc.Close()
	c.drain()
}

func (c *dataConn) drain() {
	for f := range c.frames {
		f.free()
	}
}
