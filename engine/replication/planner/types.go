package planner

import (
	"errors"
	"fmt"
	"slices"

	"zrepl.dev/zrepl/engine/zfs"
)

// InitialReplication chooses what a first replication sends.
type InitialReplication uint8

const (
	// MostRecent sends only the sender's newest snapshot (the default).
	MostRecent InitialReplication = iota
	// AllSnapshots sends the oldest snapshot in full, then every newer one.
	AllSnapshots
	// Fail sends nothing where the receiver has no snapshot: a
	// ConflictInitialReplication (conflict_resolution.initial_replication:
	// fail). A partial receive the receiver already holds is still resumed,
	// as zrepl does: its first snapshot was chosen before.
	Fail
)

func (i InitialReplication) String() string {
	switch i {
	case MostRecent:
		return "most_recent"
	case AllSnapshots:
		return "all"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("InitialReplication(%d)", uint8(i))
}

// Policy is what the active job (push or pull) configures about its
// replication. The send flags are not here: the sending job decides them
// (Filesystem.Send).
type Policy struct {
	InitialReplication InitialReplication

	// AbortForeignPartialReceive discards a receiver's partial receive
	// state that does not fit the plan, instead of reporting a conflict.
	AbortForeignPartialReceive bool
}

func (p Policy) validate() error {
	if p.InitialReplication > Fail {
		return fmt.Errorf("%w: policy: unknown initial replication mode %d", ErrInvalidInput, p.InitialReplication)
	}
	return nil
}

// Filesystem is one side's listing of one filesystem.
type Filesystem struct {
	// Path is relative to the job's namespace ("a/b"); the same path
	// names the same filesystem on both sides.
	Path string
	Info zfs.FilesystemInfo
	// Versions are the snapshots and bookmarks, in any order. Only the
	// receiver's snapshots are used; its bookmarks are ignored.
	Versions []zfs.FilesystemVersion
	// Send is the sending job's policy for this filesystem, as the
	// sender listed it (only read on the sender's side): the planner
	// plans the sends the sender will make of it.
	Send zfs.SendPolicy
}

// Input is everything the planner looks at.
type Input struct {
	Sender   []Filesystem
	Receiver []Filesystem
	Policy   Policy
}

// ErrInvalidInput matches every error Plan returns: input the listings
// could not have produced (bad paths, duplicates, unknown policy values).
var ErrInvalidInput = errors.New("invalid planner input")

// Result is the plan for all filesystems, parents before children
// (ordered by path component by component, so a subtree is contiguous).
type Result struct {
	Filesystems []FSPlan
}

// Find returns the plan of the filesystem at relative path p.
func (r *Result) Find(p string) (*FSPlan, bool) {
	i, ok := slices.BinarySearchFunc(r.Filesystems, p, func(fp FSPlan, p string) int { return comparePaths(fp.Path, p) })
	if !ok {
		return nil, false
	}
	return &r.Filesystems[i], true
}

// Status summarizes an FSPlan for reports.
type Status uint8

const (
	// StatusReplicate: Steps are to be done.
	StatusReplicate Status = iota + 1
	// StatusUpToDate: the receiver has the sender's newest snapshot.
	StatusUpToDate
	// StatusNoSnapshots: the sender has no snapshot to send and the
	// receiver has none either.
	StatusNoSnapshots
	// StatusPlaceholder: nothing to send (not a sender filesystem, or
	// one without snapshots), but a filesystem below it is received, so
	// the receiver gets a placeholder (see Actions).
	StatusPlaceholder
	// StatusConflict: nothing is done; Conflict says why.
	StatusConflict
)

func (s Status) String() string {
	switch s {
	case StatusReplicate:
		return "replicate"
	case StatusUpToDate:
		return "up to date"
	case StatusNoSnapshots:
		return "no snapshots"
	case StatusPlaceholder:
		return "placeholder"
	case StatusConflict:
		return "conflict"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// FSPlan is what to do for one filesystem: first the Actions, in order,
// then the Steps, in order. A conflict has neither.
type FSPlan struct {
	// Path is relative to the job's namespace.
	Path string
	// Sender is the sender's full name of the filesystem; zero for an
	// entry that is no sender filesystem (a gap in the sender's tree).
	Sender   zfs.DatasetPath
	Status   Status
	Actions  []Action
	Steps    []Step
	Conflict *Conflict
	// Base is the newest version the receiver has of the sender's
	// history (the sender's snapshot or bookmark of that GUID): the
	// incremental source of the first step, and for an up-to-date
	// filesystem where its cursor and last-received hold belong. Nil
	// where the receiver has no snapshot.
	Base *zfs.FilesystemVersion
	// WaitFor is the relative path of the parent that this plan creates
	// on the receiver (by a placeholder or a first full step); this
	// filesystem's actions and steps must wait until it exists. Empty
	// when the parent is already there.
	WaitFor string
}

// ActionKind is a per-filesystem action done before the steps.
type ActionKind uint8

const (
	// ActionCreatePlaceholder: create the filesystem on the receiver as a
	// placeholder, so that children can be received below it.
	ActionCreatePlaceholder ActionKind = iota + 1
	// ActionAbortPartialReceive: discard the receiver's partial receive
	// state (zfs recv -A); the receiver's resume token did not fit the
	// plan.
	ActionAbortPartialReceive
)

func (k ActionKind) String() string {
	switch k {
	case ActionCreatePlaceholder:
		return "create placeholder"
	case ActionAbortPartialReceive:
		return "abort partial receive"
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Action is one per-filesystem action.
type Action struct {
	Kind ActionKind
	// Reason says why, for logs and status.
	Reason string
}

// Step is one send and receive.
type Step struct {
	// From is the incremental source, a sender snapshot or bookmark; nil
	// for a full send.
	From *zfs.FilesystemVersion
	// To is the sender snapshot to send.
	To zfs.FilesystemVersion
	// ResumeToken, when set, continues the receiver's partial receive of
	// exactly this step (zfs send -t).
	ResumeToken string
	// Flags are those the sender's policy gives the send; for a resumed
	// step ZFS takes them from the token, and they are what it encodes.
	Flags zfs.SendFlags

	// ReplacePlaceholder: the receiver's filesystem is a placeholder
	// without snapshots; this full receive replaces it (forced receive,
	// then the placeholder mark is cleared).
	ReplacePlaceholder bool
}

// SendArgs are the arguments of the sender's zfs send for this step on
// the sender's filesystem fs.
func (s Step) SendArgs(fs zfs.DatasetPath) zfs.SendArgs {
	a := zfs.SendArgs{FS: fs, To: s.To, ResumeToken: s.ResumeToken, Flags: s.Flags}
	if s.From != nil {
		from := *s.From
		a.From = &from
	}
	return a
}

// Full reports whether the step is a full send.
func (s Step) Full() bool { return s.From == nil }

func (s Step) String() string {
	var str string
	if s.From == nil {
		str = "full " + s.To.RelName()
	} else {
		str = s.From.RelName() + " -> " + s.To.RelName()
	}
	if s.ResumeToken != "" {
		str += " (resuming)"
	}
	return str
}

// ConflictKind classifies a conflict. Kinds are errors themselves so that
// errors.Is(conflict, planner.ConflictDiverged) works.
type ConflictKind uint8

const (
	conflictUnknown ConflictKind = iota
	// ConflictInvalidListing: a side's listing of the filesystem is
	// inconsistent (duplicate names, zero GUIDs, unknown version kinds).
	ConflictInvalidListing
	// ConflictNoCommonVersion: the receiver has snapshots, none of which
	// the sender has (as snapshot or bookmark).
	ConflictNoCommonVersion
	// ConflictReceiverAhead: the receiver has snapshots newer than the
	// common base that the sender does not know, and the sender has
	// nothing newer than the base.
	ConflictReceiverAhead
	// ConflictDiverged: both sides have snapshots newer than the common
	// base.
	ConflictDiverged
	// ConflictSenderNotEncrypted: the sending job sends encrypted
	// filesystems only (send.encrypted) and this one is not encrypted.
	ConflictSenderNotEncrypted
	// ConflictEncryptionMismatch: the stream's encryption does not fit
	// the receiver's filesystem.
	ConflictEncryptionMismatch
	// ConflictKeyUnavailable: a plain send of an encrypted filesystem
	// whose key is not loaded.
	ConflictKeyUnavailable
	// ConflictReceiverNotPlaceholder: the receiver's filesystem exists
	// without snapshots and is not a placeholder; a full receive would
	// overwrite whatever it holds.
	ConflictReceiverNotPlaceholder
	// ConflictForeignPartialReceive: the receiver holds partial receive
	// state that does not fit the plan, and the policy does not allow
	// aborting it.
	ConflictForeignPartialReceive
	// ConflictParentMissing: the parent does not exist on the receiver
	// and this plan cannot create it.
	ConflictParentMissing
	// ConflictGUIDReused: the common base's GUID is on the receiver, but
	// as another snapshot (another creation time): a side's state went
	// back in time and handed out GUIDs again.
	ConflictGUIDReused
	// ConflictInitialReplication: the receiver has no snapshot of the
	// filesystem and the policy is Fail.
	ConflictInitialReplication
)

var conflictNames = map[ConflictKind]string{
	conflictUnknown:                "conflict",
	ConflictInvalidListing:         "invalid listing",
	ConflictNoCommonVersion:        "no common version",
	ConflictReceiverAhead:          "receiver has newer snapshots than the common base",
	ConflictDiverged:               "sender and receiver diverged",
	ConflictSenderNotEncrypted:     "sender not encrypted",
	ConflictEncryptionMismatch:     "encryption mismatch",
	ConflictKeyUnavailable:         "encryption key not loaded",
	ConflictReceiverNotPlaceholder: "receiver filesystem is not a placeholder",
	ConflictForeignPartialReceive:  "foreign partial receive",
	ConflictParentMissing:          "parent missing on receiver",
	ConflictGUIDReused:             "same GUID, different snapshots",
	ConflictInitialReplication:     "initial replication disabled",
}

func (k ConflictKind) Error() string {
	if s, ok := conflictNames[k]; ok {
		return s
	}
	return fmt.Sprintf("conflict kind %d", uint8(k))
}

// Conflict is why a filesystem cannot be replicated as things are.
type Conflict struct {
	Kind ConflictKind
	// Path is the filesystem's relative path; Sender its sender-side
	// name, when known.
	Path   string
	Sender zfs.DatasetPath
	// Msg names the versions involved.
	Msg string
}

func (c *Conflict) Error() string {
	name := c.Path
	if !c.Sender.IsZero() {
		name = c.Sender.String()
	}
	return fmt.Sprintf("filesystem %s: %s: %s", name, c.Kind.Error(), c.Msg)
}

// Is matches the conflict's kind.
func (c *Conflict) Is(target error) bool {
	k, ok := target.(ConflictKind)
	return ok && k == c.Kind && k != conflictUnknown
}
