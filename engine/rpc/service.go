package rpc

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// replicationService serves zrepl's Replication service for the server's
// one role.
type replicationService struct {
	pb.UnsafeReplicationServer
	s *Server
}

func (h *replicationService) sender(ctx context.Context) (SenderEndpoint, error) {
	info, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := transport.ValidateIdentity(info.identity); err != nil {
		return nil, err
	}
	if h.s.cfg.Sender == nil {
		return nil, errNotServed("a sink", "send")
	}
	return h.s.cfg.Sender(info.identity)
}

func (h *replicationService) receiver(ctx context.Context) (ReceiverEndpoint, error) {
	info, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if h.s.cfg.Receiver == nil {
		return nil, errNotServed("a source", "receive")
	}
	return h.s.cfg.Receiver(info.identity)
}

// lister is the role's listing.
func (h *replicationService) lister(ctx context.Context) (interface {
	ListFilesystems(context.Context) ([]endpoint.Filesystem, error)
}, error) {
	if h.s.cfg.Sender != nil {
		return h.sender(ctx)
	}
	return h.receiver(ctx)
}

func (h *replicationService) Ping(_ context.Context, req *pb.PingReq) (*pb.PingRes, error) {
	return &pb.PingRes{Echo: req.GetMessage()}, nil
}

