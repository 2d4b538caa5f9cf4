package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/replication/queue"
	"zrepl.dev/zrepl/engine/zfs"
)

// Sender is what the driver needs of the sending side.
type Sender interface {
	ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
	Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error)
	SendSize(ctx context.Context, req endpoint.SendRequest) (int64, error)
	StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error
}

// Receiver is what the driver needs of the receiving side.
type Receiver interface {
	ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
	Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error
	AbortPartialReceive(ctx context.Context, fs string) error
	MoveLastReceivedHold(ctx context.Context, fs string, to zfs.FilesystemVersion) error
}

// Config of a run. Zero values get defaults.
type Config struct {
	Policy      planner.Policy
	Concurrency int
	// MaxAttempts bounds the attempts of one run (default 5).
	MaxAttempts int
	// Backoff is the pause before attempt n+1 after attempt n failed
	// temporarily (default 2^n seconds, at most a minute).
	Backoff func(attempt int) time.Duration
	// Sleep waits for d or until ctx ends (default: a real timer).
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for rates (default time.Now).
	Now func() time.Time
	// Protection of full (Initial) and incremental steps on the sender;
	// the zero value guarantees resumability.
	Protection Protection
}

// Protection is replication.protection of a job's config.
type Protection struct {
	Initial, Incremental endpoint.Protection
}

func (c *Config) defaults() {
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.MaxAttempts < 1 {
		c.MaxAttempts = 5
	}
	if c.Backoff == nil {
		c.Backoff = func(n int) time.Duration { return min(time.Duration(1<<min(n, 6))*time.Second, time.Minute) }
	}
	if c.Sleep == nil {
		c.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// FSState is how a filesystem ended in a run.
type FSState string

const (
	FSDone     FSState = "done"
	FSUpToDate FSState = "up to date"
	FSSkipped  FSState = "skipped" // nothing to send, or only a placeholder
	FSConflict FSState = "conflict"
	FSFailed   FSState = "failed"
)

// FSReport is the outcome of one filesystem.
type FSReport struct {
	FS        string
	State     FSState
	StepsDone int
	Err       error
	// Permanent errors are not retried: only a change of the data or the
	// config resolves them.
	Permanent bool
}

// Report is the outcome of a run.
type Report struct {
	Attempts    int
	Filesystems []FSReport
}

// Err joins the errors of all filesystems that did not end well.
func (r Report) Err() error {
	var errs []error
	for _, f := range r.Filesystems {
		if f.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.FS, f.Err))
		}
	}
	return errors.Join(errs...)
}

// Run is one replication run of a job.
type Run struct {
	sender   Sender
	receiver Receiver
	cfg      Config

	resize chan int

	mu       sync.Mutex
	progress Progress
	start    time.Time
	steps    map[queue.StepID]*stepState
}

// NewRun prepares a run.
func NewRun(s Sender, r Receiver, cfg Config) *Run {
	cfg.defaults()
	return &Run{sender: s, receiver: r, cfg: cfg, resize: make(chan int, 16)}
}

// SetConcurrency changes the number of steps that run at once, while the
// run goes on. Lowering it suspends the youngest steps at a safe point;
// they resume later from their resume token.
func (r *Run) SetConcurrency(n int) error {
	if n < 1 {
		return fmt.Errorf("concurrency must be at least 1, not %d", n)
	}
	select {
	case r.resize <- n:
		return nil
	default:
		return errors.New("too many concurrency changes pending")
	}
}

// Progress returns a snapshot of the run's progress.
func (r *Run) Progress() Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.progress
	p.Steps = nil
	for _, s := range r.orderedSteps() {
		p.Steps = append(p.Steps, StepProgress{FS: s.fs.Path, Step: s.step.String(), Expected: s.expected, Done: s.done.Load(), State: s.state})
	}
	p.Expected, p.Estimated, p.Done = totals(p.Steps)
	if elapsed := r.cfg.Now().Sub(r.start); elapsed > 0 && p.Done > 0 {
		p.Rate = float64(p.Done) / elapsed.Seconds()
		if left := p.Expected - p.Done; left > 0 && p.Rate > 0 {
			p.ETA = time.Duration(float64(left) / p.Rate * float64(time.Second))
		}
	}
	return p
}

