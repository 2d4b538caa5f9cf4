package resumetoken

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// A small codec for OpenZFS packed nvlists, just big enough for resume
// tokens. The kernel packs the token nvlist with NV_ENCODE_NATIVE (the real
// token from OpenZFS 2.1 in the tests has encoding byte 0, endian byte 1), so
// that is what we write. Reading also accepts big-endian native lists (tokens
// made on big-endian hosts) and NV_ENCODE_XDR, which libnvpair's unpack
// accepts too.
//
// Native layout, all integers in host byte order:
//
//	header:  encoding u8, endian u8, reserved u16
//	nvlist:  version i32 (0), nvflag u32, pairs..., terminator i32 (0)
//	pair:    size i32, name_sz i16, reserved i16, nelem i32, type i32,
//	         name (name_sz bytes incl. NUL) padded to 8, value padded to 8;
//	         size is the whole pair. An embedded nvlist (type nvlist or
//	         nvlist array) is written as further lists right after the pair.
//
// XDR layout, all integers big-endian in 4-byte units:
//
//	nvlist:  version, nvflag, pairs..., terminator (two zero words)
//	pair:    encoded size (of this pair in XDR, nested lists included),
//	         decoded size (native size), name (length + bytes padded to 4),
//	         type, nelem, value (uint64: 8 bytes; string: length + bytes
//	         padded to 4; boolean: nothing)

type dataType int32

// The subset of data_type_t values we name; the rest are skipped by size.
const (
	typeBoolean     dataType = 1
	typeUint64      dataType = 8
	typeString      dataType = 9
	typeUint64Array dataType = 16
	typeNVList      dataType = 19
	typeNVListArray dataType = 20
)

var typeNames = map[dataType]string{
	typeBoolean:     "boolean",
	2:               "byte",
	3:               "int16",
	4:               "uint16",
	5:               "int32",
	6:               "uint32",
	7:               "int64",
	typeUint64:      "uint64",
	typeString:      "string",
	10:              "byte array",
	typeUint64Array: "uint64 array",
	17:              "string array",
	typeNVList:      "nvlist",
	typeNVListArray: "nvlist array",
	21:              "boolean value",
}

func (t dataType) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type %d", int32(t))
}

const (
	encodingNative = 0
	encodingXDR    = 1

	endianBig    = 0
	endianLittle = 1

	nvVersion = 0
	// nvUniqueName is NV_UNIQUE_NAME, the flag fnvlist_alloc sets.
	nvUniqueName = 1

	nativePairHeader = 16 // sizeof(nvpair_t)
	nativeNVListSize = 24 // sizeof(nvlist_t) on LP64, the value of an nvlist pair
	// maxDepth bounds recursion into embedded lists (libnvpair allows 20).
	maxDepth = 20
)

// nvPair is one decoded or to-be-encoded pair. Only the value of the type
// in Type is meaningful. Decoding fills U64 and Str for uint64 and string
// pairs; pairs of other types carry only name and type.
type nvPair struct {
	Name string
	Type dataType
	U64  uint64
	Str  string
	// U64s and List exist so tests can write pairs a decoder must skip.
	U64s []uint64
	List []nvPair
}

// nvlistError is a malformed packed nvlist; Off is the byte offset into the
// packed (decompressed) buffer.
type nvlistError struct {
	Off    int
	Reason string
}

func (e *nvlistError) Error() string {
	return fmt.Sprintf("malformed nvlist at byte %d: %s", e.Off, e.Reason)
}

func malformed(off int, format string, args ...any) error {
	return &nvlistError{Off: off, Reason: fmt.Sprintf(format, args...)}
}

// byteOrder is binary.LittleEndian or binary.BigEndian.
type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

func align(n, a int) int { return (n + a - 1) &^ (a - 1) }

// packNative encodes pairs as a native nvlist in byte order bo, as
// fnvlist_pack does on a host of that byte order.
func packNative(pairs []nvPair, bo byteOrder) []byte {
	endian := byte(endianLittle)
	if bo == binary.BigEndian {
		endian = endianBig
	}
	b := []byte{encodingNative, endian, 0, 0}
	return appendNativeList(b, pairs, bo)
}

func appendNativeList(b []byte, pairs []nvPair, bo byteOrder) []byte {
	b = bo.AppendUint32(b, nvVersion)
	b = bo.AppendUint32(b, nvUniqueName)
	for _, p := range pairs {
		nameSz := len(p.Name) + 1
		hdr := align(nativePairHeader+nameSz, 8)
		var value []byte
		nelem := 1
		switch p.Type {
		case typeBoolean:
			nelem = 0
		case typeUint64:
			value = bo.AppendUint64(nil, p.U64)
		case typeString:
			value = make([]byte, align(len(p.Str)+1, 8))
			copy(value, p.Str)
		case typeUint64Array:
			nelem = len(p.U64s)
			for _, v := range p.U64s {
				value = bo.AppendUint64(value, v)
			}
		case typeNVList:
			// The in-memory nvlist_t's bytes are meaningless in the stream.
			value = make([]byte, nativeNVListSize)
		default:
			panic(fmt.Sprintf("resumetoken: packNative: unsupported type %v", p.Type))
		}
		b = bo.AppendUint32(b, uint32(hdr+len(value)))
		b = bo.AppendUint16(b, uint16(nameSz))
		b = bo.AppendUint16(b, 0)
		b = bo.AppendUint32(b, uint32(nelem))
		b = bo.AppendUint32(b, uint32(p.Type))
		b = append(b, p.Name...)
		b = append(b, make([]byte, hdr-nativePairHeader-len(p.Name))...)
		b = append(b, value...)
		if p.Type == typeNVList {
			b = appendNativeList(b, p.List, bo)
		}
	}
	return bo.AppendUint32(b, 0)
}

