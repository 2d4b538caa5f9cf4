package zfsmodel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// Send implements zfs.ZFS. The stream is produced lazily as it is read;
// the model's lock is not held while reading.
func (m *Model) Send(ctx context.Context, args zfs.SendArgs) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("Send"); err != nil {
		return nil, err
	}
	p, err := m.planSend(args, false)
	if err != nil {
		return nil, err
	}
	cut := int64(-1)
	if len(m.cuts) > 0 {
		cut, m.cuts = m.cuts[0], m.cuts[1:]
	}
	return newSendStream(ctx, p, cut), nil
}

// SendSize implements zfs.ZFS; the model's estimate is exact.
func (m *Model) SendSize(ctx context.Context, args zfs.SendArgs) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("SendSize"); err != nil {
		return 0, err
	}
	p, err := m.planSend(args, true)
	if err != nil {
		return 0, err
	}
	return p.size(), nil
}

// decodeToken turns a token into the error texts `zfs send -t` prints.
func decodeToken(s string) (resumetoken.Token, error) {
	tok, err := resumetoken.Decode(s)
	if err == nil {
		return tok, nil
	}
	why := "invalid format"
	var de *resumetoken.DecodeError
	if errors.As(err, &de) && strings.HasPrefix(de.Reason, "checksum mismatch") {
		why = "incorrect checksum"
	}
	return tok, &zfs.Error{Kind: zfs.ErrResumeTokenCorrupt, Op: "send", Msg: "cannot resume send: resume token is corrupt (" + why + ")", Err: err}
}

// estimateMissing is the error of an estimate whose target is missing:
// zfsreal's by-name listing beside zfs send -nvP fails, saying so of each
// missing name, a bookmark as "no such pool or dataset" (TestDifferential,
// 2.1.11: from a missing bookmark to a missing snapshot).
func estimateMissing(op string, d *dataset, toRef zfs.VersionRef, from *zfs.FilesystemVersion, fromRef zfs.VersionRef) error {
	msg := fmt.Sprintf("cannot open '%s': dataset does not exist", toRef)
	if from != nil && fromRef != toRef {
		switch {
		case from.Kind == zfs.Snapshot && (d == nil || d.snap(from.Name) == nil):
			msg += fmt.Sprintf("\ncannot open '%s': dataset does not exist", fromRef)
		case from.Kind == zfs.Bookmark && (d == nil || d.bookmark(from.Name) == nil):
			msg += fmt.Sprintf("\ncannot open '%s': no such pool or dataset", fromRef)
		}
	}
	return zerr(zfs.ErrDatasetNotExist, op, toRef.String(), "%s", msg)
}