func (r *Run) orderedSteps() []*stepState {
	out := make([]*stepState, 0, len(r.steps))
	for id := queue.StepID(0); len(out) < len(r.steps); id++ {
		if s, ok := r.steps[id]; ok {
			out = append(out, s)
		}
	}
	return out
}

// Do runs attempts until every filesystem is replicated or failed
// permanently, attempts run out, or ctx ends. Cancelling ctx at any point
// leaves state the next run resumes from.
func (r *Run) Do(ctx context.Context) Report {
	r.mu.Lock()
	r.start = r.cfg.Now()
	r.mu.Unlock()
	var rep Report
	concurrency := r.cfg.Concurrency
	for attempt := 1; ; attempt++ {
		rep = r.attempt(ctx, attempt, &concurrency)
		rep.Attempts = attempt
		retry := false
		for _, f := range rep.Filesystems {
			if f.Err != nil && !f.Permanent {
				retry = true
			}
		}
		if !retry || attempt >= r.cfg.MaxAttempts || ctx.Err() != nil {
			return rep
		}
		if err := r.cfg.Sleep(ctx, r.cfg.Backoff(attempt)); err != nil {
			return rep
		}
	}
}

type stepState struct {
	id       queue.StepID
	fs       *planner.FSPlan
	index    int
	step     planner.Step
	expected int64
	done     atomic.Int64
	state    string
	cancel   context.CancelCauseFunc
	// suspended: the step ran before and left partial receive state.
	suspended bool
}

type stepResult struct {
	id  queue.StepID
	err error
}

var errSuspended = errors.New("step suspended to lower concurrency")

func toPlannerFS(in []endpoint.Filesystem) []planner.Filesystem {
	out := make([]planner.Filesystem, len(in))
	for i, f := range in {
		out[i] = planner.Filesystem{Path: f.Path, Info: f.Info, Versions: f.Versions}
	}
	return out
}

