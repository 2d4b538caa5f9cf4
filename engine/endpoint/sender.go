package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"zrepl.dev/zrepl/engine/internal/plantedbugs"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// Filesystem is one filesystem as an endpoint lists it. Path is the
// sender-side name; the receiver maps it below its root.
type Filesystem struct {
	Path     string
	Info     zfs.FilesystemInfo
	Versions []zfs.FilesystemVersion
	// Send is the sending job's policy for the filesystem (set by a
	// sender's listing only): the active side plans by it, the sender
	// applies it.
	Send zfs.SendPolicy
	// Marks are the sender's own job's bookmarks among Versions. Only
	// the sender knows which job it is, so it reads them off for the
	// driver; a receiver's listing leaves them empty.
	Marks JobMarks
}

// JobMarks are a job's bookmarks on one sender filesystem: what the driver
// needs to tell whether an up-to-date filesystem still carries leftovers of
// a step whose bookkeeping did not finish.
type JobMarks struct {
	// Cursors are the GUIDs of the job's replication cursors (v2). A
	// completed run leaves exactly one.
	Cursors []uint64
	// StepBookmarks: the job has step bookmarks on the filesystem.
	StepBookmarks bool
}

func jobMarks(versions []zfs.FilesystemVersion, job JobID) JobMarks {
	var m JobMarks
	for _, v := range versions {
		if v.Kind != zfs.Bookmark {
			continue
		}
		p, ok := ParseBookmarkName(v.Name)
		if !ok || p.Job != job {
			continue
		}
		switch p.Kind {
		case ReplicationCursorV2:
			m.Cursors = append(m.Cursors, v.GUID)
		case StepBookmark:
			m.StepBookmarks = true
		}
	}
	return m
}

// ErrNotAllowed is returned for a request that names a filesystem or
// version outside what the endpoint serves.
var ErrNotAllowed = errors.New("not allowed")

// SendRequest asks for one step. It carries no send flags: the sender's
// own job decides them (Sender.Policy), as in zrepl.
type SendRequest struct {
	FS          string
	From        *zfs.FilesystemVersion
	To          zfs.FilesystemVersion
	ResumeToken string

	// Protection is what the sender keeps while the step is open; the
	// active side of the job chooses it (replication.protection).
	Protection Protection
}

// Protection is how much a sender protects an open step from snapshots
// being destroyed underneath it (by a pruner or by hand).
type Protection uint8

const (
	// GuaranteeResumability: step holds on the step's target and on a
	// snapshot source, a step bookmark of a bookmark source. An
	// interrupted step always resumes; the next incremental is always
	// possible. The default.
	GuaranteeResumability Protection = iota
	// GuaranteeIncremental: a step bookmark of the source only. The
	// target may be destroyed while the step is open; its partial receive
	// is then discarded and replication goes on from the source.
	GuaranteeIncremental
	// GuaranteeNothing: no step holds or bookmarks. The cursor still
	// records what was replicated (the pruner's not_replicated rule
	// reads it), and the receiver still holds what it last received.
	GuaranteeNothing
)

func (p Protection) String() string {
	switch p {
	case GuaranteeResumability:
		return "guarantee_resumability"
	case GuaranteeIncremental:
		return "guarantee_incremental"
	case GuaranteeNothing:
		return "guarantee_nothing"
	}
	return fmt.Sprintf("Protection(%d)", uint8(p))
}

// ParseProtection parses the config spelling of a protection.
func ParseProtection(s string) (Protection, error) {
	for _, p := range []Protection{GuaranteeResumability, GuaranteeIncremental, GuaranteeNothing} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown protection %q (want guarantee_resumability, guarantee_incremental or guarantee_nothing)", s)
}

