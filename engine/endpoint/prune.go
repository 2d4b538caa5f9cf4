package endpoint

import (
	"context"
	"errors"
	"fmt"

	"zrepl.dev/zrepl/engine/zfs"
)

// Pruner is a side a pruner destroys snapshots of: a Sender or a
// Receiver, here or (engine/rpc) over the wire, and the daemon's
// decorators of them. The side, not its caller, decides what may go, by
// one set of rules per side, whoever prunes and however it is reached.
type Pruner interface {
	// DestroySnapshots destroys snaps of fs, named as ListFilesystems
	// names it and with the GUIDs it listed. Its error is a
	// *SnapshotErrors where the side refused or failed some; it names
	// the snapshots, not fs: the caller (the pruner) names fs once.
	DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error
}

var (
	_ Pruner = (*Sender)(nil)
	_ Pruner = (*Receiver)(nil)
)

// DestroySnapshots destroys snapshots of fs (named relative to Root, as
// ListFilesystems names it) for the client that pushed them (a push job's
// keep_receiver rules, over the wire or in the same process). The client decides what to prune, but the receiver
// decides what may go: only snapshots (never bookmarks), only below Root,
// never held ones (a hold is a promise to someone, such as the
// last-received hold to the next incremental), and only while a snapshot
// still has the GUID the client saw, so a re-created snapshot of the same
// name survives. Its error is a *SnapshotErrors.
func (r *Receiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	target, err := r.Target(fs)
	if err != nil {
		return err
	}
	return pruneForClient(ctx, r.ZFS, target, snaps, nil)
}

// DestroySnapshots destroys snapshots of fs, named as ListFilesystems
// names it, for whoever prunes the sender: the job itself (a push job's
// keep_sender, a snap job's keep) or a client of a source (a pull job's
// keep_sender, in the same process or over the wire). These are the
// sender's only rules, so the local and the remote case cannot differ.
// The pruner decides what to prune, but the sender decides what may go: only
// snapshots (never bookmarks: a cursor or a step bookmark is an
// incremental source), only of filesystems the job sends, never held
// ones (a step hold keeps an open step of some client resumable), never one
// a send in flight uses, and only while a snapshot still has the GUID the
// pruner saw, so a re-created snapshot of the same name survives. The
// snapshot a replication cursor marks may go: its cursor bookmark is the
// incremental base, and keeping it is the pruner's rule
// (not_replicated.keep_snapshot_at_cursor), as in zrepl, so that a pull
// job's keep_snapshot_at_cursor: false does what it says. Its error is a
// *SnapshotErrors.
func (s *Sender) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	p, err := zfs.NewDatasetPath(fs)
	if err != nil {
		return fmt.Errorf("filesystem %q: %w", fs, err)
	}
	if s.Filter == nil || !s.Filter(p) {
		return fmt.Errorf("not a filesystem of job %s: %w", s.Job, ErrNotAllowed)
	}
	// Held across the listing and the destroy: a send that starts now
	// protects its versions before or after, never in between.
	e := s.steps.of(p)
	e.mu.Lock()
	defer e.mu.Unlock()
	s.steps.change(e, true)
	return pruneForClient(ctx, s.ZFS, p, snaps, func(versions []zfs.FilesystemVersion) map[uint64]string {
		kept := map[uint64]string{}
		for _, v := range versions {
			if v.Kind == zfs.Snapshot && e.inUse(v.RelName()) {
				kept[v.GUID] = "is used by a send in progress"
			}
		}
		return kept
	})
}

// SnapshotErrors is a prune request's failure, per snapshot: the wire
// reports each snapshot's outcome apart (zrepl's DestroySnapshotsRes).
type SnapshotErrors struct {
	// ByName maps a snapshot's name to why it was not destroyed.
	ByName map[string]error
	// All fail every snapshot of the request (e.g. its listing failed).
	All   error
	order []string
}

