package zfsmodel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"sync/atomic"
)

// The model's send stream format:
//
//	magic "ZMSTRM\x00\x01"
//	uint32 big-endian length, then the header as JSON (streamHeader)
//	Header.Blocks block records: 'B', uint64 block number, uint64 key,
//	  then BlockSize bytes of data (encrypted under the key ID in raw
//	  streams of encrypted datasets)
//	trailer: 'E', then the CRC-32C (Castagnoli) of every byte before it,
//	  big-endian
//
// Records have a fixed size, so the exact stream length is known in
// advance (SendSize) and a resume position is a block number.
var streamMagic = [8]byte{'Z', 'M', 'S', 'T', 'R', 'M', 0, 1}

const (
	recHeaderLen = 1 + 8 + 8
	recLen       = recHeaderLen + BlockSize
	trailerLen   = 1 + 4
	// maxHeaderLen bounds what a receiver allocates for a header.
	maxHeaderLen = 1 << 20
	// dataObject is the object number resume tokens name: the model keeps
	// all blocks of a filesystem in one object.
	dataObject = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type streamHeader struct {
	Version    int
	ToName     string // "pool/fs@snap" on the sender
	ToGUID     uint64
	ToCreation int64  // unix nanoseconds
	FromName   string `json:",omitempty"`
	FromGUID   uint64 `json:",omitempty"`
	// Encrypted: the payload is ciphertext of an encrypted dataset (a raw
	// send); KeyID names its key.
	Encrypted bool   `json:",omitempty"`
	KeyID     uint64 `json:",omitempty"`
	// The send flags, as a resume token records them.
	RawOK, CompressOK, LargeBlockOK, EmbedOK bool `json:",omitempty"`
	// Resuming streams carry the position they start at.
	Resume       bool   `json:",omitempty"`
	ResumeOffset uint64 `json:",omitempty"`
	ResumeBytes  uint64 `json:",omitempty"`
	// Blocks is the number of block records that follow.
	Blocks uint64
}

type blockRec struct {
	No, Key uint64
}

// streamPlan is everything a send stream is made of, captured under the
// model's lock so the stream can be produced without it.
type streamPlan struct {
	prefix []byte // magic, header length and header
	blocks []blockRec
	mask   uint64 // XOR mask of raw encrypted payloads; 0 for plain data
}

func newPlan(h streamHeader, blocks []blockRec) (*streamPlan, error) {
	sort.Slice(blocks, func(i, j int) bool { return blocks[i].No < blocks[j].No })
	h.Version = 1
	h.Blocks = uint64(len(blocks))
	js, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	prefix := make([]byte, 0, len(streamMagic)+4+len(js))
	prefix = append(prefix, streamMagic[:]...)
	prefix = binary.BigEndian.AppendUint32(prefix, uint32(len(js)))
	prefix = append(prefix, js...)
	p := &streamPlan{prefix: prefix, blocks: blocks}
	if h.Encrypted {
		p.mask = splitmix(h.KeyID) | 1
	}
	return p, nil
}

func (p *streamPlan) size() int64 {
	return int64(len(p.prefix)) + int64(len(p.blocks))*recLen + trailerLen
}

// baseBlock is a fixed pseudo-random block; a block's bytes are baseBlock
// XOR a sequence derived from its key. It makes streams look like data
// while costing one pass over memory to produce.
var baseBlock = func() []uint64 {
	b := make([]uint64, BlockSize/8)
	for i := range b {
		b[i] = splitmix(uint64(i) ^ 0x5a17)
	}
	return b
}()

func blockWord(key, mask uint64, i int) uint64 {
	return baseBlock[i] ^ (key + uint64(i+1)*golden) ^ mask
}

// fillBlock writes the bytes [off, off+len(dst)) of the block with key.
func fillBlock(dst []byte, key, mask uint64, off int) {
	for len(dst) > 0 && off%8 != 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], blockWord(key, mask, off/8))
		n := copy(dst, w[off%8:])
		dst, off = dst[n:], off+n
	}
	i := off / 8
	x := key + uint64(i+1)*golden
	for len(dst) >= 8 {
		binary.LittleEndian.PutUint64(dst, baseBlock[i]^x^mask)
		dst = dst[8:]
		i++
		x += golden
	}
	if len(dst) > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], blockWord(key, mask, i))
		copy(dst, w[:])
	}
}

// sendStream produces a plan's bytes lazily as they are read.
type sendStream struct {
	ctx    context.Context
	plan   *streamPlan
	total  int64
	pos    int64
	cut    int64 // -1: no cut
	crc    uint32
	closed atomic.Bool
	rec    [recHeaderLen]byte
	recIdx int // index whose header is in rec, -1 none
}

func newSendStream(ctx context.Context, p *streamPlan, cut int64) *sendStream {
	return &sendStream{ctx: ctx, plan: p, total: p.size(), cut: cut, recIdx: -1}
}

var errStreamClosed = errors.New("zfsmodel: read from closed send stream")