// Sender is the sending side of a job. A source serves one Sender to all
// its clients, which may be buggy or hostile: every version a client names
// is checked against the filesystem before anything is done with it, and
// one client's call never lowers the protection of another's step in
// flight (see openSteps). A Sender must not be copied once used.
type Sender struct {
	ZFS zfs.ZFS
	Job JobID
	// Filter says which filesystems the job sends; nil sends none.
	Filter func(zfs.DatasetPath) bool
	// Roots are the datasets listed; each is filtered.
	Roots []zfs.DatasetPath
	// Policy is the job's send section: the flags of its sends, and
	// whether it sends encrypted filesystems only. It applies to every
	// send the sender makes, whoever asks.
	Policy zfs.SendPolicy

	steps openSteps
	// listed is the last listing's information of each filesystem, for
	// the send policy of the attempt's sends (see listed.go).
	listed sentInfos
}

func (s *Sender) allowed(fs string) (zfs.DatasetPath, error) {
	p, err := zfs.NewDatasetPath(fs)
	if err != nil {
		return zfs.DatasetPath{}, err
	}
	if s.Filter == nil || !s.Filter(p) {
		return zfs.DatasetPath{}, fmt.Errorf("filesystem %s is not sent by job %s: %w", fs, s.Job, ErrNotAllowed)
	}
	return p, nil
}

// ListFilesystems lists the filesystems the job sends with their versions.
func (s *Sender) ListFilesystems(ctx context.Context) ([]Filesystem, error) {
	return s.ListFilesystemsBelow(ctx, s.Roots)
}

// ListFilesystemsBelow is ListFilesystems with other roots (a job whose
// filter takes every pool lists the pools imported now).
func (s *Sender) ListFilesystemsBelow(ctx context.Context, roots []zfs.DatasetPath) ([]Filesystem, error) {
	var out []Filesystem
	seen := map[string]bool{}
	infos := map[zfs.DatasetPath]zfs.FilesystemInfo{}
	versions := map[zfs.DatasetPath]zfs.Listing{}
	before := s.steps.seq.Load()
	for _, root := range roots {
		// One listing per root, whatever the number of filesystems.
		tree, err := s.ZFS.ListTree(ctx, root)
		if err != nil {
			return nil, fmt.Errorf("list filesystems below %s: %w", root, err)
		}
		for _, l := range tree {
			p := l.Info.Path
			if seen[p.String()] || s.Filter == nil || !s.Filter(p) {
				continue
			}
			seen[p.String()] = true
			infos[p] = l.Info
			versions[p] = l
			out = append(out, Filesystem{Path: p.String(), Info: l.Info, Versions: l.Versions, Send: s.Policy, Marks: jobMarks(l.Versions, s.Job)})
		}
	}
	s.listed.set(infos)
	s.remember(before, versions)
	return out, nil
}

// remember makes listed, a listing that started when the sender's change
// counter was at before, what the sender knows of each filesystem's
// versions, except where the sender changed a filesystem meanwhile; of
// filesystems not listed it knows nothing any more.
func (s *Sender) remember(before uint64, listed map[zfs.DatasetPath]zfs.Listing) {
	for fs, e := range s.steps.all() {
		if _, ok := listed[fs]; !ok {
			e.mu.Lock()
			e.known, e.versions = false, nil
			e.listed, e.sizes = nil, nil
			e.mu.Unlock()
		}
	}
	for fs, l := range listed {
		e := s.steps.of(fs)
		e.mu.Lock()
		if e.changed <= before {
			e.known, e.versions = true, l.Versions
		} else {
			e.known, e.versions = false, nil
		}
		// Sizes of snapshots do not change: an estimate may use them
		// whatever happened since.
		e.listed, e.sizes = l.Versions, l.Sizes
		e.mu.Unlock()
	}
}