func (h *replicationService) ListFilesystems(ctx context.Context, req *pb.ListFilesystemReq) (*pb.ListFilesystemRes, error) {
	ep, err := h.lister(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if h.s.cfg.Receiver != nil {
		info, _ := callerOf(ctx)
		if err := h.s.settleOrphans(ctx, info.identity); err != nil {
			return nil, toStatus(err)
		}
	}
	fss, err := ep.ListFilesystems(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	full := req.GetZreplDevFullListing() && h.s.speaks().listing
	res := &pb.ListFilesystemRes{Filesystems: make([]*pb.Filesystem, len(fss)), ZreplDevFullListing: full}
	for i, f := range fss {
		res.Filesystems[i] = toPBFilesystem(f, full, h.s.cfg.Sender != nil)
	}
	return res, nil
}

func (h *replicationService) ListFilesystemVersions(ctx context.Context, req *pb.ListFilesystemVersionsReq) (*pb.ListFilesystemVersionsRes, error) {
	fs := req.GetFilesystem()
	if err := checkFS(fs); err != nil {
		return nil, toStatus(err)
	}
	ep, err := h.lister(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	versions, err := listVersions(ctx, ep, fs)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ListFilesystemVersionsRes{Versions: toPBVersions(versions)}, nil
}

// listVersions lists fs's versions, by the endpoint's own per-filesystem
// listing where it has one.
func listVersions(ctx context.Context, ep interface {
	ListFilesystems(context.Context) ([]endpoint.Filesystem, error)
}, fs string) ([]zfs.FilesystemVersion, error) {
	if vl, ok := ep.(versionLister); ok {
		return vl.ListVersions(ctx, fs)
	}
	fss, err := ep.ListFilesystems(ctx)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(fss, func(f endpoint.Filesystem) bool { return f.Path == fs })
	if i < 0 {
		return nil, fmt.Errorf("list versions of %s: not listed: %w", fs, endpoint.ErrNotAllowed)
	}
	return fss[i].Versions, nil
}

func (h *replicationService) DestroySnapshots(ctx context.Context, req *pb.DestroySnapshotsReq) (*pb.DestroySnapshotsRes, error) {
	fs := req.GetFilesystem()
	if err := checkFS(fs); err != nil {
		return nil, toStatus(err)
	}
	var pruner endpoint.Pruner
	if h.s.cfg.Sender != nil {
		ep, err := h.sender(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		pruner = ep
	} else {
		ep, err := h.receiver(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		pruner = ep
	}
	snaps := make([]zfs.FilesystemVersion, 0, len(req.GetSnapshots()))
	for _, v := range req.GetSnapshots() {
		fv, err := fromPBVersion("pruned", v)
		if err != nil {
			return nil, toStatus(err)
		}
		if fv.Kind != zfs.Snapshot {
			return nil, toStatus(fmt.Errorf("prune %s: %s is not a snapshot: %w", fs, fv.RelName(), endpoint.ErrNotAllowed))
		}
		snaps = append(snaps, fv)
	}
	err := pruner.DestroySnapshots(ctx, fs, snaps)
	res := &pb.DestroySnapshotsRes{Results: make([]*pb.DestroySnapshotRes, len(snaps))}
	var perSnap *SnapshotErrors
	errors.As(err, &perSnap)
	for i, v := range snaps {
		r := &pb.DestroySnapshotRes{Snapshot: req.GetSnapshots()[i]}
		serr := err
		if perSnap != nil {
			serr = perSnap.For(v.Name)
		}
		if serr != nil {
			r.Error = serr.Error()
			r.ZreplDevError = errorInfo(serr)
		}
		res.Results[i] = r
	}
	return res, nil
}

func (h *replicationService) ReplicationCursor(ctx context.Context, req *pb.ReplicationCursorReq) (*pb.ReplicationCursorRes, error) {
	fs := req.GetFilesystem()
	if err := checkFS(fs); err != nil {
		return nil, toStatus(err)
	}
	ep, err := h.sender(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	cr, ok := ep.(cursorReader)
	if !ok {
		return nil, toStatus(fmt.Errorf("this source does not report replication cursors: %w", endpoint.ErrNotAllowed))
	}
	v, err := cr.ReplicationCursor(ctx, fs)
	if err != nil {
		return nil, toStatus(err)
	}
	if v == nil {
		return &pb.ReplicationCursorRes{Result: &pb.ReplicationCursorRes_Notexist{Notexist: true}}, nil
	}
	return &pb.ReplicationCursorRes{Result: &pb.ReplicationCursorRes_Guid{Guid: v.GUID}}, nil
}

func (h *replicationService) SendDry(ctx context.Context, req *pb.SendReq) (*pb.SendRes, error) {
	ep, err := h.sender(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	r, err := fromPBSendReq(req, false)
	if err != nil {
		return nil, toStatus(err)
	}
	n, err := ep.SendSize(ctx, r)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.SendRes{ExpectedSize: uint64(max(n, 0)), UsedResumeToken: r.ResumeToken != ""}, nil
}

func (h *replicationService) SendCompleted(ctx context.Context, req *pb.SendCompletedReq) (*pb.SendCompletedRes, error) {
	ep, err := h.sender(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	r, err := fromPBSendReq(req.GetOriginalReq(), true)
	if err != nil {
		return nil, toStatus(err)
	}
	// A zrepl client does not say; zrepl's sender then keeps only the new
	// cursor, which is what last means.
	last := true
	if req.ZreplDevLast != nil {
		last = *req.ZreplDevLast
	}
	return &pb.SendCompletedRes{}, toStatus(ep.StepCompleted(ctx, r, last))
}

// extService serves this project's receiver calls (extension
// zrepl.dev/receive-v1).
type extService struct {
	pb.UnsafeZreplDevEndpointServer
	s *Server
}

func (h *extService) receiver(ctx context.Context) (ReceiverEndpoint, error) {
	return (&replicationService{s: h.s}).receiver(ctx)
}

func (h *extService) AbortPartialReceive(ctx context.Context, req *pb.AbortPartialReceiveReq) (*pb.AbortPartialReceiveRes, error) {
	ep, err := h.receiver(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkFS(req.GetFilesystem()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.AbortPartialReceiveRes{}, toStatus(ep.AbortPartialReceive(ctx, req.GetFilesystem()))
}

func (h *extService) MoveLastReceivedHold(ctx context.Context, req *pb.MoveLastReceivedHoldReq) (*pb.MoveLastReceivedHoldRes, error) {
	ep, err := h.receiver(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkFS(req.GetFilesystem()); err != nil {
		return nil, toStatus(err)
	}
	to, err := fromPBVersion("last-received", req.GetTo())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.MoveLastReceivedHoldRes{}, toStatus(ep.MoveLastReceivedHold(ctx, req.GetFilesystem(), to))
}

func (h *extService) ReceiveResult(ctx context.Context, req *pb.ReceiveResultReq) (*pb.ReceiveResultRes, error) {
	info, err := callerOf(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkFS(req.GetFilesystem()); err != nil {
		return nil, toStatus(err)
	}
	running, rerr := h.s.recvResult(ctx, recvKey{info.identity, req.GetFilesystem()})
	if ctx.Err() != nil {
		return nil, toStatus(rerr)
	}
	res := &pb.ReceiveResultRes{WasRunning: running}
	if rerr != nil {
		res.Error = errorInfo(rerr)
	}
	return res, nil
}
