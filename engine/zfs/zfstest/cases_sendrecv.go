package zfstest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

func init() {
	register("FullAndIncrementalFromSnapshot", caseIncrementalFromSnapshot)
	register("IncrementalFromBookmark", caseIncrementalFromBookmark)
	register("IncrementalSourceMismatch", caseIncrementalSourceMismatch)
	register("DestinationModified", caseDestinationModified)
	register("ModifiedMeansChanged", caseModifiedMeansChanged)
	register("FullReceiveIntoExisting", caseFullIntoExisting)
	register("ForceRollbackDestroysNewer", caseForceRollbackDestroysNewer)
	register("IncrementalOntoItsBaseName", caseIncrementalOntoItsBaseName)
	register("ResumableFullReceive", caseResumableFull)
	register("ResumableIncrementalReceive", caseResumableIncremental)
	register("ForcedFullOntoSavedState", caseForcedFullOntoSavedState)
	register("RollbackUnderPartialReceive", caseRollbackUnderPartialReceive)
	register("AbortReceive", caseAbortReceive)
	register("AbortWithoutState", caseAbortWithoutState)
	register("NonResumableInterruptLeavesNothing", caseNonResumableInterrupt)
	register("CorruptResumeToken", caseCorruptToken)
	register("SendSizeEstimate", caseSendSize)
	register("SendArgsGUIDCheck", caseSendArgsGUIDCheck)
	register("ReadStreamHeader", caseReadStreamHeader)
}

// pair makes a source filesystem with snapshots a, b, c (data written
// before each) and a receive target path below an existing parent.
func (e *env) pair() (src, dst zfs.DatasetPath, a, b, c zfs.FilesystemVersion) {
	e.t.Helper()
	src = e.create("src", false)
	e.create("sink", false)
	dst = e.path("sink/dst")
	e.write(src, 1)
	a = e.snap(src, "a")
	e.write(src, 2)
	b = e.snap(src, "b")
	e.write(src, 3)
	c = e.snap(src, "c")
	return
}

func (e *env) received(dst zfs.DatasetPath, want ...zfs.FilesystemVersion) {
	e.t.Helper()
	vs := e.versions(dst)
	if len(vs) != len(want) {
		e.t.Fatalf("%s has %v, want %d snapshots", dst, e.relNames(dst), len(want))
	}
	for i, w := range want {
		if vs[i].Kind != zfs.Snapshot || vs[i].Name != w.Name || vs[i].GUID != w.GUID {
			e.t.Errorf("%s version %d = %s guid %d, want @%s guid %d", dst, i, vs[i].RelName(), vs[i].GUID, w.Name, w.GUID)
		}
	}
}

func caseIncrementalFromSnapshot(e *env) {
	src, dst, a, b, _ := e.pair()
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	e.received(dst, a)
	e.sameContent(a.Ref(src), a.Ref(dst))
	if fi := e.mustInfo(dst); fi.ReceiveResumeToken != "" || fi.Encrypted() {
		e.t.Errorf("received filesystem: %+v", fi)
	}
	e.mustTransfer(incr(src, a, b), dst, zfs.RecvOptions{})
	e.received(dst, a, b)
	e.sameContent(b.Ref(src), b.Ref(dst))
	// The received snapshot keeps the sender's creation time.
	if got := e.version(dst, zfs.Snapshot, "b"); !got.Creation.Equal(b.Creation) {
		e.t.Errorf("creation on receiver %v, sender %v", got.Creation, b.Creation)
	}
}

func caseIncrementalFromBookmark(e *env) {
	src, dst, a, _, c := e.pair()
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	bm := e.bookmark(a.Ref(src), "a_bm")
	// A bookmark carries its snapshot's GUID, createtxg and creation time.
	if bm.GUID != a.GUID || bm.CreateTXG != a.CreateTXG || !bm.Creation.Equal(a.Creation) {
		e.t.Errorf("bookmark %+v of snapshot %+v", bm, a)
	}
	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{a.Ref(src)}), "destroy source snapshot")
	e.mustTransfer(incr(src, bm, c), dst, zfs.RecvOptions{})
	e.received(dst, a, c)
	e.sameContent(c.Ref(src), c.Ref(dst))
}

