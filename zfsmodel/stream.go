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
	"sync"
	"sync/atomic"
)

// The model's send stream format:
//
//	magic "ZMSTRM\x00\x01"
//	uint32 big-endian length, then the header as JSON (streamHeader),
//	  then the CRC-32C of all of the above, so a receiver acts on no
//	  corrupt header
//	Header.Blocks block records: 'B', uint32 running checksum, uint64
//	  block number, uint64 key, then BlockSize bytes of data (encrypted
//	  under the key ID in raw streams of encrypted datasets)
//	trailer: 'E', then the running checksum
//
// The running checksum (big-endian) is a CRC-32C (Castagnoli) over every
// byte before it, except that each block's data enters it as the 4-byte
// big-endian CRC-32C of that data. Like the checksum in every ZFS stream
// record, it lets a receiver verify each record before it keeps it.
//
// Records have a fixed size, so the exact stream length is known in
// advance (SendSize) and a resume position is a block number.
var streamMagic = [8]byte{'Z', 'M', 'S', 'T', 'R', 'M', 0, 1}

const (
	recHeaderLen = 1 + 4 + 8 + 8
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
	// PropStream: the stream carries the filesystem's properties (zfs
	// send -p or -b), Props; a receive makes them the received values.
	PropStream bool              `json:",omitempty"`
	Props      map[string]string `json:",omitempty"`
	// Resuming streams carry the position they start at.
	Resume       bool   `json:",omitempty"`
	ResumeOffset uint64 `json:",omitempty"`
	ResumeBytes  uint64 `json:",omitempty"`
	// Blocks is the number of block records that follow.
	Blocks uint64
}

type blockRec struct {
	No, Key uint64
	Sum     uint32 // CRC-32C of the plain data
}

// streamPlan is everything a send stream is made of, captured under the
// model's lock so the stream can be produced without it.
type streamPlan struct {
	prefix []byte // magic, header length and header
	blocks []blockRec
	mask   uint64 // XOR mask of raw encrypted payloads; 0 for plain data
	base   []byte // maskedBase(mask)
	adjust uint32 // rawSumAdjust(mask)
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
	prefix = binary.BigEndian.AppendUint32(prefix, crc32.Checksum(prefix, castagnoli))
	p := &streamPlan{prefix: prefix, blocks: blocks, base: baseBlock}
	if h.Encrypted {
		p.mask = splitmix(h.KeyID) | 1
		p.adjust = rawSumAdjust(p.mask)
		p.base = maskedBase(p.mask)
	}
	return p, nil
}

func (p *streamPlan) size() int64 {
	return int64(len(p.prefix)) + int64(len(p.blocks))*recLen + trailerLen
}

// A block's bytes are a fixed pseudo-random block (baseBlock) with its
// first word of every 512-byte sector replaced by a word derived from the
// block's key, all XORed word by word with the stream's mask (raw streams
// of encrypted datasets). Producing a block is then mostly a memmove, and
// blocks with different keys still differ in every sector.
const (
	sectorWords = 64 // 512 bytes
	wordsPerBlk = BlockSize / 8
)

var baseBlock = func() []byte {
	b := make([]byte, BlockSize)
	for i := 0; i < wordsPerBlk; i++ {
		binary.LittleEndian.PutUint64(b[8*i:], splitmix(uint64(i)^0x5a17))
	}
	return b
}()

// maskedBase returns baseBlock XOR mask in every word.
func maskedBase(mask uint64) []byte {
	if mask == 0 {
		return baseBlock
	}
	b := make([]byte, BlockSize)
	for i := 0; i < BlockSize; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(baseBlock[i:])^mask)
	}
	return b
}

// keyWord is word w (a multiple of sectorWords) of the block with key.
func keyWord(key, mask uint64, w int) uint64 {
	return binary.LittleEndian.Uint64(baseBlock[8*w:]) ^ (key + uint64(w+1)*golden) ^ mask
}

// fillBlock writes the bytes [off, off+len(dst)) of the block with key;
// base is maskedBase(mask).
func fillBlock(dst []byte, key, mask uint64, base []byte, off int) {
	copy(dst, base[off:off+len(dst)])
	end := off + len(dst)
	// Patch the key words overlapping [off, end).
	first := (off / (8 * sectorWords)) * sectorWords
	for w := first; 8*w < end; w += sectorWords {
		ws, we := 8*w, 8*w+8
		if we <= off {
			continue
		}
		var kb [8]byte
		binary.LittleEndian.PutUint64(kb[:], keyWord(key, mask, w))
		lo, hi := max(ws, off), min(we, end)
		copy(dst[lo-off:hi-off], kb[lo-ws:hi-ws])
	}
}

