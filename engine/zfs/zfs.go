package zfs

import (
	"context"
	"io"
	"time"
)

// ZFS is what the engine needs of a ZFS host. Every call takes a context;
// cancelling it aborts the operation (a cancelled Send closes its stream,
// a cancelled Receive behaves like a receive whose stream was cut off).
type ZFS interface {
	// ListPools lists the root filesystem of every imported pool, sorted
	// by name (a pool's root filesystem has the pool's name). It is how a
	// filter that takes every filesystem of every pool finds its roots:
	// ListFilesystems of each lists the rest.
	ListPools(ctx context.Context) ([]DatasetPath, error)
	// ListFilesystems lists root and all filesystems below it, parents
	// before children. It fails with ErrDatasetNotExist if root is absent.
	ListFilesystems(ctx context.Context, root DatasetPath) ([]FilesystemInfo, error)
	// ListVersions lists the snapshots and bookmarks of fs (not of its
	// children), ordered by CreateTXG, snapshots before bookmarks of the
	// same txg.
	ListVersions(ctx context.Context, fs DatasetPath) ([]FilesystemVersion, error)
	// ListTree is ListFilesystems of root and ListVersions of each of its
	// filesystems in one listing (zfs list -r -t
	// filesystem,volume,snapshot,bookmark), whose cost does not grow with
	// the number of filesystems: parents before children, each with its
	// versions in ListVersions' order. It fails with ErrDatasetNotExist if
	// root is absent.
	ListTree(ctx context.Context, root DatasetPath) ([]Listing, error)

	// CreatePlaceholder creates fs (not its parents) as a placeholder: an
	// unmounted filesystem that exists only to hold children, marked with
	// PlaceholderProperty. It inherits its parent's encryption unless
	// opts say otherwise.
	CreatePlaceholder(ctx context.Context, fs DatasetPath, opts PlaceholderOptions) error
	// SetUserProperty sets a user property ("module:name") on fs; an empty
	// value inherits it (removes the local value).
	SetUserProperty(ctx context.Context, fs DatasetPath, property, value string) error

	// Snapshot creates fs@name.
	Snapshot(ctx context.Context, fs DatasetPath, name string) error
	// Bookmark creates fs#bookmark from a snapshot or from another bookmark.
	Bookmark(ctx context.Context, from VersionRef, bookmark string) error
	// Destroy destroys the given snapshots and bookmarks, which must all
	// belong to one filesystem. Each version is destroyed if it can be;
	// the returned error joins one *Error per version that could not be
	// (errors.Is finds every kind among them).
	Destroy(ctx context.Context, versions []VersionRef) error
	// Rollback rolls fs back to its snapshot; with destroyNewer, newer
	// snapshots are destroyed (zfs rollback -r), else their existence is
	// an error.
	Rollback(ctx context.Context, snapshot VersionRef, destroyNewer bool) error

	// Hold places a user hold with tag on a snapshot.
	Hold(ctx context.Context, snapshot VersionRef, tag string) error
	// Release removes the user hold tag from a snapshot.
	Release(ctx context.Context, snapshot VersionRef, tag string) error
	// HoldAll places the user hold tag on each of snapshots, which may
	// belong to any filesystems, with as few zfs processes as the command
	// line allows. Each snapshot is held on its own, as zfs hold does it:
	// the returned error joins one *Error per snapshot that could not be
	// held (ErrHoldTagExists where the tag was there already), the others
	// are held. Invalid names fail the call before anything is held.
	HoldAll(ctx context.Context, tag string, snapshots []VersionRef) error
	// ReleaseAll removes the user hold tag from each of snapshots, each on
	// its own as HoldAll (ErrHoldTagNotFound where it had no such tag).
	ReleaseAll(ctx context.Context, tag string, snapshots []VersionRef) error
	// Holds lists the hold tags of each given snapshot of one filesystem,
	// keyed by snapshot name (without the "@"). A snapshot with no holds
	// maps to an empty list.
	Holds(ctx context.Context, snapshots []VersionRef) (map[string][]string, error)

	// Send starts a send stream. The stream must be closed by the caller;
	// closing it before its end aborts the send.
	Send(ctx context.Context, args SendArgs) (io.ReadCloser, error)
	// SendSize estimates the number of bytes Send would produce for args
	// (zfs send -nvP).
	SendSize(ctx context.Context, args SendArgs) (int64, error)
	// Receive consumes stream into fs. A stream that ends early or fails
	// is an error; with opts.Resumable the partial state is kept and fs
	// gets a receive_resume_token.
	Receive(ctx context.Context, fs DatasetPath, stream io.Reader, opts RecvOptions) error
	// ReadStreamHeader reads the header (BEGIN record) of a send stream
	// and checks it as Receive checks it before it changes anything: a
	// stream whose header Receive refuses fails here alike. It changes
	// nothing itself, and returns what the header says and a reader that
	// yields the whole stream again, header included, to pass to Receive.
	// It lets a receiver look at a stream before it creates what the
	// receive needs (placeholders).
	ReadStreamHeader(ctx context.Context, stream io.Reader) (StreamHeader, io.Reader, error)
	// AbortReceive discards the partial receive state of fs (zfs recv -A).
	AbortReceive(ctx context.Context, fs DatasetPath) error
}