// checkToken makes sure a resume token encodes exactly the requested step
// with the rawness the policy gives it (resumetoken.Token.Match), so a
// confused or malicious receiver cannot make us send anything else
// (another filesystem or snapshot, or an encrypted filesystem decrypted
// where the job sends it raw, or the other way round). A token that does
// not decode has the kind zfs.ErrResumeTokenCorrupt, one that continues
// another send zfs.ErrResumeTokenMismatch.
func checkToken(fs zfs.DatasetPath, req SendRequest, raw bool) error {
	// Match skips a GUID of 0; a client resuming must name both.
	if err := checkNamed(fs, "resume", req.To); err != nil {
		return err
	}
	if req.From != nil {
		if err := checkNamed(fs, "resume from", *req.From); err != nil {
			return err
		}
	}
	if _, err := resumetoken.Match(req.ResumeToken, resumetoken.Send{FS: fs, To: req.To, From: req.From, Raw: &raw}); err != nil {
		return fmt.Errorf("resume token for %s: %w", fs, err)
	}
	return nil
}

// sendArgs turns req into the arguments of its zfs send under the job's
// policy, refusing (ErrNotAllowed) what the policy does not send and a
// resume token that encodes anything but the requested step.
//
// The filesystem's encryption comes from the last listing where it has
// the filesystem (a send names its versions by GUID, which the send
// checks, and a filesystem's encryption never changes), else from a
// look-up (a zfs process: a client that sends without listing).
func (s *Sender) sendArgs(ctx context.Context, fs zfs.DatasetPath, req SendRequest) (zfs.SendArgs, error) {
	info, ok := s.listed.get(fs)
	if !ok {
		infos, err := s.ZFS.ListFilesystems(ctx, fs)
		if err != nil {
			return zfs.SendArgs{}, fmt.Errorf("look up %s: %w", fs, err)
		}
		if len(infos) == 0 || infos[0].Path != fs {
			return zfs.SendArgs{}, fmt.Errorf("look up %s: not listed: %w", fs, zfs.ErrDatasetNotExist)
		}
		info = infos[0]
	}
	flags, err := s.Policy.For(info)
	if err != nil {
		return zfs.SendArgs{}, fmt.Errorf("job %s: %w: %w", s.Job, ErrNotAllowed, err)
	}
	if req.ResumeToken != "" && !plantedbugs.SkipResumeTokenCheck {
		if err := checkToken(fs, req, flags.RawStream(info)); err != nil {
			return zfs.SendArgs{}, err
		}
	}
	return zfs.SendArgs{FS: fs, From: req.From, To: req.To, ResumeToken: req.ResumeToken, Flags: flags}, nil
}

// checkNamed refuses a version without a GUID: a client names versions
// by name and GUID, and the GUID is what is checked against the
// filesystem (by ZFS for a send, against the listing elsewhere).
func checkNamed(fs zfs.DatasetPath, what string, v zfs.FilesystemVersion) error {
	if v.GUID == 0 {
		return fmt.Errorf("%s %s%s: no GUID given: %w", what, fs, v.RelName(), ErrNotAllowed)
	}
	return nil
}