func caseIncrementalSourceMismatch(e *env) {
	src, dst, a, b, c := e.pair()
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	_, err := e.transfer(incr(src, b, c), dst, zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrIncrementalSourceMismatch, "recv", dst.String(),
		fmt.Sprintf("cannot receive incremental stream: most recent snapshot of %s does not\nmatch incremental source", dst))
	e.received(dst, a)
	// An incremental stream needs an existing target.
	_, err = e.transfer(incr(src, a, b), e.path("sink/none"), zfs.RecvOptions{}, 0)
	if !errors.Is(err, zfs.ErrDatasetNotExist) {
		e.t.Errorf("incremental into a missing filesystem: %v, want ErrDatasetNotExist", err)
	}
}

func caseDestinationModified(e *env) {
	src, dst, a, b, _ := e.pair()
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	e.write(dst, 99)
	_, err := e.transfer(incr(src, a, b), dst, zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrDestinationModified, "recv", dst.String(),
		fmt.Sprintf("cannot receive incremental stream: destination %s has been modified\nsince most recent snapshot", dst))
	e.received(dst, a)
	e.mustTransfer(incr(src, a, b), dst, zfs.RecvOptions{ForceRollback: true})
	e.received(dst, a, b)
	e.sameContent(b.Ref(src), b.Ref(dst))
}

// caseModifiedMeansChanged: "modified since most recent snapshot" is a
// head that differs from the snapshot, not one written after it. An
// incremental that changed nothing (b: a snapshot after a without a
// write), received and its snapshot destroyed, leaves the head as a was:
// the same incremental is received again without -F. One that changed
// data (c), likewise destroyed, leaves a modified head. Found by
// TestDifferential on 2.3.9.
func caseModifiedMeansChanged(e *env) {
	src := e.create("src", false)
	e.create("sink", false)
	dst := e.path("sink/dst")
	e.write(src, 1)
	a := e.snap(src, "a")
	b := e.snap(src, "b")
	e.write(src, 2)
	c := e.snap(src, "c")
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	e.mustTransfer(incr(src, a, b), dst, zfs.RecvOptions{})
	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{b.Ref(dst)}), "destroy %s", b.Ref(dst))
	e.mustTransfer(incr(src, a, b), dst, zfs.RecvOptions{})
	e.received(dst, a, b)

	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{b.Ref(dst)}), "destroy %s", b.Ref(dst))
	e.mustTransfer(incr(src, a, c), dst, zfs.RecvOptions{})
	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{c.Ref(dst)}), "destroy %s", c.Ref(dst))
	_, err := e.transfer(incr(src, a, c), dst, zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrDestinationModified, "recv", dst.String(),
		fmt.Sprintf("cannot receive incremental stream: destination %s has been modified\nsince most recent snapshot", dst))
	e.received(dst, a)
}

func caseFullIntoExisting(e *env) {
	src, dst, a, _, _ := e.pair()
	e.create("sink/dst", false)
	_, err := e.transfer(full(src, a), dst, zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrDestinationExists, "recv", dst.String(),
		fmt.Sprintf("cannot receive new filesystem stream: destination '%s' exists\nmust specify -F to overwrite it", dst))
	// -F overwrites a filesystem that has no snapshots.
	e.write(dst, 7)
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{ForceRollback: true})
	e.received(dst, a)
	e.sameContent(a.Ref(src), a.Ref(dst))
	// ... but not one with snapshots.
	other := e.create("sink/other", false)
	e.snap(other, "x")
	_, err = e.transfer(full(src, a), other, zfs.RecvOptions{ForceRollback: true}, 0)
	e.wantErr(err, zfs.ErrDestinationExists, "recv", other.String(),
		fmt.Sprintf("cannot receive new filesystem stream: destination has snapshots (eg. %s@x)\nmust destroy them to overwrite it", other))
	// A full stream needs the parent to exist.
	_, err = e.transfer(full(src, a), e.path("nope/dst"), zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrDatasetNotExist, "recv", "",
		fmt.Sprintf("cannot open '%s': dataset does not exist\ncannot receive new filesystem stream: unable to restore to destination", e.path("nope")))
}

