package zfs

import (
	"errors"
	"fmt"
)

// Kind classifies a ZFS failure. Kinds are errors themselves so that
// errors.Is(err, zfs.ErrDatasetBusy) works on any *Error of that kind.
type Kind int

const (
	kindUnknown Kind = iota
	ErrDatasetNotExist
	ErrDatasetExists
	ErrDatasetBusy
	ErrHoldTagExists
	ErrHoldTagNotFound
	ErrDestinationExists
	ErrDestinationModified
	ErrIncrementalSourceMismatch
	ErrResumeTokenCorrupt
	// ErrResumeTokenMismatch: a valid resume token continues another send
	// than the one asked for (another dataset or snapshot, another
	// incremental source, another raw-ness, or the saved state), so the
	// partial receive it describes is not the step's
	// (resumetoken.MismatchError).
	ErrResumeTokenMismatch
	ErrNoResumableState
	ErrPartialReceive
	ErrKeyNotLoaded
	ErrEncryptionMismatch
	ErrVersionMismatch
	ErrInvalidName
	ErrNewerSnapshotsExist
	ErrUnsupported
	// ErrNotEncrypted: the filesystem is not encrypted where the job's
	// policy sends encrypted filesystems only (SendPolicy.Encrypted).
	ErrNotEncrypted
)

var kindNames = map[Kind]string{
	kindUnknown:                  "zfs error",
	ErrDatasetNotExist:           "dataset does not exist",
	ErrDatasetExists:             "dataset already exists",
	ErrDatasetBusy:               "dataset is busy",
	ErrHoldTagExists:             "hold tag already exists",
	ErrHoldTagNotFound:           "no such hold tag",
	ErrDestinationExists:         "receive destination exists",
	ErrDestinationModified:       "destination modified since most recent snapshot",
	ErrIncrementalSourceMismatch: "incremental source mismatch",
	ErrResumeTokenCorrupt:        "resume token corrupt",
	ErrResumeTokenMismatch:       "resume token does not match the send",
	ErrNoResumableState:          "no resumable receive state",
	ErrPartialReceive:            "partial receive saved",
	ErrKeyNotLoaded:              "encryption key not loaded",
	ErrEncryptionMismatch:        "encryption mismatch",
	ErrVersionMismatch:           "version changed since planned",
	ErrInvalidName:               "invalid name",
	ErrNewerSnapshotsExist:       "more recent snapshots exist",
	ErrUnsupported:               "unsupported",
	ErrNotEncrypted:              "filesystem not encrypted",
}

func (k Kind) Error() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("zfs error kind %d", int(k))
}

// Error is a failed ZFS operation. Msg is the text ZFS printed (the model
// prints the same text real ZFS 2.1 does), so messages read alike whichever
// implementation produced them.
type Error struct {
	Kind Kind
	// Op is the operation ("send", "recv", "destroy", ...).
	Op string
	// Dataset is the full name of the dataset, snapshot or bookmark the
	// error concerns.
	Dataset string
	// Msg is ZFS's own message (stderr without trailing newline).
	Msg string
	// ExitStatus is the zfs process's exit status (0 for the model).
	ExitStatus int
	// Err is an underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = e.Kind.Error()
	}
	if e.Err != nil {
		return fmt.Sprintf("zfs %s %s: %s: %v", e.Op, e.Dataset, msg, e.Err)
	}
	return fmt.Sprintf("zfs %s %s: %s", e.Op, e.Dataset, msg)
}

// Is matches the error's kind.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind && k != kindUnknown
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of the first *Error in err's chain, or else of
// the first Kind wrapped bare (fmt.Errorf("...: %w", zfs.ErrX)), or of a
// name error, or 0.
func KindOf(err error) Kind {
	var ze *Error
	if errors.As(err, &ze) {
		return ze.Kind
	}
	var k Kind
	if errors.As(err, &k) {
		return k
	}
	if errors.Is(err, ErrInvalidName) {
		// Name errors are their own type and match the kind by Is.
		return ErrInvalidName
	}
	return kindUnknown
}