// unpack decodes a packed nvlist of either encoding. It never panics and
// allocates at most in proportion to len(b).
func unpack(b []byte) ([]nvPair, error) {
	if len(b) < 4 {
		return nil, malformed(0, "%d bytes is too short for the 4-byte header", len(b))
	}
	var (
		pairs []nvPair
		end   int
		err   error
	)
	switch b[0] {
	case encodingNative:
		var bo binary.ByteOrder
		switch b[1] {
		case endianLittle:
			bo = binary.LittleEndian
		case endianBig:
			bo = binary.BigEndian
		default:
			return nil, malformed(1, "unknown endianness %d", b[1])
		}
		r := nativeReader{b: b, bo: bo}
		pairs, end, err = r.list(4, 0, true)
	case encodingXDR:
		r := xdrReader{b: b}
		pairs, end, err = r.list(4)
	default:
		return nil, malformed(0, "unknown encoding %d (want 0 native or 1 xdr)", b[0])
	}
	if err != nil {
		return nil, err
	}
	if end != len(b) {
		return nil, malformed(end, "%d trailing bytes after the end of the list", len(b)-end)
	}
	return pairs, nil
}

type nativeReader struct {
	b  []byte
	bo binary.ByteOrder
}

func (r *nativeReader) need(off, n int, what string) error {
	if n < 0 || off > len(r.b) || len(r.b)-off < n {
		return malformed(off, "%s needs %d bytes, %d left", what, n, max(len(r.b)-off, 0))
	}
	return nil
}

func (r *nativeReader) u32(off int) uint32 { return r.bo.Uint32(r.b[off:]) }

// list reads an nvlist at off and returns its pairs (when keep is set; an
// embedded list is only skipped) and the offset just after it.
func (r *nativeReader) list(off, depth int, keep bool) ([]nvPair, int, error) {
	if depth > maxDepth {
		return nil, 0, malformed(off, "nvlists nested deeper than %d", maxDepth)
	}
	if err := r.need(off, 8, "nvlist header"); err != nil {
		return nil, 0, err
	}
	if v := int32(r.u32(off)); v != nvVersion {
		return nil, 0, malformed(off, "nvlist version %d, want %d", v, nvVersion)
	}
	off += 8
	var pairs []nvPair
	for {
		if err := r.need(off, 4, "pair size"); err != nil {
			return nil, 0, err
		}
		size := int(int32(r.u32(off)))
		if size == 0 {
			return pairs, off + 4, nil
		}
		p, next, err := r.pair(off, size, depth)
		if err != nil {
			return nil, 0, err
		}
		if keep {
			pairs = append(pairs, p)
		}
		off = next
	}
}

func (r *nativeReader) pair(off, size, depth int) (nvPair, int, error) {
	if size < nativePairHeader+8 || size%8 != 0 {
		return nvPair{}, 0, malformed(off, "invalid pair size %d", size)
	}
	if err := r.need(off, size, "pair"); err != nil {
		return nvPair{}, 0, err
	}
	nameSz := int(int16(r.bo.Uint16(r.b[off+4:])))
	nelem := int(int32(r.u32(off + 8)))
	typ := dataType(int32(r.u32(off + 12)))
	hdr := align(nativePairHeader+nameSz, 8)
	if nameSz < 1 || hdr > size {
		return nvPair{}, 0, malformed(off+4, "invalid name size %d in a pair of %d bytes", nameSz, size)
	}
	name := r.b[off+nativePairHeader : off+nativePairHeader+nameSz]
	if i := bytes.IndexByte(name, 0); i != nameSz-1 {
		return nvPair{}, 0, malformed(off+nativePairHeader, "name is not a NUL-terminated string of %d bytes", nameSz)
	}
	p := nvPair{Name: string(name[:nameSz-1]), Type: typ}
	val := r.b[off+hdr : off+size]
	next := off + size
	wantElem := func(n int) error {
		if nelem != n {
			return malformed(off+8, "%s pair %q has %d elements, want %d", typ, p.Name, nelem, n)
		}
		return nil
	}
	wantLen := func(n int) error {
		if len(val) != n {
			return malformed(off, "%s pair %q has a %d-byte value, want %d", typ, p.Name, len(val), n)
		}
		return nil
	}
	var err error
	switch typ {
	case typeBoolean:
		if err = wantElem(0); err == nil {
			err = wantLen(0)
		}
	case typeUint64:
		if err = wantElem(1); err == nil {
			if err = wantLen(8); err == nil {
				p.U64 = r.bo.Uint64(val)
			}
		}
	case typeString:
		if err = wantElem(1); err != nil {
			break
		}
		n := bytes.IndexByte(val, 0)
		if n < 0 {
			err = malformed(off+hdr, "string pair %q is not NUL-terminated", p.Name)
		} else if err = wantLen(align(n+1, 8)); err == nil {
			p.Str = string(val[:n])
		}
	case typeNVList:
		if err = wantElem(1); err == nil {
			_, next, err = r.list(next, depth+1, false)
		}
	case typeNVListArray:
		// Each embedded list takes at least 12 bytes, which bounds nelem.
		if nelem < 0 || nelem > (len(r.b)-next)/12 {
			err = malformed(off+8, "nvlist array pair %q claims %d lists", p.Name, nelem)
		}
		for i := 0; err == nil && i < nelem; i++ {
			_, next, err = r.list(next, depth+1, false)
		}
	default:
		// Unknown or uninteresting type: its value lies within size.
	}
	if err != nil {
		return nvPair{}, 0, err
	}
	return p, next, nil
}

