package zfstest

import (
	"fmt"
	"io"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("RawSendOfEncrypted", caseRawSend)
	register("NonRawSendKeyUnloaded", caseNonRawSendKeyUnloaded)
	register("EncryptionMismatchOnReceive", caseEncryptionMismatch)
	register("ResumableRawReceive", caseResumableRaw)
}

func (e *env) encSource() (zfs.DatasetPath, zfs.FilesystemVersion, zfs.FilesystemVersion) {
	e.t.Helper()
	enc := e.create("enc", true)
	e.create("sink", false)
	e.write(enc, 1)
	e1 := e.snap(enc, "e1")
	e.write(enc, 2)
	e2 := e.snap(enc, "e2")
	fi := e.mustInfo(enc)
	if !fi.Encrypted() || fi.EncryptionRoot != enc.String() || fi.KeyStatus != zfs.KeyStatusAvailable {
		e.t.Fatalf("new encrypted filesystem: %+v", fi)
	}
	return enc, e1, e2
}

func caseRawSend(e *env) {
	enc, e1, e2 := e.encSource()
	dst := e.path("sink/raw")
	raw := full(enc, e1)
	raw.Flags.Raw = true
	e.mustTransfer(raw, dst, zfs.RecvOptions{})
	fi := e.mustInfo(dst)
	if !fi.Encrypted() || fi.EncryptionRoot != dst.String() || fi.KeyStatus != zfs.KeyStatusUnavailable {
		e.t.Errorf("raw received filesystem: encryption %q root %q keystatus %q, want encrypted, its own root, unavailable",
			fi.Encryption, fi.EncryptionRoot, fi.KeyStatus)
	}
	e.received(dst, e1)
	// Raw incrementals need no key on either side.
	e.noErr(e.h.UnloadKey(e.ctx, enc), "unload source key")
	rawIncr := incr(enc, e1, e2)
	rawIncr.Flags.Raw = true
	e.mustTransfer(rawIncr, dst, zfs.RecvOptions{})
	e.received(dst, e1, e2)
	e.noErr(e.h.LoadKey(e.ctx, enc), "load source key")
	e.noErr(e.h.LoadKey(e.ctx, dst), "load key of the raw received filesystem")
	e.sameContent(e2.Ref(enc), e2.Ref(dst))
}

func caseNonRawSendKeyUnloaded(e *env) {
	enc, e1, _ := e.encSource()
	e.noErr(e.h.UnloadKey(e.ctx, enc), "unload key")
	if fi := e.mustInfo(enc); fi.KeyStatus != zfs.KeyStatusUnavailable {
		e.t.Errorf("keystatus after unload: %q", fi.KeyStatus)
	}
	// Real zfs may report the failure only when the stream is read.
	sendErr := func(args zfs.SendArgs) error {
		s, err := e.z.Send(e.ctx, args)
		if err != nil {
			return err
		}
		_, rerr := io.Copy(io.Discard, s)
		if cerr := s.Close(); cerr != nil {
			return cerr
		}
		return rerr
	}
	err := sendErr(full(enc, e1))
	// OpenZFS 2.1.11 in the platformtest VM says "dataset key must be
	// loaded" for this call.
	e.wantErr(err, zfs.ErrKeyNotLoaded, "send", "", fmt.Sprintf("warning: cannot send '%s@e1': dataset key must be loaded", enc))
	// The key is missing before the incremental source is: a non-raw send
	// from a bookmark that does not exist says so (TestDifferential, 2.3.9).
	err = sendErr(zfs.SendArgs{FS: enc, From: &zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: "nope"}, To: e1})
	e.wantErr(err, zfs.ErrKeyNotLoaded, "send", "", fmt.Sprintf("warning: cannot send '%s@e1': dataset key must be loaded", enc))
	// A raw send does not need the key.
	raw := full(enc, e1)
	raw.Flags.Raw = true
	e.mustTransfer(raw, e.path("sink/raw"), zfs.RecvOptions{})
}

func caseEncryptionMismatch(e *env) {
	enc, e1, e2 := e.encSource()
	// A non-raw stream of an encrypted dataset lands unencrypted.
	plain := e.path("sink/plain")
	e.mustTransfer(full(enc, e1), plain, zfs.RecvOptions{})
	if fi := e.mustInfo(plain); fi.Encrypted() {
		e.t.Errorf("non-raw receive under an unencrypted parent is encrypted: %+v", fi)
	}
	e.sameContent(e1.Ref(enc), e1.Ref(plain))
	rawIncr := incr(enc, e1, e2)
	rawIncr.Flags.Raw = true
	_, err := e.transfer(rawIncr, plain, zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrEncryptionMismatch, "recv", plain.String(),
		"cannot receive incremental stream: cannot perform raw receive on top of existing unencrypted dataset")

	// A non-raw incremental into an encrypted target needs its key.
	rawDst := e.path("sink/raw")
	raw := full(enc, e1)
	raw.Flags.Raw = true
	e.mustTransfer(raw, rawDst, zfs.RecvOptions{})
	_, err = e.transfer(incr(enc, e1, e2), rawDst, zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrKeyNotLoaded, "recv", rawDst.String(), "cannot receive incremental stream: inherited key must be loaded")
	e.received(rawDst, e1)
}

