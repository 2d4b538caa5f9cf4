package job

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/pruner"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
)

// Snapshotter takes an active job's periodic snapshots.
type Snapshotter interface {
	SnapshotNow(ctx context.Context, now time.Time) ([]zfs.VersionRef, error)
	NextDue(ctx context.Context, now time.Time) (time.Time, error)
}

// SnapshotReporter is a Snapshotter that tells per filesystem what one
// snapshot did: the snapshot's state and the results of the hooks run
// around it. A job's status shows that report where its Snapshotter is
// one; otherwise it lists the snapshots SnapshotNow created.
type SnapshotReporter interface {
	// SnapshotNowReport snapshots as SnapshotNow does; the error is
	// what SnapshotNow would return.
	SnapshotNowReport(ctx context.Context, now time.Time) ([]SnapshotFSStatus, error)
}

// PruneTarget is one side a job prunes: the pruner's Target (its listing
// and the side's endpoint.Pruner).
type PruneTarget = pruner.Target

// PruneFunc applies one side's keep rules to target and reports per
// filesystem what it did. replicatedTXG tells,
// per filesystem, up to which createtxg the job has replicated (for the
// not_replicated rule). It returns how many snapshots it destroyed.
type PruneFunc func(ctx context.Context, target PruneTarget, now time.Time, replicatedTXG func(fs string) (uint64, bool)) ([]PruneFSStatus, error)

// Sides are the two ends of one replication, as a connection gives them.
type Sides struct {
	Sender   replication.Sender
	Receiver replication.Receiver
	// SenderPrune and ReceiverPrune are nil where that side cannot be
	// pruned from here.
	SenderPrune, ReceiverPrune PruneTarget
	// SenderJob owns the replication cursors on the sender: the job
	// itself (push), or the source job it pulls from; zero means the job.
	SenderJob endpoint.JobID
	// Close releases the connection (may be nil).
	Close func() error
}

// Config describes an active job (push, pull, snap) or the snapshotting
// part of a source.
type Config struct {
	Name string
	ID   endpoint.JobID
	Type string
	Log  *slog.Logger

	// Snapshotter is nil for jobs that do not snapshot (pull).
	Snapshotter Snapshotter
	// Interval: a pull job's replication period; 0 with Snapshotter nil
	// means replicate only on wakeup.
	Interval time.Duration

	// Connect gives the sides of a replication; nil for jobs that do not
	// replicate (snap, source).
	Connect func(ctx context.Context) (Sides, error)
	Policy  planner.Policy
	// Protection is replication.protection: what the sender keeps while
	// a full or an incremental step is open (zero: resumability).
	Protection replication.Protection
	// Concurrency of steps (default 1).
	Concurrency int
	// SizeEstimates is how many size estimates run at once
	// (replication.concurrency.size_estimates; default 4).
	SizeEstimates int

	// PruneSender and PruneReceiver apply keep_sender/keep_receiver; a
	// snap job's keep rules are PruneLocal on LocalTarget.
	PruneSender, PruneReceiver PruneFunc
	PruneLocal                 PruneFunc
	LocalTarget                PruneTarget

	// AfterRun runs after every run of the job (persisting model state).
	AfterRun func()
	// Observer learns of finished runs (metrics); may be nil.
	Observer Observer
}

// Observer is told what runs did (the daemon's metrics).
type Observer interface {
	RunDone(job string, took time.Duration, err error)
	// ReplicationDone: a replication ended at end after took, with st
	// its final status and err its error.
	ReplicationDone(job string, took time.Duration, st *ReplicationStatus, err error, end time.Time)
	// Pruned: one side's pruning destroyed n snapshots in took.
	Pruned(job, side string, n int, took time.Duration)
	Snapshotted(job string, n int)
}

// Active is a running active job. Its runs are serialized: one goroutine
// snapshots, replicates and prunes in turn.
type Active struct {
	cfg    Config
	wakeup chan struct{}

	mu          sync.Mutex
	status      Status
	run         *replication.Run
	repStart    time.Time // of run
	cancelRun   context.CancelFunc
	concurrency int
}