func caseForceRollbackDestroysNewer(e *env) {
	src, dst, a, b, c := e.pair()
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	e.mustTransfer(incr(src, a, b), dst, zfs.RecvOptions{})
	e.snap(dst, "local")
	// From a, the target has moved on (b and @local): refused without -F.
	_, err := e.transfer(incr(src, a, c), dst, zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrDestinationModified, "recv", dst.String(), "")
	e.mustTransfer(incr(src, a, c), dst, zfs.RecvOptions{ForceRollback: true})
	e.received(dst, a, c)
	e.sameContent(c.Ref(src), c.Ref(dst))
}

// An incremental stream (from a bookmark) whose snapshot has the name of
// the target's base snapshot, as where the source's snapshot was destroyed
// and made again: the name is taken, and the kernel refuses it (EEXIST),
// with -F or without. The error names the target filesystem, as zfsreal
// runs it. Measured on OpenZFS 2.1.11 and 2.3.9 (TestDifferential found
// the -F text on 2.1.11).
func caseIncrementalOntoItsBaseName(e *env) {
	src, dst, a, _, _ := e.pair()
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	ba := e.bookmark(a.Ref(src), "ba")
	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{a.Ref(src)}), "destroy source snapshot")
	e.write(src, 4)
	a2 := e.snap(src, "a")
	for _, force := range []bool{false, true} {
		_, err := e.transfer(incr(src, ba, a2), dst, zfs.RecvOptions{ForceRollback: force}, 0)
		e.wantErr(err, zfs.ErrDestinationExists, "recv", dst.String(),
			fmt.Sprintf("cannot restore to %s@a: destination already exists", dst))
	}
	e.received(dst, a)
}

func (e *env) streamSize(args zfs.SendArgs) int64 {
	e.t.Helper()
	s, err := e.z.Send(e.ctx, args)
	e.noErr(err, "send")
	defer s.Close()
	n, err := io.Copy(io.Discard, s)
	e.noErr(err, "read stream")
	return n
}

// interrupt transfers args into dst cut at half the stream and returns
// the receive error and where it was cut.
func (e *env) interrupt(args zfs.SendArgs, dst zfs.DatasetPath, resumable bool) (error, int64) {
	e.t.Helper()
	cut := e.streamSize(args) / 2
	_, err := e.transfer(args, dst, zfs.RecvOptions{Resumable: resumable}, cut)
	if err == nil {
		e.t.Fatalf("receive of a stream cut at %d bytes succeeded", cut)
	}
	return err, cut
}

func (e *env) checkToken(dst zfs.DatasetPath, src zfs.DatasetPath, to zfs.FilesystemVersion, fromGUID uint64, cut int64) string {
	e.t.Helper()
	tokStr, tok := e.token(dst)
	if want := src.String() + "@" + to.Name; tok.ToName != want {
		e.t.Errorf("token toname %q, want %q", tok.ToName, want)
	}
	if tok.ToGUID != to.GUID || tok.FromGUID != fromGUID {
		e.t.Errorf("token toguid %x fromguid %x, want %x %x", tok.ToGUID, tok.FromGUID, to.GUID, fromGUID)
	}
	if tok.Bytes == 0 || tok.Bytes > uint64(cut) {
		e.t.Errorf("token bytes %d, want in (0, %d]", tok.Bytes, cut)
	}
	return tokStr
}