// PlaceholderProperty marks a filesystem created only to hold children.
const PlaceholderProperty = "zrepl:placeholder"

// PlaceholderOptions describe how CreatePlaceholder creates a placeholder.
type PlaceholderOptions struct {
	// EncryptionOff creates it unencrypted (zfs create -o encryption=off),
	// also below an encrypted parent. A non-raw full receive can later
	// replace an unencrypted placeholder, never an encrypted one (ZFS
	// refuses a forced receive over an encrypted filesystem).
	EncryptionOff bool
}

// KeyStatus is the ZFS keystatus property.
type KeyStatus string

const (
	KeyStatusNone        KeyStatus = "none" // not encrypted
	KeyStatusAvailable   KeyStatus = "available"
	KeyStatusUnavailable KeyStatus = "unavailable"
)

// FilesystemInfo is one row of ListFilesystems.
type FilesystemInfo struct {
	Path DatasetPath
	GUID uint64
	// ReceiveResumeToken is empty when there is no partial receive state.
	ReceiveResumeToken string
	// Encryption is "off" or the cipher ("aes-256-gcm").
	Encryption string
	// EncryptionRoot is empty when not encrypted.
	EncryptionRoot string
	KeyStatus      KeyStatus
	Placeholder    bool
}

// Listing is one filesystem of ListTree with its snapshots and bookmarks.
type Listing struct {
	Info     FilesystemInfo
	Versions []FilesystemVersion
	// Sizes[i] is the size of Versions[i] (zero for a bookmark), or nil
	// where the backend does not list sizes: what lets a size estimate
	// come from the listing instead of a dry-run send.
	Sizes []VersionSize
}

// VersionSize is what a listing says of a snapshot's data, in bytes.
type VersionSize struct {
	// Written is the data written between the previous snapshot and this
	// one (written), as stored (compressed).
	Written uint64
	// Referenced is the snapshot's data as stored (referenced), and
	// LogicalReferenced before compression (logicalreferenced).
	Referenced, LogicalReferenced uint64
}

// Encrypted reports whether the filesystem is encrypted.
func (f FilesystemInfo) Encrypted() bool { return f.Encryption != "" && f.Encryption != "off" }

// EncryptionKnown reports whether Encryption, EncryptionRoot and KeyStatus
// are known. Both backends always fill Encryption; a listing from a zrepl
// peer carries none of them (then Encrypted is false, but unknown).
func (f FilesystemInfo) EncryptionKnown() bool { return f.Encryption != "" }

// VersionKind tells snapshots from bookmarks.
type VersionKind uint8

const (
	Snapshot VersionKind = iota + 1
	Bookmark
)

// Delimiter is "@" for snapshots and "#" for bookmarks.
func (k VersionKind) Delimiter() string {
	switch k {
	case Snapshot:
		return "@"
	case Bookmark:
		return "#"
	}
	return "?"
}

func (k VersionKind) String() string {
	switch k {
	case Snapshot:
		return "snapshot"
	case Bookmark:
		return "bookmark"
	}
	return "invalid version kind"
}

// FilesystemVersion is a snapshot or a bookmark as listed. A bookmark
// carries the GUID and createtxg of the snapshot it was made from.
type FilesystemVersion struct {
	Kind      VersionKind
	Name      string // without the filesystem and the delimiter
	GUID      uint64
	CreateTXG uint64
	Creation  time.Time
	// UserRefs is the number of user holds (always 0 for bookmarks).
	UserRefs uint64
}

// RelName is "@name" or "#name".
func (v FilesystemVersion) RelName() string { return v.Kind.Delimiter() + v.Name }

