package rpc

import (
	"context"
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

// DestroySnapshots lets the client prune what it pushed, under the rules
// of endpoint.Receiver.DestroyForClient (which live in the endpoint, so
// that they do not depend on the protocol).
func (s SinkReceiver) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	return s.DestroyForClient(ctx, fs, snaps)
}

// SnapshotErrors is a prune request's failure, per snapshot.
type SnapshotErrors = endpoint.SnapshotErrors

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

// DestroySnapshots lets the client prune the source, under the rules of
// endpoint.Sender.DestroyForClient.
func (s SourceSender) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	return s.DestroyForClient(ctx, fs, snaps)
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
			errs.Add(name, remoteError(info))
		} else {
			errs.Add(name, fmt.Errorf("%s: %s@%s: %s", call, fs, name, r.GetError()))
		}
	}
	return errs.OrNil()
}