func caseResumableFull(e *env) {
	src, dst, _, b, _ := e.pair()
	err, cut := e.interrupt(full(src, b), dst, true)
	e.wantErr(err, zfs.ErrPartialReceive, "recv", dst.String(),
		"cannot receive new filesystem stream: checksum mismatch or incomplete stream.\nPartially received snapshot is saved.…")
	tok := e.checkToken(dst, src, b, 0, cut)
	if vs := e.versions(dst); len(vs) != 0 {
		e.t.Errorf("partially received filesystem lists versions %v", e.relNames(dst))
	}
	// A new full stream is refused while partial state exists: it meets
	// the partially received filesystem as an existing destination.
	_, err = e.transfer(full(src, b), dst, zfs.RecvOptions{Resumable: true}, 0)
	e.wantErr(err, zfs.ErrDestinationExists, "recv", dst.String(),
		fmt.Sprintf("cannot receive new filesystem stream: destination '%s' exists\nmust specify -F to overwrite it", dst))
	e.mustTransfer(zfs.SendArgs{FS: src, To: b, ResumeToken: tok}, dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, b)
	e.sameContent(b.Ref(src), b.Ref(dst))
	if fi := e.mustInfo(dst); fi.ReceiveResumeToken != "" {
		e.t.Errorf("token left after the resumed receive completed")
	}
}

func caseResumableIncremental(e *env) {
	src, dst, a, _, c := e.pair()
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	err, cut := e.interrupt(incr(src, a, c), dst, true)
	e.wantErr(err, zfs.ErrPartialReceive, "recv", dst.String(),
		"cannot receive incremental stream: checksum mismatch or incomplete stream.\nPartially received snapshot is saved.…")
	tok := e.checkToken(dst, src, c, a.GUID, cut)
	e.received(dst, a)
	// A token refuses to continue a different send, with one kind
	// (resumetoken.Token.Match) whichever part differs.
	_, err = e.z.Send(e.ctx, zfs.SendArgs{FS: src, To: a, ResumeToken: tok})
	e.wantErr(err, zfs.ErrResumeTokenMismatch, "send", a.Ref(src).String(), "")
	_, err = e.z.Send(e.ctx, zfs.SendArgs{FS: src, To: c, ResumeToken: tok})
	e.wantErr(err, zfs.ErrResumeTokenMismatch, "send", c.Ref(src).String(), "")
	_, err = e.z.SendSize(e.ctx, zfs.SendArgs{FS: src, From: &c, To: c, ResumeToken: tok})
	e.wantErr(err, zfs.ErrResumeTokenMismatch, "send", c.Ref(src).String(), "")
	e.mustTransfer(zfs.SendArgs{FS: src, From: &a, To: c, ResumeToken: tok}, dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, a, c)
	e.sameContent(c.Ref(src), c.Ref(dst))
}

// caseForcedFullOntoSavedState: a full stream received with -F onto a
// filesystem holding saved receive state meets libzfs's own -F checks
// (snapshots, then encryption) before the kernel's refusal of the saved
// state; each leaves the state as it was. Found by TestDifferential on
// 2.3.9 (a raw encrypted stream).
func caseForcedFullOntoSavedState(e *env) {
	src, dst, a, b, c := e.pair()
	enc := e.create("enc", true)
	e.write(enc, 4)
	e1 := e.snap(enc, "e1")
	rawFull := full(enc, e1)
	rawFull.Flags.Raw = true
	force := zfs.RecvOptions{ForceRollback: true, Resumable: true}
	const encMsg = "cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an unencrypted one with an encrypted one"

	// Saved state of a full receive: a filesystem without snapshots.
	_, cut := e.interrupt(full(src, b), dst, true)
	tok := e.checkToken(dst, src, b, 0, cut)
	_, err := e.transfer(full(src, a), dst, force, 0)
	e.wantErr(err, zfs.ErrDatasetBusy, "recv", dst.String(),
		fmt.Sprintf("cannot receive new filesystem stream: destination %s contains partially-complete state from \"zfs receive -s\".", dst))
	_, err = e.transfer(rawFull, dst, force, 0)
	e.wantErr(err, zfs.ErrEncryptionMismatch, "recv", dst.String(), encMsg)
	if now, _ := e.token(dst); now != tok {
		e.t.Errorf("the refused receives changed the saved state of %s", dst)
	}
	e.mustTransfer(zfs.SendArgs{FS: src, To: b, ResumeToken: tok}, dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, b)

	// Saved state of an incremental: the filesystem has a snapshot, which
	// libzfs names before it looks at the stream's encryption.
	dst2 := e.path("sink/dst2")
	e.mustTransfer(full(src, a), dst2, zfs.RecvOptions{})
	_, cut = e.interrupt(incr(src, a, c), dst2, true)
	tok = e.checkToken(dst2, src, c, a.GUID, cut)
	snapsMsg := fmt.Sprintf("cannot receive new filesystem stream: destination has snapshots (eg. %s)\nmust destroy them to overwrite it", a.Ref(dst2))
	for _, args := range []zfs.SendArgs{full(src, b), rawFull} {
		_, err = e.transfer(args, dst2, force, 0)
		e.wantErr(err, zfs.ErrDestinationExists, "recv", dst2.String(), snapsMsg)
	}
	if now, _ := e.token(dst2); now != tok {
		e.t.Errorf("the refused receives changed the saved state of %s", dst2)
	}
	e.received(dst2, a)
	e.mustTransfer(zfs.SendArgs{FS: src, From: &a, To: c, ResumeToken: tok}, dst2, zfs.RecvOptions{Resumable: true})
	e.received(dst2, a, c)
}