// Send starts the send stream and protects the step with step holds (or a
// step bookmark where the source is a bookmark). The protection stays
// until the next step of the filesystem completed, so an interrupted step
// can always resume and the incremental source cannot vanish underneath.
//
// ZFS checks the versions against their GUIDs as the send starts, so the
// protection is taken only for the versions the client named; and it is
// taken before the stream is handed out, while the running send keeps the
// snapshots from being destroyed. A Send that fails after it took some
// protection gives it up again, except where another send in flight uses
// it: a refused request leaves nothing behind.
func (s *Sender) Send(ctx context.Context, req SendRequest) (io.ReadCloser, error) {
	fs, err := s.allowed(req.FS)
	if err != nil {
		return nil, err
	}
	if req.To.Kind != zfs.Snapshot {
		return nil, fmt.Errorf("send %s: target %s is not a snapshot: %w", fs, req.To.RelName(), ErrNotAllowed)
	}
	if err := checkNamed(fs, "send", req.To); err != nil {
		return nil, err
	}
	if req.From != nil {
		if err := checkNamed(fs, "send from", *req.From); err != nil {
			return nil, err
		}
	}
	args, err := s.sendArgs(ctx, fs, req)
	if err != nil {
		return nil, err
	}
	switch req.Protection {
	case GuaranteeResumability, GuaranteeIncremental, GuaranteeNothing:
	default:
		return nil, fmt.Errorf("send %s: %w: unknown protection %d", fs, ErrNotAllowed, req.Protection)
	}
	stream, err := s.ZFS.Send(ctx, args)
	if err != nil {
		s.listed.forget(fs)
		return nil, err
	}
	e := s.steps.of(fs)
	uses := s.stepUses(req)
	e.mu.Lock()
	e.add(uses)
	taken, err := s.protect(ctx, e, fs, req)
	if err != nil {
		e.remove(uses)
		err = errors.Join(err, s.giveUp(ctx, e, taken))
		e.mu.Unlock()
		stream.Close()
		return nil, err
	}
	e.mu.Unlock()
	if plantedbugs.CursorInSend {
		_ = bookmarkIdempotent(ctx, s.ZFS, req.To.Ref(fs), req.To.GUID, CursorBookmarkName(req.To.GUID, s.Job))
	}
	if plantedbugs.EarlyStepRelease {
		_ = releaseTagFrom(ctx, s.ZFS, []zfs.VersionRef{req.To.Ref(fs)}, StepHoldTag(s.Job))
	}
	return &stepStream{ReadCloser: stream, done: func() {
		e.mu.Lock()
		e.remove(uses)
		e.mu.Unlock()
	}}, nil
}

// stepUses names (RelName) the versions a send in flight of req uses.
func (s *Sender) stepUses(req SendRequest) []string {
	uses := []string{req.To.RelName()}
	if req.From != nil {
		uses = append(uses, req.From.RelName(), "#"+StepBookmarkName(req.From.GUID, s.Job))
	}
	return uses
}

// taken is protection a Send placed itself (not found in place): what it
// gives up if it fails.
type taken struct {
	holds     []zfs.VersionRef
	bookmarks []zfs.VersionRef
}

// giveUp releases the holds and destroys the bookmarks in t that no send
// in flight uses; the caller holds e.mu.
func (s *Sender) giveUp(ctx context.Context, e *fsSteps, t taken) error {
	var errs []error
	for _, h := range t.holds {
		if !e.inUse(h.Kind.Delimiter() + h.Name) {
			if err := releaseIdempotent(ctx, s.ZFS, h, StepHoldTag(s.Job)); err != nil {
				errs = append(errs, fmt.Errorf("give up step hold on %s: %w", h, err))
			} else {
				delete(e.stepHeld, h.Name)
			}
		}
	}
	var doomed []zfs.VersionRef
	for _, b := range t.bookmarks {
		if !e.inUse("#" + b.Name) {
			doomed = append(doomed, b)
		}
	}
	if err := destroyIdempotent(ctx, s.ZFS, doomed); err != nil {
		errs = append(errs, fmt.Errorf("give up step bookmark: %w", err))
	}
	// Whatever was given up or not, ask zfs next time.
	s.steps.change(e, true)
	return errors.Join(errs...)
}