func caseResumableRaw(e *env) {
	enc, _, e2 := e.encSource()
	dst := e.path("sink/raw")
	args := full(enc, e2)
	args.Flags.Raw = true
	err, cut := e.interrupt(args, dst, true)
	e.wantErr(err, zfs.ErrPartialReceive, "recv", dst.String(), "")
	tokStr := e.checkToken(dst, enc, e2, 0, cut)
	_, tok := e.token(dst)
	if !tok.RawOK || !tok.CompressOK {
		e.t.Errorf("token of a raw send: rawok %v compressok %v, want both", tok.RawOK, tok.CompressOK)
	}
	// The resumed send is raw because the token says so, and needs no key.
	e.noErr(e.h.UnloadKey(e.ctx, enc), "unload source key")
	e.mustTransfer(zfs.SendArgs{FS: enc, To: e2, ResumeToken: tokStr}, dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, e2)
	fi := e.mustInfo(dst)
	if fi.EncryptionRoot != dst.String() || fi.KeyStatus != zfs.KeyStatusUnavailable {
		e.t.Errorf("resumed raw receive: root %q keystatus %q", fi.EncryptionRoot, fi.KeyStatus)
	}
	e.noErr(e.h.LoadKey(e.ctx, enc), "load source key")
	e.noErr(e.h.LoadKey(e.ctx, dst), "load key of the received filesystem")
	e.sameContent(e2.Ref(enc), e2.Ref(dst))
}

func init() {
	register("RawSendOfUnencryptedResumes", caseRawUnencrypted)
	register("EmbeddedDataIntoEncrypted", caseEmbeddedIntoEncrypted)
}

// zfs send -w of an unencrypted filesystem is no encrypted stream: its
// token says compressok and embedok (-w implies -c -L -e) but not rawok,
// and resumes as such. Measured on OpenZFS 2.1.11.
func caseRawUnencrypted(e *env) {
	src, dst, _, b, _ := e.pair()
	args := full(src, b)
	args.Flags.Raw = true
	err, cut := e.interrupt(args, dst, true)
	e.wantErr(err, zfs.ErrPartialReceive, "recv", dst.String(), "")
	tokStr := e.checkToken(dst, src, b, 0, cut)
	_, tok := e.token(dst)
	if tok.RawOK || !tok.CompressOK || !tok.EmbedOK {
		e.t.Errorf("token of zfs send -w of an unencrypted filesystem: rawok %v compressok %v embedok %v, want false true true", tok.RawOK, tok.CompressOK, tok.EmbedOK)
	}
	e.mustTransfer(zfs.SendArgs{FS: src, To: b, ResumeToken: tokStr}, dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, b)
	if fi := e.mustInfo(dst); fi.Encrypted() {
		e.t.Errorf("zfs send -w of an unencrypted filesystem received encrypted: %+v", fi)
	}
	e.sameContent(b.Ref(src), b.Ref(dst))
}

// A stream with the embedded-data feature (-e, or -w of an unencrypted
// filesystem) is not received into an encrypted filesystem, full or
// incremental; without -e it is. Measured on OpenZFS 2.1.11.
func caseEmbeddedIntoEncrypted(e *env) {
	src, _, a, b, _ := e.pair()
	enc := e.create("encsink", true)
	for _, f := range []zfs.SendFlags{{EmbeddedData: true}, {Raw: true}} {
		args := full(src, a)
		args.Flags = f
		_, err := e.transfer(args, e.path("encsink/x"), zfs.RecvOptions{}, 0)
		e.wantErr(err, zfs.ErrEncryptionMismatch, "recv", e.path("encsink/x").String(),
			"cannot receive new filesystem stream: incompatible embedded data stream feature with encrypted receive.")
		if _, ok := e.info(e.path("encsink/x")); ok {
			e.t.Errorf("a refused receive left %s behind", e.path("encsink/x"))
		}
	}
	dst := e.path("encsink/x")
	e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
	if fi := e.mustInfo(dst); !fi.Encrypted() || fi.EncryptionRoot != enc.String() {
		e.t.Errorf("plain stream below an encrypted parent: %+v, want encrypted under %s", fi, enc)
	}
	args := incr(src, a, b)
	args.Flags.EmbeddedData = true
	_, err := e.transfer(args, dst, zfs.RecvOptions{}, 0)
	e.wantErr(err, zfs.ErrEncryptionMismatch, "recv", dst.String(),
		"cannot receive incremental stream: incompatible embedded data stream feature with encrypted receive.")
	e.received(dst, a)
}
