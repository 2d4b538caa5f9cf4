package rpc

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/zfs"
)

// Conversions between the endpoint types and their wire form. Everything
// decoded is validated: a peer's names are input like any other.

func toPBVersion(v *zfs.FilesystemVersion) *pb.FilesystemVersion {
	if v == nil {
		return nil
	}
	out := &pb.FilesystemVersion{Name: v.Name, Guid: v.GUID, CreateTxg: v.CreateTXG, UserRefs: v.UserRefs}
	switch v.Kind {
	case zfs.Snapshot:
		out.Kind = pb.VersionKind_SNAPSHOT
	case zfs.Bookmark:
		out.Kind = pb.VersionKind_BOOKMARK
	}
	if !v.Creation.IsZero() {
		out.Creation = timestamppb.New(v.Creation)
	}
	return out
}

func fromPBVersion(what string, v *pb.FilesystemVersion) (zfs.FilesystemVersion, error) {
	if v == nil {
		return zfs.FilesystemVersion{}, fmt.Errorf("%w: %s version missing", ErrBadRequest, what)
	}
	out := zfs.FilesystemVersion{Name: v.Name, GUID: v.Guid, CreateTXG: v.CreateTxg, UserRefs: v.UserRefs}
	switch v.Kind {
	case pb.VersionKind_SNAPSHOT:
		out.Kind = zfs.Snapshot
	case pb.VersionKind_BOOKMARK:
		out.Kind = zfs.Bookmark
	default:
		return zfs.FilesystemVersion{}, fmt.Errorf("%w: %s version %q has no valid kind (%d)", ErrBadRequest, what, v.Name, v.Kind)
	}
	if err := zfs.ValidateVersionName(out.Kind, v.Name); err != nil {
		return zfs.FilesystemVersion{}, fmt.Errorf("%s version: %w", what, err)
	}
	if v.Creation != nil {
		if err := v.Creation.CheckValid(); err != nil {
			return zfs.FilesystemVersion{}, fmt.Errorf("%w: %s version %q: creation time: %v", ErrBadRequest, what, v.Name, err)
		}
		out.Creation = v.Creation.AsTime()
	}
	return out, nil
}

func fromPBVersionPtr(what string, v *pb.FilesystemVersion) (*zfs.FilesystemVersion, error) {
	if v == nil {
		return nil, nil
	}
	out, err := fromPBVersion(what, v)
	return &out, err
}

func checkFS(fs string) error {
	if err := zfs.ValidateDatasetPath(fs); err != nil {
		return fmt.Errorf("filesystem name: %w", err)
	}
	return nil
}

func toPBProtection(p endpoint.Protection) pb.Protection {
	switch p {
	case endpoint.GuaranteeIncremental:
		return pb.Protection_GUARANTEE_INCREMENTAL
	case endpoint.GuaranteeNothing:
		return pb.Protection_GUARANTEE_NOTHING
	}
	return pb.Protection_GUARANTEE_RESUMABILITY
}

// toPBSendPolicy leaves the zero policy out of the message.
func toPBSendPolicy(p zfs.SendPolicy) *pb.SendPolicy {
	if p == (zfs.SendPolicy{}) {
		return nil
	}
	f := p.Flags
	return &pb.SendPolicy{Encrypted: p.Encrypted, Raw: f.Raw, Properties: f.Properties, BackupProperties: f.BackupProperties,
		LargeBlocks: f.LargeBlocks, Compressed: f.Compressed, EmbeddedData: f.EmbeddedData, Saved: f.Saved}
}

func fromPBSendPolicy(p *pb.SendPolicy) zfs.SendPolicy {
	return zfs.SendPolicy{Encrypted: p.GetEncrypted(), Flags: zfs.SendFlags{
		Raw: p.GetRaw(), Properties: p.GetProperties(), BackupProperties: p.GetBackupProperties(),
		LargeBlocks: p.GetLargeBlocks(), Compressed: p.GetCompressed(), EmbeddedData: p.GetEmbeddedData(), Saved: p.GetSaved(),
	}}
}

func toPBSendRequest(r endpoint.SendRequest) *pb.SendRequest {
	return &pb.SendRequest{
		Fs: r.FS, From: toPBVersion(r.From), To: toPBVersion(&r.To), ResumeToken: r.ResumeToken,
		Protection: toPBProtection(r.Protection),
	}
}

