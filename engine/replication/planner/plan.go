package planner

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// Plan computes the plan for every sender filesystem. It fails only on
// input no listing can produce (see ErrInvalidInput); everything else that
// stands in the way of one filesystem is that filesystem's Conflict.
func Plan(in Input) (*Result, error) {
	if err := in.Policy.validate(); err != nil {
		return nil, err
	}
	senders, err := indexFilesystems("sender", in.Sender)
	if err != nil {
		return nil, err
	}
	receivers, err := indexFilesystems("receiver", in.Receiver)
	if err != nil {
		return nil, err
	}

	plans := make([]FSPlan, 0, len(senders))
	var sc scratch
	for p, s := range senders {
		plans = append(plans, planFilesystem(p, s, receivers[p], ancestorEncrypted(p, receivers), in.Policy, &sc))
	}

	// Every ancestor of a filesystem that a full receive will create
	// must exist first. The receiver's listing covers the namespace, so
	// an ancestor it lists exists, and so do all of that one's ancestors.
	needed := make(map[string]bool)
	for i := range plans {
		p := &plans[i]
		if p.Status != StatusReplicate || receivers[p.Path] != nil {
			continue
		}
		for a := parentPath(p.Path); a != "" && receivers[a] == nil && !needed[a]; a = parentPath(a) {
			needed[a] = true
		}
	}
	for a := range needed {
		if senders[a] == nil {
			plans = append(plans, FSPlan{Path: a, Status: StatusPlaceholder})
		}
	}
	slices.SortFunc(plans, func(a, b FSPlan) int { return comparePaths(a.Path, b.Path) })

	// Parents first: decide which filesystems will exist on the receiver
	// and whether each one that needs its parent gets it.
	byPath := make(map[string]*FSPlan, len(plans))
	for i := range plans {
		byPath[plans[i].Path] = &plans[i]
	}
	willExist := make(map[string]bool, len(plans))
	for i := range plans {
		p := &plans[i]
		if receivers[p.Path] != nil {
			willExist[p.Path] = true
			continue
		}
		creates := p.Status == StatusReplicate
		if !creates && !needed[p.Path] || p.Status == StatusConflict {
			continue
		}
		parent := parentPath(p.Path)
		// The receiver's listing covers the namespace: a parent not in
		// the plan but on the receiver is there.
		if parent != "" && !willExist[parent] && receivers[parent] == nil {
			setConflict(p, ConflictParentMissing, missingParentMsg(parent, byPath[parent]))
			continue
		}
		if parent != "" && receivers[parent] == nil {
			p.WaitFor = parent
		}
		if !creates {
			// A sender filesystem without snapshots becomes a
			// placeholder too: reports and drivers treat both alike.
			p.Status = StatusPlaceholder
			p.Actions = append(p.Actions, Action{
				Kind:   ActionCreatePlaceholder,
				Reason: "a filesystem below it is received and the receiver does not have it",
			})
		}
		willExist[p.Path] = true
	}
	return &Result{Filesystems: plans}, nil
}

// ancestorEncrypted reports whether the nearest ancestor of p that the
// receiver lists is encrypted: a filesystem created below it by a plain
// receive inherits its encryption.
func ancestorEncrypted(p string, receivers map[string]*Filesystem) bool {
	for a := parentPath(p); a != ""; a = parentPath(a) {
		if r := receivers[a]; r != nil {
			return r.Info.Encrypted()
		}
	}
	return false
}

func missingParentMsg(parent string, pp *FSPlan) string {
	why := "it is not replicated"
	if pp != nil && pp.Conflict != nil {
		why = "it has a conflict: " + pp.Conflict.Kind.Error()
	}
	return fmt.Sprintf("parent %q does not exist on the receiver and will not be created (%s)", parent, why)
}

