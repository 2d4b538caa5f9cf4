package rpc

import (
	"context"
	"errors"
	"fmt"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/zfs"
)

// ReceiverPruner is implemented by receiver endpoints that let their
// client prune what it pushed (a push job's keep_receiver rules).
type ReceiverPruner interface {
	DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error
}

// SinkReceiver is the receiver a sink serves to one client: an
// endpoint.Receiver that may also prune. It is used over the wire (Sink)
// and by a push job whose sink is in the same process.
type SinkReceiver struct {
	*endpoint.Receiver
}

// DestroySnapshots destroys snapshots of fs, which is named relative to the
// client's root as ListFilesystems names it. The client decides what to
// prune, but the sink decides what may go: only snapshots (never
// bookmarks), only below the client's root, never held ones (a hold is a
// promise to someone, such as the last-received hold to the next
// incremental), and only while a snapshot still has the GUID the client
// saw, so a re-created snapshot of the same name survives.
func (s SinkReceiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	target, err := s.Target(fs)
	if err != nil {
		return err
	}
	return pruneForClient(ctx, s.ZFS, target, snaps, nil)
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

func (e *SnapshotErrors) add(name string, err error) {
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

func (e *SnapshotErrors) orNil() error {
	if e.All == nil && len(e.ByName) == 0 {
		return nil
	}
	return e
}

// pruneForClient destroys snaps of fs for a client under the rules sinks
// and sources share: only snapshots, only while a snapshot still has the
// GUID the client saw, never held ones; keep names the endpoint's own
// reasons to keep some (by GUID, from fs's versions; nil: none). Its
// error is a *SnapshotErrors.
func pruneForClient(ctx context.Context, z zfs.ZFS, fs zfs.DatasetPath, snaps []zfs.FilesystemVersion, keep func([]zfs.FilesystemVersion) map[uint64]string) error {
	if len(snaps) == 0 {
		return nil
	}
	for _, v := range snaps {
		if v.Kind != zfs.Snapshot {
			return &SnapshotErrors{All: fmt.Errorf("prune %s: %s is not a snapshot: %w", fs, v.RelName(), endpoint.ErrNotAllowed)}
		}
		if err := zfs.ValidateVersionName(zfs.Snapshot, v.Name); err != nil {
			return &SnapshotErrors{All: fmt.Errorf("prune %s: %w", fs, err)}
		}
	}
	versions, err := z.ListVersions(ctx, fs)
	if err != nil {
		return &SnapshotErrors{All: fmt.Errorf("prune %s: %w", fs, err)}
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
		case !ok:
			// Already gone: what the client wanted.
		case v.GUID != 0 && cur.GUID != v.GUID:
			errs.add(v.Name, fmt.Errorf("prune %s: %s has GUID %016x, the client meant %016x: %w", fs, v.RelName(), cur.GUID, v.GUID, endpoint.ErrNotAllowed))
		case cur.UserRefs > 0:
			errs.add(v.Name, fmt.Errorf("prune %s: %s is held: %w", fs, v.RelName(), endpoint.ErrNotAllowed))
		case kept[cur.GUID] != "":
			errs.add(v.Name, fmt.Errorf("prune %s: %s %s: %w", fs, v.RelName(), kept[cur.GUID], endpoint.ErrNotAllowed))
		default:
			refs = append(refs, v.Ref(fs))
		}
	}
	if len(refs) > 0 {
		if err := z.Destroy(ctx, refs); err != nil {
			for _, r := range refs {
				errs.add(r.Name, fmt.Errorf("prune %s: %w", fs, err))
			}
		}
	}
	return errs.orNil()
}

// DestroySnapshots asks the sink to destroy the client's snapshots of fs
// (named as ListFilesystems names it); see SinkReceiver.DestroySnapshots
// for what the sink refuses.
func (r *RemoteReceiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	return r.c.destroySnapshots(ctx, "destroy snapshots of "+fs, fs, snaps)
}

// SenderPruner is implemented by sender endpoints that let their client
// prune the source (a pull job's keep_sender rules).
type SenderPruner interface {
	DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error
}

// SourceSender is the sender a source serves, made prunable by its
// clients. It is used over the wire (a source's server) and may wrap the
// sender of a source in the same process.
type SourceSender struct {
	*endpoint.Sender
}

// DestroySnapshots destroys snapshots of fs, named as ListFilesystems
// names it. The client decides what to prune, but the source decides what
// may go: only snapshots (never bookmarks: a cursor or a step bookmark is
// an incremental source), only of filesystems the source serves, never
// held ones (a step hold keeps an open step of some client resumable),
// never a snapshot a replication cursor marks (the newest replicated one,
// whatever job's cursor it is), and only while a snapshot still has the
// GUID the client saw, so a re-created snapshot of the same name survives.
func (s SourceSender) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	p, err := zfs.NewDatasetPath(fs)
	if err != nil {
		return fmt.Errorf("prune %q: %w", fs, err)
	}
	if s.Filter == nil || !s.Filter(p) {
		return fmt.Errorf("prune %s: not a filesystem of source %s: %w", fs, s.Job, endpoint.ErrNotAllowed)
	}
	return pruneForClient(ctx, s.ZFS, p, snaps, func(versions []zfs.FilesystemVersion) map[uint64]string {
		cursors := map[uint64]string{}
		for _, v := range versions {
			if n, ok := endpoint.ParseBookmarkName(v.Name); ok && v.Kind == zfs.Bookmark && (n.Kind == endpoint.ReplicationCursorV2 || n.Kind == endpoint.ReplicationCursorV1) {
				cursors[v.GUID] = "is the snapshot of a replication cursor"
			}
		}
		return cursors
	})
}

// DestroySnapshots asks the source to destroy its snapshots of fs (named
// as ListFilesystems names it); see SourceSender.DestroySnapshots for what
// the source refuses.
func (s *RemoteSender) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	return s.c.destroySnapshots(ctx, "destroy source snapshots of "+fs, fs, snaps)
}

// destroySnapshots asks the server to destroy snaps of fs and gathers
// each snapshot's failure into a *SnapshotErrors.
func (c *Client) destroySnapshots(ctx context.Context, call, fs string, snaps []zfs.FilesystemVersion) error {
	if len(snaps) == 0 {
		return nil
	}
	res, err := c.repl.DestroySnapshots(ctx, &pb.DestroySnapshotsReq{Filesystem: fs, Snapshots: toPBVersions(snaps)})
	if err != nil {
		return c.err(ctx, call, err)
	}
	errs := &SnapshotErrors{}
	for _, r := range res.GetResults() {
		if r.GetError() == "" {
			continue
		}
		name := r.GetSnapshot().GetName()
		if info := r.GetZreplDevError(); info != nil {
			errs.add(name, remoteError(info))
		} else {
			errs.add(name, fmt.Errorf("%s: %s@%s: %s", call, fs, name, r.GetError()))
		}
	}
	return errs.orNil()
}
