package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication/machine"
	"zrepl.dev/zrepl/engine/replication/planner"
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
	// SizeEstimates is how many size estimates run at once (default 4).
	SizeEstimates int
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
type Protection = machine.Protection

func (c *Config) defaults() {
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

// The outcome of a run (see package machine).
type (
	FSState        = machine.FSState
	FSReport       = machine.FSReport
	Report         = machine.Report
	PermanentError = machine.PermanentError
)

const (
	FSDone     = machine.FSDone
	FSUpToDate = machine.FSUpToDate
	FSSkipped  = machine.FSSkipped
	FSConflict = machine.FSConflict
	FSFailed   = machine.FSFailed
)

// Run is one replication run of a job: the shell around a
// machine.Machine that carries out its decisions, each in a goroutine of
// its own, and feeds their results back. Its loop never waits for IO.
type Run struct {
	sender   Sender
	receiver Receiver
	cfg      Config

	resize chan int

	mu    sync.Mutex
	m     *machine.Machine
	start time.Time
	// done counts each step's bytes of the current attempt, by StepID.
	done []*atomic.Int64
	// batch is what the steps of a run put off to its end, where the
	// sides are endpoints of this process (endpoint.Batch, in the steps'
	// ctx): the driver then does it for all filesystems at once, in a
	// zfs process or two per side.
	batch *endpoint.Batch
}

// NewRun prepares a run.
func NewRun(s Sender, r Receiver, cfg Config) *Run {
	cfg.defaults()
	return &Run{sender: s, receiver: r, cfg: cfg, resize: make(chan int, 16), m: newMachine(cfg), batch: &endpoint.Batch{}}
}

func newMachine(cfg Config) *machine.Machine {
	return machine.New(machine.Config{
		Policy: cfg.Policy, Protection: cfg.Protection, Concurrency: cfg.Concurrency,
		SizeEstimates: cfg.SizeEstimates, MaxAttempts: cfg.MaxAttempts, Backoff: cfg.Backoff,
	})
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
	p := Progress{Attempt: r.m.Attempt()}
	if last, ok := r.m.LastAttempt(); ok {
		p.Previous = &last
	}
	for _, s := range r.m.Steps() {
		var done int64
		if int(s.ID) < len(r.done) {
			done = r.done[s.ID].Load()
		}
		p.Steps = append(p.Steps, StepProgress{FS: s.FS, Step: s.Step, Expected: s.Expected, Done: done, State: s.State})
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

// Do runs attempts until every filesystem is replicated or failed
// permanently, attempts run out, or ctx ends. Cancelling ctx at any point
// leaves state the next run resumes from.
//
// Where the sides are endpoints of this process, the bookkeeping the
// steps put off (endpoint.Batch) is done once the machine is done; if
// that fails, and nothing else did, the run goes on with the attempts it
// has left, from a fresh listing: they reconcile what the failure left.
func (r *Run) Do(ctx context.Context) Report {
	r.mu.Lock()
	r.start = r.cfg.Now()
	r.mu.Unlock()
	attempts := 0
	for {
		rep := r.round(ctx)
		// A cancelled run still does what its completed steps put
		// off, as those steps would have done it themselves.
		failed := r.batch.Finish(context.WithoutCancel(ctx))
		again := len(failed) > 0 && len(fsErrs(rep)) == 0
		rep = withBookkeeping(rep, failed)
		attempts += rep.Attempts
		rep.Attempts = attempts
		left := r.maxAttempts() - attempts
		if !again || left <= 0 || ctx.Err() != nil {
			return rep
		}
		if err := r.cfg.Sleep(ctx, r.backoff(attempts)); err != nil {
			return rep
		}
		cfg := r.cfg
		cfg.MaxAttempts = left
		r.mu.Lock()
		cfg.Concurrency = r.m.Limit()
		r.m = newMachine(cfg)
		r.mu.Unlock()
	}
}

// withBookkeeping fails the filesystems of rep whose put-off bookkeeping
// failed: their data is there, their holds are not yet where a completed
// run leaves them (the next attempt or run moves them).
func withBookkeeping(rep Report, failed map[string]error) Report {
	if len(failed) == 0 {
		return rep
	}
	rep.Filesystems = slices.Clone(rep.Filesystems)
	seen := map[string]bool{}
	for i, f := range rep.Filesystems {
		if err, ok := failed[f.FS]; ok {
			seen[f.FS] = true
			rep.Filesystems[i].State = FSFailed
			rep.Filesystems[i].Err = errors.Join(f.Err, fmt.Errorf("end of run: %w", err))
		}
	}
	for _, fs := range slices.Sorted(maps.Keys(failed)) {
		if !seen[fs] {
			rep.Filesystems = append(rep.Filesystems, FSReport{FS: fs, State: FSFailed, Err: fmt.Errorf("end of run: %w", failed[fs])})
		}
	}
	return rep
}

// fsErrs are the errors of rep's filesystems.
func fsErrs(rep Report) []error {
	var errs []error
	for _, f := range rep.Filesystems {
		if f.Err != nil {
			errs = append(errs, f.Err)
		}
	}
	return errs
}

// maxAttempts and backoff are Config's, with the machine's defaults.
func (r *Run) maxAttempts() int {
	if r.cfg.MaxAttempts > 0 {
		return r.cfg.MaxAttempts
	}
	return machine.DefaultMaxAttempts
}

func (r *Run) backoff(attempt int) time.Duration {
	if r.cfg.Backoff != nil {
		return r.cfg.Backoff(attempt)
	}
	return machine.DefaultBackoff(attempt)
}

// round runs the machine to its end.
func (r *Run) round(ctx context.Context) Report {
	events := make(chan func(*machine.Machine))
	// over lets what still runs when the run is over (a backoff timer
	// the cancellation cut short) end without being heard.
	over := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(over)
	// spawn runs f in a goroutine and feeds its result to the machine.
	spawn := func(f func() func(*machine.Machine)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case events <- f():
			case <-over:
			}
		}()
	}
	cancels := map[machine.StepID]context.CancelCauseFunc{}
	estimates := map[machine.StepID]context.CancelFunc{}
	stopped := ctx.Done()
	for {
		r.mu.Lock()
		rd := r.m.Ready()
		if rd.List {
			r.done = nil
		}
		r.mu.Unlock()
		if rd.Done != nil {
			return *rd.Done
		}
		if rd.List {
			spawn(func() func(*machine.Machine) {
				var s, v []endpoint.Filesystem
				var serr, verr error
				var lw sync.WaitGroup
				lw.Go(func() { s, serr = r.sender.ListFilesystems(ctx) })
				lw.Go(func() { v, verr = r.receiver.ListFilesystems(ctx) })
				lw.Wait()
				return func(m *machine.Machine) {
					m.Listed(s, v, serr, verr)
					r.done = make([]*atomic.Int64, len(m.Steps()))
					for i := range r.done {
						r.done[i] = new(atomic.Int64)
					}
				}
			})
		}
		for _, e := range rd.Estimate {
			ectx, cancel := context.WithCancel(ctx)
			estimates[e.ID] = cancel
			spawn(func() func(*machine.Machine) {
				size, err := r.sender.SendSize(ectx, e.Req)
				cancel()
				return func(m *machine.Machine) {
					delete(estimates, e.ID)
					m.Estimated(e.ID, size, err)
				}
			})
		}
		for _, id := range rd.Abandon {
			if cancel := estimates[id]; cancel != nil {
				cancel()
			}
		}
		for _, a := range rd.Actions {
			spawn(func() func(*machine.Machine) {
				err := r.action(ctx, a)
				return func(m *machine.Machine) { m.ActionDone(a.ID, err) }
			})
		}
		for _, id := range rd.Suspend {
			if cancel := cancels[id]; cancel != nil {
				cancel(machine.ErrSuspended)
			}
		}
		for _, st := range rd.Start {
			sctx, cancel := context.WithCancelCause(ctx)
			cancels[st.ID] = cancel
			r.mu.Lock()
			counter := r.done[st.ID]
			r.mu.Unlock()
			spawn(func() func(*machine.Machine) {
				err := r.runStep(sctx, st, counter)
				cancel(nil)
				return func(m *machine.Machine) {
					delete(cancels, st.ID)
					m.StepDone(st.ID, err)
				}
			})
		}
		if rd.Sleep > 0 {
			spawn(func() func(*machine.Machine) {
				if err := r.cfg.Sleep(ctx, rd.Sleep); err != nil {
					return func(m *machine.Machine) { m.Cancel(err) }
				}
				return func(m *machine.Machine) { m.TimerFired() }
			})
		}
		select {
		case ev := <-events:
			r.mu.Lock()
			ev(r.m)
			r.mu.Unlock()
		case n := <-r.resize:
			r.mu.Lock()
			_ = r.m.Resize(n)
			r.mu.Unlock()
		case <-stopped:
			stopped = nil
			r.mu.Lock()
			r.m.Cancel(context.Cause(ctx))
			r.mu.Unlock()
		}
	}
}

// action carries out one of the machine's actions.
func (r *Run) action(ctx context.Context, a machine.Action) error {
	// Like a step's: a hold moved or a release done at once would come
	// before what the run's earlier steps put off for the filesystem.
	ctx = endpoint.WithBatch(ctx, r.batch)
	switch a.Kind {
	case machine.AbortPartialReceive:
		return r.receiver.AbortPartialReceive(ctx, a.FS)
	case machine.ConfirmOnSender:
		return r.sender.StepCompleted(ctx, a.Confirm, true)
	case machine.MoveLastReceivedHold:
		return r.receiver.MoveLastReceivedHold(ctx, a.FS, a.HoldTo)
	}
	return fmt.Errorf("unknown action %v", a.Kind)
}

// runStep sends and receives one step, then confirms it on the sender.
// A step that was suspended earlier picks up the receiver's resume token.
func (r *Run) runStep(ctx context.Context, st machine.Step, done *atomic.Int64) error {
	// Endpoints of this process (also below wrappers that pass ctx on)
	// put part of the step's bookkeeping off to the end of the run.
	ctx = endpoint.WithBatch(ctx, r.batch)
	req := st.Send
	if st.Resume && st.Planned.ResumeToken == "" {
		tok, err := r.currentToken(ctx, st.FS)
		if err != nil {
			return err
		}
		req.ResumeToken = tok
		// Done counts what went before the suspension; what the receiver
		// kept of it is what the resumed stream leaves out.
		if tok != "" && st.Expected > 0 {
			if rest, err := r.sender.SendSize(ctx, req); err == nil {
				done.Store(max(0, st.Expected-rest))
			}
		}
	}
	stream, err := r.sender.Send(ctx, req)
	if err != nil && req.ResumeToken != "" && st.Planned.ResumeToken == "" &&
		(errors.Is(err, zfs.ErrResumeTokenCorrupt) || errors.Is(err, zfs.ErrResumeTokenMismatch)) {
		// The partial state is not this step's (it was planned without
		// one): discard it and send afresh.
		if aerr := r.receiver.AbortPartialReceive(ctx, st.FS); aerr != nil {
			return errors.Join(err, aerr)
		}
		req.ResumeToken = ""
		stream, err = r.sender.Send(ctx, req)
	}
	if err != nil {
		return stepErr(ctx, err)
	}
	recvReq := st.Receive
	recvReq.Resuming = req.ResumeToken != ""
	err = r.receiver.Receive(ctx, recvReq, countingReader{r: stream, n: done})
	cerr := stream.Close()
	if err != nil {
		return stepErr(ctx, err)
	}
	if cerr != nil {
		return stepErr(ctx, cerr)
	}
	if err := r.sender.StepCompleted(ctx, req, st.Last); err != nil {
		return stepErr(ctx, fmt.Errorf("confirm %s on sender: %w", st.Planned, err))
	}
	return nil
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
	if cause := context.Cause(ctx); errors.Is(cause, machine.ErrSuspended) {
		return fmt.Errorf("%w (%v)", machine.ErrSuspended, err)
	}
	return err
}
