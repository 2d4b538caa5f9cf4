package resumetoken

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// packXDR encodes pairs with NV_ENCODE_XDR. Only tests need it: real
// tokens are native, but the reader accepts both as libnvpair does.
func packXDR(pairs []nvPair) []byte {
	return appendXDRList([]byte{encodingXDR, endianLittle, 0, 0}, pairs)
}

func appendXDRString(b []byte, s string) []byte {
	be := binary.BigEndian
	b = be.AppendUint32(b, uint32(len(s)))
	b = append(b, s...)
	return append(b, make([]byte, align(len(s), 4)-len(s))...)
}

func appendXDRList(b []byte, pairs []nvPair) []byte {
	be := binary.BigEndian
	b = be.AppendUint32(b, nvVersion)
	b = be.AppendUint32(b, nvUniqueName)
	for _, p := range pairs {
		body := appendXDRString(nil, p.Name)
		body = be.AppendUint32(body, uint32(p.Type))
		switch p.Type {
		case typeBoolean:
			body = be.AppendUint32(body, 0)
		case typeUint64:
			body = be.AppendUint32(body, 1)
			body = be.AppendUint64(body, p.U64)
		case typeString:
			body = be.AppendUint32(body, 1)
			body = appendXDRString(body, p.Str)
		case typeUint64Array:
			body = be.AppendUint32(body, uint32(len(p.U64s)))
			body = be.AppendUint32(body, uint32(len(p.U64s)))
			for _, v := range p.U64s {
				body = be.AppendUint64(body, v)
			}
		case typeNVList:
			body = be.AppendUint32(body, 1)
			body = appendXDRList(body, p.List)
		default:
			panic("packXDR: unsupported type")
		}
		b = be.AppendUint32(b, uint32(8+len(body)))
		b = be.AppendUint32(b, 64) // decoded (native) size: not checked by readers
		b = append(b, body...)
	}
	b = be.AppendUint32(b, 0)
	return be.AppendUint32(b, 0)
}

func TestUnpackReadsWhatPackWrites(t *testing.T) {
	pairs := []nvPair{
		u64Pair("a", 1<<63+5),
		strPair("", ""), // empty name and value are legal nvlist content
		strPair("seven77", "exactly8"),
		boolPair("flag"),
	}
	for name, b := range map[string][]byte{
		"native le": packNative(pairs, binary.LittleEndian),
		"native be": packNative(pairs, binary.BigEndian),
		"xdr":       packXDR(pairs),
	} {
		got, err := unpack(b)
		require.NoError(t, err, name)
		assert.Equal(t, pairs, got, name)
	}
}

// Every prefix of a valid list is malformed, never a panic, and the error
// points inside the buffer.
func TestUnpackTruncated(t *testing.T) {
	pairs := append(realDecoded.pairs(),
		nvPair{Name: "n", Type: typeNVList, List: []nvPair{boolPair("x")}},
		nvPair{Name: "r", Type: typeUint64Array, U64s: []uint64{7}})
	for name, b := range map[string][]byte{
		"native": packNative(pairs, binary.LittleEndian),
		"xdr":    packXDR(pairs),
	} {
		_, err := unpack(b)
		require.NoError(t, err, name)
		for n := 0; n < len(b); n++ {
			_, err := unpack(b[:n])
			var ne *nvlistError
			require.True(t, errors.As(err, &ne), "%s cut to %d bytes: %v", name, n, err)
			assert.LessOrEqual(t, ne.Off, n, "%s cut to %d bytes: offset", name, n)
		}
	}
}

