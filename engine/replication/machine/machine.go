// Package machine is a replication run as a pure state machine, in the
// shape of raft's RawNode: the caller feeds it events (both sides were
// listed, a size estimate arrived, an action or a step ended, the step
// limit changed, the backoff timer fired, the run was cancelled) and
// carries out the decisions that Ready returns (list both sides, estimate
// these steps, run these actions, start or suspend these steps, wait, the
// run is over and its report). It does no IO, starts no goroutines and
// reads no clock, so a test drives it event by event.
//
// An attempt lists both sides, plans (package planner), and then works
// through the plan filesystem by filesystem: a filesystem whose parent is
// created by this attempt waits until the parent's first step (or its
// actions) succeeded, and fails with it. A filesystem's actions (abort a
// foreign partial receive; for an up-to-date filesystem, put the sender's
// cursor and the receiver's last-received hold where a completed step
// leaves them) run one after another before its steps; its steps run in
// order, each through the step queue (package queue), which starts at
// most Concurrency at once and suspends the youngest when the limit goes
// down. Every planned step gets a size estimate, at most SizeEstimates at
// once, a step about to be queued first; a step is queued once its
// estimate arrived (or failed: the estimate is then unknown), so its
// progress has an expected size from the start.
//
// An attempt is over when every filesystem finished and nothing is in
// flight. If some filesystem failed temporarily, the machine waits
// Backoff(attempt) and tries again, up to MaxAttempts; a cancelled run
// starts nothing new, fails what did not start with the cancellation's
// cause, and ends once what runs returned.
package machine

import (
	"errors"
	"fmt"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/replication/queue"
	"zrepl.dev/zrepl/engine/zfs"
)

// Config of a run. Zero values get defaults.
type Config struct {
	Policy planner.Policy
	// Protection of full (Initial) and incremental steps on the sender;
	// the zero value guarantees resumability.
	Protection Protection
	// Concurrency is how many steps run at once (default 1).
	Concurrency int
	// SizeEstimates is how many size estimates run at once (default 4,
	// replication.concurrency.size_estimates).
	SizeEstimates int
	// MaxAttempts bounds the attempts of one run (default 5).
	MaxAttempts int
	// Backoff is the pause before attempt n+1 after attempt n failed
	// temporarily (default 2^n seconds, at most a minute).
	Backoff func(attempt int) time.Duration
}

// Protection is replication.protection of a job's config.
type Protection struct {
	Initial, Incremental endpoint.Protection
}

func (c *Config) defaults() {
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.SizeEstimates < 1 {
		c.SizeEstimates = 4
	}
	if c.MaxAttempts < 1 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
}

// DefaultMaxAttempts is Config.MaxAttempts where it is not set.
const DefaultMaxAttempts = 5

// DefaultBackoff is Config.Backoff where it is not set: 2^n seconds, at
// most a minute.
func DefaultBackoff(n int) time.Duration {
	return min(time.Duration(1<<min(n, 6))*time.Second, time.Minute)
}

// StepID identifies a step within one attempt.
type StepID = queue.StepID

// ActionID identifies an action within one run.
type ActionID int

// ErrSuspended is the cause a caller cancels a step with when Ready says
// to suspend it; a step that ends with it (before the run was cancelled)
// acknowledges the suspension and resumes later.
var ErrSuspended = errors.New("step suspended to lower concurrency")

// Ready is what the caller must do now. Its zero value asks nothing.
type Ready struct {
	// List: list both sides, then call Listed (a new attempt).
	List bool
	// Estimate these steps' sizes (Sender.SendSize), then call Estimated.
	Estimate []Estimate
	// Abandon the estimates of these steps that are still running: their
	// steps will not run in this attempt. Estimated is still called.
	Abandon []StepID
	// Actions to run, then call ActionDone.
	Actions []Action
	// Start these steps, then call StepDone.
	Start []Step
	// Suspend these running steps: cancel them with ErrSuspended.
	Suspend []StepID
	// Sleep, if positive: wait that long, then call TimerFired.
	Sleep time.Duration
	// Done: the run is over; nothing is in flight any more.
	Done *Report
}

