package zfsreal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// The BEGIN record that starts every send stream (OpenZFS's
// dmu_replay_record_t with drr_type DRR_BEGIN): 312 bytes in the sender's
// byte order, told by the magic.
const (
	beginRecordLen = 312
	drrBegin       = 0
	backupMagic    = 0x2F5bacbac // DMU_BACKUP_MAGIC
	// Offsets in the record (drr_begin follows drr_type and
	// drr_payloadlen).
	offType         = 0
	offMagic        = 8
	offVersionInfo  = 16
	offCreationTime = 24
	offToGUID       = 40
	offFromGUID     = 48
	offToName       = 56
	toNameLen       = 256
	// DMU_GET_STREAM_HDRTYPE: the low two bits of drr_versioninfo.
	hdrTypeMask      = 0x3
	hdrSubstream     = 1
	hdrCompoundStrem = 2
)

// parseBeginRecord checks a BEGIN record as zfs recv does before it looks
// at its target (libzfs's zfs_receive_impl and zfs_receive_one): the
// record type and magic, the stream header type, a snapshot name.
func parseBeginRecord(b []byte) (zfs.StreamHeader, error) {
	bad := func(format string, args ...any) error {
		return &zfs.Error{Op: "recv", Msg: "cannot receive: " + fmt.Sprintf(format, args...)}
	}
	var order binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint64(b[offMagic:]) == backupMagic:
		order = binary.LittleEndian
	case binary.BigEndian.Uint64(b[offMagic:]) == backupMagic:
		order = binary.BigEndian
	default:
		return zfs.StreamHeader{}, bad("invalid stream (bad magic number)")
	}
	if order.Uint32(b[offType:]) != drrBegin {
		return zfs.StreamHeader{}, bad("invalid stream (bad magic number)")
	}
	vi := order.Uint64(b[offVersionInfo:])
	if t := vi & hdrTypeMask; t != hdrSubstream && t != hdrCompoundStrem {
		return zfs.StreamHeader{}, bad("stream has unsupported feature, feature flags = %x", vi>>2)
	}
	name := b[offToName : offToName+toNameLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	toName := string(name)
	ds, snap, ok := strings.Cut(toName, "@")
	if !ok || zfs.ValidateDatasetPath(ds) != nil || zfs.ValidateVersionName(zfs.Snapshot, snap) != nil {
		return zfs.StreamHeader{}, bad("invalid stream (bad snapshot name %q)", toName)
	}
	return zfs.StreamHeader{
		ToName:   toName,
		ToGUID:   order.Uint64(b[offToGUID:]),
		FromGUID: order.Uint64(b[offFromGUID:]),
		Creation: time.Unix(int64(order.Uint64(b[offCreationTime:])), 0).UTC(),
	}, nil
}

// replayed is a stream whose BEGIN record ReadStreamHeader has read:
// Receive feeds head first, then rest, which it still splices where it
// can (a stream of Send below StreamWrappers).
type replayed struct {
	head []byte
	rest io.Reader
}

func (r *replayed) Read(p []byte) (int, error) {
	if len(r.head) > 0 {
		n := copy(p, r.head)
		r.head = r.head[n:]
		return n, nil
	}
	return r.rest.Read(p)
}

// ReadStreamHeader implements zfs.ZFS. It reads the BEGIN record in this
// process and runs nothing.
func (c *CLI) ReadStreamHeader(ctx context.Context, stream io.Reader) (zfs.StreamHeader, io.Reader, error) {
	const op = "recv"
	if stream == nil {
		return zfs.StreamHeader{}, nil, badInput(op, "", errors.New("no stream to receive"))
	}
	b := make([]byte, beginRecordLen)
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(stream, b)
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			return zfs.StreamHeader{}, nil, &zfs.Error{Op: op, Msg: "cannot receive: failed to read from stream", Err: &readError{err}}
		}
	case <-ctx.Done():
		// The read may still take bytes; the receive is abandoned.
		return zfs.StreamHeader{}, nil, &zfs.Error{Op: op, Err: ctx.Err()}
	}
	h, err := parseBeginRecord(b)
	if err != nil {
		return zfs.StreamHeader{}, nil, err
	}
	return h, &replayed{head: b, rest: stream}, nil
}