// fromPBSendRequest decodes a send request; a bookmark target is fine only
// where the request confirms a step rather than sends one (StepCompleted of
// an up-to-date filesystem whose base is a bookmark).
func fromPBSendRequest(r *pb.SendRequest, bookmarkTarget bool) (endpoint.SendRequest, error) {
	if r == nil {
		return endpoint.SendRequest{}, fmt.Errorf("%w: send request missing", ErrBadRequest)
	}
	if err := checkFS(r.Fs); err != nil {
		return endpoint.SendRequest{}, err
	}
	from, err := fromPBVersionPtr("from", r.From)
	if err != nil {
		return endpoint.SendRequest{}, fmt.Errorf("send %s: %w", r.Fs, err)
	}
	to, err := fromPBVersion("to", r.To)
	if err != nil {
		return endpoint.SendRequest{}, fmt.Errorf("send %s: %w", r.Fs, err)
	}
	if to.Kind != zfs.Snapshot && !bookmarkTarget {
		return endpoint.SendRequest{}, fmt.Errorf("send %s: %w: target %s is not a snapshot", r.Fs, ErrBadRequest, to.RelName())
	}
	var prot endpoint.Protection
	switch r.Protection {
	case pb.Protection_GUARANTEE_RESUMABILITY:
		prot = endpoint.GuaranteeResumability
	case pb.Protection_GUARANTEE_INCREMENTAL:
		prot = endpoint.GuaranteeIncremental
	case pb.Protection_GUARANTEE_NOTHING:
		prot = endpoint.GuaranteeNothing
	default:
		return endpoint.SendRequest{}, fmt.Errorf("send %s: %w: unknown protection %d", r.Fs, ErrBadRequest, r.Protection)
	}
	return endpoint.SendRequest{
		FS: r.Fs, From: from, To: to, ResumeToken: r.ResumeToken, Protection: prot,
	}, nil
}

func toPBReceiveRequest(r endpoint.ReceiveRequest, ticket uint64) *pb.ReceiveRequest {
	return &pb.ReceiveRequest{Fs: r.FS, From: toPBVersion(r.From), To: toPBVersion(&r.To), Full: r.Full, Resuming: r.Resuming, DataTicket: ticket}
}

func fromPBReceiveRequest(r *pb.ReceiveRequest) (endpoint.ReceiveRequest, error) {
	if err := checkFS(r.Fs); err != nil {
		return endpoint.ReceiveRequest{}, err
	}
	from, err := fromPBVersionPtr("from", r.From)
	if err != nil {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w", r.Fs, err)
	}
	to, err := fromPBVersion("to", r.To)
	if err != nil {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w", r.Fs, err)
	}
	if to.Kind != zfs.Snapshot {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w: target %s is not a snapshot", r.Fs, ErrBadRequest, to.RelName())
	}
	if to.GUID == 0 {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w: target %s has no GUID to verify", r.Fs, ErrBadRequest, to.RelName())
	}
	if r.Full != (from == nil) {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w: full=%v contradicts from=%v", r.Fs, ErrBadRequest, r.Full, from != nil)
	}
	return endpoint.ReceiveRequest{FS: r.Fs, From: from, To: to, Full: r.Full, Resuming: r.Resuming}, nil
}

func toPBFilesystems(in []endpoint.Filesystem) *pb.ListFilesystemsReply {
	out := &pb.ListFilesystemsReply{Filesystems: make([]*pb.Filesystem, len(in))}
	for i, f := range in {
		pf := &pb.Filesystem{Path: f.Path, Info: &pb.FilesystemInfo{
			Path: f.Info.Path.String(), Guid: f.Info.GUID, ReceiveResumeToken: f.Info.ReceiveResumeToken,
			Encryption: f.Info.Encryption, EncryptionRoot: f.Info.EncryptionRoot, KeyStatus: string(f.Info.KeyStatus),
			Placeholder: f.Info.Placeholder,
		}}
		for j := range f.Versions {
			pf.Versions = append(pf.Versions, toPBVersion(&f.Versions[j]))
		}
		pf.JobCursorGuids = f.Marks.Cursors
		pf.JobStepBookmarks = f.Marks.StepBookmarks
		pf.SendPolicy = toPBSendPolicy(f.Send)
		out.Filesystems[i] = pf
	}
	return out
}

func fromPBFilesystems(in *pb.ListFilesystemsReply) ([]endpoint.Filesystem, error) {
	var out []endpoint.Filesystem
	for _, f := range in.GetFilesystems() {
		if err := checkFS(f.Path); err != nil {
			return nil, fmt.Errorf("listed %w", err)
		}
		info := f.GetInfo()
		var path zfs.DatasetPath
		if info.GetPath() != "" {
			p, err := zfs.NewDatasetPath(info.GetPath())
			if err != nil {
				return nil, fmt.Errorf("listed filesystem %s: path: %w", f.Path, err)
			}
			path = p
		}
		ks := zfs.KeyStatus(info.GetKeyStatus())
		switch ks {
		case "", zfs.KeyStatusNone, zfs.KeyStatusAvailable, zfs.KeyStatusUnavailable:
		default:
			return nil, fmt.Errorf("listed filesystem %s: %w: key status %q", f.Path, ErrProtocol, ks)
		}
		fs := endpoint.Filesystem{Path: f.Path, Info: zfs.FilesystemInfo{
			Path: path, GUID: info.GetGuid(), ReceiveResumeToken: info.GetReceiveResumeToken(),
			Encryption: info.GetEncryption(), EncryptionRoot: info.GetEncryptionRoot(), KeyStatus: ks,
			Placeholder: info.GetPlaceholder(),
		}, Send: fromPBSendPolicy(f.GetSendPolicy()), Marks: endpoint.JobMarks{Cursors: f.GetJobCursorGuids(), StepBookmarks: f.GetJobStepBookmarks()}}
		for _, v := range f.Versions {
			fv, err := fromPBVersion("listed", v)
			if err != nil {
				return nil, fmt.Errorf("listed filesystem %s: %w", f.Path, err)
			}
			fs.Versions = append(fs.Versions, fv)
		}
		out = append(out, fs)
	}
	return out, nil
}