// NewActive prepares a job; Run runs it.
func NewActive(cfg Config) (*Active, error) {
	if cfg.Name == "" {
		return nil, errors.New("job: no name")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	if cfg.Snapshotter == nil && cfg.Connect == nil {
		return nil, fmt.Errorf("job %s: neither snapshots nor replicates", cfg.Name)
	}
	return &Active{
		cfg: cfg, wakeup: make(chan struct{}, 1), concurrency: cfg.Concurrency,
		status: Status{Name: cfg.Name, Type: cfg.Type, State: StateIdle, Concurrency: cfg.Concurrency},
	}, nil
}

// Name is the job's name.
func (j *Active) Name() string { return j.cfg.Name }

// Wakeup starts a replication (and pruning) now, without a snapshot; for
// a snap job it snapshots and prunes now.
func (j *Active) Wakeup() {
	select {
	case j.wakeup <- struct{}{}:
	default:
	}
}

// Reset cancels the running replication, if any; the engine leaves state
// the next run resumes from. It reports whether there was one.
func (j *Active) Reset() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cancelRun == nil {
		return false
	}
	j.cancelRun()
	return true
}

// SetConcurrency changes the step concurrency of the running replication
// and of later ones.
func (j *Active) SetConcurrency(n int) error {
	if n < 1 {
		return fmt.Errorf("job %s: concurrency must be at least 1, not %d", j.cfg.Name, n)
	}
	if j.cfg.Connect == nil {
		return fmt.Errorf("job %s: a %s job does not replicate", j.cfg.Name, j.cfg.Type)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.concurrency = n
	j.status.Concurrency = n
	if j.run != nil {
		return j.run.SetConcurrency(n)
	}
	return nil
}

// Replicating reports whether a replication runs right now.
func (j *Active) Replicating() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.run != nil
}

// Run runs the job until ctx ends.
func (j *Active) Run(ctx context.Context) error {
	// A replicating job whose snapshot is not due yet replicates at
	// once: a run cut off by the last shutdown resumes now, not a
	// period later.
	if j.cfg.Connect != nil && j.cfg.Snapshotter != nil {
		if next, _, err := j.next(ctx); err == nil && next.After(time.Now()) {
			j.once(ctx, false)
		}
	}
	for {
		next, snapshot, err := j.next(ctx)
		if err != nil {
			j.cfg.Log.Error("cannot compute the next run; retrying in a minute", "job", j.cfg.Name, "err", err)
			next, snapshot = time.Now().Add(time.Minute), false
		}
		j.idleUntil(next)
		var timer <-chan time.Time
		if !next.IsZero() {
			timer = time.After(max(next.Sub(time.Now()), 0))
		}
		select {
		case <-ctx.Done():
			j.setState(StateStopped)
			return nil
		case <-timer:
		case <-j.wakeup:
			snapshot = j.cfg.Connect == nil // a snap job's wakeup snapshots
		}
		j.once(ctx, snapshot)
	}
}

// next is when the job runs next and whether that run snapshots.
func (j *Active) next(ctx context.Context) (time.Time, bool, error) {
	now := time.Now()
	if j.cfg.Snapshotter != nil {
		t, err := j.cfg.Snapshotter.NextDue(ctx, now)
		return t, true, err
	}
	if j.cfg.Interval <= 0 {
		return time.Time{}, false, nil // manual: wakeups only
	}
	j.mu.Lock()
	last := j.status.LastRunStart
	j.mu.Unlock()
	if last.IsZero() {
		return now, false, nil
	}
	return last.Add(j.cfg.Interval), false, nil
}

