package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// ReceiveRequest describes one step arriving at the receiver.
type ReceiveRequest struct {
	// FS is the sender-side name; the data lands at Root/FS.
	FS   string
	From *zfs.FilesystemVersion
	To   zfs.FilesystemVersion
	// Full marks a full (non-incremental) stream.
	Full bool
	// Resuming marks a stream that continues the partial receive state.
	Resuming bool
	// Protection is the active side's protection of the step. A Receiver
	// takes its last-received hold whatever it is; it travels to a remote
	// sink, where zrepl takes none for GuaranteeNothing.
	Protection Protection

	SetProperties     map[string]string
	InheritProperties []string
}

// ErrReceivedWrongVersion means the snapshot that arrived is not the one
// the plan named: the stream or the sender is not what we were told.
var ErrReceivedWrongVersion = errors.New("received snapshot is not the planned one")

// Receiver is the receiving side of a job. Everything it writes lies below
// Root, which for a sink is <root_fs>/<client identity>.
type Receiver struct {
	ZFS  zfs.ZFS
	Job  JobID
	Root zfs.DatasetPath
	// Placeholder says how placeholders below an encrypted parent are
	// created (the receiving job's recv.placeholder.encryption).
	Placeholder PlaceholderEncryption
	// ClientRoot marks Root as a sink's client-identity dataset
	// <root_fs>/<identity>: the sink owns it whatever the client sends, so
	// where Placeholder is PlaceholderUnspecified it is created inheriting
	// root_fs's encryption, as zrepl does (a new client of a sink with an
	// encrypted root_fs needs no setting). Placeholders below it follow
	// Placeholder.
	ClientRoot bool

	// listed is the last listing of Root, kept current by the steps
	// (see listed.go). A Receiver must not be copied once used.
	listed receivedTree
}

// PlaceholderEncryption says how a Receiver creates placeholders below an
// encrypted parent; below an unencrypted one they are all the same. ZFS
// cannot replace an encrypted placeholder by the full receive of the
// sender's filesystem once that has snapshots: the choice is the
// administrator's, so the daemon's default is PlaceholderUnspecified.
type PlaceholderEncryption uint8

const (
	// PlaceholderInherit: placeholders inherit the parent's encryption.
	// The zero value, so that a Receiver built without the option behaves
	// as it did before the option existed.
	PlaceholderInherit PlaceholderEncryption = iota
	// PlaceholderOff: placeholders are created unencrypted
	// (encryption=off), so a later non-raw full receive can replace them.
	PlaceholderOff
	// PlaceholderUnspecified: refuse to create a placeholder below an
	// encrypted parent, with an error saying which option to set.
	PlaceholderUnspecified
)

func (p PlaceholderEncryption) String() string {
	switch p {
	case PlaceholderInherit:
		return "inherit"
	case PlaceholderOff:
		return "off"
	case PlaceholderUnspecified:
		return "unspecified"
	}
	return fmt.Sprintf("PlaceholderEncryption(%d)", uint8(p))
}

// PlaceholderEncryptionKey is the config key that sets
// Receiver.Placeholder; errors name it.
const PlaceholderEncryptionKey = "recv.placeholder.encryption"

// Target maps a sender-side filesystem name below Root.
func (r *Receiver) Target(fs string) (zfs.DatasetPath, error) {
	if _, err := zfs.NewDatasetPath(fs); err != nil {
		return zfs.DatasetPath{}, fmt.Errorf("received filesystem name: %w", err)
	}
	return r.Root.Join(fs)
}

// ListFilesystems lists everything below Root, named as the sender names
// it. Root itself is not listed. A missing Root lists as empty.
func (r *Receiver) ListFilesystems(ctx context.Context) ([]Filesystem, error) {
	tree, err := r.ZFS.ListTree(ctx, r.Root)
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		r.listed.set(nil)
		return nil, nil
	}
	if err != nil {
		r.listed.forget()
		return nil, fmt.Errorf("list filesystems below %s: %w", r.Root, err)
	}
	r.listed.set(tree)
	var out []Filesystem
	for _, l := range tree {
		rel, ok := l.Info.Path.TrimPrefix(r.Root)
		if !ok {
			continue
		}
		out = append(out, Filesystem{Path: rel, Info: l.Info, Versions: l.Versions})
	}
	return out, nil
}