// caseRollbackUnderPartialReceive: the saved state of a partial
// incremental receive is a clone of its base snapshot (dst/%recv), so
// neither destroying the base nor a rollback -r through it may strand the
// state; a rollback that keeps the base (to the newest snapshot) is allowed
// and keeps the state, and it undoes a change that would refuse the resume.
func caseRollbackUnderPartialReceive(e *env) {
	src, dst, a, b, c := e.pair()
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	e.mustTransfer(incr(src, a, b), dst, zfs.RecvOptions{})
	_, cut := e.interrupt(incr(src, b, c), dst, true)
	tok := e.checkToken(dst, src, c, b.GUID, cut)
	_, before := e.token(dst)
	stateKept := func(when string) resumetoken.Token {
		e.t.Helper()
		e.received(dst, a, b)
		fi, ok := e.info(dst)
		if !ok || fi.ReceiveResumeToken == "" {
			e.t.Fatalf("%s: the partial receive state of %s is gone", when, dst)
		}
		_, t := e.token(dst)
		if t.ToGUID != c.GUID || t.FromGUID != b.GUID || t.Bytes < before.Bytes {
			e.t.Fatalf("%s: token %+v no longer continues the saved state %+v", when, t, before)
		}
		return t
	}

	aRef, bRef := a.Ref(dst), b.Ref(dst)
	err := e.z.Rollback(e.ctx, aRef, false)
	e.wantErr(err, zfs.ErrNewerSnapshotsExist, "rollback", aRef.String(),
		fmt.Sprintf("cannot rollback to '%s': more recent snapshots or bookmarks exist\nuse '-r' to force deletion of the following snapshots and bookmarks:\n%s", aRef, bRef))
	err = e.z.Rollback(e.ctx, aRef, true)
	e.wantErr(err, zfs.ErrDatasetBusy, "rollback", aRef.String(),
		fmt.Sprintf("cannot rollback to '%s': clones of previous snapshots exist\nuse '-R' to force deletion of the following clones and dependents:\n%s/%%recv", aRef, dst))
	if t := stateKept("after the refused rollback -r"); t != before {
		e.t.Errorf("refused rollback changed the token: %+v, was %+v", t, before)
	}
	err = e.z.Destroy(e.ctx, []zfs.VersionRef{bRef})
	e.wantErr(err, zfs.ErrDatasetBusy, "destroy", bRef.String(),
		fmt.Sprintf("cannot destroy '%s': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\n%s/%%recv", bRef, dst))
	stateKept("after the refused destroy of the base")

	// Changed since the base: the resumed stream is refused at its end,
	// and the saved state stays (real ZFS keeps what the refused resume
	// received: the token may have moved on).
	e.write(dst, 99)
	_, err = e.transfer(zfs.SendArgs{FS: src, From: &b, To: c, ResumeToken: tok}, dst, zfs.RecvOptions{Resumable: true}, 0)
	e.wantErr(err, zfs.ErrDestinationModified, "recv", dst.String(),
		fmt.Sprintf("cannot receive resume stream: destination %s has been modified\nsince most recent snapshot", dst))
	stateKept("after the refused resume")
	tok, _ = e.token(dst)

	// Rolling back to the newest snapshot keeps the base, and the state.
	e.noErr(e.z.Rollback(e.ctx, bRef, false), "rollback to the newest snapshot under a partial receive")
	stateKept("after the rollback to the newest snapshot")
	e.mustTransfer(zfs.SendArgs{FS: src, From: &b, To: c, ResumeToken: tok}, dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, a, b, c)
	e.sameContent(c.Ref(src), c.Ref(dst))
	if fi := e.mustInfo(dst); fi.ReceiveResumeToken != "" {
		e.t.Errorf("token left after the resumed receive completed")
	}
	// Without partial state, the rollback -r is allowed again.
	e.noErr(e.z.Rollback(e.ctx, aRef, true), "rollback -r once the receive completed")
	e.received(dst, a)
}

