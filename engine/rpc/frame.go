package rpc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/protobuf/proto"

	"zrepl.dev/zrepl/engine/rpc/pb"
)

// The data connection carries one send stream as frames:
//
//	type (1 byte) | length (4 bytes, big endian) | payload
//
// 'D' frames carry stream bytes (at most MaxFrame). 'E', the end marker,
// carries the total number of stream bytes as 8 bytes; only after it does a
// reader return io.EOF, so a connection that ends anywhere before it is a
// truncated stream, never a clean end. 'X' carries a pb.ErrorInfo: the
// sending side's stream failed.
const (
	frameData  = 'D'
	frameEnd   = 'E'
	frameError = 'X'

	frameHeader = 5
	// MaxFrame bounds the payload of a data frame, and with it the memory
	// a reader needs.
	MaxFrame = 1 << 20
	// maxErrorFrame bounds an error frame's payload.
	maxErrorFrame = 64 << 10
	// chunkSize is what a writer reads from its source per frame.
	chunkSize = 256 << 10
)

var (
	// ErrTruncated means the data stream ended before its end marker.
	ErrTruncated = errors.New("data stream truncated")
	// ErrCorruptStream means the data stream broke the framing rules.
	ErrCorruptStream = errors.New("data stream corrupt")
)

// frameWriter writes frames to w.
type frameWriter struct {
	w   io.Writer
	n   int64
	hdr [frameHeader]byte
}

func (fw *frameWriter) frame(typ byte, payload []byte) error {
	fw.hdr[0] = typ
	binary.BigEndian.PutUint32(fw.hdr[1:], uint32(len(payload)))
	// One writev per frame: the header costs no extra syscall or copy.
	bufs := net.Buffers{fw.hdr[:], payload}
	if bw, ok := fw.w.(interface {
		writeBuffers(*net.Buffers) (int64, error)
	}); ok {
		_, err := bw.writeBuffers(&bufs)
		return err
	}
	_, err := bufs.WriteTo(fw.w)
	return err
}

func (fw *frameWriter) data(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), MaxFrame)
		if err := fw.frame(frameData, p[:n]); err != nil {
			return err
		}
		fw.n += int64(n)
		p = p[n:]
	}
	return nil
}

func (fw *frameWriter) end() error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(fw.n))
	return fw.frame(frameEnd, b[:])
}

func (fw *frameWriter) fail(cause error) error {
	b, err := proto.Marshal(errorInfo(cause))
	if err != nil {
		return err
	}
	if len(b) > maxErrorFrame {
		b, _ = proto.Marshal(&pb.ErrorInfo{Text: truncateText(cause.Error(), maxErrorFrame/2)})
	}
	return fw.frame(frameError, b)
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// copyFrames frames src onto w until src ends. A source error is passed on
// as an error frame, so the reader learns why the stream stopped; it is
// returned as srcErr. dstErr is a failure to write.
func copyFrames(w io.Writer, src io.Reader) (n int64, srcErr, dstErr error) {
	fw := &frameWriter{w: w}
	buf := make([]byte, chunkSize)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if werr := fw.data(buf[:k]); werr != nil {
				return fw.n, nil, werr
			}
		}
		if err == io.EOF {
			return fw.n, nil, fw.end()
		}
		if err != nil {
			return fw.n, err, fw.fail(err)
		}
	}
}

// frameReader reads the stream bytes of frames from r. It returns io.EOF
// only after a valid end marker; every other end is an error.
type frameReader struct {
	r         *bufio.Reader
	remaining int // bytes left in the current data frame
	n         int64
	err       error
	hdr       [frameHeader]byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

func (fr *frameReader) truncated(cause error) error {
	if cause == io.EOF {
		cause = io.ErrUnexpectedEOF
	}
	// %v, not %w: a truncated stream must never look like io.EOF.
	return fmt.Errorf("%w after %d bytes: %v", ErrTruncated, fr.n, cause)
}

func (fr *frameReader) Read(p []byte) (int, error) {
	for fr.remaining == 0 {
		if fr.err != nil {
			return 0, fr.err
		}
		fr.err = fr.next()
	}
	if len(p) == 0 {
		return 0, nil
	}
	p = p[:min(len(p), fr.remaining)]
	k, err := fr.r.Read(p)
	fr.remaining -= k
	fr.n += int64(k)
	if err != nil && fr.remaining > 0 {
		fr.err = fr.truncated(err)
		fr.remaining = 0
		if k > 0 {
			return k, nil
		}
		return 0, fr.err
	}
	return k, nil
}

// next reads a frame header (and any non-data payload). It returns nil
// after a data frame header, io.EOF after the end marker.
func (fr *frameReader) next() error {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return fr.truncated(err)
	}
	typ, size := fr.hdr[0], binary.BigEndian.Uint32(fr.hdr[1:])
	switch typ {
	case frameData:
		if size > MaxFrame {
			return fmt.Errorf("%w: data frame of %d bytes exceeds the limit of %d", ErrCorruptStream, size, MaxFrame)
		}
		fr.remaining = int(size)
		return nil
	case frameEnd:
		if size != 8 {
			return fmt.Errorf("%w: end marker of %d bytes, want 8", ErrCorruptStream, size)
		}
		var b [8]byte
		if _, err := io.ReadFull(fr.r, b[:]); err != nil {
			return fr.truncated(err)
		}
		if total := binary.BigEndian.Uint64(b[:]); total != uint64(fr.n) {
			return fmt.Errorf("%w: end marker says %d bytes, %d arrived", ErrCorruptStream, total, fr.n)
		}
		return io.EOF
	case frameError:
		if size > maxErrorFrame {
			return fmt.Errorf("%w: error frame of %d bytes exceeds the limit of %d", ErrCorruptStream, size, maxErrorFrame)
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(fr.r, b); err != nil {
			return fr.truncated(err)
		}
		var info pb.ErrorInfo
		if err := proto.Unmarshal(b, &info); err != nil {
			return fmt.Errorf("%w: undecodable error frame: %v", ErrCorruptStream, err)
		}
		return fmt.Errorf("%w after %d bytes: the stream failed at its source: %w", ErrTruncated, fr.n, remoteError(&info))
	default:
		return fmt.Errorf("%w: unknown frame type 0x%02x after %d bytes", ErrCorruptStream, typ, fr.n)
	}
}
