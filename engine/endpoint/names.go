package endpoint

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// MaxJobIDLen keeps every name derived from a job ID a valid ZFS name
// component: the longest, a tentative cursor bookmark, adds 44 bytes.
const MaxJobIDLen = 200

// JobID is a validated job name. It is embedded in hold tags and bookmark
// names, so it may only use characters valid in a ZFS name component,
// space included: zrepl allows "my job", and the holds and cursors such a
// job left must be recognised as its own.
type JobID struct{ s string }

// ErrInvalidJobID is matched by every job ID validation error.
var ErrInvalidJobID = errors.New("invalid job name")

// JobIDError says why a job name cannot be a job ID.
type JobIDError struct {
	Name   string
	Reason string
}

func (e *JobIDError) Error() string {
	return fmt.Sprintf("invalid job name %q: %s (job names are embedded in ZFS hold tags and bookmark names)", e.Name, e.Reason)
}

func (e *JobIDError) Is(target error) bool { return target == ErrInvalidJobID }

// NewJobID validates name.
func NewJobID(name string) (JobID, error) {
	if name == "" {
		return JobID{}, &JobIDError{Name: name, Reason: "empty"}
	}
	if len(name) > MaxJobIDLen {
		return JobID{}, &JobIDError{Name: name, Reason: fmt.Sprintf("%d bytes long, the limit is %d", len(name), MaxJobIDLen)}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !zfs.ValidNameChar(c) {
			return JobID{}, &JobIDError{Name: name, Reason: fmt.Sprintf("character %q at position %d is not allowed (use letters, digits, space and any of -_.:)", c, i)}
		}
	}
	return JobID{name}, nil
}

// MustJobID is NewJobID for literals.
func MustJobID(name string) JobID {
	j, err := NewJobID(name)
	if err != nil {
		panic(err)
	}
	return j
}

func (j JobID) String() string { return j.s }

const (
	stepHoldPrefix         = "zrepl_STEP_J_"
	lastReceivedHoldPrefix = "zrepl_last_received_J_"
	stepBookmarkPrefix     = "zrepl_STEP_G_"
	cursorBookmarkPrefix   = "zrepl_CURSOR_G_"
	// zrepl's tentative cursor prefix is "zrepl_CURSORTENTATIVE_", to which
	// its names append "_G_": two underscores.
	tentativeCursorPrefix = "zrepl_CURSORTENTATIVE__G_"
	jobInfix              = "_J_"
	// CursorV1BookmarkName is the replication cursor of zrepl before v2:
	// one per filesystem, shared by all jobs. Read for compatibility only.
	CursorV1BookmarkName = "zrepl_replication_cursor"
)

// StepHoldTag is the hold that keeps a running step's snapshots.
func StepHoldTag(job JobID) string { return stepHoldPrefix + job.s }

// LastReceivedHoldTag is the receiver's hold on the newest received snapshot.
func LastReceivedHoldTag(job JobID) string { return lastReceivedHoldPrefix + job.s }

// StepBookmarkName keeps a step's bookmark source while the step runs.
func StepBookmarkName(guid uint64, job JobID) string {
	return fmt.Sprintf("%s%016x%s%s", stepBookmarkPrefix, guid, jobInfix, job.s)
}

// CursorBookmarkName is the v2 replication cursor: the newest version of a
// filesystem that job replicated.
func CursorBookmarkName(guid uint64, job JobID) string {
	return fmt.Sprintf("%s%016x%s%s", cursorBookmarkPrefix, guid, jobInfix, job.s)
}

// TentativeCursorBookmarkName is zrepl's tentative replication cursor:
// made before a guarantee_incremental step is sent, on its source and its
// target, so that the target stays an incremental source for the next run
// even if the step's confirmation (which makes the real cursor) is lost
// and the target snapshot is then pruned.
func TentativeCursorBookmarkName(guid uint64, job JobID) string {
	return fmt.Sprintf("%s%016x%s%s", tentativeCursorPrefix, guid, jobInfix, job.s)
}

// AbstractionKind is the kind of a hold or bookmark the project owns.
type AbstractionKind int

const (
	StepHold AbstractionKind = iota + 1
	StepBookmark
	ReplicationCursorV2
	ReplicationCursorV1
	LastReceivedHold
	TentativeCursor
)

func (k AbstractionKind) String() string {
	switch k {
	case StepHold:
		return "step-hold"
	case StepBookmark:
		return "step-bookmark"
	case ReplicationCursorV2:
		return "replication-cursor-v2"
	case ReplicationCursorV1:
		return "replication-cursor-v1"
	case LastReceivedHold:
		return "last-received-hold"
	case TentativeCursor:
		return "tentative-replication-cursor"
	}
	return "unknown"
}

// ParsedName is what a hold tag or bookmark name says about its owner.
type ParsedName struct {
	Kind AbstractionKind
	// Job is zero for the v1 cursor, which belongs to no job.
	Job JobID
	// GUID is set for step bookmarks and v2 and tentative cursors.
	GUID uint64
}

// ParseHoldTag recognises the project's hold tags; ok is false for others.
func ParseHoldTag(tag string) (p ParsedName, ok bool) {
	for _, c := range []struct {
		prefix string
		kind   AbstractionKind
	}{{stepHoldPrefix, StepHold}, {lastReceivedHoldPrefix, LastReceivedHold}} {
		if rest, found := strings.CutPrefix(tag, c.prefix); found {
			job, err := NewJobID(rest)
			if err != nil {
				return ParsedName{}, false
			}
			return ParsedName{Kind: c.kind, Job: job}, true
		}
	}
	return ParsedName{}, false
}

// ParseBookmarkName recognises the project's bookmark names (the part after
// '#'); ok is false for others.
func ParseBookmarkName(name string) (p ParsedName, ok bool) {
	if name == CursorV1BookmarkName {
		return ParsedName{Kind: ReplicationCursorV1}, true
	}
	for _, c := range []struct {
		prefix string
		kind   AbstractionKind
	}{{stepBookmarkPrefix, StepBookmark}, {cursorBookmarkPrefix, ReplicationCursorV2}, {tentativeCursorPrefix, TentativeCursor}} {
		rest, found := strings.CutPrefix(name, c.prefix)
		if !found || len(rest) < 16+len(jobInfix) || rest[16:16+len(jobInfix)] != jobInfix {
			continue
		}
		guid, err := strconv.ParseUint(rest[:16], 16, 64)
		if err != nil || strings.ToLower(rest[:16]) != rest[:16] {
			continue
		}
		job, err := NewJobID(rest[16+len(jobInfix):])
		if err != nil {
			continue
		}
		return ParsedName{Kind: c.kind, Job: job, GUID: guid}, true
	}
	return ParsedName{}, false
}
