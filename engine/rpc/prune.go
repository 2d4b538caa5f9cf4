package rpc

import (
	"context"
	"fmt"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/zfs"
)

// SnapshotErrors is a prune request's failure, per snapshot.
type SnapshotErrors = endpoint.SnapshotErrors

// DestroySnapshots asks the sink to destroy the client's snapshots of fs
// (named as ListFilesystems names it); see endpoint.Receiver's
// DestroySnapshots for what the sink refuses.
func (r *RemoteReceiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	return r.c.destroySnapshots(ctx, "destroy snapshots of "+fs, fs, snaps)
}

// DestroySnapshots asks the source to destroy its snapshots of fs (named
// as ListFilesystems names it); see endpoint.Sender's DestroySnapshots for
// what the source refuses.
func (s *RemoteSender) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	return s.c.destroySnapshots(ctx, "destroy source snapshots of "+fs, fs, snaps)
}

// ReplicationCursor asks the source for the GUID of its job's replication
// cursor on fs (ok false: it has none), as zrepl's pruner does: a zrepl
// source's listing marks no cursors, and names them after its own job.
func (s *RemoteSender) ReplicationCursor(ctx context.Context, fs string) (guid uint64, ok bool, err error) {
	res, err := s.c.repl.ReplicationCursor(ctx, &pb.ReplicationCursorReq{Filesystem: fs})
	if err != nil {
		return 0, false, s.c.err(ctx, "replication cursor of "+fs, err)
	}
	if g, isGUID := res.GetResult().(*pb.ReplicationCursorRes_Guid); isGUID {
		return g.Guid, true, nil
	}
	return 0, false, nil
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
			errs.Add(name, remoteError(info))
		} else {
			errs.Add(name, fmt.Errorf("%s: %s@%s: %s", call, fs, name, r.GetError()))
		}
	}
	return errs.OrNil()
}
