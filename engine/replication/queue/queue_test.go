package queue

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

func must(t *testing.T) func(Decision, error) Decision {
	return func(d Decision, err error) Decision {
		t.Helper()
		require.NoError(t, err)
		return d
	}
}

func TestResizeDownSuspendsYoungestAndWaitsForAck(t *testing.T) {
	ok := must(t)
	q := New(3)
	for i := 1; i <= 5; i++ {
		ok(q.Enqueue(StepID(i)))
	}
	assert.Equal(t, []StepID{1, 2, 3}, q.Running())

	d := ok(q.Resize(1))
	assert.Equal(t, []StepID{3, 2}, d.Suspend, "youngest first")
	assert.Empty(t, d.Start)
	assert.Equal(t, 3, q.Occupied(), "suspending steps keep their slots until acknowledged")

	ok(q.Done(1))
	assert.Equal(t, 2, q.Occupied())
	assert.Empty(t, ok(q.Suspended(3)).Start, "still one suspension outstanding, no free slot under limit 1")
	d = ok(q.Suspended(2))
	assert.Equal(t, []StepID{2}, d.Start, "the suspended step resumes before steps that never ran")
	assert.Equal(t, []StepID{3, 4, 5}, q.Waiting())

	d = ok(q.Resize(4))
	assert.Equal(t, []StepID{3, 4, 5}, d.Start, "raising the limit starts waiting steps at once")
}

func TestProtocolErrors(t *testing.T) {
	q := New(0)
	assert.Equal(t, 1, q.Limit(), "a limit below 1 would never run anything")
	_, err := q.Done(7)
	assert.ErrorContains(t, err, "step 7 reported done while unknown")
	must(t)(q.Enqueue(1))
	_, err = q.Enqueue(1)
	assert.ErrorContains(t, err, "enqueued twice")
	_, err = q.Suspended(1)
	assert.ErrorContains(t, err, "while running")
	_, err = q.Resize(0)
	assert.ErrorContains(t, err, "at least 1")
	must(t)(q.Done(1))
	assert.True(t, q.Idle())
	assert.Equal(t, Finished, q.State(1))
}

// A random sequence of events keeps the queue's promises: never more steps
// doing IO than the larger of the old and new limit during a transition,
// never more than the limit once suspensions are acknowledged, no step lost
// or duplicated, and every step eventually finishes.
func TestQueueProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		q := New(rapid.IntRange(1, 4).Draw(t, "limit"))
		next := StepID(1)
		maxLimitSinceAcks := q.Limit()
		apply := func(d Decision, err error) {
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range d.Start {
				if q.State(id) != Running {
					t.Fatalf("started step %d is %s", id, q.State(id))
				}
			}
			for _, id := range d.Suspend {
				if q.State(id) != Suspending {
					t.Fatalf("suspended step %d is %s", id, q.State(id))
				}
			}
		}
		check := func() {
			// Counted here, not with Occupied, so a wrong Occupied is caught.
			occupied := len(q.running) + len(q.suspending)
			if len(q.suspending) == 0 {
				maxLimitSinceAcks = q.Limit()
				if occupied > q.Limit() {
					t.Fatalf("%d steps occupy slots under limit %d", occupied, q.Limit())
				}
			}
			if len(q.running) > q.Limit() {
				t.Fatalf("%d running under limit %d", len(q.running), q.Limit())
			}
			if occupied > maxLimitSinceAcks {
				t.Fatalf("%d occupied, above every limit in force since the last quiet point (%d)", occupied, maxLimitSinceAcks)
			}
			if len(q.waiting) > 0 && occupied < q.Limit() {
				t.Fatalf("a slot is free while %d steps wait", len(q.waiting))
			}
			seen := map[StepID]bool{}
			for _, l := range [][]StepID{q.waiting, q.running, q.suspending} {
				for _, id := range l {
					if seen[id] {
						t.Fatalf("step %d listed twice", id)
					}
					seen[id] = true
				}
			}
		}
		t.Repeat(map[string]func(*rapid.T){
			"enqueue": func(t *rapid.T) {
				apply(q.Enqueue(next))
				next++
			},
			"done": func(t *rapid.T) {
				active := append(q.Running(), q.suspending...)
				if len(active) == 0 {
					t.Skip("nothing running")
				}
				apply(q.Done(rapid.SampledFrom(active).Draw(t, "step")))
			},
			"ack": func(t *rapid.T) {
				if len(q.suspending) == 0 {
					t.Skip("nothing suspending")
				}
				apply(q.Suspended(rapid.SampledFrom(q.suspending).Draw(t, "step")))
			},
			"resize": func(t *rapid.T) {
				n := rapid.IntRange(1, 6).Draw(t, "limit")
				maxLimitSinceAcks = max(maxLimitSinceAcks, n)
				apply(q.Resize(n))
			},
			"": func(*rapid.T) { check() },
		})
		// Drain: finishing everything that runs and acknowledging every
		// suspension eventually finishes every step.
		for !q.Idle() {
			switch {
			case len(q.suspending) > 0:
				apply(q.Suspended(q.suspending[0]))
			case len(q.running) > 0:
				apply(q.Done(q.running[0]))
			default:
				t.Fatalf("steps wait but nothing runs: %v", q.waiting)
			}
			check()
		}
		for id := StepID(1); id < next; id++ {
			if q.State(id) != Finished {
				t.Fatalf("step %d ended %s", id, q.State(id))
			}
		}
	})
}