// indexFilesystems maps paths to filesystems. It checks them in path
// order, so that the error for a listing with several faults does not
// depend on the listing's order.
func indexFilesystems(side string, fss []Filesystem) (map[string]*Filesystem, error) {
	order := make([]*Filesystem, len(fss))
	for i := range fss {
		order[i] = &fss[i]
	}
	slices.SortStableFunc(order, func(a, b *Filesystem) int { return comparePaths(a.Path, b.Path) })
	m := make(map[string]*Filesystem, len(fss))
	for _, fs := range order {
		if err := validateRelPath(fs.Path); err != nil {
			return nil, fmt.Errorf("%w: %s filesystem: %w", ErrInvalidInput, side, err)
		}
		if m[fs.Path] != nil {
			return nil, fmt.Errorf("%w: %s filesystem %q listed twice", ErrInvalidInput, side, fs.Path)
		}
		m[fs.Path] = fs
	}
	for _, fs := range order {
		if side == "sender" && fs.Info.Path.IsZero() {
			return nil, fmt.Errorf("%w: sender filesystem %q has no full name (Info.Path)", ErrInvalidInput, fs.Path)
		}
	}
	return m, nil
}

func setConflict(p *FSPlan, kind ConflictKind, msg string) {
	p.Status = StatusConflict
	p.Actions = nil
	p.Steps = nil
	p.WaitFor = ""
	p.Conflict = &Conflict{Kind: kind, Path: p.Path, Sender: p.Sender, Msg: msg}
}