// Add records why the snapshot named name was not destroyed.
func (e *SnapshotErrors) Add(name string, err error) {
	if e.ByName == nil {
		e.ByName = map[string]error{}
	}
	if e.ByName[name] == nil {
		e.order = append(e.order, name)
	}
	e.ByName[name] = errors.Join(e.ByName[name], err)
}

// For is the error of the snapshot named name, nil if it went.
func (e *SnapshotErrors) For(name string) error {
	if e.All != nil {
		return e.All
	}
	return e.ByName[name]
}

func (e *SnapshotErrors) Error() string { return errors.Join(e.Unwrap()...).Error() }

func (e *SnapshotErrors) Unwrap() []error {
	errs := []error{}
	if e.All != nil {
		errs = append(errs, e.All)
	}
	seen := map[string]bool{}
	for _, n := range e.order {
		// A batch's failure is every snapshot's: say it once.
		if t := e.ByName[n].Error(); !seen[t] {
			seen[t] = true
			errs = append(errs, e.ByName[n])
		}
	}
	return errs
}

// OrNil is e, or nil if it holds no error.
func (e *SnapshotErrors) OrNil() error {
	if e.All == nil && len(e.ByName) == 0 {
		return nil
	}
	return e
}

// pruneForClient destroys snaps of fs for a client under the rules sinks
// and sources share: only snapshots, each named with the GUID the client
// saw and only while it still has it, never held ones; keep names the
// endpoint's own reasons to keep some (by GUID, from fs's versions; nil:
// none). A filesystem that no longer exists has nothing left to prune.
// Its error is a *SnapshotErrors.
func pruneForClient(ctx context.Context, z zfs.ZFS, fs zfs.DatasetPath, snaps []zfs.FilesystemVersion, keep func([]zfs.FilesystemVersion) map[uint64]string) error {
	if len(snaps) == 0 {
		return nil
	}
	for _, v := range snaps {
		if v.Kind != zfs.Snapshot {
			return &SnapshotErrors{All: fmt.Errorf("%s is not a snapshot: %w", v.RelName(), ErrNotAllowed)}
		}
		if err := zfs.ValidateVersionName(zfs.Snapshot, v.Name); err != nil {
			return &SnapshotErrors{All: err}
		}
	}
	versions, err := z.ListVersions(ctx, fs)
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		// The filesystem went, and its snapshots with it: what the
		// client wanted, as for a vanished snapshot.
		return nil
	}
	if err != nil {
		return &SnapshotErrors{All: err}
	}
	current := map[string]zfs.FilesystemVersion{}
	for _, v := range versions {
		if v.Kind == zfs.Snapshot {
			current[v.Name] = v
		}
	}
	var kept map[uint64]string
	if keep != nil {
		kept = keep(versions)
	}
	var refs []zfs.VersionRef
	errs := &SnapshotErrors{}
	for _, v := range snaps {
		cur, ok := current[v.Name]
		switch {
		case v.GUID == 0:
			errs.Add(v.Name, fmt.Errorf("%s named without its GUID: %w", v.RelName(), ErrNotAllowed))
		case !ok:
			// Already gone: what the client wanted.
		case cur.GUID != v.GUID:
			errs.Add(v.Name, fmt.Errorf("%s has GUID %016x, the client meant %016x: %w", v.RelName(), cur.GUID, v.GUID, ErrNotAllowed))
		case cur.UserRefs > 0:
			errs.Add(v.Name, fmt.Errorf("%s is held: %w", v.RelName(), ErrNotAllowed))
		case kept[cur.GUID] != "":
			errs.Add(v.Name, fmt.Errorf("%s %s: %w", v.RelName(), kept[cur.GUID], ErrNotAllowed))
		default:
			refs = append(refs, v.Ref(fs))
		}
	}
	if len(refs) > 0 {
		if err := z.Destroy(ctx, refs); err != nil {
			for _, r := range refs {
				errs.Add(r.Name, err)
			}
		}
	}
	return errs.OrNil()
}