// once is one run: snapshot (if due), replicate, prune.
func (j *Active) once(ctx context.Context, snapshot bool) {
	start := time.Now()
	j.mu.Lock()
	j.status.LastRunStart = start
	j.status.Runs++
	j.status.LastError = ""
	j.status.Replication = nil
	j.mu.Unlock()
	log := j.cfg.Log.With("job", j.cfg.Name)
	var errs []error
	fail := func(what string, err error) {
		log.Error(what+" failed", "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
	}

	if snapshot && j.cfg.Snapshotter != nil {
		j.setState(StateSnapshotting)
		snapStart := time.Now()
		j.mu.Lock()
		j.status.Snapshotting = &SnapshottingStatus{Start: snapStart}
		j.mu.Unlock()
		report, err := j.snapshot(ctx, snapStart)
		var names []string
		for _, f := range report {
			if f.State == SnapDone {
				names = append(names, f.FS+"@"+f.Snapshot)
			}
		}
		if len(names) > 0 {
			log.Info("snapshots taken", "count", len(names), "snapshots", names)
		}
		if j.cfg.Observer != nil {
			j.cfg.Observer.Snapshotted(j.cfg.Name, len(names))
		}
		j.mu.Lock()
		j.status.LastSnapshots = names
		st := &SnapshottingStatus{Start: snapStart, End: time.Now(), Filesystems: report}
		if err != nil && !slices.ContainsFunc(report, func(f SnapshotFSStatus) bool { return f.Error != "" }) {
			st.Error = err.Error()
		}
		j.status.Snapshotting = st
		j.mu.Unlock()
		if err != nil {
			fail("snapshot", err)
		}
	}

	if j.cfg.Connect != nil && ctx.Err() == nil {
		errs = append(errs, j.replicateAndPrune(ctx, log)...)
	}
	if j.cfg.PruneLocal != nil && j.cfg.LocalTarget != nil && ctx.Err() == nil {
		j.setState(StatePruning)
		err := j.prune(ctx, "local", j.cfg.PruneLocal, j.cfg.LocalTarget, func(string) (uint64, bool) { return math.MaxUint64, true }, log)
		if err != nil {
			fail("prune", err)
		}
	}

	err := errors.Join(errs...)
	end := time.Now()
	j.mu.Lock()
	j.status.LastRunEnd = end
	if err != nil {
		j.status.LastError = err.Error()
	}
	j.mu.Unlock()
	// The job turns idle only with its next run known (Run's loop, idleUntil):
	// idle beside the past run's time read as "next run due".
	if j.cfg.Observer != nil {
		j.cfg.Observer.RunDone(j.cfg.Name, end.Sub(start), err)
	}
	if j.cfg.AfterRun != nil {
		j.cfg.AfterRun()
	}
}

// snapshot takes one snapshot, reporting per filesystem.
func (j *Active) snapshot(ctx context.Context, now time.Time) ([]SnapshotFSStatus, error) {
	if r, ok := j.cfg.Snapshotter.(SnapshotReporter); ok {
		return r.SnapshotNowReport(ctx, now)
	}
	refs, err := j.cfg.Snapshotter.SnapshotNow(ctx, now)
	report := make([]SnapshotFSStatus, len(refs))
	for i, r := range refs {
		report[i] = SnapshotFSStatus{FS: r.FS.String(), Snapshot: r.Name, State: SnapDone}
	}
	return report, err
}

// prune runs one side's pruning, keeping its status and counts.
func (j *Active) prune(ctx context.Context, side string, f PruneFunc, t PruneTarget, replicatedTXG func(fs string) (uint64, bool), log *slog.Logger) error {
	start := time.Now()
	st := &PruningStatus{Start: start}
	j.mu.Lock()
	if j.status.Pruning == nil {
		j.status.Pruning = map[string]*PruningStatus{}
	}
	j.status.Pruning[side] = st
	j.mu.Unlock()
	fss, err := f(ctx, t, start, replicatedTXG)
	n := 0
	for _, fs := range fss {
		n += fs.Destroyed
	}
	if n > 0 {
		log.Info("pruned snapshots", "side", side, "destroyed", n)
	}
	end := time.Now()
	if j.cfg.Observer != nil {
		j.cfg.Observer.Pruned(j.cfg.Name, side, n, end.Sub(start))
	}
	done := &PruningStatus{Start: start, End: end, Filesystems: fss}
	if err != nil {
		done.Error = err.Error()
	}
	j.mu.Lock()
	if j.status.Pruned == nil {
		j.status.Pruned = map[string]int{}
	}
	j.status.Pruned[side] += n
	j.status.Pruning[side] = done
	j.mu.Unlock()
	return err
}

func (j *Active) replicateAndPrune(ctx context.Context, log *slog.Logger) []error {
	var errs []error
	fail := func(what string, err error) {
		log.Error(what+" failed", "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
	}
	sides, err := j.cfg.Connect(ctx)
	if err != nil {
		fail("connect", err)
		return errs
	}
	if sides.Close != nil {
		defer sides.Close()
	}

	j.setState(StateReplicating)
	runCtx, cancel := context.WithCancel(ctx)
	j.mu.Lock()
	run := replication.NewRun(sides.Sender, sides.Receiver, replication.Config{
		Policy: j.cfg.Policy, Protection: j.cfg.Protection, Concurrency: j.concurrency, SizeEstimates: j.cfg.SizeEstimates, Now: time.Now,
	})
	repStart := time.Now()
	j.run, j.cancelRun, j.repStart = run, cancel, repStart
	j.mu.Unlock()
	log.Info("replication started")
	rep := run.Do(runCtx)
	prog := run.Progress()
	cancel()
	end := time.Now()
	final := replicationStatus(prog, &rep)
	final.Start, final.End = repStart, end
	j.mu.Lock()
	j.run, j.cancelRun = nil, nil
	j.status.Replication = final
	j.mu.Unlock()
	if j.cfg.Observer != nil {
		j.cfg.Observer.ReplicationDone(j.cfg.Name, end.Sub(repStart), final, rep.Err(), end)
	}
	if err := rep.Err(); err != nil {
		fail("replication", err)
	} else {
		log.Info("replication done", "filesystems", len(rep.Filesystems), "bytes", prog.Done, "attempts", rep.Attempts)
	}
	if ctx.Err() != nil {
		return errs
	}

	if j.cfg.PruneSender != nil && sides.SenderPrune != nil {
		j.setState(StatePruningSender)
		owner := sides.SenderJob
		if owner == (endpoint.JobID{}) {
			owner = j.cfg.ID
		}
		txgs, err := cursorTXGs(ctx, sides.SenderPrune, owner)
		if err != nil {
			fail("prune sender", err)
		} else {
			err := j.prune(ctx, "sender", j.cfg.PruneSender, sides.SenderPrune, func(fs string) (uint64, bool) {
				t, ok := txgs[fs]
				return t, ok
			}, log)
			if err != nil {
				fail("prune sender", err)
			}
		}
	}
	if j.cfg.PruneReceiver != nil && sides.ReceiverPrune != nil && ctx.Err() == nil {
		j.setState(StatePruningReceiver)
		// Whatever the receiver has was replicated.
		err := j.prune(ctx, "receiver", j.cfg.PruneReceiver, sides.ReceiverPrune, func(string) (uint64, bool) { return math.MaxUint64, true }, log)
		if err != nil {
			fail("prune receiver", err)
		}
	}
	return errs
}

// cursorTXGs maps each of the sender's filesystems to the createtxg of the
// job's replication cursor: snapshots up to it are replicated. The cursor
// is the one the listing marks as the sender job's (a remote source marks
// its own, which carries the source's name), else the bookmark named after
// job.
//
// A zrepl source's listing marks no cursors (and names them after its own
// job): a target that can be asked (CursorAsker) is asked for each
// filesystem without a cursor found so, as zrepl's pruner asks.
func cursorTXGs(ctx context.Context, t PruneTarget, job endpoint.JobID) (map[string]uint64, error) {
	fss, err := t.ListFilesystems(ctx)
	if err != nil {
		return nil, err
	}
	asker, _ := t.(CursorAsker)
	out := map[string]uint64{}
	for _, fs := range fss {
		for _, v := range fs.Versions {
			if v.Kind != zfs.Bookmark {
				continue
			}
			p, ok := endpoint.ParseBookmarkName(v.Name)
			if !ok || p.Kind != endpoint.ReplicationCursorV2 {
				continue
			}
			if (p.Job == job || slices.Contains(fs.Marks.Cursors, v.GUID)) && v.CreateTXG >= out[fs.Path] {
				out[fs.Path] = v.CreateTXG
			}
		}
		if _, found := out[fs.Path]; found || asker == nil {
			continue
		}
		guid, ok, err := asker.ReplicationCursor(ctx, fs.Path)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		for _, v := range fs.Versions {
			if v.GUID == guid && v.CreateTXG >= out[fs.Path] {
				out[fs.Path] = v.CreateTXG
			}
		}
	}
	return out, nil
}

// CursorAsker is a sender that tells the GUID of its job's replication
// cursor on a filesystem (ok false: none), as zrepl's ReplicationCursor
// RPC does (rpc.RemoteSender).
type CursorAsker interface {
	ReplicationCursor(ctx context.Context, fs string) (guid uint64, ok bool, err error)
}

func (j *Active) setState(s State) {
	j.mu.Lock()
	j.status.State = s
	j.mu.Unlock()
}

// idleUntil makes the job idle until its next run at t (zero: none planned),
// both at once, so that status never shows one without the other.
func (j *Active) idleUntil(t time.Time) {
	j.mu.Lock()
	j.status.NextRun = t
	j.status.State = StateIdle
	j.mu.Unlock()
}

// Status is a snapshot of the job's state, with the running replication's
// progress.
func (j *Active) Status() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := j.status
	s.LastSnapshots = append([]string(nil), s.LastSnapshots...)
	s.Snapshotting = s.Snapshotting.clone()
	s.Pruned = maps.Clone(s.Pruned)
	// A side's status is replaced, never changed, once done: sharing
	// the pointers is safe.
	s.Pruning = maps.Clone(s.Pruning)
	if j.run != nil {
		s.Replication = replicationStatus(j.run.Progress(), nil)
		s.Replication.Start = j.repStart
	}
	return s
}
