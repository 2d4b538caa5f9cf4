// Package planner decides what one replication attempt does: given both
// sides' listings and the job's policy, it returns per filesystem either a
// list of steps (sends) with the actions to take before them, or a
// conflict that says why nothing can be done. It is a pure function with
// no IO, clock or randomness, so that a simulator can drive it and every
// decision can be tested from listings alone.
//
// # Paths and order
//
// Filesystems are named by their path relative to the job's namespace
// ("a/b"), the same on both sides. The result lists parents before their
// children (component by component, so a subtree is contiguous). A
// filesystem the plan creates on the receiver needs its parent there
// first: a parent the receiver lacks is created by the parent's own first
// (full) step, or, when the sender does not replicate the parent (it is
// not a sender filesystem, or has no snapshots), by an
// ActionCreatePlaceholder (its status is then StatusPlaceholder).
// FSPlan.WaitFor names a parent the plan creates; the child's actions and
// steps must wait until it exists. A parent
// that cannot be created (it has a conflict) gives the child
// ConflictParentMissing. The namespace root itself is the receiver's
// business.
//
// # Versions
//
// The sender's history is its snapshots and bookmarks ordered by
// createtxg, a snapshot before the bookmarks made from it. The receiver's
// snapshots are ordered by the receiver's own createtxg; its bookmarks are
// ignored.
//
// The common base is the newest sender version, snapshot or bookmark
// (e.g. a replication cursor, of this or any other job), whose GUID equals
// a receiver snapshot's GUID; of a snapshot and its bookmarks the snapshot
// is used. The steps go from the base through every newer sender snapshot,
// one incremental step per snapshot (zfs send -i, never -I), so step i+1
// starts at step i's snapshot. No newer sender snapshot: up to date.
//
// Receiver without the filesystem, or with the filesystem but no
// snapshots: initial replication. With MostRecent one full send of the
// newest sender snapshot; with AllSnapshots a full send of the oldest,
// then one incremental step per newer snapshot. A sender without snapshots
// has nothing to send (StatusNoSnapshots). A receiver filesystem without
// snapshots must be a placeholder (the first step then replaces it,
// Step.ReplacePlaceholder) or hold partial receive state (see resume
// tokens); any other is ConflictReceiverNotPlaceholder, because a forced
// full receive would destroy what it holds.
//
// Conflicts of history: the receiver has snapshots and no common base:
// ConflictNoCommonVersion (naming both sides' newest). The receiver has
// snapshots newer than its copy of the base (it cannot receive on top of
// the base without losing them): ConflictDiverged if the sender has newer
// snapshots too, else ConflictReceiverAhead. The receiver's snapshot of the
// base's GUID was created at another time than the base (a received
// snapshot and a bookmark keep the creation time of their snapshot):
// ConflictGUIDReused, as one GUID then names two snapshots (a side's state
// went back in time and drew its GUIDs again); the base is never taken for
// a snapshot it is not, neither as "up to date" nor as an incremental
// source.
//
// # Encryption
//
// A step is raw (zfs send -w) when the policy says Encrypted=True, or when
// it says Unspecified and the sender's filesystem is encrypted; otherwise
// plain. Encrypted=True with an unencrypted sender filesystem:
// ConflictSenderNotEncrypted. A plain send of an encrypted filesystem with
// its key unavailable: ConflictKeyUnavailable. ConflictEncryptionMismatch
// where ZFS would refuse the receive: a raw incremental into an
// unencrypted filesystem; a plain incremental into an encrypted filesystem
// whose key is unavailable (with the key loaded ZFS encrypts the stream
// with the receiver's key: a receiver that encrypts at rest under an
// encrypted parent is a normal setup, so that is no conflict); a full
// receive replacing a placeholder that is encrypted, or a raw one
// replacing an unencrypted placeholder. Embedded data (-e) is dropped from
// raw steps and from steps into encrypted filesystems, which ZFS refuses;
// a filesystem a full receive creates counts as encrypted when the nearest
// ancestor the receiver lists is (it inherits the encryption).
//
// # Resume tokens
//
// The receiver's receive_resume_token is decoded and used only if it
// encodes exactly the plan's first step: the token's toname is the
// sender's filesystem and the step's snapshot name, its toguid the
// snapshot's GUID, its fromguid the source's GUID (absent for a full
// send), its raw flag the step's, and it is not a saved-state send. The
// first step then carries the token, with the send flags the token
// encodes (ZFS takes them from the token). The token never chooses what is
// sent: a receiver cannot make the sender send anything but the planned
// snapshot. Any other token (undecodable, another dataset, snapshot or
// source, the wrong raw flag, or a token where nothing is to be sent) is
// never used: with AbortForeignPartialReceive the filesystem gets an
// ActionAbortPartialReceive before its steps, otherwise
// ConflictForeignPartialReceive naming what the token encodes and what the
// plan would send.
//
// Only input no listing can produce is an error of Plan (ErrInvalidInput):
// invalid or duplicate paths, a sender filesystem without its full name,
// unknown policy values. An inconsistent version listing of one
// filesystem is that filesystem's ConflictInvalidListing.
package planner