func caseAbortReceive(e *env) {
	src, dst, a, b, _ := e.pair()
	e.interrupt(full(src, a), dst, true)
	e.token(dst)
	e.noErr(e.z.AbortReceive(e.ctx, dst), "abort full receive")
	if _, ok := e.info(dst); ok {
		e.t.Errorf("%s exists after aborting its only (full) receive", dst)
	}
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	e.interrupt(incr(src, a, b), dst, true)
	e.token(dst)
	e.noErr(e.z.AbortReceive(e.ctx, dst), "abort incremental receive")
	if fi := e.mustInfo(dst); fi.ReceiveResumeToken != "" {
		e.t.Errorf("token left after abort")
	}
	e.received(dst, a)
	// After the abort the same incremental works from scratch.
	e.mustTransfer(incr(src, a, b), dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, a, b)
}

func caseAbortWithoutState(e *env) {
	fs := e.create("fs", false)
	err := e.z.AbortReceive(e.ctx, fs)
	e.wantErr(err, zfs.ErrNoResumableState, "recv", fs.String(),
		fmt.Sprintf("'%s' does not have any resumable receive state to abort", fs))
}

func caseNonResumableInterrupt(e *env) {
	src, dst, a, b, _ := e.pair()
	err, _ := e.interrupt(full(src, a), dst, false)
	if errors.Is(err, zfs.ErrPartialReceive) {
		e.t.Errorf("non-resumable receive reports saved state: %v", err)
	}
	var ze *zfs.Error
	if !errors.As(err, &ze) || ze.Msg != "cannot receive new filesystem stream: incomplete stream" {
		e.t.Errorf("error %v, want the incomplete stream message", err)
	}
	if _, ok := e.info(dst); ok {
		e.t.Errorf("%s exists after an interrupted non-resumable full receive", dst)
	}
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	e.interrupt(incr(src, a, b), dst, false)
	if fi := e.mustInfo(dst); fi.ReceiveResumeToken != "" {
		e.t.Errorf("token after a non-resumable receive")
	}
	e.received(dst, a)
	e.mustTransfer(incr(src, a, b), dst, zfs.RecvOptions{})
	e.received(dst, a, b)
}

func caseCorruptToken(e *env) {
	src, dst, _, b, _ := e.pair()
	e.interrupt(full(src, b), dst, true)
	tok, _ := e.token(dst)
	_, err := e.z.Send(e.ctx, zfs.SendArgs{FS: src, To: b, ResumeToken: "not-a-token"})
	e.wantErr(err, zfs.ErrResumeTokenCorrupt, "send", "", "cannot resume send: resume token is corrupt (invalid format)")
	// Change the checksum field (the second dash-separated field).
	parts := strings.SplitN(tok, "-", 4)
	if len(parts) != 4 {
		e.t.Fatalf("token %q has not 4 fields", tok)
	}
	parts[1] = fmt.Sprintf("%x", 0x1234567+len(parts[1]))
	bad := strings.Join(parts, "-")
	_, err = e.z.Send(e.ctx, zfs.SendArgs{FS: src, To: b, ResumeToken: bad})
	e.wantErr(err, zfs.ErrResumeTokenCorrupt, "send", "", "cannot resume send: resume token is corrupt (incorrect checksum)")
}