// Empty reports whether rd asks nothing.
func (rd Ready) Empty() bool {
	return !rd.List && len(rd.Estimate) == 0 && len(rd.Abandon) == 0 && len(rd.Actions) == 0 &&
		len(rd.Start) == 0 && len(rd.Suspend) == 0 && rd.Sleep <= 0 && rd.Done == nil
}

// Estimate asks for the size of a step's stream.
type Estimate struct {
	ID  StepID
	Req endpoint.SendRequest
}

// ActionKind is what an action calls.
type ActionKind uint8

const (
	// AbortPartialReceive: Receiver.AbortPartialReceive(FS).
	AbortPartialReceive ActionKind = iota + 1
	// ConfirmOnSender: Sender.StepCompleted(Confirm, true), for an
	// up-to-date filesystem whose sender marks are stale.
	ConfirmOnSender
	// MoveLastReceivedHold: Receiver.MoveLastReceivedHold(FS, HoldTo).
	MoveLastReceivedHold
)

func (k ActionKind) String() string {
	switch k {
	case AbortPartialReceive:
		return "abort partial receive"
	case ConfirmOnSender:
		return "confirm on sender"
	case MoveLastReceivedHold:
		return "move last-received hold"
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Action is one call for a filesystem before its steps.
type Action struct {
	ID   ActionID
	Kind ActionKind
	// FS is the filesystem's path relative to the job's namespace.
	FS string
	// Reason says why an abort is due.
	Reason  string
	Confirm endpoint.SendRequest
	HoldTo  zfs.FilesystemVersion
}

// Step is what a caller needs to run one step: send Send, receive it with
// Receive, then confirm with Sender.StepCompleted(Send, Last).
type Step struct {
	ID      StepID
	FS      string
	Planned planner.Step
	Send    endpoint.SendRequest
	Receive endpoint.ReceiveRequest
	// Last: the filesystem's last step of this attempt.
	Last bool
	// Expected is the size estimate (0: unknown).
	Expected int64
	// Resume: the step was suspended in this attempt; its partial receive
	// state is the receiver's current resume token, if any.
	Resume bool
}

// StepView is a step's part of the run's progress.
type StepView struct {
	ID       StepID
	FS       string
	Step     string
	Expected int64
	// State is planned, waiting, running, suspending, suspended, done or
	// failed.
	State string
}

type phase uint8

const (
	listing phase = iota
	running
	sleeping
	over
)

// Machine is one run. It is not safe for concurrent use.
type Machine struct {
	cfg     Config
	limit   int
	attempt int
	phase   phase
	cause   error // set once the run is cancelled
	last    Report
	out     Ready

	// The attempt's state.
	fss        []*fsState
	steps      []*stepState // by StepID
	order      []*stepState // estimate order: by step index, then plan order
	orderNext  int
	urgent     []*stepState // to be queued, estimate not asked yet
	estimating int
	q          *queue.Queue
	actions    map[ActionID]*fsState
	nextAction ActionID
	open       int // filesystems not finished
	inFlight   int // actions and steps started and not ended
}

type fsState struct {
	plan     *planner.FSPlan
	rep      FSReport
	children []*fsState
	steps    []*stepState
	// pending are the actions still to run, the first one in flight once
	// the filesystem started.
	pending []Action
	next    int // index of the next step to queue
	// wants: the next step is to be queued as soon as its estimate is in.
	wants    bool
	finished bool
}

type estimate uint8

const (
	notAsked estimate = iota
	asked
	known
	abandoned
)

type stepState struct {
	id       StepID
	fs       *fsState
	index    int
	step     planner.Step
	expected int64
	est      estimate
	state    string
	// suspended: it ran before and may have left partial receive state.
	suspended bool
}

// New starts a run: its first Ready asks to list both sides.
func New(cfg Config) *Machine {
	cfg.defaults()
	m := &Machine{cfg: cfg, limit: cfg.Concurrency, attempt: 1, phase: listing}
	m.out.List = true
	return m
}

// Ready returns the decisions since the last call and forgets them.
func (m *Machine) Ready() Ready {
	rd := m.out
	m.out = Ready{}
	return rd
}

// Attempt is the number of the current (or last) attempt.
func (m *Machine) Attempt() int { return m.attempt }

// LastAttempt is the report of the last attempt that ended, if any (while
// a later attempt runs or waits: what made it retry).
func (m *Machine) LastAttempt() (Report, bool) { return m.last, m.last.Attempts > 0 }

// Limit is the current step limit.
func (m *Machine) Limit() int { return m.limit }

// Steps is the current attempt's planned steps, in plan order.
func (m *Machine) Steps() []StepView {
	out := make([]StepView, len(m.steps))
	for i, s := range m.steps {
		out[i] = StepView{ID: s.id, FS: s.fs.plan.Path, Step: s.step.String(), Expected: s.expected, State: s.state}
	}
	return out
}

// Listed feeds the listings of both sides (or why they failed).
func (m *Machine) Listed(sender, receiver []endpoint.Filesystem, senderErr, receiverErr error) {
	if m.phase != listing {
		return
	}
	m.phase = running
	switch {
	case senderErr != nil:
		m.endAttempt(Report{Filesystems: []FSReport{{FS: "(sender)", State: FSFailed, Err: fmt.Errorf("list sender: %w", senderErr), Permanent: Permanent(senderErr)}}})
		return
	case receiverErr != nil:
		m.endAttempt(Report{Filesystems: []FSReport{{FS: "(receiver)", State: FSFailed, Err: fmt.Errorf("list receiver: %w", receiverErr), Permanent: Permanent(receiverErr)}}})
		return
	}
	plan, err := planner.Plan(planner.Input{Sender: toPlanner(sender), Receiver: toPlanner(receiver), Policy: m.cfg.Policy})
	if err != nil {
		m.endAttempt(Report{Filesystems: []FSReport{{FS: "(plan)", State: FSFailed, Err: err, Permanent: true}}})
		return
	}
	m.begin(plan, byPath(sender), byPath(receiver))
}

func toPlanner(in []endpoint.Filesystem) []planner.Filesystem {
	out := make([]planner.Filesystem, len(in))
	for i, f := range in {
		out[i] = planner.Filesystem{Path: f.Path, Info: f.Info, Versions: f.Versions, Send: f.Send}
	}
	return out
}

func byPath(fss []endpoint.Filesystem) map[string]*endpoint.Filesystem {
	out := make(map[string]*endpoint.Filesystem, len(fss))
	for i := range fss {
		out[fss[i].Path] = &fss[i]
	}
	return out
}

// begin sets up the attempt's filesystems and starts those that wait for
// nothing.
func (m *Machine) begin(plan *planner.Result, sender, receiver map[string]*endpoint.Filesystem) {
	m.fss = make([]*fsState, len(plan.Filesystems))
	m.steps, m.order, m.orderNext, m.urgent = nil, nil, 0, nil
	m.q = queue.New(m.limit)
	m.actions = map[ActionID]*fsState{}
	byPlan := make(map[string]*fsState, len(plan.Filesystems))
	maxSteps := 0
	for i := range plan.Filesystems {
		fp := &plan.Filesystems[i]
		f := &fsState{plan: fp, rep: FSReport{FS: fp.Path}}
		m.fss[i], byPlan[fp.Path] = f, f
		switch fp.Status {
		case planner.StatusConflict:
			f.rep.State, f.rep.Err, f.rep.Permanent = FSConflict, fp.Conflict, true
		case planner.StatusUpToDate:
			f.rep.State = FSUpToDate
		case planner.StatusNoSnapshots, planner.StatusPlaceholder:
			f.rep.State = FSSkipped
		case planner.StatusReplicate:
			f.rep.State = FSDone
		}
		for _, a := range fp.Actions {
			// Placeholders are created by the receiver itself.
			if a.Kind == planner.ActionAbortPartialReceive {
				f.pending = append(f.pending, Action{Kind: AbortPartialReceive, FS: fp.Path, Reason: a.Reason})
			}
		}
		if fp.Status == planner.StatusUpToDate && fp.Base != nil && sender[fp.Path] != nil && receiver[fp.Path] != nil {
			senderStale, holdTo := reconcileNeeds(*fp.Base, sender[fp.Path], receiver[fp.Path])
			if senderStale {
				f.pending = append(f.pending, Action{Kind: ConfirmOnSender, FS: fp.Path, Confirm: endpoint.SendRequest{FS: fp.Sender.String(), To: *fp.Base}})
			}
			if holdTo != nil {
				f.pending = append(f.pending, Action{Kind: MoveLastReceivedHold, FS: fp.Path, HoldTo: *holdTo})
			}
		}
		for j, s := range fp.Steps {
			st := &stepState{id: StepID(len(m.steps)), fs: f, index: j, step: s, state: "planned"}
			m.steps = append(m.steps, st)
			f.steps = append(f.steps, st)
		}
		maxSteps = max(maxSteps, len(fp.Steps))
		if fp.WaitFor != "" {
			parent := byPlan[fp.WaitFor]
			parent.children = append(parent.children, f)
		}
	}
	for j := range maxSteps {
		for _, f := range m.fss {
			if j < len(f.steps) {
				m.order = append(m.order, f.steps[j])
			}
		}
	}
	m.open = len(m.fss)
	for _, f := range m.fss {
		switch {
		case f.plan.WaitFor != "":
		case f.plan.Status == planner.StatusConflict:
			m.finish(f, false)
		default:
			// Up-to-date filesystems too: a foreign partial receive may
			// be due for an abort.
			m.start(f)
		}
	}
	m.askEstimates()
	m.maybeEnd()
}

// start begins a filesystem's work: its actions, then its steps.
func (m *Machine) start(f *fsState) {
	if f.finished {
		return
	}
	if m.cause != nil {
		m.fail(f, m.cause)
		return
	}
	if len(f.pending) > 0 {
		a := f.pending[0]
		a.ID = m.nextAction
		m.nextAction++
		f.pending[0] = a
		m.actions[a.ID] = f
		m.inFlight++
		m.out.Actions = append(m.out.Actions, a)
		return
	}
	if len(f.steps) == 0 {
		m.finish(f, true)
		return
	}
	m.queueNext(f)
}

// queueNext queues f's next step once its estimate is in.
func (m *Machine) queueNext(f *fsState) {
	if m.cause != nil {
		m.fail(f, m.cause)
		return
	}
	st := f.steps[f.next]
	switch st.est {
	case notAsked:
		f.wants = true
		m.urgent = append(m.urgent, st)
		return
	case asked:
		f.wants = true
		return // Estimated queues it
	}
	f.wants = false
	st.state = "waiting"
	d, err := m.q.Enqueue(st.id)
	if err != nil {
		panic(err) // IDs are fresh: a queue protocol error is a bug here
	}
	m.apply(d)
}

// askEstimates asks for estimates while fewer than SizeEstimates run:
// steps about to be queued first, then by step index and plan order.
func (m *Machine) askEstimates() {
	for m.estimating < m.cfg.SizeEstimates && m.cause == nil {
		var st *stepState
		for st == nil && len(m.urgent) > 0 {
			if m.urgent[0].est == notAsked {
				st = m.urgent[0]
			}
			m.urgent = m.urgent[1:]
		}
		for st == nil && m.orderNext < len(m.order) {
			if c := m.order[m.orderNext]; c.est == notAsked && !c.fs.finished {
				st = c
			}
			m.orderNext++
		}
		if st == nil {
			return
		}
		st.est = asked
		m.estimating++
		m.out.Estimate = append(m.out.Estimate, Estimate{ID: st.id, Req: m.sendRequest(st.fs.plan, st.step)})
	}
}

// Estimated feeds a step's size estimate; an error leaves it unknown.
func (m *Machine) Estimated(id StepID, size int64, err error) {
	st := m.step(id)
	if st == nil || (st.est != asked && st.est != abandoned) {
		return
	}
	m.estimating--
	st.est = known
	if err == nil && size > 0 {
		st.expected = size
	}
	if f := st.fs; f.wants && !f.finished && st.index == f.next {
		m.queueNext(f)
	}
	m.askEstimates()
	m.maybeEnd()
}

// apply records a queue decision and passes it on. A step the queue
// starts after its filesystem failed (the run was cancelled while it
// waited) is done at once.
func (m *Machine) apply(d queue.Decision) {
	for _, id := range d.Suspend {
		m.steps[id].state = "suspending"
		m.out.Suspend = append(m.out.Suspend, id)
	}
	for i := 0; i < len(d.Start); i++ {
		id := d.Start[i]
		st := m.steps[id]
		if st.fs.finished {
			more, err := m.q.Done(id)
			if err != nil {
				panic(err)
			}
			d.Start = append(d.Start, more.Start...)
			continue
		}
		st.state = "running"
		m.inFlight++
		f := st.fs
		send := m.sendRequest(f.plan, st.step)
		m.out.Start = append(m.out.Start, Step{
			ID: id, FS: f.plan.Path, Planned: st.step,
			Send:     send,
			Receive:  endpoint.ReceiveRequest{FS: f.plan.Path, From: st.step.From, To: st.step.To, Full: st.step.Full(), Resuming: st.step.ResumeToken != "", Protection: send.Protection},
			Last:     st.index == len(f.steps)-1,
			Expected: st.expected,
			Resume:   st.suspended,
		})
	}
}

func (m *Machine) sendRequest(fp *planner.FSPlan, s planner.Step) endpoint.SendRequest {
	prot := m.cfg.Protection.Incremental
	if s.Full() {
		prot = m.cfg.Protection.Initial
	}
	return endpoint.SendRequest{
		FS: fp.Sender.String(), From: s.From, To: s.To, ResumeToken: s.ResumeToken, Protection: prot,
	}
}

// ActionDone feeds the end of an action.
func (m *Machine) ActionDone(id ActionID, err error) {
	f, ok := m.actions[id]
	if !ok {
		return
	}
	delete(m.actions, id)
	m.inFlight--
	a := f.pending[0]
	f.pending = f.pending[1:]
	if err != nil {
		switch a.Kind {
		case AbortPartialReceive:
			err = fmt.Errorf("abort partial receive (%s): %w", a.Reason, err)
		case ConfirmOnSender:
			err = fmt.Errorf("confirm %s on sender (up to date): %w", a.Confirm.To.RelName(), err)
		case MoveLastReceivedHold:
			err = fmt.Errorf("move last-received hold to %s (up to date): %w", a.HoldTo.RelName(), err)
		}
		m.fail(f, err)
	} else {
		m.start(f)
	}
	m.askEstimates()
	m.maybeEnd()
}

// StepDone feeds the end of a started step: err nil (received and
// confirmed), ErrSuspended (it stopped at a safe point as asked), or why
// it failed.
func (m *Machine) StepDone(id StepID, err error) {
	st := m.step(id)
	if st == nil || (st.state != "running" && st.state != "suspending") {
		return
	}
	m.inFlight--
	f := st.fs
	if errors.Is(err, ErrSuspended) && st.state == "suspending" && m.cause == nil {
		st.state, st.suspended = "suspended", true
		d, qerr := m.q.Suspended(id)
		if qerr != nil {
			panic(qerr)
		}
		m.apply(d)
		m.maybeEnd()
		return
	}
	d, qerr := m.q.Done(id)
	if qerr != nil {
		panic(qerr)
	}
	m.apply(d)
	if err != nil {
		st.state = "failed"
		m.fail(f, err)
	} else {
		st.state = "done"
		f.rep.StepsDone++
		f.next++
		if f.next < len(f.steps) {
			m.queueNext(f)
		} else {
			m.finishSelf(f)
		}
		if st.index == 0 {
			// The filesystem exists on the receiver now: children may
			// start.
			for _, c := range f.children {
				m.start(c)
			}
			f.children = nil
		}
	}
	m.askEstimates()
	m.maybeEnd()
}

// finish ends a filesystem that has no (more) steps; ok: its children may
// start, else they fail with it.
func (m *Machine) finish(f *fsState, ok bool) {
	m.finishSelf(f)
	children := f.children
	f.children = nil
	for _, c := range children {
		if ok {
			m.start(c)
		} else {
			m.failWaiting(c, f)
		}
	}
}

func (m *Machine) finishSelf(f *fsState) {
	if f.finished {
		return
	}
	f.finished, f.wants = true, false
	m.open--
	for _, st := range f.steps {
		if st.est == asked {
			st.est = abandoned
			m.out.Abandon = append(m.out.Abandon, st.id)
		}
	}
}

// fail ends f with err; the filesystems waiting for it fail too.
func (m *Machine) fail(f *fsState, err error) {
	f.rep.State, f.rep.Err, f.rep.Permanent = FSFailed, err, Permanent(err)
	m.finish(f, false)
}

func (m *Machine) failWaiting(c, parent *fsState) {
	c.rep.State, c.rep.Err = FSFailed, fmt.Errorf("parent %s was not replicated", parent.plan.Path)
	c.rep.Permanent = parent.rep.Permanent
	m.finish(c, false)
}

// Resize changes the step limit; lowering it suspends the youngest
// running steps.
func (m *Machine) Resize(n int) error {
	if n < 1 {
		return fmt.Errorf("concurrency must be at least 1, not %d", n)
	}
	m.limit = n
	if m.phase == running && m.q != nil {
		d, err := m.q.Resize(n)
		if err != nil {
			return err
		}
		m.apply(d)
	}
	return nil
}

// TimerFired feeds the end of the backoff Ready asked for: the next
// attempt begins.
func (m *Machine) TimerFired() {
	if m.phase != sleeping {
		return
	}
	m.attempt++
	m.phase = listing
	m.out.List = true
}

// Cancel ends the run: nothing new starts, what did not start fails with
// cause, and the run is over once what is in flight ended.
func (m *Machine) Cancel(cause error) {
	if m.cause != nil || m.phase == over {
		return
	}
	if cause == nil {
		cause = errors.New("run cancelled")
	}
	m.cause = cause
	switch m.phase {
	case sleeping:
		m.done(m.last)
	case running:
		for _, f := range m.fss {
			if !f.finished && m.idle(f) {
				m.fail(f, cause)
			}
		}
		m.maybeEnd()
	}
}

// idle: nothing of f is in flight or queued.
func (m *Machine) idle(f *fsState) bool {
	for _, a := range m.actions {
		if a == f {
			return false
		}
	}
	if f.next < len(f.steps) {
		switch m.steps[f.steps[f.next].id].state {
		case "running", "suspending":
			return false
		case "waiting", "suspended":
			// Queued but not started: it will not be.
			return true
		}
	}
	return true
}

func (m *Machine) maybeEnd() {
	if m.phase != running || m.open > 0 || m.inFlight > 0 || m.estimating > 0 {
		return
	}
	rep := Report{Filesystems: make([]FSReport, len(m.fss))}
	for i, f := range m.fss {
		rep.Filesystems[i] = f.rep
	}
	m.endAttempt(rep)
}

func (m *Machine) endAttempt(rep Report) {
	rep.Attempts = m.attempt
	m.last = rep
	if !rep.retry() || m.attempt >= m.cfg.MaxAttempts || m.cause != nil {
		m.done(rep)
		return
	}
	m.phase = sleeping
	m.out.Sleep = m.cfg.Backoff(m.attempt)
}

func (m *Machine) done(rep Report) {
	m.phase = over
	m.out.Done = &rep
	m.out.Sleep = 0
}

func (m *Machine) step(id StepID) *stepState {
	if id < 0 || int(id) >= len(m.steps) {
		return nil
	}
	return m.steps[id]
}