// planFilesystem plans one sender filesystem against the receiver's
// filesystem of the same path (nil if the receiver has none);
// parentEncrypted is ancestorEncrypted for it.
func planFilesystem(path string, s, r *Filesystem, parentEncrypted bool, pol Policy, sc *scratch) FSPlan {
	p := FSPlan{Path: path, Sender: s.Info.Path}
	conflict := func(kind ConflictKind, format string, args ...any) FSPlan {
		setConflict(&p, kind, fmt.Sprintf(format, args...))
		return p
	}

	hist, err := senderHistory(s.Versions, sc)
	if err != nil {
		return conflict(ConflictInvalidListing, "sender: %v", err)
	}
	var rsnaps []zfs.FilesystemVersion
	if r != nil {
		if rsnaps, err = receiverSnapshots(r.Versions); err != nil {
			return conflict(ConflictInvalidListing, "receiver: %v", err)
		}
	}

	// The sender decides its flags by the same rule.
	flags, refused := s.Send.For(s.Info)
	var why *zfs.SendRefusedError
	errors.As(refused, &why)
	if errors.Is(refused, zfs.ErrNotEncrypted) {
		return conflict(ConflictSenderNotEncrypted, "%s", why.Why)
	}
	raw := flags.RawStream(s.Info)
	receiverEncrypted := r != nil && r.Info.Encrypted()

	var snaps []zfs.FilesystemVersion // sender snapshots to send, in order
	var base *zfs.FilesystemVersion   // incremental source of the first; nil: full

	if len(rsnaps) == 0 {
		// Initial replication.
		all := snapshotsAfter(hist, 0, false)
		switch {
		case len(all) == 0:
		case pol.InitialReplication == AllSnapshots:
			snaps = all
		default:
			snaps = all[len(all)-1:]
		}
		i := interruptedFull(r, s.Info.Path, all, raw)
		if i >= 0 {
			// An initial full receive of all[i] was interrupted and
			// newer snapshots may have appeared since: finish it rather
			// than throw the received part away, then send each newer
			// snapshot incrementally, as zrepl does after a resumed
			// step (jumping to the newest would leave the receiver
			// without the ones between). The token only picks which of
			// the sender's own snapshots goes first; nothing outside
			// the sender's history is sent.
			snaps = all[i:]
		}
		if i < 0 && len(snaps) > 0 && pol.InitialReplication == Fail {
			return conflict(ConflictInitialReplication, "the receiver has no snapshot of it and conflict_resolution.initial_replication is fail, so no initial replication is made "+
				"(the sender's newest is %s; set initial_replication to most_recent or all to send it)", describe(all[len(all)-1]))
		}
		if len(snaps) > 0 && r != nil && r.Info.ReceiveResumeToken == "" && !r.Info.Placeholder {
			return conflict(ConflictReceiverNotPlaceholder,
				"the receiver's filesystem exists without snapshots and is not a placeholder; refusing to overwrite it with a full receive of %s", describe(snaps[0]))
		}
		if len(snaps) > 0 && r != nil && r.Info.Placeholder {
			// ZFS refuses a forced full receive over an encrypted
			// filesystem, and a raw one over an unencrypted filesystem.
			if receiverEncrypted {
				// Only the administrator can make room; the message
				// says how.
				return conflict(ConflictEncryptionMismatch, "the receiver's placeholder is encrypted; ZFS cannot replace an encrypted filesystem with a full receive of %s "+
					"(to receive it, destroy the placeholder with what is below it on the receiver: the filesystems below are then received anew)", describe(snaps[0]))
			}
			if raw {
				return conflict(ConflictEncryptionMismatch, "the receiver's placeholder is not encrypted; ZFS cannot replace it with a raw (encrypted) full receive of %s", describe(snaps[0]))
			}
		}
	} else {
		bi := commonBase(hist, rsnaps)
		if bi < 0 {
			return conflict(ConflictNoCommonVersion, "the receiver has snapshots but none of them is on the sender: sender's newest is %s, receiver's newest is %s",
				describePtr(newest(hist), "none (the sender has no snapshots or bookmarks)"), describe(rsnaps[len(rsnaps)-1]))
		}
		b := hist[bi]
		if r, ok := sameGUIDOtherSnapshot(b, rsnaps); ok {
			return conflict(ConflictGUIDReused, "the sender's %s and the receiver's %s have the same guid but were created at different times (%s and %s): "+
				"they are different snapshots, so one side's state went back in time (restored from a backup, or its last writes lost in a power cut) "+
				"and hands out GUIDs again; refusing to take one for the other. The receiver's snapshots from %s on belong to a history the sender no longer has",
				describe(b), describe(r), b.Creation.UTC().Format(time.RFC3339), r.Creation.UTC().Format(time.RFC3339), r.RelName())
		}
		base = &b
		snaps = snapshotsAfter(hist, b.CreateTXG, true)
		if newer := receiverNewerThan(rsnaps, b.GUID); len(newer) > 0 {
			if len(snaps) > 0 {
				return conflict(ConflictDiverged, "common base is %s; the receiver has %s and the sender has %s after it",
					describe(b), listVersions(newer), listVersions(snaps))
			}
			return conflict(ConflictReceiverAhead, "common base is %s and the sender has no newer snapshot; the receiver has %s after it",
				describe(b), listVersions(newer))
		}
		if k := skipStep(r, s.Info.Path, b, snaps, raw); k > 0 {
			// The receiver holds partial state of base -> snaps[k], a
			// step that skips snapshots (made by an earlier version of
			// this planner, or by zrepl with a policy that skips).
			// Resume it rather than discard what it received, then go
			// on one snapshot at a time, as zrepl does.
			snaps = snaps[k:]
		}
		// A side that lists no encryption properties (a zrepl peer: the
		// listing extension is off) is not judged here: a zrepl sender
		// decides raw or plain alone, and a zrepl receiver's encryption
		// is unknown; ZFS judges the receive.
		if len(snaps) > 0 && s.Info.EncryptionKnown() && r.Info.EncryptionKnown() {
			// Raw streams go into encrypted filesystems only. A plain
			// stream into an encrypted filesystem is encrypted with the
			// receiver's key, which must be loaded.
			if raw && !receiverEncrypted {
				return conflict(ConflictEncryptionMismatch, "the stream would be raw (encrypted) and the receiver's filesystem is not encrypted; ZFS refuses a raw receive on top of a non-raw one (next: %s)", describe(snaps[0]))
			}
			if !raw && receiverEncrypted && r.Info.KeyStatus == zfs.KeyStatusUnavailable {
				return conflict(ConflictEncryptionMismatch, "the stream would be plain and the receiver's filesystem is encrypted with its key not loaded (next: %s)", describe(snaps[0]))
			}
		}
	}

	if len(snaps) > 0 && errors.Is(refused, zfs.ErrKeyNotLoaded) {
		return conflict(ConflictKeyUnavailable, "sending %s: %s", describe(snaps[0]), why.Why)
	}

	// Where the receive would be encrypted: into the receiver's
	// filesystem, or, when a full receive creates or replaces it, by
	// inheritance from the parent.
	encryptedTarget := receiverEncrypted || base == nil && parentEncrypted
	if len(snaps) > 0 && encryptedTarget && flags.EmbedsData(s.Info) {
		key := "send.embedded_data"
		if !flags.EmbeddedData {
			key = "send.raw (zfs send -w of an unencrypted filesystem embeds data as -e does)"
		}
		return conflict(ConflictEncryptionMismatch, "the receive of %s would be encrypted, and ZFS does not receive the embedded-data records of %s into an encrypted filesystem (man zfs-send, -e)",
			describe(snaps[0]), key)
	}
	p.Base = base
	p.Steps = buildSteps(base, snaps, flags)
	if len(p.Steps) > 0 && r != nil && r.Info.Placeholder && len(rsnaps) == 0 {
		p.Steps[0].ReplacePlaceholder = true
	}
	switch {
	case len(p.Steps) > 0:
		p.Status = StatusReplicate
	case base != nil:
		p.Status = StatusUpToDate
	default:
		p.Status = StatusNoSnapshots
	}

	if r != nil && r.Info.ReceiveResumeToken != "" {
		tok := r.Info.ReceiveResumeToken
		var first *Step
		if len(p.Steps) > 0 {
			first = &p.Steps[0]
		}
		t, why := matchToken(tok, s.Info.Path, first, raw)
		switch {
		case why == "":
			first.ResumeToken = tok
			first.Flags = zfs.SendFlags{Raw: t.RawOK, Compressed: t.CompressOK, LargeBlocks: t.LargeBlockOK, EmbeddedData: t.EmbedOK}
		case pol.AbortForeignPartialReceive:
			p.Actions = append(p.Actions, Action{Kind: ActionAbortPartialReceive, Reason: why})
		case strings.HasPrefix(t.ToName, s.Info.Path.String()+"@") && !slices.ContainsFunc(hist, func(v zfs.FilesystemVersion) bool { return v.Kind == zfs.Snapshot && v.GUID == t.ToGUID }):
			// The snapshot it receives is gone from the sender (possible
			// where the job's protection does not hold step targets):
			// nothing can ever resume it.
			p.Actions = append(p.Actions, Action{Kind: ActionAbortPartialReceive,
				Reason: why + "; its snapshot is no longer on the sender, so it can never resume"})
		case t.FromGUID != 0 && !slices.ContainsFunc(rsnaps, func(v zfs.FilesystemVersion) bool { return v.GUID == t.FromGUID }):
			// An incremental receive resumes only on top of its source;
			// with the source gone from the receiver the state can
			// never complete, so discarding it loses nothing.
			p.Actions = append(p.Actions, Action{Kind: ActionAbortPartialReceive,
				Reason: why + "; its incremental source is not on the receiver, so it can never resume"})
		default:
			return conflict(ConflictForeignPartialReceive, "%s", why)
		}
	}
	return p
}

