package rpc

import (
	"fmt"
	"time"

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
	refs := v.UserRefs
	out := &pb.FilesystemVersion{
		Name: v.Name, Guid: v.GUID, CreateTXG: v.CreateTXG,
		// zrepl parses Creation of every version and fails on anything
		// but RFC 3339 (fractions of a second are fine): an unknown time
		// goes as the zero time.
		Creation:         v.Creation.UTC().Format(time.RFC3339Nano),
		ZreplDevUserRefs: &refs,
	}
	if v.Kind == zfs.Bookmark {
		out.Type = pb.FilesystemVersion_Bookmark
	}
	return out
}

func fromPBVersion(what string, v *pb.FilesystemVersion) (zfs.FilesystemVersion, error) {
	if v == nil {
		return zfs.FilesystemVersion{}, fmt.Errorf("%w: %s version missing", ErrBadRequest, what)
	}
	out := zfs.FilesystemVersion{Name: v.Name, GUID: v.Guid, CreateTXG: v.CreateTXG, UserRefs: v.GetZreplDevUserRefs()}
	switch v.Type {
	case pb.FilesystemVersion_Snapshot:
		out.Kind = zfs.Snapshot
	case pb.FilesystemVersion_Bookmark:
		out.Kind = zfs.Bookmark
	default:
		return zfs.FilesystemVersion{}, fmt.Errorf("%w: %s version %q has no valid type (%d)", ErrBadRequest, what, v.Name, v.Type)
	}
	if err := zfs.ValidateVersionName(out.Kind, v.Name); err != nil {
		return zfs.FilesystemVersion{}, fmt.Errorf("%s version: %w", what, err)
	}
	if v.Creation != "" {
		t, err := time.Parse(time.RFC3339, v.Creation)
		if err != nil {
			return zfs.FilesystemVersion{}, fmt.Errorf("%w: %s version %q: creation time: %v", ErrBadRequest, what, v.Name, err)
		}
		if !t.Equal(time.Time{}) {
			out.Creation = t
		}
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

func toPBGuarantee(p endpoint.Protection) pb.ReplicationGuaranteeKind {
	switch p {
	case endpoint.GuaranteeIncremental:
		return pb.ReplicationGuaranteeKind_GuaranteeIncrementalReplication
	case endpoint.GuaranteeNothing:
		return pb.ReplicationGuaranteeKind_GuaranteeNothing
	}
	return pb.ReplicationGuaranteeKind_GuaranteeResumability
}

func fromPBGuarantee(k pb.ReplicationGuaranteeKind) (endpoint.Protection, error) {
	switch k {
	case pb.ReplicationGuaranteeKind_GuaranteeResumability:
		return endpoint.GuaranteeResumability, nil
	case pb.ReplicationGuaranteeKind_GuaranteeIncrementalReplication:
		return endpoint.GuaranteeIncremental, nil
	case pb.ReplicationGuaranteeKind_GuaranteeNothing:
		return endpoint.GuaranteeNothing, nil
	}
	return 0, fmt.Errorf("%w: replication guarantee %v", ErrBadRequest, k)
}

// toPBConfig: the engine chose the protection of this step already; zrepl
// picks Initial or Incremental by whether the step has a From, so both
// carry it.
func toPBConfig(p endpoint.Protection) *pb.ReplicationConfig {
	g := toPBGuarantee(p)
	return &pb.ReplicationConfig{Protection: &pb.ReplicationConfigProtection{Initial: g, Incremental: g}}
}

// fromPBConfig picks the protection of a step, full or not, as zrepl
// does; zrepl refuses a request without one, and so do we.
func fromPBConfig(c *pb.ReplicationConfig, full bool) (endpoint.Protection, error) {
	p := c.GetProtection()
	if p == nil {
		return 0, fmt.Errorf("%w: no replication protection in the request", ErrBadRequest)
	}
	if full {
		return fromPBGuarantee(p.GetInitial())
	}
	return fromPBGuarantee(p.GetIncremental())
}

func toPBSendReq(r endpoint.SendRequest) *pb.SendReq {
	return &pb.SendReq{
		Filesystem: r.FS, From: toPBVersion(r.From), To: toPBVersion(&r.To), ResumeToken: r.ResumeToken,
		ReplicationConfig: toPBConfig(r.Protection),
	}
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

// fromPBSendReq decodes a send request; a bookmark target is fine only
// where the request confirms a step rather than sends one (SendCompleted
// of an up-to-date filesystem whose base is a bookmark).
func fromPBSendReq(r *pb.SendReq, bookmarkTarget bool) (endpoint.SendRequest, error) {
	if r == nil {
		return endpoint.SendRequest{}, fmt.Errorf("%w: send request missing", ErrBadRequest)
	}
	if err := checkFS(r.Filesystem); err != nil {
		return endpoint.SendRequest{}, err
	}
	from, err := fromPBVersionPtr("from", r.From)
	if err != nil {
		return endpoint.SendRequest{}, fmt.Errorf("send %s: %w", r.Filesystem, err)
	}
	to, err := fromPBVersion("to", r.To)
	if err != nil {
		return endpoint.SendRequest{}, fmt.Errorf("send %s: %w", r.Filesystem, err)
	}
	if to.Kind != zfs.Snapshot && !bookmarkTarget {
		return endpoint.SendRequest{}, fmt.Errorf("send %s: %w: target %s is not a snapshot", r.Filesystem, ErrBadRequest, to.RelName())
	}
	prot, err := fromPBConfig(r.ReplicationConfig, from == nil)
	if err != nil {
		return endpoint.SendRequest{}, fmt.Errorf("send %s: %w", r.Filesystem, err)
	}
	return endpoint.SendRequest{FS: r.Filesystem, From: from, To: to, ResumeToken: r.ResumeToken, Protection: prot}, nil
}

// toPBReceiveReq: against a peer without extReceive, a stream that does
// not resume clears the partial receive state first, as zrepl's client
// asks (the engine's own aborts have no call there).
func toPBReceiveReq(r endpoint.ReceiveRequest, ext extSet) *pb.ReceiveReq {
	out := &pb.ReceiveReq{Filesystem: r.FS, To: toPBVersion(&r.To), ReplicationConfig: toPBConfig(r.Protection)}
	if ext.receive {
		out.ZreplDevStep = &pb.ReceiveStep{From: toPBVersion(r.From), Full: r.Full, Resuming: r.Resuming}
	} else {
		out.ClearResumeToken = !r.Resuming
	}
	return out
}

// fromPBReceiveReq decodes a receive request. Without the step (a zrepl
// client) the stream is taken as full and not resuming, which makes the
// receiver look up what a full stream needs: it works for any stream.
func fromPBReceiveReq(r *pb.ReceiveReq) (endpoint.ReceiveRequest, error) {
	if err := checkFS(r.Filesystem); err != nil {
		return endpoint.ReceiveRequest{}, err
	}
	to, err := fromPBVersion("to", r.To)
	if err != nil {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w", r.Filesystem, err)
	}
	if to.Kind != zfs.Snapshot {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w: target %s is not a snapshot", r.Filesystem, ErrBadRequest, to.RelName())
	}
	if to.GUID == 0 {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w: target %s has no GUID to verify", r.Filesystem, ErrBadRequest, to.RelName())
	}
	step := r.GetZreplDevStep()
	prot, err := fromPBConfig(r.ReplicationConfig, step == nil || step.Full)
	if err != nil {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w", r.Filesystem, err)
	}
	if step == nil {
		return endpoint.ReceiveRequest{FS: r.Filesystem, To: to, Full: true, Protection: prot}, nil
	}
	from, err := fromPBVersionPtr("from", step.From)
	if err != nil {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w", r.Filesystem, err)
	}
	if step.Full != (from == nil) {
		return endpoint.ReceiveRequest{}, fmt.Errorf("receive %s: %w: full=%v contradicts from=%v", r.Filesystem, ErrBadRequest, step.Full, from != nil)
	}
	return endpoint.ReceiveRequest{FS: r.Filesystem, From: from, To: to, Full: step.Full, Resuming: step.Resuming, Protection: prot}, nil
}

// toPBFilesystem lists f; full adds extListing's fields. A sender lists
// no resume token.
func toPBFilesystem(f endpoint.Filesystem, full, sender bool) *pb.Filesystem {
	out := &pb.Filesystem{Path: f.Path, IsPlaceholder: f.Info.Placeholder}
	if !sender {
		out.ResumeToken = f.Info.ReceiveResumeToken
	}
	if !full {
		return out
	}
	out.ZreplDevInfo = &pb.FilesystemInfo{
		Guid: f.Info.GUID, Encryption: f.Info.Encryption, EncryptionRoot: f.Info.EncryptionRoot, KeyStatus: string(f.Info.KeyStatus),
	}
	out.ZreplDevVersions = toPBVersions(f.Versions)
	if len(f.Marks.Cursors) > 0 || f.Marks.StepBookmarks {
		out.ZreplDevMarks = &pb.JobMarks{CursorGuids: f.Marks.Cursors, StepBookmarks: f.Marks.StepBookmarks}
	}
	out.ZreplDevSendPolicy = toPBSendPolicy(f.Send)
	return out
}

func toPBVersions(in []zfs.FilesystemVersion) []*pb.FilesystemVersion {
	out := make([]*pb.FilesystemVersion, len(in))
	for i := range in {
		out[i] = toPBVersion(&in[i])
	}
	return out
}

func fromPBVersions(fs string, in []*pb.FilesystemVersion) ([]zfs.FilesystemVersion, error) {
	out := make([]zfs.FilesystemVersion, 0, len(in))
	for _, v := range in {
		fv, err := fromPBVersion("listed", v)
		if err != nil {
			return nil, fmt.Errorf("listed filesystem %s: %w", fs, err)
		}
		out = append(out, fv)
	}
	return out, nil
}

// fromPBFilesystem decodes a listed filesystem without its versions. A
// sender's Path is its full name, which becomes Info.Path. Without
// extListing's info the encryption is unknown: Info.Encryption stays
// empty, which zfs.FilesystemInfo.EncryptionKnown reports.
func fromPBFilesystem(f *pb.Filesystem, sender bool) (endpoint.Filesystem, error) {
	if err := checkFS(f.Path); err != nil {
		return endpoint.Filesystem{}, fmt.Errorf("listed %w", err)
	}
	out := endpoint.Filesystem{Path: f.Path, Info: zfs.FilesystemInfo{Placeholder: f.IsPlaceholder}}
	if sender {
		p, err := zfs.NewDatasetPath(f.Path)
		if err != nil {
			return endpoint.Filesystem{}, fmt.Errorf("listed filesystem %s: %w", f.Path, err)
		}
		out.Info.Path = p
	} else {
		out.Info.ReceiveResumeToken = f.ResumeToken
	}
	if info := f.GetZreplDevInfo(); info != nil {
		ks := zfs.KeyStatus(info.KeyStatus)
		switch ks {
		case "", zfs.KeyStatusNone, zfs.KeyStatusAvailable, zfs.KeyStatusUnavailable:
		default:
			return endpoint.Filesystem{}, fmt.Errorf("listed filesystem %s: %w: key status %q", f.Path, ErrProtocol, ks)
		}
		out.Info.GUID, out.Info.Encryption, out.Info.EncryptionRoot, out.Info.KeyStatus = info.Guid, info.Encryption, info.EncryptionRoot, ks
	}
	if m := f.GetZreplDevMarks(); m != nil {
		out.Marks = endpoint.JobMarks{Cursors: m.CursorGuids, StepBookmarks: m.StepBookmarks}
	}
	out.Send = fromPBSendPolicy(f.GetZreplDevSendPolicy())
	return out, nil
}