// missingParents lists the ancestors of target, from Root down, that do
// not exist, nearest last: as the listing knows them, else by asking.
func (r *Receiver) missingParents(ctx context.Context, target zfs.DatasetPath) ([]zfs.DatasetPath, error) {
	var missing []zfs.DatasetPath
	for p, ok := target.Parent(); ok; p, ok = p.Parent() {
		if _, exists, known := r.listed.lookup(p); known {
			if exists {
				break
			}
		} else if _, err := r.ZFS.ListVersions(ctx, p); err == nil {
			break
		} else if !errors.Is(err, zfs.ErrDatasetNotExist) {
			return nil, fmt.Errorf("look up %s: %w", p, err)
		}
		missing = append(missing, p)
		if p == r.Root {
			break
		}
	}
	slices.Reverse(missing)
	return missing, nil
}

// createPlaceholders creates missing (from Root down) as placeholders,
// encrypted or not as r.Placeholder says.
func (r *Receiver) createPlaceholders(ctx context.Context, missing []zfs.DatasetPath) error {
	if len(missing) == 0 {
		return nil
	}
	if r.ClientRoot && missing[0] == r.Root && r.Placeholder == PlaceholderUnspecified {
		// Inherit, before the options of what lies below are decided
		// (from Root's encryption, so Root must exist by then).
		if err := r.createPlaceholdersWith(ctx, missing[:1], zfs.PlaceholderOptions{}); err != nil {
			return err
		}
		missing = missing[1:]
		if len(missing) == 0 {
			return nil
		}
	}
	opts, err := r.placeholderOptions(ctx, missing[0])
	if err != nil {
		return err
	}
	return r.createPlaceholdersWith(ctx, missing, opts)
}

// createPlaceholdersWith creates missing (from the top down) as
// placeholders with opts; one that exists already is fine.
func (r *Receiver) createPlaceholdersWith(ctx context.Context, missing []zfs.DatasetPath, opts zfs.PlaceholderOptions) error {
	for _, p := range missing {
		err := r.ZFS.CreatePlaceholder(ctx, p, opts)
		if err != nil && !errors.Is(err, zfs.ErrDatasetExists) {
			return fmt.Errorf("create placeholder %s: %w", p, err)
		}
		if err == nil {
			r.listed.update(p, received{placeholder: true})
		} else {
			// The listing is behind: ask zfs from now on.
			r.listed.forget()
		}
	}
	return nil
}

// checkHeader makes sure a stream's header is the full send of req.To
// before anything is created for it.
func checkHeader(target zfs.DatasetPath, h zfs.StreamHeader, req ReceiveRequest) error {
	_, snap, _ := strings.Cut(h.ToName, "@")
	if h.ToGUID != req.To.GUID || h.FromGUID != 0 || snap != req.To.Name {
		return fmt.Errorf("receive into %s: the stream sends %s (guid %016x, from guid %016x), the request a full send of @%s (guid %016x): %w",
			target, h.ToName, h.ToGUID, h.FromGUID, req.To.Name, req.To.GUID, ErrReceivedWrongVersion)
	}
	return nil
}

