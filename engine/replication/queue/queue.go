// Package queue is the step queue of a replication run: a pure state
// machine that decides which steps run, given at most N at once, where N
// can change while steps run. It does no IO; the driver feeds it events
// (a step was enqueued, finished, acknowledged a suspension; the limit
// changed) and carries out the decisions it returns (start these steps,
// suspend those), so a simulator can drive it event by event.
//
// Lowering the limit suspends the youngest running steps. A suspended step
// keeps its slot until the driver acknowledges that it stopped at a safe
// point (Suspended), so the number of steps doing IO never exceeds the
// old limit during the transition and then never exceeds the new one. A
// suspended step goes back to the front of the waiting line: it resumes
// before steps that never started.
package queue

import (
	"fmt"
	"slices"
)

// StepID identifies a step within one run.
type StepID int

// Decision is what the driver must do after an event.
type Decision struct {
	// Start these steps now, in this order.
	Start []StepID
	// Suspend these steps at their next safe point and acknowledge with
	// Suspended.
	Suspend []StepID
}

// State of a step in the queue.
type State int

const (
	Unknown State = iota
	Waiting
	Running
	Suspending
	Finished
)

func (s State) String() string {
	return [...]string{"unknown", "waiting", "running", "suspending", "finished"}[s]
}

// Queue is the step queue. It is not safe for concurrent use: the driver
// serialises events.
type Queue struct {
	limit      int
	waiting    []StepID // front first
	running    []StepID // oldest start first
	suspending []StepID
	state      map[StepID]State
}

// New returns a queue that runs at most limit steps at once (at least 1).
func New(limit int) *Queue {
	return &Queue{limit: max(limit, 1), state: map[StepID]State{}}
}

// Limit is the current limit.
func (q *Queue) Limit() int { return q.limit }

// State reports the state of a step.
func (q *Queue) State(id StepID) State { return q.state[id] }

// Running lists the running steps, oldest first (suspending ones excluded).
func (q *Queue) Running() []StepID { return slices.Clone(q.running) }

// Waiting lists the waiting steps, next first.
func (q *Queue) Waiting() []StepID { return slices.Clone(q.waiting) }

// Occupied is the number of slots in use: running plus suspending steps.
func (q *Queue) Occupied() int { return len(q.running) + len(q.suspending) }

// Idle reports whether nothing waits, runs or is being suspended.
func (q *Queue) Idle() bool { return q.Occupied() == 0 && len(q.waiting) == 0 }

// Enqueue adds a new step at the back of the waiting line.
func (q *Queue) Enqueue(id StepID) (Decision, error) {
	if s := q.state[id]; s != Unknown {
		return Decision{}, fmt.Errorf("step %d enqueued twice (it is %s)", id, s)
	}
	q.state[id] = Waiting
	q.waiting = append(q.waiting, id)
	return q.fill(), nil
}

// Done records that a running (or suspending) step finished, successfully
// or not; its slot is free.
func (q *Queue) Done(id StepID) (Decision, error) {
	switch q.state[id] {
	case Running:
		q.running = remove(q.running, id)
	case Suspending:
		// It finished before reaching a safe point: as good as suspended,
		// but there is nothing left to resume.
		q.suspending = remove(q.suspending, id)
	default:
		return Decision{}, fmt.Errorf("step %d reported done while %s", id, q.state[id])
	}
	q.state[id] = Finished
	return q.fill(), nil
}

// Suspended acknowledges that a suspending step stopped at a safe point.
// Its slot is free and it waits again, ahead of steps that never ran.
func (q *Queue) Suspended(id StepID) (Decision, error) {
	if q.state[id] != Suspending {
		return Decision{}, fmt.Errorf("step %d acknowledged a suspension while %s", id, q.state[id])
	}
	q.suspending = remove(q.suspending, id)
	q.state[id] = Waiting
	q.waiting = append([]StepID{id}, q.waiting...)
	return q.fill(), nil
}

// Resize changes the limit. Raising it starts waiting steps at once;
// lowering it suspends the youngest running steps.
func (q *Queue) Resize(limit int) (Decision, error) {
	if limit < 1 {
		return Decision{}, fmt.Errorf("concurrency must be at least 1, not %d", limit)
	}
	q.limit = limit
	var d Decision
	for len(q.running) > q.limit {
		youngest := q.running[len(q.running)-1]
		q.running = q.running[:len(q.running)-1]
		q.suspending = append(q.suspending, youngest)
		q.state[youngest] = Suspending
		d.Suspend = append(d.Suspend, youngest)
	}
	d.Start = q.fill().Start
	return d, nil
}

// fill starts waiting steps while slots are free.
func (q *Queue) fill() Decision {
	var d Decision
	for len(q.waiting) > 0 && q.Occupied() < q.limit {
		id := q.waiting[0]
		q.waiting = q.waiting[1:]
		q.running = append(q.running, id)
		q.state[id] = Running
		d.Start = append(d.Start, id)
	}
	return d
}

func remove(s []StepID, id StepID) []StepID {
	i := slices.Index(s, id)
	return slices.Delete(s, i, i+1)
}