// Ref names the version on filesystem fs.
func (v FilesystemVersion) Ref(fs DatasetPath) VersionRef {
	return VersionRef{FS: fs, Kind: v.Kind, Name: v.Name}
}

// VersionRef names a snapshot or bookmark.
type VersionRef struct {
	FS   DatasetPath
	Kind VersionKind
	Name string
}

// SnapshotRef names fs@name.
func SnapshotRef(fs DatasetPath, name string) VersionRef {
	return VersionRef{FS: fs, Kind: Snapshot, Name: name}
}

// BookmarkRef names fs#name.
func BookmarkRef(fs DatasetPath, name string) VersionRef {
	return VersionRef{FS: fs, Kind: Bookmark, Name: name}
}

// String is the full ZFS name, "pool/fs@name" or "pool/fs#name".
func (r VersionRef) String() string { return r.FS.String() + r.Kind.Delimiter() + r.Name }

// Validate checks the filesystem path and the version name.
func (r VersionRef) Validate() error {
	_, err := ParseVersionRef(r.String())
	return err
}

// SendArgs describe a send. Where From.GUID or To.GUID is non-zero the
// implementation checks that the named version still has that GUID and
// fails with ErrVersionMismatch otherwise, so a snapshot destroyed and
// re-created under the same name is never sent in its place. With
// ResumeToken set, FS, From and To must still name what the token encodes;
// implementations refuse a token that encodes anything else.
type SendArgs struct {
	FS DatasetPath
	// From is the incremental source (a snapshot or bookmark); nil for a
	// full send.
	From *FilesystemVersion
	// To is the snapshot to send.
	To FilesystemVersion
	// ResumeToken continues an interrupted send (zfs send -t).
	ResumeToken string
	// Flags shape the stream; a resumed send takes its flags from the
	// token instead.
	Flags SendFlags
}

// StreamHeader is what the header of a send stream says.
type StreamHeader struct {
	// ToName is the sent snapshot's full name on the sender
	// ("pool/fs@snap").
	ToName string
	ToGUID uint64
	// FromGUID is the incremental source's GUID; 0 for a full stream.
	FromGUID uint64
	// Creation is the sent snapshot's creation time (seconds on real ZFS).
	Creation time.Time
}

// RecvOptions describe a receive.
type RecvOptions struct {
	// Resumable keeps the partial state of an interrupted receive (-s).
	Resumable bool
	// ForceRollback rolls the target back to its most recent snapshot and
	// destroys snapshots the stream does not have (-F).
	ForceRollback bool
	// SetProperties overrides properties on the received filesystem (-o).
	SetProperties map[string]string
	// InheritProperties are excluded from the stream (-x).
	InheritProperties []string
}

// EstimateSendSize estimates the bytes a send from `from` (nil: full) to
// `to` carries from what a listing of the filesystem says (versions and
// their sizes, as in Listing), without a dry-run send: a full send its
// logical data, an incremental the data each snapshot after from up to to
// wrote, scaled from stored to logical size by to's compression; with
// stored (a compressed or raw send, which carries blocks as stored) both
// as stored. From and to are found by name and GUID; ok is false where the
// listing cannot tell (no sizes, or a version not in it).
func EstimateSendSize(versions []FilesystemVersion, sizes []VersionSize, from *FilesystemVersion, to FilesystemVersion, stored bool) (int64, bool) {
	if len(sizes) != len(versions) {
		return 0, false
	}
	find := func(v FilesystemVersion) int {
		for i, w := range versions {
			if w.Kind == v.Kind && w.Name == v.Name && w.GUID == v.GUID {
				return i
			}
		}
		return -1
	}
	ti := find(to)
	if ti < 0 || to.Kind != Snapshot {
		return 0, false
	}
	ts := sizes[ti]
	if from == nil {
		n := ts.LogicalReferenced
		if stored {
			n = ts.Referenced
		}
		return int64(n), n > 0
	}
	fi := find(*from)
	if fi < 0 {
		return 0, false
	}
	lo, hi := versions[fi].CreateTXG, versions[ti].CreateTXG
	var written uint64
	for i, v := range versions {
		if v.Kind == Snapshot && v.CreateTXG > lo && v.CreateTXG <= hi {
			written += sizes[i].Written
		}
	}
	if !stored && ts.Referenced > 0 && ts.LogicalReferenced > ts.Referenced {
		written = uint64(float64(written) * float64(ts.LogicalReferenced) / float64(ts.Referenced))
	}
	return int64(written), true
}