// placeholderOptions decides how the placeholders from top down are
// created: only the encryption of top's parent matters, as every
// placeholder below top inherits from top.
func (r *Receiver) placeholderOptions(ctx context.Context, top zfs.DatasetPath) (zfs.PlaceholderOptions, error) {
	parent, ok := top.Parent()
	if r.Placeholder == PlaceholderInherit || !ok {
		// Without a parent top is a pool, which CreatePlaceholder cannot
		// make whatever the options: let it say so.
		return zfs.PlaceholderOptions{}, nil
	}
	// ListFilesystems also lists what lies below parent; that happens only
	// when a placeholder is missing, i.e. for new filesystems.
	infos, err := r.ZFS.ListFilesystems(ctx, parent)
	if err != nil {
		return zfs.PlaceholderOptions{}, fmt.Errorf("look up encryption of %s: %w", parent, err)
	}
	if len(infos) == 0 || infos[0].Path != parent {
		return zfs.PlaceholderOptions{}, fmt.Errorf("look up encryption of %s: not listed", parent)
	}
	if !infos[0].Encrypted() {
		// Nothing to turn off; encryption=off is not even settable on a
		// pool without the encryption feature.
		return zfs.PlaceholderOptions{}, nil
	}
	switch r.Placeholder {
	case PlaceholderOff:
		return zfs.PlaceholderOptions{EncryptionOff: true}, nil
	case PlaceholderUnspecified:
		return zfs.PlaceholderOptions{}, fmt.Errorf("cannot create placeholder %s: its parent %s is encrypted (encryption root %s) and %s is unspecified: "+
			"set it to off (placeholders unencrypted: the sender's filesystem can replace one later) "+
			"or inherit (placeholders encrypted like the parent: ZFS cannot replace one by a full receive once the sender's filesystem has snapshots): %w",
			top, parent, infos[0].EncryptionRoot, PlaceholderEncryptionKey, ErrNotAllowed)
	}
	return zfs.PlaceholderOptions{}, fmt.Errorf("create placeholder %s: unknown placeholder encryption %v: %w", top, r.Placeholder, ErrNotAllowed)
}

// Receive receives one step into Root/req.FS, checks that the snapshot that
// arrives has the planned GUID, and moves the job's last-received hold to it.
// An interrupted receive keeps its partial state (zfs recv -s).
//
// The stream's header names the snapshot it carries; a stream that is not
// the planned step is refused before anything changes, and once zfs
// received it whole that snapshot is there, so no listing is needed after
// the receive. What else the step needs (do the target and its parents
// exist, is the target a placeholder, which snapshots may carry the
// last-received hold) comes from the last listing where the receiver has
// one (see listed.go): an incremental step then costs the receive, the
// hold and one release. Called with a ctx that carries a Batch
// (WithBatch), it puts the hold and the release off to the batch's Finish,
// which does them for every filesystem at once.
func (r *Receiver) Receive(ctx context.Context, req ReceiveRequest, stream io.Reader) error {
	target, err := r.Target(req.FS)
	if err != nil {
		return err
	}
	if err := r.receive(ctx, target, req, stream); err != nil {
		r.listed.forget()
		return err
	}
	return nil
}

func (r *Receiver) receive(ctx context.Context, target zfs.DatasetPath, req ReceiveRequest, stream io.Reader) error {
	h, replay, err := r.ZFS.ReadStreamHeader(ctx, stream)
	if err != nil {
		return fmt.Errorf("receive into %s: %w", target, err)
	}
	if err := checkStep(target, h, req); err != nil {
		return err
	}
	stream = replay
	// An incremental or resumed receive goes into a filesystem that
	// exists, and so do its parents: no lookups.
	if req.Full && !req.Resuming {
		missing, err := r.missingParents(ctx, target)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			// Placeholders only for a stream that is the full send
			// asked for: garbage creates nothing.
			if err := checkHeader(target, h, req); err != nil {
				return err
			}
			if err := r.createPlaceholders(ctx, missing); err != nil {
				return err
			}
		}
	}
	opts := zfs.RecvOptions{Resumable: true, SetProperties: req.SetProperties, InheritProperties: req.InheritProperties}
	placeholder := false
	if req.Full && !req.Resuming {
		// A full stream may only replace a placeholder that holds children;
		// -F would destroy anything else, so only a placeholder gets it,
		// and that is decided on a fresh look (the listing may only say
		// that the target is absent or no placeholder: then zfs refuses a
		// full receive into whatever is there now).
		known, exists, remembered := r.listed.lookup(target)
		if !remembered || exists && known.placeholder {
			infos, err := r.ZFS.ListFilesystems(ctx, target)
			switch {
			case errors.Is(err, zfs.ErrDatasetNotExist):
			case err != nil:
				return fmt.Errorf("look up %s: %w", target, err)
			case len(infos) > 0 && infos[0].Placeholder:
				versions, err := r.ZFS.ListVersions(ctx, target)
				if err != nil {
					return fmt.Errorf("list versions of %s: %w", target, err)
				}
				if len(versions) == 0 {
					opts.ForceRollback = true
					placeholder = true
				}
			}
		}
	}
	if err := r.ZFS.Receive(ctx, target, stream, opts); err != nil {
		return err
	}
	if placeholder {
		if err := r.ZFS.SetUserProperty(ctx, target, zfs.PlaceholderProperty, ""); err != nil {
			return fmt.Errorf("clear placeholder mark of %s: %w", target, err)
		}
	}
	known, _, remembered := r.listed.lookup(target)
	if !remembered {
		versions, err := r.ZFS.ListVersions(ctx, target)
		if err != nil {
			return fmt.Errorf("list versions of %s after receive: %w", target, err)
		}
		return r.moveLastReceivedHold(ctx, req.FS, target, versions, req.To)
	}
	if b := batchOf(ctx); b != nil && b.holdLater(r, req.FS, target, req.To, known.held) {
		return nil
	}
	return r.holdLastReceived(ctx, target, req.To, known.held)
}