// planSend checks args against the current state and captures the stream;
// estimate is true for SendSize. Called with mu held.
func (m *Model) planSend(args zfs.SendArgs, estimate bool) (*streamPlan, error) {
	const op = "send"
	if err := checkPath(op, args.FS); err != nil {
		return nil, err
	}
	toRef := zfs.SnapshotRef(args.FS, args.To.Name)
	if err := checkRef(op, toRef, 0); err != nil {
		return nil, err
	}
	if args.To.Kind != zfs.Snapshot {
		return nil, zerr(zfs.ErrInvalidName, op, toRef.String(), "cannot send '%s%s': only snapshots can be sent", args.FS, args.To.RelName())
	}
	var fromRef zfs.VersionRef
	if args.From != nil {
		fromRef = args.From.Ref(args.FS)
		if err := checkRef(op, fromRef, 0); err != nil {
			return nil, err
		}
	}

	var tok resumetoken.Token
	resuming := args.ResumeToken != ""
	if resuming {
		var err error
		if tok, err = decodeToken(args.ResumeToken); err != nil {
			err.(*zfs.Error).Dataset = toRef.String()
			return nil, err
		}
		if err := tok.Match(resumetoken.Send{FS: args.FS, To: args.To, From: args.From}); err != nil {
			return nil, &zfs.Error{Kind: zfs.ErrResumeTokenMismatch, Op: op, Dataset: toRef.String(), Msg: err.Error(), Err: err}
		}
	}

	d := m.st.Datasets[args.FS.String()]
	var to *snapshot
	if d != nil {
		to = d.snap(args.To.Name)
	}
	if to == nil && estimate && !resuming {
		return nil, estimateMissing(op, d, toRef, args.From, fromRef)
	}
	if to == nil {
		if resuming {
			return nil, zerr(zfs.ErrDatasetNotExist, op, toRef.String(), "cannot resume send: '%s' used in the initial send no longer exists", toRef)
		}
		return nil, notExist(op, toRef.String())
	}
	if resuming && tok.ToGUID != to.GUID {
		return nil, zerr(zfs.ErrVersionMismatch, op, toRef.String(), "cannot resume send: '%s' is no longer the same snapshot used in the initial send", toRef)
	}
	if args.To.GUID != 0 && args.To.GUID != to.GUID {
		return nil, zerr(zfs.ErrVersionMismatch, op, toRef.String(), "%s has GUID %d, the send was planned for GUID %d", toRef, to.GUID, args.To.GUID)
	}

	h := streamHeader{ToName: toRef.String(), ToGUID: to.GUID, ToCreation: to.Creation.UnixNano()}
	fromTXG, incremental := uint64(0), args.From != nil
	if incremental {
		var guid uint64
		var found bool
		switch args.From.Kind {
		case zfs.Snapshot:
			if s := d.snap(args.From.Name); s != nil {
				guid, fromTXG, found = s.GUID, s.TXG, true
			}
		case zfs.Bookmark:
			if b := d.bookmark(args.From.Name); b != nil {
				guid, fromTXG, found = b.GUID, b.TXG, true
			}
		}
		if resuming && (!found || guid != tok.FromGUID) {
			// A token names its source by GUID only; find it under any name.
			fromTXG, found = d.versionByGUID(tok.FromGUID)
			if !found {
				return nil, zerr(zfs.ErrDatasetNotExist, op, toRef.String(), "cannot resume send: incremental source 0x%x no longer exists", tok.FromGUID)
			}
			guid = tok.FromGUID
		}
		if !found && args.From.Kind == zfs.Snapshot {
			// zfs send -i opens the source snapshot first; zfsreal names
			// the target (conformance case SendFromMissingSource, 2.1.11
			// and 2.3.9, found by TestDifferential).
			return nil, zerr(zfs.ErrDatasetNotExist, op, toRef.String(), "cannot open '%s': dataset does not exist", fromRef)
		}
		if !found && !estimate && d.Encrypted && !args.Flags.Raw && !m.keyLoaded(d) {
			// The kernel holds the target for decryption before it looks
			// the bookmark up (TestDifferential, 2.3.9; conformance case
			// NonRawSendKeyUnloaded).
			return nil, keyNotLoaded(op, toRef)
		}
		if !found && !estimate {
			// zfs send looks the bookmark up itself; an estimate fails
			// first in zfsreal's by-name listing beside it (conformance
			// case SendFromMissingSource, 2.1.11 and 2.3.9).
			return nil, zerr(zfs.ErrDatasetNotExist, op, toRef.String(), "warning: cannot send '%s': incremental source (%s) does not exist", toRef, fromRef)
		}
		if !found {
			return nil, zerr(zfs.ErrDatasetNotExist, op, toRef.String(), "cannot open '%s': no such pool or dataset", fromRef)
		}
		if args.From.GUID != 0 && args.From.GUID != guid {
			return nil, zerr(zfs.ErrVersionMismatch, op, fromRef.String(), "%s has GUID %d, the send was planned for GUID %d", fromRef, guid, args.From.GUID)
		}
		if fromTXG >= to.TXG && estimate && args.From.Kind == zfs.Bookmark {
			// zfs send -nvP from a bookmark: the kernel's EXDEV, as
			// libzfs prints it; from a snapshot libzfs checks first
			// (conformance case SendFromNotEarlierSource).
			return nil, zerr(zfs.ErrIncrementalSourceMismatch, op, toRef.String(), "warning: cannot send '%s': Invalid cross-device link", toRef)
		}
		if fromTXG >= to.TXG {
			return nil, zerr(zfs.ErrIncrementalSourceMismatch, op, toRef.String(), "warning: cannot send '%s': not an earlier snapshot from the same fs", toRef)
		}
		h.FromName, h.FromGUID = fromRef.String(), guid
	}

	f := args.Flags
	raw, compress, embed := f.Raw, f.Compressed, f.EmbeddedData
	if resuming {
		// A resumed send continues with the flags of the interrupted one.
		raw, compress, embed = tok.RawOK, tok.CompressOK, tok.EmbedOK
		h.Resume, h.ResumeOffset, h.ResumeBytes = true, tok.Offset, tok.Bytes
	} else if f.Properties || f.BackupProperties {
		// -p sends the values set locally or received, local ones first,
		// as `zfs get` shows them; -b the received values only.
		h.PropStream, h.Props = true, map[string]string{}
		for k, v := range d.Received {
			h.Props[k] = v
		}
		if !f.BackupProperties {
			for k, v := range d.Props {
				h.Props[k] = v
			}
		}
	}
	// The stream's feature flags, which a receive's token records, as
	// OpenZFS sets them: -w implies -c, -L and -e, but only an encrypted
	// dataset's stream is raw, and an encrypted dataset has no embedded
	// blocks (the model's pools have the embedded_data feature active).
	// -L (or -w) marks a stream large-block only where the dataset has
	// blocks above 128 KiB, which the model's (BlockSize) never are: its
	// tokens never say largeblockok (conformance case
	// ResumeTokenStreamFeatures, 2.1.11 and 2.3.9).
	h.RawOK, h.CompressOK, h.LargeBlockOK, h.EmbedOK = raw && d.Encrypted, compress || raw, false, (embed || raw) && !d.Encrypted
	if d.Encrypted {
		if raw {
			h.Encrypted, h.KeyID = true, m.root(d).KeyID
		} else if !m.keyLoaded(d) {
			return nil, keyNotLoaded(op, toRef)
		}
	}

	first := uint64(0)
	if resuming {
		first = tok.Offset / BlockSize
	}
	var blocks []blockRec
	for bn, b := range to.Content {
		if b.Birth > fromTXG && bn >= first {
			blocks = append(blocks, blockRec{No: bn, Key: b.Key, Sum: b.Sum})
		}
	}
	return newPlan(h, blocks)
}

// keyNotLoaded is a non-raw send's refusal of an encrypted filesystem
// whose key is not loaded.
func keyNotLoaded(op string, toRef zfs.VersionRef) error {
	return zerr(zfs.ErrKeyNotLoaded, op, toRef.String(), "warning: cannot send '%s': dataset key must be loaded", toRef)
}
