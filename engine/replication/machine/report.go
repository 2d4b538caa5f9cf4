package machine

import (
	"errors"
	"fmt"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
)

// FSState is how a filesystem ended in a run.
type FSState string

const (
	FSDone     FSState = "done"
	FSUpToDate FSState = "up to date"
	FSSkipped  FSState = "skipped" // nothing to send, or only a placeholder
	FSConflict FSState = "conflict"
	FSFailed   FSState = "failed"
)

// FSReport is the outcome of one filesystem.
type FSReport struct {
	FS        string
	State     FSState
	StepsDone int
	Err       error
	// Permanent errors are not retried: only a change of the data or the
	// config resolves them.
	Permanent bool
}

// Report is the outcome of a run: its last attempt's filesystems.
type Report struct {
	Attempts    int
	Filesystems []FSReport
}

// Err joins the errors of all filesystems that did not end well.
func (r Report) Err() error {
	var errs []error
	for _, f := range r.Filesystems {
		if f.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.FS, f.Err))
		}
	}
	return errors.Join(errs...)
}

// retry: some filesystem failed for a reason a later attempt may not meet.
func (r Report) retry() bool {
	for _, f := range r.Filesystems {
		if f.Err != nil && !f.Permanent {
			return true
		}
	}
	return false
}

// PermanentError is implemented by errors from other layers (such as the
// wire protocol) that know a retry cannot fix them.
type PermanentError interface {
	error
	Permanent() bool
}

// Permanent tells errors a retry cannot fix from temporary ones.
func Permanent(err error) bool {
	var conflict *planner.Conflict
	var perm PermanentError
	switch {
	case errors.As(err, &perm) && perm.Permanent():
		return true
	case errors.As(err, &conflict),
		errors.Is(err, endpoint.ErrNotAllowed),
		errors.Is(err, endpoint.ErrReceivedWrongVersion),
		errors.Is(err, endpoint.ErrInvalidJobID),
		errors.Is(err, zfs.ErrInvalidName),
		errors.Is(err, zfs.ErrResumeTokenCorrupt),
		errors.Is(err, zfs.ErrResumeTokenMismatch),
		errors.Is(err, zfs.ErrKeyNotLoaded),
		errors.Is(err, zfs.ErrEncryptionMismatch),
		errors.Is(err, zfs.ErrDestinationModified),
		errors.Is(err, zfs.ErrIncrementalSourceMismatch),
		errors.Is(err, zfs.ErrDestinationExists),
		errors.Is(err, zfs.ErrUnsupported):
		return true
	}
	return false
}
