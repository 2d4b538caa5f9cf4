package scenarios

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"zrepl.dev/zrepl/engine/replication"
)

// Hooks of the replay test; nil and "" in every other test.
var (
	// replayTrace receives, at the end of each history, the history's
	// trace (see traceRun) and both hosts' final state.
	replayTrace func(string)
	// forceFault replaces the fault every replicate action draws (the
	// draw stays, so the history's other draws are the same).
	forceFault string
	// traceAlways prints every run's trace as it ends (debugging).
	traceAlways bool
)

// traceRun records what a run did, for the replay test.
func (w *world) traceRun(j job, fault string, run *replication.Run, rep *replication.Report, errs []error) {
	if replayTrace == nil {
		return
	}
	fmt.Fprintf(&w.trace, "run %s %s attempts=%d\n", j.id, fault, rep.Attempts)
	for _, f := range rep.Filesystems {
		fmt.Fprintf(&w.trace, "  %s %s steps=%d err=%v\n", f.FS, f.State, f.StepsDone, f.Err)
	}
	for _, s := range run.Progress().Steps {
		fmt.Fprintf(&w.trace, "  step %s %s %s %d/%d\n", s.FS, s.Step, s.State, s.Done, s.Expected)
	}
	if traceAlways {
		for _, err := range errs {
			fmt.Fprintf(&w.trace, "  error: %.300s\n", err)
		}
		fmt.Print(w.trace.String())
		w.trace.Reset()
	}
}

// TestReplayResize replays histories whose every run suffers a resize
// (several steps at once), three times each, and compares what the runs
// did and where the hosts ended: every replay must be the same. The
// sequencer orders the run's concurrent calls (see sequencer); without
// it, about 3 histories in 20 replayed differently.
// ZREPL_REPLAY_SEEDS=n (and ZREPL_REPLAY_FIRST=s) measure more.
func TestReplayResize(t *testing.T) {
	n := 30
	if s := os.Getenv("ZREPL_REPLAY_SEEDS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	forceFault = "resize"
	defer func() { forceFault, replayTrace = "", nil }()
	differ := 0
	first := 1
	if s := os.Getenv("ZREPL_REPLAY_FIRST"); s != "" {
		first, _ = strconv.Atoi(s)
	}
	for seed := first; seed < first+n; seed++ {
		var traces []string
		replayTrace = func(s string) { traces = append(traces, s) }
		for range 3 {
			t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
				setFlag(t, "rapid.seed", strconv.Itoa(seed))
				setFlag(t, "rapid.nofailfile", "true")
				checkScenarios(t, 1)
			})
		}
		if len(traces) != 3 || traces[0] != traces[1] || traces[0] != traces[2] {
			differ++
			if d := os.Getenv("ZREPL_REPLAY_DUMP"); d != "" {
				for i, tr := range traces {
					_ = os.WriteFile(fmt.Sprintf("%s/seed%d-%d.txt", d, seed, i), []byte(tr), 0o644)
				}
			}
			if len(traces) == 3 {
				a, b := strings.Split(traces[0], "\n"), strings.Split(traces[1], "\n")
				if traces[0] == traces[1] {
					b = strings.Split(traces[2], "\n")
				}
				for i := range min(len(a), len(b)) {
					if a[i] != b[i] {
						t.Logf("seed %d: first difference at line %d:\n  %s\n  %s", seed, i, a[i], b[i])
						break
					}
				}
			}
		}
	}
	t.Logf("%d of %d histories replayed differently", differ, n)
	if differ > 0 {
		t.Errorf("%d of %d histories with concurrent steps replayed differently", differ, n)
	}
}

// TestTraceFailfile replays a failing history from rapid's fail file and
// prints what each run did (reports, steps, every attempt's errors):
//
//	ZREPL_SCENARIOS_TRACE=testdata/rapid/TestScenarios/X.fail go test ./scenarios -run TraceFailfile -v
func TestTraceFailfile(t *testing.T) {
	file := os.Getenv("ZREPL_SCENARIOS_TRACE")
	if file == "" {
		t.Skip("set ZREPL_SCENARIOS_TRACE to a rapid fail file")
	}
	replayTrace = func(s string) { fmt.Println(s) }
	traceAlways = true
	defer func() { replayTrace, traceAlways = nil, false }()
	setFlag(t, "rapid.failfile", file)
	checkScenarios(t, 1)
}