// protect takes the step protection req.Protection asks for and returns
// what it placed itself, also when it fails part way. Both of a step's
// holds go in one call (one zfs process). The caller holds e.mu; what the
// sender knows of the filesystem's versions follows (see listed.go).
func (s *Sender) protect(ctx context.Context, e *fsSteps, fs zfs.DatasetPath, req SendRequest) (taken, error) {
	var t taken
	holds := func(vs ...zfs.FilesystemVersion) error {
		refs := make([]zfs.VersionRef, len(vs))
		for i, v := range vs {
			refs[i] = v.Ref(fs)
		}
		created, err := holdAllCreated(ctx, s.ZFS, StepHoldTag(s.Job), refs)
		t.holds = append(t.holds, created...)
		s.steps.change(e, false)
		if err != nil {
			return fmt.Errorf("step hold on %s: %w", fs, err)
		}
		// The send started has checked their GUIDs, and they are held
		// (by this call, or were already).
		for _, v := range vs {
			e.stepHeld[v.Name] = v.GUID
		}
		if b := batchOf(ctx); b != nil {
			b.keepHeld(s, fs, refs)
		}
		return nil
	}
	bookmark := func(v zfs.FilesystemVersion, name string, what string) error {
		if v.Name == name {
			return nil
		}
		created, err := bookmarkCreated(ctx, s.ZFS, v.Ref(fs), v.GUID, name)
		if created {
			t.bookmarks = append(t.bookmarks, zfs.BookmarkRef(fs, name))
		}
		if created && v.CreateTXG != 0 {
			s.steps.edit(e, func(vs []zfs.FilesystemVersion) []zfs.FilesystemVersion {
				return append(vs, zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: name, GUID: v.GUID, CreateTXG: v.CreateTXG, Creation: v.Creation})
			})
		} else {
			s.steps.change(e, true)
		}
		if err != nil {
			return fmt.Errorf("%s of %s: %w", what, v.Ref(fs), err)
		}
		return nil
	}
	stepBookmark := func(v zfs.FilesystemVersion) error {
		return bookmark(v, StepBookmarkName(v.GUID, s.Job), "step bookmark")
	}
	tentative := func(v zfs.FilesystemVersion) error {
		return bookmark(v, TentativeCursorBookmarkName(v.GUID, s.Job), "tentative cursor")
	}
	switch req.Protection {
	case GuaranteeResumability:
		if req.From == nil {
			return t, holds(req.To)
		}
		if req.From.Kind == zfs.Bookmark {
			if err := holds(req.To); err != nil {
				return t, err
			}
			return t, stepBookmark(*req.From)
		}
		return t, holds(req.To, *req.From)
	case GuaranteeIncremental:
		// zrepl's tentative cursors, on From and To: once the receiver
		// has To, it stays a common version whatever happens to the
		// confirmation (the real cursor) and the snapshot.
		if req.From != nil {
			if err := tentative(*req.From); err != nil {
				return t, err
			}
		}
		return t, tentative(req.To)
	case GuaranteeNothing:
		return t, nil
	}
	return t, fmt.Errorf("send %s: %w: unknown protection %d", fs, ErrNotAllowed, req.Protection)
}

// SendSize estimates the bytes a Send of req would produce: from the last
// listing's sizes where it has them (zfs.EstimateSendSize), else by a
// dry-run send.
func (s *Sender) SendSize(ctx context.Context, req SendRequest) (int64, error) {
	fs, err := s.allowed(req.FS)
	if err != nil {
		return 0, err
	}
	args, err := s.sendArgs(ctx, fs, req)
	if err != nil {
		return 0, err
	}
	// The listing's sizes answer without a dry-run send (a zfs process);
	// a resumed send's rest only the dry run knows.
	if req.ResumeToken == "" {
		e := s.steps.of(fs)
		e.mu.Lock()
		n, ok := zfs.EstimateSendSize(e.listed, e.sizes, req.From, req.To, args.Flags.Compressed || args.Flags.Raw)
		e.mu.Unlock()
		if ok {
			return n, nil
		}
	}
	n, err := s.ZFS.SendSize(ctx, args)
	if err != nil {
		s.listed.forget(fs)
	}
	return n, err
}