func (r *Run) attempt(ctx context.Context, attempt int, concurrency *int) Report {
	r.mu.Lock()
	r.progress = Progress{Attempt: attempt}
	r.steps = map[queue.StepID]*stepState{}
	r.mu.Unlock()

	senderFS, err := r.sender.ListFilesystems(ctx)
	if err != nil {
		return Report{Filesystems: []FSReport{{FS: "(sender)", State: FSFailed, Err: fmt.Errorf("list sender: %w", err), Permanent: permanent(err)}}}
	}
	receiverFS, err := r.receiver.ListFilesystems(ctx)
	if err != nil {
		return Report{Filesystems: []FSReport{{FS: "(receiver)", State: FSFailed, Err: fmt.Errorf("list receiver: %w", err), Permanent: permanent(err)}}}
	}
	plan, err := planner.Plan(planner.Input{Sender: toPlannerFS(senderFS), Receiver: toPlannerFS(receiverFS), Policy: r.cfg.Policy})
	if err != nil {
		return Report{Filesystems: []FSReport{{FS: "(plan)", State: FSFailed, Err: err, Permanent: true}}}
	}

	senderByPath := make(map[string]*endpoint.Filesystem, len(senderFS))
	for i := range senderFS {
		senderByPath[senderFS[i].Path] = &senderFS[i]
	}
	receiverByPath := make(map[string]*endpoint.Filesystem, len(receiverFS))
	for i := range receiverFS {
		receiverByPath[receiverFS[i].Path] = &receiverFS[i]
	}

	reports := make(map[string]*FSReport, len(plan.Filesystems))
	waiting := map[string][]*planner.FSPlan{} // parent path -> plans waiting for it
	var order []string
	q := queue.New(*concurrency)
	nextID := queue.StepID(0)

	enqueue := func(fp *planner.FSPlan, index int) queue.Decision {
		id := nextID
		nextID++
		st := &stepState{id: id, fs: fp, index: index, step: fp.Steps[index], state: "waiting"}
		req := r.sendRequest(fp, st.step)
		if size, err := r.sender.SendSize(ctx, req); err == nil {
			st.expected = size
		}
		r.mu.Lock()
		r.steps[id] = st
		r.mu.Unlock()
		d, err := q.Enqueue(id)
		if err != nil {
			panic(err) // IDs are fresh: a queue protocol error is a bug here
		}
		return d
	}
	// startFS begins a filesystem's work; finishFS lets the filesystems
	// waiting for it start (or fail with it).
	var startFS func(fp *planner.FSPlan) []queue.Decision
	finishFS := func(fp *planner.FSPlan, ok bool) []queue.Decision {
		if !ok {
			failWaiting(fp, reports, waiting)
			return nil
		}
		children := waiting[fp.Path]
		delete(waiting, fp.Path)
		var ds []queue.Decision
		for _, child := range children {
			ds = append(ds, startFS(child)...)
		}
		return ds
	}
	startFS = func(fp *planner.FSPlan) []queue.Decision {
		rep := reports[fp.Path]
		for _, a := range fp.Actions {
			if a.Kind != planner.ActionAbortPartialReceive {
				continue // placeholders are created by the receiver itself
			}
			if err := r.receiver.AbortPartialReceive(ctx, fp.Path); err != nil {
				rep.State, rep.Err, rep.Permanent = FSFailed, fmt.Errorf("abort partial receive (%s): %w", a.Reason, err), permanent(err)
				return finishFS(fp, false)
			}
		}
		if fp.Status == planner.StatusUpToDate {
			if err := r.reconcile(ctx, fp, senderByPath[fp.Path], receiverByPath[fp.Path]); err != nil {
				rep.State, rep.Err, rep.Permanent = FSFailed, err, permanent(err)
				return finishFS(fp, false)
			}
		}
		if len(fp.Steps) == 0 {
			return finishFS(fp, true)
		}
		return []queue.Decision{enqueue(fp, 0)}
	}

	for i := range plan.Filesystems {
		fp := &plan.Filesystems[i]
		rep := &FSReport{FS: fp.Path}
		reports[fp.Path] = rep
		order = append(order, fp.Path)
		switch fp.Status {
		case planner.StatusConflict:
			rep.State, rep.Err, rep.Permanent = FSConflict, fp.Conflict, true
		case planner.StatusUpToDate:
			rep.State = FSUpToDate
		case planner.StatusNoSnapshots, planner.StatusPlaceholder:
			rep.State = FSSkipped
		case planner.StatusReplicate:
			rep.State = FSDone
		}
		if fp.WaitFor != "" {
			waiting[fp.WaitFor] = append(waiting[fp.WaitFor], fp)
		}
	}

	results := make(chan stepResult)
	var wg sync.WaitGroup
	defer wg.Wait()
	running := 0
	var apply func(d queue.Decision)
	apply = func(d queue.Decision) {
		for _, id := range d.Suspend {
			r.mu.Lock()
			st := r.steps[id]
			st.state = "suspending"
			r.mu.Unlock()
			st.cancel(errSuspended)
		}
		for _, id := range d.Start {
			r.mu.Lock()
			st := r.steps[id]
			st.state = "running"
			stepCtx, cancel := context.WithCancelCause(ctx)
			st.cancel = cancel
			r.mu.Unlock()
			running++
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := r.runStep(stepCtx, st)
				cancel(nil)
				results <- stepResult{id: id, err: err}
			}()
		}
	}

	for i := range plan.Filesystems {
		fp := &plan.Filesystems[i]
		switch {
		case fp.WaitFor != "":
		case fp.Status == planner.StatusConflict:
			failWaiting(fp, reports, waiting)
		default:
			// Up-to-date filesystems too: a foreign partial receive
			// may be due for an abort.
			for _, d := range startFS(fp) {
				apply(d)
			}
		}
	}

	for running > 0 {
		select {
		case n := <-r.resize:
			*concurrency = n
			d, err := q.Resize(n)
			if err == nil {
				apply(d)
			}
		case res := <-results:
			running--
			r.mu.Lock()
			st := r.steps[res.id]
			r.mu.Unlock()
			var ds []queue.Decision
			if errors.Is(res.err, errSuspended) && ctx.Err() == nil {
				r.setState(st, "suspended")
				st.suspended = true
				d, _ := q.Suspended(res.id)
				ds = append(ds, d)
			} else {
				d, _ := q.Done(res.id)
				ds = append(ds, d)
				rep := reports[st.fs.Path]
				if res.err != nil {
					r.setState(st, "failed")
					rep.State, rep.Err, rep.Permanent = FSFailed, res.err, permanent(res.err)
					ds = append(ds, finishFS(st.fs, false)...)
				} else {
					r.setState(st, "done")
					rep.StepsDone++
					if st.index+1 < len(st.fs.Steps) {
						ds = append(ds, enqueue(st.fs, st.index+1))
					}
					if st.index == 0 {
						// The filesystem exists on the receiver now:
						// children may start.
						ds = append(ds, finishFS(st.fs, true)...)
					}
				}
			}
			for _, d := range ds {
				apply(d)
			}
		}
	}

	out := Report{}
	for _, p := range order {
		out.Filesystems = append(out.Filesystems, *reports[p])
	}
	return out
}

