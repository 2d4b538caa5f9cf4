package zfsmodel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// partial is the saved state of an interrupted resumable receive.
type partial struct {
	// Full: the receive created the filesystem (abort destroys it).
	// Overwrite: a full receive with -F into an existing filesystem.
	// Otherwise the receive is incremental onto the snapshot BaseGUID.
	Full      bool
	Overwrite bool
	BaseGUID  uint64
	Force     bool
	Header    streamHeader
	// Blocks received so far; NextBlock is the first block number not yet
	// received (blocks arrive in ascending order).
	Blocks    content
	NextBlock uint64
	Bytes     uint64
	// tok caches token() of tokOf: every listing of the filesystem shows
	// it, and encoding one compresses.
	tok   string
	tokOf resumetoken.Token
}

func (p *partial) tokenStruct() resumetoken.Token {
	h := p.Header
	return resumetoken.Token{
		Object: dataObject, Offset: p.NextBlock * BlockSize, Bytes: p.Bytes,
		ToGUID: h.ToGUID, ToName: h.ToName, FromGUID: h.FromGUID,
		EmbedOK: h.EmbedOK, LargeBlockOK: h.LargeBlockOK, CompressOK: h.CompressOK, RawOK: h.RawOK,
	}
}

func (p *partial) token() string {
	if t := p.tokenStruct(); p.tok == "" || p.tokOf != t {
		p.tok, p.tokOf = t.Encode(), t
	}
	return p.tok
}

// recvPlan is what beginRecv decided.
type recvPlan struct {
	name      string
	full      bool // creates the filesystem
	overwrite bool
	base      uint64 // incremental: GUID of the target's snapshot the stream applies to
	prior     *partial
	prefix    string // libzfs's "cannot receive ... stream" prefix
}