// StepCompleted is called once the receiver confirmed req.To. It moves the
// job's replication cursor to req.To (create the new bookmark, then destroy
// the others: there is never an instant without a cursor) and releases the
// protection of older steps. With last, the filesystem is replicated and
// all of the job's step protection goes: the cursor alone keeps the next
// incremental possible. The protection of sends in flight stays
// (openSteps): on a source, another client's step may be running.
//
// req.To may be a bookmark: the driver confirms an up-to-date filesystem
// whose common base is one (the snapshot was destroyed since). It must be
// on the filesystem as the client names it: by name, with its GUID, and
// with its createtxg where the client gives one. A client could otherwise
// label a cursor with a GUID of its choice, or make every hold look older
// than its step.
//
// A cursor newer than req.To goes too: it outlived a rollback on the
// receiver, and left in place it would tell the pruner that snapshots the
// receiver lost are replicated.
//
// Called with a ctx that carries a Batch (WithBatch), it puts the release
// of the step holds off to the batch's Finish; the cursor moves, and
// obsolete bookmarks go, at once.
func (s *Sender) StepCompleted(ctx context.Context, req SendRequest, last bool) error {
	fs, err := s.allowed(req.FS)
	if err != nil {
		return err
	}
	if err := checkNamed(fs, "completed step", req.To); err != nil {
		return err
	}
	e := s.steps.of(fs)
	e.mu.Lock()
	defer e.mu.Unlock()
	versions, err := s.versionsFor(ctx, e, fs, req.To)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(versions, func(v zfs.FilesystemVersion) bool { return v.Kind == req.To.Kind && v.Name == req.To.Name })
	// Kinds of zfs errors, not ErrNotAllowed: a version destroyed or
	// re-created since the listing is a race the next attempt's plan
	// resolves; a forged one is refused all the same.
	if i < 0 {
		return fmt.Errorf("completed step: %s%s does not exist: %w", fs, req.To.RelName(), zfs.ErrDatasetNotExist)
	}
	to := versions[i]
	if to.GUID != req.To.GUID || req.To.CreateTXG != 0 && to.CreateTXG != req.To.CreateTXG {
		return fmt.Errorf("completed step: %s%s has GUID %016x and createtxg %d, the client named GUID %016x and createtxg %d: %w",
			fs, to.RelName(), to.GUID, to.CreateTXG, req.To.GUID, req.To.CreateTXG, zfs.ErrVersionMismatch)
	}
	cursor := CursorBookmarkName(to.GUID, s.Job)
	if err := bookmarkIdempotent(ctx, s.ZFS, to.Ref(fs), to.GUID, cursor); err != nil {
		s.steps.change(e, true)
		return fmt.Errorf("move replication cursor of %s: %w", fs, err)
	}
	if !slices.ContainsFunc(versions, func(v zfs.FilesystemVersion) bool { return v.Kind == zfs.Bookmark && v.Name == cursor }) {
		s.steps.edit(e, func(vs []zfs.FilesystemVersion) []zfs.FilesystemVersion {
			return append(vs, zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: cursor, GUID: to.GUID, CreateTXG: to.CreateTXG, Creation: to.Creation})
		})
	}
	var obsolete []zfs.VersionRef
	var release []zfs.VersionRef
	for _, v := range versions {
		if e.inUse(v.RelName()) {
			continue
		}
		older := v.CreateTXG < to.CreateTXG
		switch v.Kind {
		case zfs.Bookmark:
			p, ok := ParseBookmarkName(v.Name)
			if !ok || p.Job != s.Job {
				continue
			}
			if p.Kind == ReplicationCursorV2 && v.Name != cursor {
				obsolete = append(obsolete, v.Ref(fs))
			}
			if (p.Kind == StepBookmark || p.Kind == TentativeCursor) && (older || last) {
				obsolete = append(obsolete, v.Ref(fs))
			}
		case zfs.Snapshot:
			_, ours := e.stepHeld[v.Name]
			if (v.UserRefs > 0 || ours) && (older || last) {
				release = append(release, v.Ref(fs))
			}
		}
	}
	if b := batchOf(ctx); len(release) > 0 && b != nil && b.releaseLater(s, fs, release) {
		release = nil
	}
	if err := releaseTagFrom(ctx, s.ZFS, release, StepHoldTag(s.Job)); err != nil {
		s.steps.change(e, true)
		return err
	}
	released := map[string]bool{}
	for _, r := range release {
		delete(e.stepHeld, r.Name)
		released[r.Name] = true
	}
	if err := destroyIdempotent(ctx, s.ZFS, obsolete); err != nil {
		s.steps.change(e, true)
		return err
	}
	gone := map[string]bool{}
	for _, o := range obsolete {
		gone[o.Name] = true
	}
	s.steps.edit(e, func(vs []zfs.FilesystemVersion) []zfs.FilesystemVersion {
		vs = slices.DeleteFunc(vs, func(v zfs.FilesystemVersion) bool { return v.Kind == zfs.Bookmark && gone[v.Name] })
		for i := range vs {
			if vs[i].Kind == zfs.Snapshot && released[vs[i].Name] {
				// No step hold of this job any more; other holds
				// are not this sender's business.
				vs[i].UserRefs = 0
			}
		}
		return vs
	})
	return nil
}