// failWaiting fails every plan waiting, directly or not, for fp.
func failWaiting(fp *planner.FSPlan, reports map[string]*FSReport, waiting map[string][]*planner.FSPlan) {
	for _, child := range waiting[fp.Path] {
		rep := reports[child.Path]
		rep.State, rep.Err = FSFailed, fmt.Errorf("parent %s was not replicated", fp.Path)
		rep.Permanent = reports[fp.Path].Permanent
		failWaiting(child, reports, waiting)
	}
	delete(waiting, fp.Path)
}

func (r *Run) setState(st *stepState, s string) {
	r.mu.Lock()
	st.state = s
	r.mu.Unlock()
}

func (r *Run) sendRequest(fp *planner.FSPlan, s planner.Step) endpoint.SendRequest {
	prot := r.cfg.Protection.Incremental
	if s.Full() {
		prot = r.cfg.Protection.Initial
	}
	return endpoint.SendRequest{
		FS: fp.Sender.String(), From: s.From, To: s.To, ResumeToken: s.ResumeToken, Raw: s.Raw,
		Compressed: s.Compressed, LargeBlocks: s.LargeBlocks, EmbeddedData: s.EmbeddedData,
		Protection: prot,
	}
}

// runStep sends and receives one step, then confirms it on the sender.
// A step that was suspended earlier picks up the receiver's resume token.
func (r *Run) runStep(ctx context.Context, st *stepState) error {
	req := r.sendRequest(st.fs, st.step)
	if st.suspended && st.step.ResumeToken == "" {
		tok, err := r.currentToken(ctx, st.fs.Path)
		if err != nil {
			return err
		}
		req.ResumeToken = tok
		// Done counts what went before the suspension; what the receiver
		// kept of it is what the resumed stream leaves out.
		if tok != "" && st.expected > 0 {
			if rest, err := r.sender.SendSize(ctx, req); err == nil {
				st.done.Store(max(0, st.expected-rest))
			}
		}
	}
	stream, err := r.sender.Send(ctx, req)
	if err != nil && req.ResumeToken != "" && st.step.ResumeToken == "" && errors.Is(err, zfs.ErrResumeTokenCorrupt) {
		// The partial state is not this step's (it was planned without
		// one): discard it and send afresh.
		if aerr := r.receiver.AbortPartialReceive(ctx, st.fs.Path); aerr != nil {
			return errors.Join(err, aerr)
		}
		req.ResumeToken = ""
		stream, err = r.sender.Send(ctx, req)
	}
	if err != nil {
		return stepErr(ctx, err)
	}
	recvReq := endpoint.ReceiveRequest{FS: st.fs.Path, From: st.step.From, To: st.step.To, Full: st.step.Full(), Resuming: req.ResumeToken != ""}
	err = r.receiver.Receive(ctx, recvReq, countingReader{r: stream, n: &st.done})
	cerr := stream.Close()
	if err != nil {
		return stepErr(ctx, err)
	}
	if cerr != nil {
		return stepErr(ctx, cerr)
	}
	last := st.index == len(st.fs.Steps)-1
	if err := r.sender.StepCompleted(ctx, req, last); err != nil {
		return stepErr(ctx, fmt.Errorf("confirm %s on sender: %w", st.step, err))
	}
	return nil
}

