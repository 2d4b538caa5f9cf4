package zfs

import "fmt"

// SendFlags are the zfs send flags that shape a stream. A sending job's
// send section sets them (SendPolicy); SendArgs carries them to the
// implementation. With SendArgs.ResumeToken set ZFS takes the stream's
// flags from the token, and Properties, BackupProperties and Saved cannot
// be combined with it (zfs send -t refuses them).
type SendFlags struct {
	// Raw (-w) sends the data as it is on disk: an encrypted filesystem
	// stays encrypted and needs no key; an unencrypted one is sent as
	// with -L -c -e.
	Raw bool
	// Properties (-p) includes the filesystem's properties: user
	// properties and the native ones set locally or received.
	Properties bool
	// BackupProperties (-b) includes the received values of properties
	// instead of local ones.
	BackupProperties bool
	// LargeBlocks (-L) keeps blocks larger than 128 KiB.
	LargeBlocks bool
	// Compressed (-c) sends compressed blocks as they are.
	Compressed bool
	// EmbeddedData (-e) sends blocks stored in the block pointer as such;
	// ZFS cannot receive such a stream into an encrypted filesystem.
	EmbeddedData bool
	// Saved (-S) sends the partially received state of a filesystem (what
	// an interrupted receive into it kept) instead of a snapshot.
	Saved bool
}

// RawStream reports whether a send with f of a filesystem is a raw stream
// of encrypted data: the stream carries ciphertext, and the receiver gets
// the filesystem as an encryption root of its own whose key it need not
// have.
func (f SendFlags) RawStream(fs FilesystemInfo) bool { return f.Raw && fs.Encrypted() }

// EmbedsData reports whether a send with f may carry embedded-data
// records (-e, implied by -w for an unencrypted filesystem), which ZFS
// refuses to receive into an encrypted filesystem.
func (f SendFlags) EmbedsData(fs FilesystemInfo) bool {
	return (f.EmbeddedData || f.Raw) && !fs.Encrypted()
}

// SendPolicy is what a sending job's send section says about its sends:
// the flags of every send, and whether it sends encrypted filesystems
// only. The job that sends decides it, also where the other side asks for
// the stream (a pull from a source): For is the one place that turns it
// into the flags of one send or a refusal.
type SendPolicy struct {
	// Encrypted (send.encrypted) sends every filesystem raw and refuses
	// to send one that is not encrypted, so nothing the job sends leaves
	// the host readable.
	Encrypted bool
	// Flags are the flags of every send. Flags.Raw (send.raw) sends every
	// filesystem raw, encrypted or not. Without Raw and Encrypted an
	// encrypted filesystem is sent decrypted, which needs its key loaded.
	Flags SendFlags
}

// For returns the flags of a send of fs under p, or a *SendRefusedError
// (matching ErrNotEncrypted or ErrKeyNotLoaded with errors.Is) saying why
// p does not send it, with the flags the send would have had.
func (p SendPolicy) For(fs FilesystemInfo) (SendFlags, error) {
	f := p.Flags
	if p.Encrypted {
		f.Raw = true
		if !fs.Encrypted() {
			return f, &SendRefusedError{FS: fs.Path, Kind: ErrNotEncrypted,
				Why: "send.encrypted is true and the filesystem is not encrypted"}
		}
	}
	if !f.Raw && fs.Encrypted() && fs.KeyStatus == KeyStatusUnavailable {
		return f, &SendRefusedError{FS: fs.Path, Kind: ErrKeyNotLoaded,
			Why: "the filesystem is encrypted and its key is not loaded; send.encrypted and send.raw are false, so it would be sent decrypted " +
				"(load the key, or set send.encrypted or send.raw to send it raw)"}
	}
	return f, nil
}

// SendRefusedError is a send a SendPolicy does not make.
type SendRefusedError struct {
	FS DatasetPath
	// Kind is ErrNotEncrypted or ErrKeyNotLoaded.
	Kind Kind
	Why  string
}

func (e *SendRefusedError) Error() string {
	return fmt.Sprintf("not sending %s: %s", e.FS, e.Why)
}

// Unwrap gives the refusal's kind, for errors.Is and KindOf.
func (e *SendRefusedError) Unwrap() error { return e.Kind }
