package zfsreal

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

// beginRecord builds a BEGIN record as zfs send writes it, in order.
func beginRecord(order binary.ByteOrder, toName string, toGUID, fromGUID uint64, created int64) []byte {
	b := make([]byte, beginRecordLen)
	order.PutUint32(b[offType:], drrBegin)
	order.PutUint64(b[offMagic:], backupMagic)
	order.PutUint64(b[offVersionInfo:], hdrSubstream|0x4<<2) // a feature flag, as real streams have
	order.PutUint64(b[offCreationTime:], uint64(created))
	order.PutUint64(b[offToGUID:], toGUID)
	order.PutUint64(b[offFromGUID:], fromGUID)
	copy(b[offToName:], toName)
	return b
}

func TestParseBeginRecord(t *testing.T) {
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		h, err := parseBeginRecord(beginRecord(order, "pool/a/fs@s1", 0xabc, 0x12, 1700000000))
		require.NoError(t, err, "%v", order)
		assert.Equal(t, zfs.StreamHeader{ToName: "pool/a/fs@s1", ToGUID: 0xabc, FromGUID: 0x12, Creation: time.Unix(1700000000, 0).UTC()}, h)
	}
	bad := func(edit func(b []byte), msg string) {
		t.Helper()
		b := beginRecord(binary.LittleEndian, "pool/a/fs@s1", 1, 0, 0)
		edit(b)
		_, err := parseBeginRecord(b)
		require.Error(t, err)
		assert.Contains(t, err.Error(), msg)
	}
	bad(func(b []byte) { b[offMagic]++ }, "invalid stream (bad magic number)")
	bad(func(b []byte) { b[offType] = 1 }, "invalid stream (bad magic number)")
	bad(func(b []byte) { b[offVersionInfo] &^= hdrTypeMask }, "unsupported feature")
	bad(func(b []byte) { copy(b[offToName:], "pool/a/fs\x00") }, "bad snapshot name")
	bad(func(b []byte) { copy(b[offToName:], "pool/a/fs@s#1\x00") }, "bad snapshot name")
}

// ReadStreamHeader reads only the BEGIN record; Receive of what it returns
// feeds zfs recv the record and then splices the rest from zfs send, past
// the wrappers, which count every byte.
func TestReadStreamHeaderThenSplice(t *testing.T) {
	const n = 3<<20 + 17
	rec := beginRecord(binary.LittleEndian, "pool/a/fs@s1", 11, 0, 1700000000)
	f := sendRecvFake(t, fakeRule{StdoutHex: hex.EncodeToString(rec), StreamBytes: n}, fakeRule{})
	c := f.cli()
	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	defer r.Close()
	w := &counting{t: t, r: r, readable: true}
	h, replay, err := c.ReadStreamHeader(ctx, w)
	require.NoError(t, err)
	assert.EqualValues(t, 11, h.ToGUID)
	assert.EqualValues(t, beginRecordLen, w.n.Load(), "the header only is read")
	w.readable = false
	require.NoError(t, c.Receive(ctx, dstFS, replay, zfs.RecvOptions{Resumable: true}))
	in := recvStdin(t, f)
	assert.EqualValues(t, beginRecordLen+n, in.Bytes)
	assert.Equal(t, sha(append(rec, streamBytes(n)...)), in.SHA256)
	assert.EqualValues(t, beginRecordLen+n, w.n.Load())

	_, _, err = c.ReadStreamHeader(ctx, bytes.NewReader(rec[:100]))
	assert.ErrorContains(t, err, "cannot receive: failed to read from stream")
	_, _, err = c.ReadStreamHeader(ctx, io.MultiReader(bytes.NewReader(make([]byte, beginRecordLen))))
	assert.ErrorContains(t, err, "bad magic number")
}