// reconcile finishes the bookkeeping of an up-to-date filesystem: a step
// whose receive committed but whose last-received hold or StepCompleted
// failed leaves the filesystem up to date with its marks where the step
// before left them. Only a side whose listing shows such leftovers is
// called, so a quiet filesystem costs nothing.
func (r *Run) reconcile(ctx context.Context, fp *planner.FSPlan, s, rcv *endpoint.Filesystem) error {
	if fp.Base == nil || s == nil || rcv == nil {
		return nil
	}
	senderStale, holdTo := reconcileNeeds(*fp.Base, s, rcv)
	if senderStale {
		req := endpoint.SendRequest{FS: fp.Sender.String(), To: *fp.Base}
		if err := r.sender.StepCompleted(ctx, req, true); err != nil {
			return fmt.Errorf("confirm %s on sender (up to date): %w", fp.Base.RelName(), err)
		}
	}
	if holdTo != nil {
		if err := r.receiver.MoveLastReceivedHold(ctx, fp.Path, *holdTo); err != nil {
			return fmt.Errorf("move last-received hold to %s (up to date): %w", holdTo.RelName(), err)
		}
	}
	return nil
}

// reconcileNeeds decides from the two listings of an up-to-date filesystem
// with common base base whether the sender's marks are not where a
// completed run leaves them (exactly one cursor of the job, at base; no
// step bookmarks; no held snapshot, which may be a step hold), and on the
// receiver the snapshot the last-received hold belongs on if it may not be
// there (base's snapshot unheld, or another snapshot held). Holds of
// others make it call needlessly, which is harmless: the calls are
// idempotent.
func reconcileNeeds(base zfs.FilesystemVersion, s, r *endpoint.Filesystem) (sender bool, holdTo *zfs.FilesystemVersion) {
	m := s.Marks
	sender = m.StepBookmarks || len(m.Cursors) != 1 || m.Cursors[0] != base.GUID
	for _, v := range s.Versions {
		if v.Kind == zfs.Snapshot && v.UserRefs > 0 {
			sender = true
		}
	}
	var to *zfs.FilesystemVersion
	otherHeld := false
	for i, v := range r.Versions {
		if v.Kind != zfs.Snapshot {
			continue
		}
		if v.GUID == base.GUID && (to == nil || v.CreateTXG > to.CreateTXG) {
			to = &r.Versions[i]
		}
	}
	for _, v := range r.Versions {
		if v.Kind == zfs.Snapshot && v.UserRefs > 0 && (to == nil || v.Name != to.Name) {
			otherHeld = true
		}
	}
	if to != nil && (to.UserRefs == 0 || otherHeld) {
		holdTo = to
	}
	return sender, holdTo
}

// currentToken is the receiver's resume token for fs, if any.
func (r *Run) currentToken(ctx context.Context, fs string) (string, error) {
	list, err := r.receiver.ListFilesystems(ctx)
	if err != nil {
		return "", fmt.Errorf("list receiver: %w", err)
	}
	for _, f := range list {
		if f.Path == fs {
			return f.Info.ReceiveResumeToken, nil
		}
	}
	return "", nil
}

// stepErr attaches the suspension cause where the step was suspended.
func stepErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errSuspended) {
		return fmt.Errorf("%w (%v)", errSuspended, err)
	}
	return err
}

// PermanentError is implemented by errors from other layers (such as the
// wire protocol) that know a retry cannot fix them.
type PermanentError interface {
	error
	Permanent() bool
}

// permanent tells errors a retry cannot fix from temporary ones.
func permanent(err error) bool {
	var conflict *planner.Conflict
	var perm PermanentError
	switch {
	case errors.As(err, &perm) && perm.Permanent():
		return true
	case errors.As(err, &conflict),
		errors.Is(err, endpoint.ErrNotAllowed),
		errors.Is(err, endpoint.ErrReceivedWrongVersion),
		errors.Is(err, endpoint.ErrInvalidJobID),
		errors.Is(err, zfs.ErrInvalidName),
		errors.Is(err, zfs.ErrResumeTokenCorrupt),
		errors.Is(err, zfs.ErrKeyNotLoaded),
		errors.Is(err, zfs.ErrEncryptionMismatch),
		errors.Is(err, zfs.ErrDestinationModified),
		errors.Is(err, zfs.ErrIncrementalSourceMismatch),
		errors.Is(err, zfs.ErrDestinationExists),
		errors.Is(err, zfs.ErrUnsupported):
		return true
	}
	return false
}