// checkStep makes sure a stream's header is req's step: its target by
// name and GUID (and creation time, where both know it), and for an
// incremental request its source's GUID. A request without a source may
// come from a zrepl client, which names no source for an incremental.
func checkStep(target zfs.DatasetPath, h zfs.StreamHeader, req ReceiveRequest) error {
	_, snap, _ := strings.Cut(h.ToName, "@")
	if h.ToGUID != req.To.GUID || snap != req.To.Name || req.From != nil && h.FromGUID != req.From.GUID {
		from := "no source"
		if req.From != nil {
			from = fmt.Sprintf("from guid %016x", req.From.GUID)
		}
		return fmt.Errorf("receive into %s: the stream sends %s (guid %016x, from guid %016x), the request @%s (guid %016x, %s): %w",
			target, h.ToName, h.ToGUID, h.FromGUID, req.To.Name, req.To.GUID, from, ErrReceivedWrongVersion)
	}
	// A received snapshot keeps the creation time of the one sent: the
	// same GUID at another time is another snapshot (a sender whose state
	// went back in time drew the GUID again).
	if !req.To.Creation.IsZero() && !h.Creation.IsZero() && req.To.Creation.Unix() != h.Creation.Unix() {
		return fmt.Errorf("receive into %s: the stream sends %s with GUID %016x as planned but created at %s, the sender's at %s: not the same snapshot: %w",
			target, h.ToName, h.ToGUID, h.Creation.UTC().Format(time.RFC3339), req.To.Creation.UTC().Format(time.RFC3339), ErrReceivedWrongVersion)
	}
	return nil
}

// holdLastReceived puts the job's last-received hold on target@to, which
// a receive just created, and releases it from held, the other snapshots
// that may carry it, in one call; a snapshot without it is what was
// wanted.
func (r *Receiver) holdLastReceived(ctx context.Context, target zfs.DatasetPath, to zfs.FilesystemVersion, held []string) error {
	tag := LastReceivedHoldTag(r.Job)
	ref := to.Ref(target)
	if err := holdIdempotent(ctx, r.ZFS, ref, tag); err != nil {
		return fmt.Errorf("last-received hold on %s: %w", ref, err)
	}
	var older []zfs.VersionRef
	for _, name := range held {
		if name != to.Name {
			older = append(older, zfs.SnapshotRef(target, name))
		}
	}
	if err := releaseTagFrom(ctx, r.ZFS, older, tag); err != nil {
		return err
	}
	r.listed.update(target, received{held: []string{to.Name}})
	return nil
}