// versionsFor returns the versions of fs to complete a step to to: those
// the sender knows (its last listing, kept current by its own changes)
// where it holds to with its step hold since its send checked to's GUID,
// so to cannot have been destroyed and re-created since; else a fresh
// listing, which it then knows. The caller holds e.mu.
func (s *Sender) versionsFor(ctx context.Context, e *fsSteps, fs zfs.DatasetPath, to zfs.FilesystemVersion) ([]zfs.FilesystemVersion, error) {
	if e.known && to.Kind == zfs.Snapshot && e.stepHeld[to.Name] == to.GUID &&
		slices.ContainsFunc(e.versions, func(v zfs.FilesystemVersion) bool {
			return v.Kind == zfs.Snapshot && v.Name == to.Name && v.GUID == to.GUID
		}) {
		return e.versions, nil
	}
	versions, err := s.ZFS.ListVersions(ctx, fs)
	if err != nil {
		s.steps.change(e, true)
		return nil, fmt.Errorf("list versions of %s: %w", fs, err)
	}
	s.steps.change(e, false)
	e.known, e.versions = true, versions
	return versions, nil
}

// releaseTagFrom releases tag from those of snaps that carry it, in one
// call (one zfs process): a snapshot without the tag, or gone, is what was
// wanted. The caller passes snapshots with user holds only (UserRefs).
func releaseTagFrom(ctx context.Context, z zfs.ZFS, snaps []zfs.VersionRef, tag string) error {
	if len(snaps) == 0 {
		return nil
	}
	err := z.ReleaseAll(ctx, tag, snaps)
	if err != nil {
		err = dropKinds(err, zfs.ErrHoldTagNotFound, zfs.ErrDatasetNotExist)
	}
	if err != nil {
		return fmt.Errorf("release %s on %s: %w", tag, snaps[0].FS, err)
	}
	return nil
}

// ListVersions lists the versions of one filesystem the job sends (a zrepl
// client asks per filesystem).
func (s *Sender) ListVersions(ctx context.Context, fs string) ([]zfs.FilesystemVersion, error) {
	p, err := s.allowed(fs)
	if err != nil {
		return nil, err
	}
	return s.ZFS.ListVersions(ctx, p)
}

// ReplicationCursor returns the job's newest replication cursor on fs (v2
// of this job, or the v1 cursor every job shared), nil if there is none:
// what zrepl's pruner asks a source before pruning it.
func (s *Sender) ReplicationCursor(ctx context.Context, fs string) (*zfs.FilesystemVersion, error) {
	versions, err := s.ListVersions(ctx, fs)
	if err != nil {
		return nil, err
	}
	var newest *zfs.FilesystemVersion
	for i, v := range versions {
		if v.Kind != zfs.Bookmark {
			continue
		}
		n, ok := ParseBookmarkName(v.Name)
		if !ok || !(n.Kind == ReplicationCursorV2 && n.Job == s.Job || n.Kind == ReplicationCursorV1) {
			continue
		}
		if newest == nil || v.CreateTXG > newest.CreateTXG {
			newest = &versions[i]
		}
	}
	return newest, nil
}