func TestUnpackMalformed(t *testing.T) {
	le := binary.LittleEndian
	good := packNative([]nvPair{u64Pair("object", 2), strPair("toname", "p@s")}, le)
	set32 := func(off int, v uint32) []byte {
		b := append([]byte{}, good...)
		le.PutUint32(b[off:], v)
		return b
	}
	set16 := func(off int, v uint16) []byte {
		b := append([]byte{}, good...)
		le.PutUint16(b[off:], v)
		return b
	}
	const pair0 = 12                 // first pair: after header and list header
	const pair1 = pair0 + 16 + 8 + 8 // "object": header, name, value
	cases := []struct {
		name   string
		b      []byte
		off    int
		reason string
	}{
		{"unknown encoding", append([]byte{7}, good[1:]...), 0, "unknown encoding 7"},
		{"unknown endian", append([]byte{0, 9}, good[2:]...), 1, "unknown endianness 9"},
		{"nvlist version", set32(4, 1), 4, "nvlist version 1, want 0"},
		{"pair size unaligned", set32(pair0, 33), pair0, "invalid pair size 33"},
		{"pair size negative", set32(pair0, 0xfffffff8), pair0, "invalid pair size -8"},
		{"pair size too big", set32(pair0, 1<<20), pair0, "pair needs 1048576 bytes"},
		{"name size zero", set16(pair0+4, 0), pair0 + 4, "invalid name size 0"},
		{"name size too big", set16(pair0+4, 200), pair0 + 4, "invalid name size 200"},
		{"name not terminated", set16(pair0+4, 6), pair0 + 16, "not a NUL-terminated string of 6 bytes"},
		{"uint64 nelem", set32(pair0+8, 2), pair0 + 8, `uint64 pair "object" has 2 elements, want 1`},
		{"boolean with value", set32(pair0+12, uint32(typeBoolean)), pair0 + 8, `boolean pair "object" has 1 elements, want 0`},
		{"uint64 value short", set32(pair0, 24), pair0, `uint64 pair "object" has a 0-byte value, want 8`},
		{"string unterminated", func() []byte {
			b := append([]byte{}, good...)
			copy(b[pair1+24:], "p@sxxxxx")
			return b
		}(), pair1 + 24, `string pair "toname" is not NUL-terminated`},
		{"trailing", append(append([]byte{}, good...), 0, 0, 0, 0), len(good), "4 trailing bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := unpack(c.b)
			var ne *nvlistError
			require.True(t, errors.As(err, &ne), "got %v", err)
			assert.Equal(t, c.off, ne.Off)
			assert.Contains(t, ne.Reason, c.reason)
		})
	}
}

func TestUnpackNestingBounded(t *testing.T) {
	inner := []nvPair{boolPair("leaf")}
	for i := 0; i < maxDepth+2; i++ {
		inner = []nvPair{{Name: "n", Type: typeNVList, List: inner}}
	}
	_, err := unpack(packNative(inner, binary.LittleEndian))
	var ne *nvlistError
	require.True(t, errors.As(err, &ne), "got %v", err)
	assert.Contains(t, ne.Reason, "nested deeper than")

	// An nvlist array may not claim more lists than bytes could hold.
	b := packNative([]nvPair{{Name: "arr", Type: typeNVList, List: nil}}, binary.LittleEndian)
	const pair0 = 12
	binary.LittleEndian.PutUint32(b[pair0+12:], uint32(typeNVListArray))
	binary.LittleEndian.PutUint32(b[pair0+8:], 1<<30)
	_, err = unpack(b)
	require.True(t, errors.As(err, &ne), "got %v", err)
	assert.Contains(t, ne.Reason, `nvlist array pair "arr" claims 1073741824 lists`)
}

func TestUnpackXDRMalformed(t *testing.T) {
	be := binary.BigEndian
	good := packXDR([]nvPair{strPair("toname", "p@s")})
	const pair0 = 12
	set := func(off int, v uint32) []byte {
		b := append([]byte{}, good...)
		be.PutUint32(b[off:], v)
		return b
	}
	cases := []struct {
		name   string
		b      []byte
		reason string
	}{
		{"version", set(4, 3), "nvlist version 3"},
		{"encoded size small", set(pair0, 16), "invalid encoded pair size 16"},
		{"encoded size past end", set(pair0, 4096), "pair needs 4096 bytes"},
		{"name too long", set(pair0+8, 1000), "string of 1000 bytes runs past"},
		{"value nelem", set(pair0+8+12+4, 2), `string pair "toname" has 2 elements`},
		{"value too long", set(pair0+8+12+8, 100), "string of 100 bytes runs past"},
		{"nul in string", func() []byte {
			b := append([]byte{}, good...)
			b[pair0+8+12+8+4+1] = 0
			return b
		}(), "string contains a NUL byte"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := unpack(c.b)
			var ne *nvlistError
			require.True(t, errors.As(err, &ne), "got %v", err)
			assert.Contains(t, ne.Reason, c.reason)
		})
	}
}