// interruptedFull returns the index in all (the sender's snapshots) of the
// snapshot whose full receive the receiver's resume token continues, or -1
// if the token is absent, does not decode, or encodes anything but a plain
// full send of one of them on fs with the planned raw flag.
func interruptedFull(r *Filesystem, fs zfs.DatasetPath, all []zfs.FilesystemVersion, raw bool) int {
	return tokenTarget(r, fs, 0, all, raw)
}

// skipStep returns the index in snaps (the sender's snapshots after base)
// of the snapshot an incremental partial receive from base continues, or
// -1 if the receiver's token is absent, does not decode, or encodes
// anything else on fs with the planned raw flag.
func skipStep(r *Filesystem, fs zfs.DatasetPath, base zfs.FilesystemVersion, snaps []zfs.FilesystemVersion, raw bool) int {
	return tokenTarget(r, fs, base.GUID, snaps, raw)
}

// tokenTarget returns the index in snaps of the snapshot the receiver's
// resume token receives on fs, from fromGUID (0: a full send) with the
// given raw flag, or -1 if the token is absent, does not decode or encodes
// anything else.
func tokenTarget(r *Filesystem, fs zfs.DatasetPath, fromGUID uint64, snaps []zfs.FilesystemVersion, raw bool) int {
	if r == nil || r.Info.ReceiveResumeToken == "" {
		return -1
	}
	t, err := resumetoken.Decode(r.Info.ReceiveResumeToken)
	if err != nil {
		return -1
	}
	var from *zfs.FilesystemVersion
	if fromGUID != 0 {
		from = &zfs.FilesystemVersion{Kind: zfs.Snapshot, GUID: fromGUID}
	}
	for i, v := range snaps {
		if v.GUID != 0 && t.Match(resumetoken.Send{FS: fs, To: v, From: from, Raw: &raw}) == nil {
			return i
		}
	}
	return -1
}