func caseSendSize(e *env) {
	src, _, a, b, _ := e.pair()
	for _, args := range []zfs.SendArgs{full(src, a), incr(src, a, b)} {
		est, err := e.z.SendSize(e.ctx, args)
		e.noErr(err, "send size")
		n := e.streamSize(args)
		if est <= 0 || est > 2*n || n > 2*est {
			e.t.Errorf("send size estimate %d for a stream of %d bytes", est, n)
		}
	}
}

func caseSendArgsGUIDCheck(e *env) {
	src, dst, a, b, _ := e.pair()
	wrong := b
	wrong.GUID++
	_, err := e.z.Send(e.ctx, full(src, wrong))
	e.wantErr(err, zfs.ErrVersionMismatch, "send", "", "")
	wrongFrom := a
	wrongFrom.GUID++
	_, err = e.z.Send(e.ctx, incr(src, wrongFrom, b))
	e.wantErr(err, zfs.ErrVersionMismatch, "send", "", "")
	// A snapshot destroyed and re-created under its name is not sent in
	// its place.
	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{b.Ref(src)}), "destroy")
	e.snap(src, "b")
	_, err = e.z.Send(e.ctx, incr(src, a, b))
	e.wantErr(err, zfs.ErrVersionMismatch, "send", "", "")
	_, err = e.z.SendSize(e.ctx, full(src, b))
	e.wantErr(err, zfs.ErrVersionMismatch, "send", "", "")
	// Zero GUIDs skip the check.
	nb := e.version(src, zfs.Snapshot, "b")
	nb.GUID = 0
	e.mustTransfer(full(src, nb), dst, zfs.RecvOptions{})
	// A missing snapshot is not a GUID mismatch.
	_, err = e.z.Send(e.ctx, full(src, zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "nonexist"}))
	e.wantErr(err, zfs.ErrDatasetNotExist, "send", "", fmt.Sprintf("cannot open '%s@nonexist': dataset does not exist", src))
}

// ReadStreamHeader says what a stream sends and hands the whole stream on
// to Receive; a stream Receive refuses at its header fails there alike.
func caseReadStreamHeader(e *env) {
	src, dst, a, b, _ := e.pair()
	for _, args := range []zfs.SendArgs{full(src, a), incr(src, a, b)} {
		stream, err := e.z.Send(e.ctx, args)
		e.noErr(err, "send")
		h, replay, err := e.z.ReadStreamHeader(e.ctx, stream)
		e.noErr(err, "read stream header")
		var from uint64
		if args.From != nil {
			from = args.From.GUID
		}
		want := zfs.StreamHeader{ToName: args.To.Ref(src).String(), ToGUID: args.To.GUID, FromGUID: from}
		got := h
		got.Creation = time.Time{}
		if got != want || h.Creation.Unix() != args.To.Creation.Unix() {
			e.t.Errorf("header %+v, want %+v created %v", h, want, args.To.Creation)
		}
		e.noErr(e.z.Receive(e.ctx, dst, replay, zfs.RecvOptions{}), "receive after the header was read")
		e.noErr(stream.Close(), "close send")
	}
	e.received(dst, a, b)
	e.sameContent(b.Ref(src), b.Ref(dst))

	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	for _, g := range [][]byte{nil, garbage[:10], garbage} {
		if _, _, err := e.z.ReadStreamHeader(e.ctx, bytes.NewReader(g)); err == nil {
			e.t.Errorf("header of %d bytes of garbage accepted", len(g))
		}
		if err := e.z.Receive(e.ctx, e.path("sink/garbage"), bytes.NewReader(g), zfs.RecvOptions{}); err == nil {
			e.t.Errorf("receive of %d bytes of garbage accepted", len(g))
		}
	}
	if _, ok := e.info(e.path("sink/garbage")); ok {
		e.t.Errorf("a garbage receive created its target")
	}
}
