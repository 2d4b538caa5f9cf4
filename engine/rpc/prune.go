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
	if len(snaps) == 0 {
		return nil
	}
	for _, v := range snaps {
		if v.Kind != zfs.Snapshot {
			return fmt.Errorf("prune %s: %s is not a snapshot: %w", target, v.RelName(), endpoint.ErrNotAllowed)
		}
		if err := zfs.ValidateVersionName(zfs.Snapshot, v.Name); err != nil {
			return fmt.Errorf("prune %s: %w", target, err)
		}
	}
	versions, err := s.ZFS.ListVersions(ctx, target)
	if err != nil {
		return fmt.Errorf("prune %s: %w", target, err)
	}
	current := map[string]zfs.FilesystemVersion{}
	for _, v := range versions {
		if v.Kind == zfs.Snapshot {
			current[v.Name] = v
		}
	}
	var refs []zfs.VersionRef
	var errs []error
	for _, v := range snaps {
		cur, ok := current[v.Name]
		switch {
		case !ok:
			// Already gone: what the client wanted.
		case v.GUID != 0 && cur.GUID != v.GUID:
			errs = append(errs, fmt.Errorf("prune %s: %s has GUID %016x, the client meant %016x: %w", target, v.RelName(), cur.GUID, v.GUID, endpoint.ErrNotAllowed))
		case cur.UserRefs > 0:
			errs = append(errs, fmt.Errorf("prune %s: %s is held: %w", target, v.RelName(), endpoint.ErrNotAllowed))
		default:
			refs = append(refs, v.Ref(target))
		}
	}
	if len(refs) > 0 {
		if err := s.ZFS.Destroy(ctx, refs); err != nil {
			errs = append(errs, fmt.Errorf("prune %s: %w", target, err))
		}
	}
	return errors.Join(errs...)
}

func (h *receiverService) DestroySnapshots(ctx context.Context, req *pb.DestroySnapshotsRequest) (*pb.Empty, error) {
	ep, err := h.endpoint(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	pruner, ok := ep.(ReceiverPruner)
	if !ok {
		return nil, toStatus(fmt.Errorf("this sink does not prune: %w", endpoint.ErrNotAllowed))
	}
	if err := checkFS(req.GetFs()); err != nil {
		return nil, toStatus(err)
	}
	snaps := make([]zfs.FilesystemVersion, 0, len(req.GetSnapshots()))
	for _, v := range req.GetSnapshots() {
		fv, err := fromPBVersion("pruned", v)
		if err != nil {
			return nil, toStatus(err)
		}
		snaps = append(snaps, fv)
	}
	return &pb.Empty{}, toStatus(pruner.DestroySnapshots(ctx, req.GetFs(), snaps))
}

// DestroySnapshots asks the sink to destroy the client's snapshots of fs
// (named as ListFilesystems names it); see SinkReceiver.DestroySnapshots
// for what the sink refuses.
func (r *RemoteReceiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	req := &pb.DestroySnapshotsRequest{Fs: fs}
	for i := range snaps {
		req.Snapshots = append(req.Snapshots, toPBVersion(&snaps[i]))
	}
	_, err := r.c.receiver.DestroySnapshots(ctx, req)
	return r.c.err(ctx, "destroy snapshots of "+fs, err)
}