// blockSum is the CRC-32C of a whole block's plain bytes. Blocks store it
// (as ZFS block pointers store checksums), so the sender need not read the
// data twice.
func blockSum(key uint64, scratch []byte) uint32 {
	fillBlock(scratch[:BlockSize], key, 0, baseBlock, 0)
	return crc32.Checksum(scratch[:BlockSize], castagnoli)
}

// rawSumAdjust turns the CRC of a block's plain bytes into the CRC of its
// bytes XORed with mask in every word and back: CRC is affine, so
// crc(a^b) = crc(a)^crc(b)^crc(0) for inputs of one length.
func rawSumAdjust(mask uint64) uint32 {
	if mask == 0 {
		return 0
	}
	// A pure function of mask, asked for every send and receive of an
	// encrypted filesystem: remembered (2% of the simulator's time).
	adjustMemo.Lock()
	defer adjustMemo.Unlock()
	if a, ok := adjustMemo.m[mask]; ok {
		return a
	}
	if len(adjustMemo.m) >= 1024 {
		clear(adjustMemo.m)
	}
	a := computeRawSumAdjust(mask)
	adjustMemo.m[mask] = a
	return a
}

var adjustMemo = struct {
	sync.Mutex
	m map[uint64]uint32
}{m: map[uint64]uint32{}}

func computeRawSumAdjust(mask uint64) uint32 {
	buf := make([]byte, BlockSize)
	zero := crc32.Checksum(buf, castagnoli)
	for i := 0; i < BlockSize; i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], mask)
	}
	return crc32.Checksum(buf, castagnoli) ^ zero
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
				// off is 0 here: the header is built at its first byte,
				// when s.crc covers everything before the record.
				s.rec[0] = 'B'
				binary.BigEndian.PutUint32(s.rec[1:], crc32.Update(s.crc, castagnoli, s.rec[:1]))
				binary.BigEndian.PutUint64(s.rec[5:], b.No)
				binary.BigEndian.PutUint64(s.rec[13:], b.Key)
				s.recIdx = idx
			}
			n = copy(p, s.rec[off:])
			s.crc = crc32.Update(s.crc, castagnoli, p[:n])
		} else {
			d := off - recHeaderLen
			n = min(len(p), BlockSize-d)
			fillBlock(p[:n], b.Key, pl.mask, pl.base, d)
			if d+n == BlockSize {
				var sum [4]byte
				binary.BigEndian.PutUint32(sum[:], b.Sum^pl.adjust)
				s.crc = crc32.Update(s.crc, castagnoli, sum[:])
			}
		}
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

// WriteTo lets io.Copy move whole records per Write, which halves the
// handoffs through a pipe compared with io.Copy's 32 KiB buffer.
func (s *sendStream) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 2*recLen)
	var total int64
	for {
		n, rerr := s.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
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
		return h, &errBadStream{"bad magic number"}
	}
	l := binary.BigEndian.Uint32(pre[8:])
	if l > maxHeaderLen {
		return h, &errBadStream{fmt.Sprintf("header of %d bytes", l)}
	}
	js := make([]byte, l)
	if err := sr.readFull(js); err != nil {
		return h, err
	}
	want := sr.crc
	var hc [4]byte
	if err := sr.readFull(hc[:]); err != nil {
		return h, err
	}
	if binary.BigEndian.Uint32(hc[:]) != want {
		return h, &errBadStream{"header checksum mismatch"}
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

// record reads one block record and checks the running checksum, which
// verifies everything before the record; its own data is verified by the
// next record or the trailer. Sum is the CRC of the data as received
// (ciphertext in raw streams).
func (sr *streamReader) record() (blockRec, error) {
	if sr.buf == nil {
		sr.buf = make([]byte, recLen)
	}
	n, err := io.ReadFull(sr.r, sr.buf)
	if n > 0 && sr.buf[0] != 'B' {
		return blockRec{}, &errBadStream{fmt.Sprintf("record type %q, want 'B'", sr.buf[0])}
	}
	if err != nil {
		// Only the record header's bytes count as consumed; a partial
		// record is discarded.
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		return blockRec{}, err
	}
	sr.n += int64(n)
	rh, data := sr.buf[:recHeaderLen], sr.buf[recHeaderLen:]
	if want := crc32.Update(sr.crc, castagnoli, rh[:1]); binary.BigEndian.Uint32(rh[1:]) != want {
		return blockRec{}, errChecksum
	}
	sr.crc = crc32.Update(sr.crc, castagnoli, rh)
	sum := crc32.Checksum(data, castagnoli)
	var sb [4]byte
	binary.BigEndian.PutUint32(sb[:], sum)
	sr.crc = crc32.Update(sr.crc, castagnoli, sb[:])
	return blockRec{No: binary.BigEndian.Uint64(rh[5:]), Key: binary.BigEndian.Uint64(rh[13:]), Sum: sum}, nil
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
