package zfstest

import (
	"fmt"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("PlaceholderEncryption", casePlaceholderEncryption)
	register("PlaceholderEncryptionKeyUnloaded", casePlaceholderEncryptionKeyUnloaded)
}

// wantPlaceholder checks fs is a placeholder, encrypted below encRoot or
// (encRoot empty) unencrypted.
func (e *env) wantPlaceholder(fs zfs.DatasetPath, encRoot string) {
	e.t.Helper()
	fi := e.mustInfo(fs)
	if !fi.Placeholder {
		e.t.Errorf("%s: Placeholder = false", fs)
	}
	e.wantEncryption(fs, encRoot)
}

func (e *env) wantEncryption(fs zfs.DatasetPath, encRoot string) {
	e.t.Helper()
	fi := e.mustInfo(fs)
	switch {
	case encRoot == "" && (fi.Encrypted() || fi.EncryptionRoot != "" || fi.KeyStatus != zfs.KeyStatusNone):
		e.t.Errorf("%s: encryption %q root %q keystatus %q, want unencrypted", fs, fi.Encryption, fi.EncryptionRoot, fi.KeyStatus)
	case encRoot != "" && (!fi.Encrypted() || fi.EncryptionRoot != encRoot):
		e.t.Errorf("%s: encryption %q root %q, want encrypted below %s", fs, fi.Encryption, fi.EncryptionRoot, encRoot)
	}
}

// casePlaceholderEncryption: a placeholder below an encrypted parent
// inherits its encryption unless created with EncryptionOff; only the
// unencrypted one can later be replaced by a (non-raw) full receive, which
// is why zrepl offers recv.placeholder.encryption: off.
func casePlaceholderEncryption(e *env) {
	enc := e.create("enc", true)
	inherit := e.path("enc/inherit")
	e.noErr(e.z.CreatePlaceholder(e.ctx, inherit, zfs.PlaceholderOptions{}), "placeholder inheriting encryption")
	e.wantPlaceholder(inherit, enc.String())
	off := e.path("enc/off")
	e.noErr(e.z.CreatePlaceholder(e.ctx, off, zfs.PlaceholderOptions{EncryptionOff: true}), "unencrypted placeholder below an encrypted parent")
	e.wantPlaceholder(off, "")
	// Below the unencrypted placeholder, inheriting means unencrypted.
	child := e.path("enc/off/child")
	e.noErr(e.z.CreatePlaceholder(e.ctx, child, zfs.PlaceholderOptions{}), "placeholder below the unencrypted one")
	e.wantPlaceholder(child, "")
	// Below an unencrypted parent, EncryptionOff changes nothing.
	plain := e.path("plain")
	e.noErr(e.z.CreatePlaceholder(e.ctx, plain, zfs.PlaceholderOptions{EncryptionOff: true}), "unencrypted placeholder below an unencrypted parent")
	e.wantPlaceholder(plain, "")

	src := e.create("src", false)
	e.write(src, 1)
	a := e.snap(src, "a")
	// A forced full receive replaces the unencrypted placeholder and keeps
	// its children; the received filesystem stays unencrypted.
	e.mustTransfer(full(src, a), off, zfs.RecvOptions{ForceRollback: true})
	e.received(off, a)
	e.sameContent(a.Ref(src), a.Ref(off))
	e.wantEncryption(off, "")
	if _, ok := e.info(child); !ok {
		e.t.Errorf("%s is gone after its parent's forced full receive", child)
	}
	// ... but never the encrypted one.
	_, err := e.transfer(full(src, a), inherit, zfs.RecvOptions{ForceRollback: true}, 0)
	e.wantErr(err, zfs.ErrEncryptionMismatch, "recv", inherit.String(),
		"cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an unencrypted one with an encrypted one")
	e.received(inherit)
	e.wantPlaceholder(inherit, enc.String())
}

// casePlaceholderEncryptionKeyUnloaded: an encrypted parent's key is needed
// for a placeholder that inherits its encryption, not for an unencrypted
// one.
func casePlaceholderEncryptionKeyUnloaded(e *env) {
	enc := e.create("enc", true)
	e.noErr(e.h.UnloadKey(e.ctx, enc), "unload key")
	inherit := e.path("enc/inherit")
	err := e.z.CreatePlaceholder(e.ctx, inherit, zfs.PlaceholderOptions{})
	// OpenZFS 2.1.11's text.
	e.wantErr(err, zfs.ErrKeyNotLoaded, "create", inherit.String(),
		fmt.Sprintf("cannot create '%s': encryption root's key is not loaded or provided", inherit))
	off := e.path("enc/off")
	err = e.z.CreatePlaceholder(e.ctx, off, zfs.PlaceholderOptions{EncryptionOff: true})
	e.noErr(err, "unencrypted placeholder below a parent whose key is unloaded")
	e.wantPlaceholder(off, "")
}