func (s *sendStream) Read(p []byte) (int, error) {
	if s.closed.Load() {
		return 0, errStreamClosed
	}
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if s.pos >= s.total {
		return 0, io.EOF
	}
	if s.cut >= 0 {
		if s.pos >= s.cut {
			return 0, ErrStreamCut
		}
		if rest := s.cut - s.pos; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	n := 0
	for n < len(p) && s.pos < s.total {
		k := s.emit(p[n:])
		n += k
	}
	return n, nil
}

// emit fills the start of p from position s.pos onwards, within one region
// of the stream, and returns how many bytes it wrote.
func (s *sendStream) emit(p []byte) int {
	pl := s.plan
	prefixLen := int64(len(pl.prefix))
	recsEnd := prefixLen + int64(len(pl.blocks))*recLen
	var n int
	switch {
	case s.pos < prefixLen:
		n = copy(p, pl.prefix[s.pos:])
		s.crc = crc32.Update(s.crc, castagnoli, p[:n])
	case s.pos < recsEnd:
		rel := s.pos - prefixLen
		idx := int(rel / recLen)
		off := int(rel % recLen)
		b := pl.blocks[idx]
		if off < recHeaderLen {
			if s.recIdx != idx {
				s.rec[0] = 'B'
				binary.BigEndian.PutUint64(s.rec[1:], b.No)
				binary.BigEndian.PutUint64(s.rec[9:], b.Key)
				s.recIdx = idx
			}
			n = copy(p, s.rec[off:])
		} else {
			d := off - recHeaderLen
			n = min(len(p), BlockSize-d)
			fillBlock(p[:n], b.Key, pl.mask, d)
		}
		s.crc = crc32.Update(s.crc, castagnoli, p[:n])
	case s.pos == recsEnd:
		p[0] = 'E'
		n = 1
		s.crc = crc32.Update(s.crc, castagnoli, p[:1])
	default:
		var t [4]byte
		binary.BigEndian.PutUint32(t[:], s.crc)
		n = copy(p, t[s.pos-recsEnd-1:])
	}
	s.pos += int64(n)
	return n
}

func (s *sendStream) Close() error {
	s.closed.Store(true)
	return nil
}

// streamReader parses a stream on the receiving side.
type streamReader struct {
	r        io.Reader
	crc      uint32
	n        int64 // bytes consumed
	buf      []byte
	hdrBytes int64
}

// errBadStream marks a stream that is not one of ours or is corrupt, as
// opposed to one that ended early.
type errBadStream struct{ reason string }

func (e *errBadStream) Error() string { return "invalid stream: " + e.reason }

func (sr *streamReader) readFull(b []byte) error {
	n, err := io.ReadFull(sr.r, b)
	sr.crc = crc32.Update(sr.crc, castagnoli, b[:n])
	sr.n += int64(n)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return err
}

func (sr *streamReader) header() (streamHeader, error) {
	var h streamHeader
	var pre [12]byte
	if err := sr.readFull(pre[:]); err != nil {
		return h, err
	}
	if [8]byte(pre[:8]) != streamMagic {
		return h, &errBadStream{"bad magic"}
	}
	l := binary.BigEndian.Uint32(pre[8:])
	if l > maxHeaderLen {
		return h, &errBadStream{fmt.Sprintf("header of %d bytes", l)}
	}
	js := make([]byte, l)
	if err := sr.readFull(js); err != nil {
		return h, err
	}
	if err := json.Unmarshal(js, &h); err != nil {
		return h, &errBadStream{"header: " + err.Error()}
	}
	if h.Version != 1 {
		return h, &errBadStream{fmt.Sprintf("unsupported stream version %d", h.Version)}
	}
	sr.hdrBytes = sr.n
	return h, nil
}

// record reads one block record; data bytes are checked by the trailer.
func (sr *streamReader) record() (blockRec, error) {
	var rh [recHeaderLen]byte
	if err := sr.readFull(rh[:]); err != nil {
		return blockRec{}, err
	}
	if rh[0] != 'B' {
		return blockRec{}, &errBadStream{fmt.Sprintf("record type %q, want 'B'", rh[0])}
	}
	if sr.buf == nil {
		sr.buf = make([]byte, BlockSize)
	}
	if err := sr.readFull(sr.buf); err != nil {
		return blockRec{}, err
	}
	return blockRec{No: binary.BigEndian.Uint64(rh[1:]), Key: binary.BigEndian.Uint64(rh[9:])}, nil
}

// trailer reads the end record and checks the stream checksum.
func (sr *streamReader) trailer() error {
	var e [1]byte
	if err := sr.readFull(e[:]); err != nil {
		return err
	}
	if e[0] != 'E' {
		return &errBadStream{fmt.Sprintf("record type %q, want 'E'", e[0])}
	}
	want := sr.crc
	var t [4]byte
	if err := sr.readFull(t[:]); err != nil {
		return err
	}
	if got := binary.BigEndian.Uint32(t[:]); got != want {
		return errChecksum
	}
	return nil
}

var errChecksum = errors.New("stream checksum mismatch")