// snapshotsAfter returns the snapshots of hist created after txg (all of
// them if !after), oldest first.
func snapshotsAfter(hist []zfs.FilesystemVersion, txg uint64, after bool) []zfs.FilesystemVersion {
	var out []zfs.FilesystemVersion
	for _, v := range hist {
		if v.Kind == zfs.Snapshot && (!after || v.CreateTXG > txg) {
			out = append(out, v)
		}
	}
	return out
}

// commonBase returns the index in hist of the newest sender version whose
// GUID is one of the receiver's snapshots, preferring a snapshot over the
// bookmarks made from it; -1 if there is none.
func commonBase(hist, rsnaps []zfs.FilesystemVersion) int {
	guids := make([]uint64, len(rsnaps))
	for i, v := range rsnaps {
		guids[i] = v.GUID
	}
	slices.Sort(guids)
	for i := len(hist) - 1; i >= 0; i-- {
		if _, ok := slices.BinarySearch(guids, hist[i].GUID); !ok {
			continue
		}
		// A snapshot sorts before the bookmarks of its txg.
		for j := i; j >= 0 && hist[j].CreateTXG == hist[i].CreateTXG; j-- {
			if hist[j].Kind == zfs.Snapshot && hist[j].GUID == hist[i].GUID {
				return j
			}
		}
		return i
	}
	return -1
}

// sameGUIDOtherSnapshot returns the receiver's snapshot with b's GUID if
// it is not the snapshot b is (or was made from): a received snapshot
// keeps the creation time of the one sent, and so does a bookmark, so one
// GUID with two creation times is two snapshots. ZFS's GUIDs are random;
// equal GUIDs of different snapshots come from a state that went back in
// time and drew its GUIDs from a sequence, as the model backend once did.
// Creation times are compared in seconds, as ZFS lists them; a zero one
// (a listing without them) compares equal to anything.
func sameGUIDOtherSnapshot(b zfs.FilesystemVersion, rsnaps []zfs.FilesystemVersion) (zfs.FilesystemVersion, bool) {
	for i := len(rsnaps) - 1; i >= 0; i-- {
		r := rsnaps[i]
		if r.GUID != b.GUID {
			continue
		}
		differ := !b.Creation.IsZero() && !r.Creation.IsZero() && b.Creation.Unix() != r.Creation.Unix()
		return r, differ
	}
	return zfs.FilesystemVersion{}, false
}

// receiverNewerThan returns the receiver's snapshots after its newest
// snapshot with the given GUID.
func receiverNewerThan(rsnaps []zfs.FilesystemVersion, guid uint64) []zfs.FilesystemVersion {
	for i := len(rsnaps) - 1; i >= 0; i-- {
		if rsnaps[i].GUID == guid {
			return rsnaps[i+1:]
		}
	}
	return nil
}

func newest(hist []zfs.FilesystemVersion) *zfs.FilesystemVersion {
	if len(hist) == 0 {
		return nil
	}
	return &hist[len(hist)-1]
}

// listVersions names up to a few versions; a conflict message must stay
// readable when a side has thousands.
func listVersions(vs []zfs.FilesystemVersion) string {
	const max = 3
	var b strings.Builder
	for i, v := range vs {
		if i == max {
			fmt.Fprintf(&b, " and %d more", len(vs)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(describe(v))
	}
	return b.String()
}

// buildSteps chains one step per snapshot: base -> snaps[0] (full if base
// is nil), snaps[0] -> snaps[1], and so on, each sent with flags.
func buildSteps(base *zfs.FilesystemVersion, snaps []zfs.FilesystemVersion, flags zfs.SendFlags) []Step {
	if len(snaps) == 0 {
		return nil
	}
	froms := make([]zfs.FilesystemVersion, len(snaps))
	steps := make([]Step, len(snaps))
	for i, to := range snaps {
		var from *zfs.FilesystemVersion
		switch {
		case i > 0:
			froms[i] = snaps[i-1]
			from = &froms[i]
		case base != nil:
			froms[i] = *base
			from = &froms[i]
		}
		steps[i] = Step{From: from, To: to, Flags: flags}
	}
	return steps
}