// Receive implements zfs.ZFS. The stream is read without holding the
// model's lock.
func (m *Model) Receive(ctx context.Context, fs zfs.DatasetPath, stream io.Reader, opts zfs.RecvOptions) error {
	const op = "recv"
	if err := checkPath(op, fs); err != nil {
		return err
	}
	if stream == nil {
		return &zfs.Error{Op: op, Dataset: fs.String(), Msg: "cannot receive: no stream (nil reader)"}
	}
	m.mu.Lock()
	err := m.takeFault("Receive")
	m.mu.Unlock()
	if err != nil {
		return err
	}
	cr := newCtxReader(ctx, stream)
	defer cr.stop()
	sr := &streamReader{r: cr}
	h, err := sr.header()
	if err != nil {
		return headerError(op, fs.String(), err)
	}

	m.mu.Lock()
	rp, err := m.beginRecv(op, fs.String(), h, opts)
	if err == nil {
		m.receiving[rp.name] = true
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	defer func() {
		m.mu.Lock()
		delete(m.receiving, rp.name)
		m.mu.Unlock()
	}()

	got := content{}
	var next uint64
	if rp.prior != nil {
		next = rp.prior.NextBlock
	}
	complete := sr.n
	var adjust uint32
	if h.Encrypted {
		adjust = rawSumAdjust(splitmix(h.KeyID) | 1)
	}
	// Checkpoints only where a cut would keep state (-s).
	var ckEvery int64
	if opts.Resumable {
		ckEvery = m.ckEvery
	}
	lastCk, checkpointed := complete, false
	var rerr error
	// A record is kept once the checksum that follows it verified it.
	var pending *blockRec
	var pendingEnd int64
	accept := func() {
		if pending != nil {
			got[pending.No] = block{Key: pending.Key, Sum: pending.Sum ^ adjust}
			next, complete = pending.No+1, pendingEnd
			pending = nil
		}
	}
	for i := uint64(0); i < h.Blocks; i++ {
		if rerr = ctx.Err(); rerr != nil {
			break
		}
		rec, err := sr.record()
		if err != nil {
			rerr = err
			break
		}
		accept()
		if rec.No < next {
			rerr = &errBadStream{"blocks out of order"}
			break
		}
		pending, pendingEnd = &rec, sr.n
		if ckEvery > 0 && complete-lastCk >= ckEvery {
			// What a stream cut here would leave: the blocks verified so
			// far, not the one just read.
			lastCk = complete
			m.checkpointRecv(rp, h, got, next, h.ResumeBytes+uint64(complete), opts)
			checkpointed = true
		}
	}
	if rerr == nil {
		if rerr = ctx.Err(); rerr == nil {
			if rerr = sr.trailer(); rerr == nil {
				accept()
			}
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if rerr != nil {
		return m.failRecv(op, rp, h, got, next, h.ResumeBytes+uint64(complete), opts, rerr)
	}
	err = m.commitRecv(op, rp, h, got, opts)
	if err != nil && checkpointed && (rp.full || rp.overwrite) {
		m.undoCheckpoints(rp)
	}
	if err != nil && !rp.full && !rp.overwrite {
		// The stream was all there but its end was refused (the target
		// changed meanwhile): as on OpenZFS 2.1.11, an incremental
		// receive keeps everything it received as resumable state with
		// -s and loses it without. A refused full receive changed
		// nothing yet.
		if opts.Resumable {
			m.savePartial(rp, h, got, next, h.ResumeBytes+uint64(complete), opts)
		} else {
			m.dropPartial(rp)
		}
	}
	return err
}

// headerError is what zfs recv says of a stream whose header it could
// not read.
func headerError(op, ds string, err error) error {
	var bad *errBadStream
	if errors.As(err, &bad) {
		return &zfs.Error{Op: op, Dataset: ds, Msg: "cannot receive: invalid stream (" + bad.reason + ")", Err: err}
	}
	return &zfs.Error{Op: op, Dataset: ds, Msg: "cannot receive: failed to read from stream", Err: err}
}

// ReadStreamHeader implements zfs.ZFS: it reads and checks the header as
// Receive does before it looks at the target (magic, checksum, version,
// the snapshot name).
func (m *Model) ReadStreamHeader(ctx context.Context, stream io.Reader) (zfs.StreamHeader, io.Reader, error) {
	const op = "recv"
	if stream == nil {
		return zfs.StreamHeader{}, nil, &zfs.Error{Op: op, Msg: "cannot receive: no stream (nil reader)"}
	}
	m.mu.Lock()
	err := m.takeFault("ReadStreamHeader")
	m.mu.Unlock()
	if err != nil {
		return zfs.StreamHeader{}, nil, err
	}
	var read bytes.Buffer
	cr := newCtxReader(ctx, io.TeeReader(stream, &read))
	sr := &streamReader{r: cr}
	h, err := sr.header()
	cr.stop()
	if err != nil {
		return zfs.StreamHeader{}, nil, headerError(op, "", err)
	}
	if err := zfs.ValidateVersionName(zfs.Snapshot, snapName(h.ToName)); err != nil {
		return zfs.StreamHeader{}, nil, &zfs.Error{Op: op, Msg: streamPrefix(h) + ": invalid stream (bad snapshot name)", Err: err}
	}
	out := zfs.StreamHeader{ToName: h.ToName, ToGUID: h.ToGUID, FromGUID: h.FromGUID, Creation: time.Unix(0, h.ToCreation).UTC()}
	return out, io.MultiReader(bytes.NewReader(read.Bytes()), stream), nil
}

func streamPrefix(h streamHeader) string {
	switch {
	case h.Resume:
		return "cannot receive resume stream"
	case h.FromGUID != 0:
		return "cannot receive incremental stream"
	}
	return "cannot receive new filesystem stream"
}

func snapName(full string) string {
	_, s, _ := strings.Cut(full, "@")
	return s
}

// beginRecv checks the target against the stream header, as ZFS does once
// it has read the BEGIN record. Called with mu held.
func (m *Model) beginRecv(op, name string, h streamHeader, opts zfs.RecvOptions) (*recvPlan, error) {
	rp := &recvPlan{name: name, prefix: streamPrefix(h)}
	pre := rp.prefix
	if err := zfs.ValidateVersionName(zfs.Snapshot, snapName(h.ToName)); err != nil {
		return nil, &zfs.Error{Op: op, Dataset: name, Msg: pre + ": invalid stream (bad snapshot name)", Err: err}
	}
	if m.receiving[name] {
		return nil, zerr(zfs.ErrDatasetBusy, op, name, "%s: dataset is busy", pre)
	}
	d := m.st.Datasets[name]

	if h.Resume {
		// Real ZFS's wording for these two cases is not recorded; the
		// texts below are the model's own.
		if d == nil || d.Partial == nil {
			return nil, zerr(zfs.ErrNoResumableState, op, name, "%s: destination %s has no partially received state to resume", pre, name)
		}
		p := d.Partial
		if p.Header.ToGUID != h.ToGUID || p.Header.FromGUID != h.FromGUID || p.NextBlock*BlockSize != h.ResumeOffset {
			return nil, zerr(zfs.ErrVersionMismatch, op, name, "%s: resume stream does not continue the partially received state of %s", pre, name)
		}
		rp.prior, rp.full, rp.overwrite, rp.base = p, p.Full, p.Overwrite, p.BaseGUID
		if !p.Full && !p.Overwrite && m.snapByGUID(d, p.BaseGUID) == nil {
			return nil, zerr(zfs.ErrIncrementalSourceMismatch, op, name, "%s: most recent snapshot of %s does not\nmatch incremental source", pre, name)
		}
		return rp, nil
	}
	if d != nil && d.Partial != nil {
		// A new-filesystem stream meets the partially received filesystem
		// as an existing destination (as on OpenZFS 2.1.11); an
		// incremental one meets the saved state.
		if h.FromGUID == 0 && !opts.ForceRollback {
			return nil, zerr(zfs.ErrDestinationExists, op, name, "%s: destination '%s' exists\nmust specify -F to overwrite it", pre, name)
		}
		// With -F libzfs's own checks of a new-filesystem stream come
		// before the kernel finds the saved state (TestDifferential,
		// 2.3.9: a raw encrypted stream said encryption mismatch).
		if h.FromGUID == 0 {
			if err := forcedNewFSChecks(op, name, pre, d, h); err != nil {
				return nil, err
			}
		}
		return nil, zerr(zfs.ErrDatasetBusy, op, name, "%s: destination %s contains partially-complete state from \"zfs receive -s\".", pre, name)
	}

	if h.FromGUID == 0 {
		if d == nil {
			parentName, ok := parentOf(name)
			parent := m.st.Datasets[parentName]
			if !ok || parent == nil {
				return nil, zerr(zfs.ErrDatasetNotExist, op, name, "cannot open '%s': dataset does not exist\n%s: unable to restore to destination", parentName, pre)
			}
			if parent.Encrypted && !h.Encrypted && !m.keyLoaded(parent) {
				return nil, zerr(zfs.ErrKeyNotLoaded, op, name, "%s: inherited key must be loaded", pre)
			}
			if parent.Encrypted && !h.Encrypted && h.EmbedOK {
				return nil, embeddedIntoEncrypted(op, name, pre)
			}
			rp.full = true
			return rp, nil
		}
		if !opts.ForceRollback {
			return nil, zerr(zfs.ErrDestinationExists, op, name, "%s: destination '%s' exists\nmust specify -F to overwrite it", pre, name)
		}
		if err := forcedNewFSChecks(op, name, pre, d, h); err != nil {
			return nil, err
		}
		rp.overwrite = true
		return rp, nil
	}

	if d == nil {
		return nil, zerr(zfs.ErrDatasetNotExist, op, name, "%s: destination '%s' does not exist", pre, name)
	}
	if h.Encrypted && !d.Encrypted {
		return nil, zerr(zfs.ErrEncryptionMismatch, op, name, "%s: cannot perform raw receive on top of existing unencrypted dataset", pre)
	}
	if h.Encrypted && m.root(d).KeyID != h.KeyID {
		return nil, zerr(zfs.ErrEncryptionMismatch, op, name, "%s: encryption key does not match existing key", pre)
	}
	if !h.Encrypted && d.Encrypted && !m.keyLoaded(d) {
		return nil, zerr(zfs.ErrKeyNotLoaded, op, name, "%s: inherited key must be loaded", pre)
	}
	if !h.Encrypted && d.Encrypted && h.EmbedOK {
		return nil, embeddedIntoEncrypted(op, name, pre)
	}
	base := m.snapByGUID(d, h.FromGUID)
	if base == nil {
		return nil, zerr(zfs.ErrIncrementalSourceMismatch, op, name, "%s: most recent snapshot of %s does not\nmatch incremental source", pre, name)
	}
	if !opts.ForceRollback && (d.modifiedSince(base) || (h.Encrypted && base != d.latest())) {
		return nil, zerr(zfs.ErrDestinationModified, op, name, "%s: destination %s has been modified\nsince most recent snapshot", pre, name)
	}
	if err := m.checkSnapNameFree(op, d, base, h, opts.ForceRollback); err != nil {
		return nil, err
	}
	rp.base = base.GUID
	return rp, nil
}

// forcedNewFSChecks are libzfs's refusals of a new-filesystem stream
// received with -F onto the existing filesystem d.
func forcedNewFSChecks(op, name, pre string, d *dataset, h streamHeader) error {
	if len(d.Snaps) > 0 {
		return zerr(zfs.ErrDestinationExists, op, name, "%s: destination has snapshots (eg. %s@%s)\nmust destroy them to overwrite it", pre, name, d.Snaps[0].Name)
	}
	if d.Encrypted || h.Encrypted {
		return zerr(zfs.ErrEncryptionMismatch, op, name, "%s: zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an unencrypted one with an encrypted one", pre)
	}
	return nil
}

// embeddedIntoEncrypted: encrypted filesystems have no embedded blocks,
// so ZFS refuses a stream with the embedded-data feature into one.
func embeddedIntoEncrypted(op, name, pre string) error {
	return zerr(zfs.ErrEncryptionMismatch, op, name, "%s: incompatible embedded data stream feature with encrypted receive.", pre)
}

// checkSnapNameFree refuses a stream whose snapshot name is taken on the
// target (by a snapshot -F would not destroy). The kernel refuses it
// (EEXIST), with -F or without, and the error names the target
// filesystem, as zfsreal runs it (conformance case
// IncrementalOntoItsBaseName, 2.1.11 and 2.3.9).
func (m *Model) checkSnapNameFree(op string, d *dataset, base *snapshot, h streamHeader, force bool) error {
	s := d.snap(snapName(h.ToName))
	if s == nil || (force && base != nil && s.TXG > base.TXG) {
		return nil
	}
	return zerr(zfs.ErrDestinationExists, op, d.Name, "cannot restore to %s@%s: destination already exists", d.Name, s.Name)
}

func (m *Model) snapByGUID(d *dataset, guid uint64) *snapshot {
	for _, s := range d.Snaps {
		if s.GUID == guid {
			return s
		}
	}
	return nil
}

// newRecvDataset creates the filesystem a full receive writes into.
func (m *Model) newRecvDataset(name string, h streamHeader) *dataset {
	d := &dataset{Name: name, GUID: m.newGUID(), Props: map[string]string{}, Head: content{}}
	parentName, _ := parentOf(name)
	parent := m.st.Datasets[parentName]
	switch {
	case h.Encrypted:
		// A raw stream makes the receiver its own encryption root whose
		// key (the sender's) is not loaded.
		d.Encrypted, d.EncRoot, d.KeyID = true, name, h.KeyID
	case parent != nil && parent.Encrypted:
		d.Encrypted, d.EncRoot = true, parent.EncRoot
	}
	m.st.Datasets[name] = d
	return d
}

func (m *Model) failRecv(op string, rp *recvPlan, h streamHeader, got content, next, bytes uint64, opts zfs.RecvOptions, cause error) error {
	pre := rp.prefix
	if !opts.Resumable {
		m.dropPartial(rp)
		// OpenZFS 2.1.11 says "incomplete stream" for a stream cut short;
		// corruption it reports as an invalid stream.
		msg := pre + ": incomplete stream"
		if errors.Is(cause, errChecksum) {
			msg = pre + ": invalid stream (checksum mismatch)"
		}
		return &zfs.Error{Op: op, Dataset: rp.name, Msg: msg, Err: cause}
	}
	p := m.savePartial(rp, h, got, next, bytes, opts)
	return &zfs.Error{Kind: zfs.ErrPartialReceive, Op: op, Dataset: rp.name,
		Msg: pre + ": checksum mismatch or incomplete stream.\nPartially received snapshot is saved.\n" +
			"A resuming stream can be generated on the sending system by running:\n    zfs send -t " + p.token(),
		Err: cause}
}

// dropPartial discards the saved state a non-resumable receive that
// continued it has ended (zfs recv without -s of a resume stream).
func (m *Model) dropPartial(rp *recvPlan) {
	d := m.st.Datasets[rp.name]
	if rp.prior == nil || d == nil {
		return
	}
	d.Partial = nil
	if rp.prior.Full {
		delete(m.st.Datasets, rp.name)
	}
}

// newPartial is the saved state a receive without prior state starts.
func newPartial(rp *recvPlan, h streamHeader, opts zfs.RecvOptions) *partial {
	p := &partial{Full: rp.full, Overwrite: rp.overwrite, BaseGUID: rp.base, Force: opts.ForceRollback,
		Header: h, Blocks: content{}}
	p.Header.Resume, p.Header.ResumeOffset, p.Header.ResumeBytes = false, 0, 0
	return p
}

// checkpointRecv records what a receive in flight got so far as the
// target's saved state, as savePartial would if the stream ended here,
// then calls OnCheckpoint without the lock. The state is a new object:
// rp.prior stays as it was, so a refused end can restore it.
func (m *Model) checkpointRecv(rp *recvPlan, h streamHeader, got content, next, bytes uint64, opts zfs.RecvOptions) {
	m.mu.Lock()
	var p *partial
	if rp.prior != nil {
		cp := *rp.prior
		cp.Blocks = rp.prior.Blocks.clone()
		p = &cp
	} else {
		p = newPartial(rp, h, opts)
	}
	for bn, b := range got {
		p.Blocks[bn] = b
	}
	p.NextBlock, p.Bytes = next, bytes
	d := m.st.Datasets[rp.name]
	if d == nil {
		d = m.newRecvDataset(rp.name, h)
	}
	d.Partial = p
	m.mu.Unlock()
	if m.onCk != nil {
		m.onCk()
	}
}

// undoCheckpoints puts back the state before a full or overwriting
// receive whose end was refused, which today leaves no trace of the
// receive (called with mu held).
func (m *Model) undoCheckpoints(rp *recvPlan) {
	d := m.st.Datasets[rp.name]
	switch {
	case d == nil:
	case rp.prior != nil:
		d.Partial = rp.prior
	case rp.full:
		// The first checkpoint created it.
		delete(m.st.Datasets, rp.name)
	default:
		d.Partial = nil
	}
}

// savePartial keeps what a resumable receive got, blocks before next, as
// the target's saved state.
func (m *Model) savePartial(rp *recvPlan, h streamHeader, got content, next, bytes uint64, opts zfs.RecvOptions) *partial {
	d := m.st.Datasets[rp.name]
	p := rp.prior
	if p == nil {
		p = newPartial(rp, h, opts)
	}
	for bn, b := range got {
		p.Blocks[bn] = b
	}
	p.NextBlock, p.Bytes = next, bytes
	if d == nil {
		d = m.newRecvDataset(rp.name, h)
	}
	d.Partial = p
	return p
}

func (m *Model) commitRecv(op string, rp *recvPlan, h streamHeader, got content, opts zfs.RecvOptions) error {
	pre := rp.prefix
	d := m.st.Datasets[rp.name]
	force := opts.ForceRollback
	if rp.prior != nil {
		force = rp.prior.Force
	}
	var head content
	switch {
	case rp.full:
		if d == nil {
			// Checked at the start; a parent destroyed meanwhile cannot
			// happen through zfs.ZFS, which destroys no filesystems.
			if parentName, _ := parentOf(rp.name); m.st.Datasets[parentName] == nil {
				return zerr(zfs.ErrDatasetNotExist, op, rp.name, "cannot open '%s': dataset does not exist\n%s: unable to restore to destination", parentName, pre)
			}
			d = m.newRecvDataset(rp.name, h)
		}
		head = content{}
	case rp.overwrite:
		if len(d.Snaps) > 0 {
			return zerr(zfs.ErrDestinationExists, op, rp.name, "%s: destination has snapshots (eg. %s@%s)\nmust destroy them to overwrite it", pre, rp.name, d.Snaps[0].Name)
		}
		head = content{}
	default:
		base := m.snapByGUID(d, rp.base)
		if base == nil {
			return zerr(zfs.ErrIncrementalSourceMismatch, op, rp.name, "%s: most recent snapshot of %s does not\nmatch incremental source", pre, rp.name)
		}
		if err := m.checkSnapNameFree(op, d, base, h, force); err != nil {
			return err
		}
		if force {
			if err := m.rollbackLocked(op, d, base, true); err != nil {
				return err
			}
		} else if d.modifiedSince(base) {
			return zerr(zfs.ErrDestinationModified, op, rp.name, "%s: destination %s has been modified\nsince most recent snapshot", pre, rp.name)
		}
		head = base.Content.clone()
	}
	// Merged only now: a refused commit leaves the saved state as it was.
	blocks := got
	if rp.prior != nil {
		blocks = rp.prior.Blocks
		for bn, b := range got {
			blocks[bn] = b
		}
	}
	txg := m.nextTXG(poolOf(d.Name))
	for bn, b := range blocks {
		head[bn] = block{Key: b.Key, Birth: txg, Sum: b.Sum}
	}
	d.Head, d.HeadTXG, d.Partial = head, txg, nil
	d.Snaps = append(d.Snaps, &snapshot{Name: snapName(h.ToName), GUID: h.ToGUID, TXG: txg,
		Creation: time.Unix(0, h.ToCreation).UTC(), Content: head.clone()})
	ph := h
	if !h.PropStream && rp.prior != nil && rp.full {
		// ZFS sets a full stream's properties as the receive starts, so
		// a resumed full receive keeps those of the interrupted one; an
		// incremental stream's are set at its end, and a resumed one
		// (zfs send -t carries none) leaves them as they were.
		ph = rp.prior.Header
	}
	if ph.PropStream {
		// The stream's properties replace what earlier receives set,
		// except those -x excludes.
		d.Received = map[string]string{}
		for k, v := range ph.Props {
			if !slices.Contains(opts.InheritProperties, k) {
				d.Received[k] = v
			}
		}
	}
	for k, v := range opts.SetProperties {
		d.Props[k] = v
	}
	return nil
}

// AbortReceive implements zfs.ZFS.
func (m *Model) AbortReceive(ctx context.Context, fs zfs.DatasetPath) error {
	const op = "recv"
	if err := checkPath(op, fs); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("AbortReceive"); err != nil {
		return err
	}
	d, err := m.lookup(op, fs.String())
	if err != nil {
		return err
	}
	if m.receiving[d.Name] {
		return zerr(zfs.ErrDatasetBusy, op, d.Name, "cannot abort receive of '%s': dataset is busy", d.Name)
	}
	if d.Partial == nil {
		return zerr(zfs.ErrNoResumableState, op, d.Name, "'%s' does not have any resumable receive state to abort", d.Name)
	}
	if d.Partial.Full {
		delete(m.st.Datasets, d.Name)
		return nil
	}
	d.Partial = nil
	return nil
}