type xdrReader struct{ b []byte }

func (r *xdrReader) need(off, n int, what string) error {
	if n < 0 || off > len(r.b) || len(r.b)-off < n {
		return malformed(off, "%s needs %d bytes, %d left", what, n, max(len(r.b)-off, 0))
	}
	return nil
}

func (r *xdrReader) u32(off int) uint32 { return binary.BigEndian.Uint32(r.b[off:]) }

func (r *xdrReader) list(off int) ([]nvPair, int, error) {
	if err := r.need(off, 8, "nvlist header"); err != nil {
		return nil, 0, err
	}
	if v := int32(r.u32(off)); v != nvVersion {
		return nil, 0, malformed(off, "nvlist version %d, want %d", v, nvVersion)
	}
	off += 8
	var pairs []nvPair
	for {
		if err := r.need(off, 8, "pair sizes"); err != nil {
			return nil, 0, err
		}
		enc, dec := int(int32(r.u32(off))), int32(r.u32(off+4))
		if enc == 0 && dec == 0 {
			return pairs, off + 8, nil
		}
		p, err := r.pair(off, enc)
		if err != nil {
			return nil, 0, err
		}
		pairs = append(pairs, p)
		off += enc
	}
}

// pair decodes the XDR pair at off whose encoded size is enc. Nested lists
// lie within enc, so pairs of types we do not read are skipped whole.
func (r *xdrReader) pair(off, enc int) (nvPair, error) {
	// sizes, name length, type, nelem: 5 words at least.
	if enc < 20 || enc%4 != 0 {
		return nvPair{}, malformed(off, "invalid encoded pair size %d", enc)
	}
	if err := r.need(off, enc, "pair"); err != nil {
		return nvPair{}, err
	}
	end := off + enc
	name, p, err := r.str(off+8, end)
	if err != nil {
		return nvPair{}, err
	}
	if p+8 > end {
		return nvPair{}, malformed(p, "pair %q ends before its type and element count", name)
	}
	out := nvPair{Name: name, Type: dataType(int32(r.u32(p)))}
	nelem := int(int32(r.u32(p + 4)))
	p += 8
	want := func(n, size int) error {
		if nelem != n {
			return malformed(p-4, "%s pair %q has %d elements, want %d", out.Type, name, nelem, n)
		}
		if end-p != size {
			return malformed(p, "%s pair %q has a %d-byte value, want %d", out.Type, name, end-p, size)
		}
		return nil
	}
	switch out.Type {
	case typeBoolean:
		err = want(0, 0)
	case typeUint64:
		if err = want(1, 8); err == nil {
			out.U64 = binary.BigEndian.Uint64(r.b[p:])
		}
	case typeString:
		if err = want(1, end-p); err != nil {
			break
		}
		var q int
		out.Str, q, err = r.str(p, end)
		if err == nil && q != end {
			err = malformed(q, "string pair %q has %d bytes after its value", name, end-q)
		}
	}
	if err != nil {
		return nvPair{}, err
	}
	return out, nil
}

// str reads an XDR string at off, not beyond end, and returns it with the
// offset after its padding. NUL bytes are refused: the native form and the C
// API cannot carry them.
func (r *xdrReader) str(off, end int) (string, int, error) {
	if off+4 > end {
		return "", 0, malformed(off, "string length runs past the pair's end")
	}
	n := int(r.u32(off))
	if n > end-off-4 || align(n, 4) > end-off-4 {
		return "", 0, malformed(off, "string of %d bytes runs past the pair's end", n)
	}
	s := r.b[off+4 : off+4+n]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		return "", 0, malformed(off+4+i, "string contains a NUL byte")
	}
	return string(s), off + 4 + align(n, 4), nil
}