// MoveLastReceivedHold puts the job's last-received hold on Root/fs@to.Name,
// which must have to's GUID, and releases it from every other snapshot. A
// receive does this itself; the driver calls it for a filesystem that is
// up to date but whose hold stayed behind (the receive committed, then the
// hold failed).
func (r *Receiver) MoveLastReceivedHold(ctx context.Context, fs string, to zfs.FilesystemVersion) error {
	target, err := r.Target(fs)
	if err != nil {
		return err
	}
	if to.Kind != zfs.Snapshot {
		return fmt.Errorf("last-received hold on %s: %s is not a snapshot: %w", target, to.RelName(), ErrNotAllowed)
	}
	versions, err := r.ZFS.ListVersions(ctx, target)
	if err != nil {
		return fmt.Errorf("list versions of %s: %w", target, err)
	}
	return r.moveLastReceivedHold(ctx, fs, target, versions, to)
}

// moveLastReceivedHold moves the hold on target (fs as the client names
// it) to to, after checking versions (a fresh listing) has it. With a
// Batch in ctx the move goes to the batch like a receive's (holdLater):
// done at once, it would come before what an earlier step of the run put
// off for target, and Finish would then put the hold back on that step's
// older snapshot.
func (r *Receiver) moveLastReceivedHold(ctx context.Context, fs string, target zfs.DatasetPath, versions []zfs.FilesystemVersion, to zfs.FilesystemVersion) error {
	var got *zfs.FilesystemVersion
	var older []zfs.VersionRef
	for i, v := range versions {
		if v.Kind != zfs.Snapshot {
			continue
		}
		if v.Name == to.Name {
			got = &versions[i]
		} else if v.UserRefs > 0 {
			older = append(older, v.Ref(target))
		}
	}
	if got == nil {
		return fmt.Errorf("%s: snapshot %s missing: %w", target, to.RelName(), ErrReceivedWrongVersion)
	}
	if got.GUID != to.GUID {
		return fmt.Errorf("%s%s has GUID %016x, the plan said %016x: %w", target, got.RelName(), got.GUID, to.GUID, ErrReceivedWrongVersion)
	}
	// A received snapshot keeps the creation time of the one sent: the
	// same GUID at another time is another snapshot (a sender whose state
	// went back in time drew the GUID again).
	if !to.Creation.IsZero() && !got.Creation.IsZero() && to.Creation.Unix() != got.Creation.Unix() {
		return fmt.Errorf("%s%s has GUID %016x as planned but was created at %s, the sender's at %s: not the same snapshot: %w",
			target, got.RelName(), got.GUID, got.Creation.UTC().Format(time.RFC3339), to.Creation.UTC().Format(time.RFC3339), ErrReceivedWrongVersion)
	}
	if b := batchOf(ctx); b != nil {
		held := make([]string, len(older))
		for i, o := range older {
			held[i] = o.Name
		}
		if b.holdLater(r, fs, target, *got, held) {
			return nil
		}
	}
	tag := LastReceivedHoldTag(r.Job)
	if err := holdIdempotent(ctx, r.ZFS, got.Ref(target), tag); err != nil {
		return fmt.Errorf("last-received hold on %s: %w", got.Ref(target), err)
	}
	if err := releaseTagFrom(ctx, r.ZFS, older, tag); err != nil {
		return err
	}
	if _, exists, _ := r.listed.lookup(target); exists {
		r.listed.update(target, received{held: []string{to.Name}})
	}
	return nil
}

// AbortPartialReceive discards the partial receive state of Root/fs.
func (r *Receiver) AbortPartialReceive(ctx context.Context, fs string) error {
	target, err := r.Target(fs)
	if err != nil {
		return err
	}
	err = r.ZFS.AbortReceive(ctx, target)
	if errors.Is(err, zfs.ErrNoResumableState) {
		return nil
	}
	return err
}

// ListVersions lists the versions of Root/fs (a zrepl client asks per
// filesystem).
func (r *Receiver) ListVersions(ctx context.Context, fs string) ([]zfs.FilesystemVersion, error) {
	target, err := r.Target(fs)
	if err != nil {
		return nil, err
	}
	return r.ZFS.ListVersions(ctx, target)
}
