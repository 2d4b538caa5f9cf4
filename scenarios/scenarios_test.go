package scenarios

import (
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/grpclog"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) {
	// gRPC logs every reset and partition the simulator provokes.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
	goleak.VerifyTestMain(m)
}

// defaultChecks bounds `make test`: histories per rapid.Check unless
// -rapid.checks is given.
const defaultChecks = 300

// setDefaultChecks applies n unless the command line chose -rapid.checks.
func setDefaultChecks(t *testing.T, n int) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if set {
		return
	}
	f := flag.Lookup("rapid.checks")
	old := f.Value.String()
	if err := f.Value.Set(strconv.Itoa(n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Value.Set(old) })
}

// history is one simulated history: random actions, the invariants after
// each, then the liveness check, then no goroutine may be left.
func history(t *rapid.T) {
	ignore := goleak.IgnoreCurrent()
	w := newWorld(t)
	w.check(t)
	t.Repeat(map[string]func(*rapid.T){
		"snapshot":          w.snapshot,
		"destroy-sender":    w.destroySender,
		"replicate":         w.replicate,
		"prune-sender":      w.pruneSender,
		"prune-receiver":    w.pruneReceiver,
		"rollback-receiver": w.rollbackReceiver,
		"forged-pull":       w.forgedPull,
		"toggle-key":        w.toggleKey,
		"":                  w.check,
	})
	w.loadAllKeys(t)
	for _, j := range jobs {
		w.converge(t, j)
		w.check(t)
	}
	if replayTrace != nil {
		replayTrace(w.trace.String() + w.dump(t))
	}
	synctest.Wait()
	if err := goleak.Find(ignore); err != nil {
		t.Fatalf("LEAK: goroutines left behind by the history: %v", err)
	}
}

// checkScenarios runs each history in its own synctest bubble, so every
// timer (gRPC backoff and keepalives, the driver's retry backoff,
// partitions) runs in virtual time that starts afresh, and a history's
// outcome depends on its draws alone. rapid itself stays outside, on real
// time, so its shrinking has a real time budget.
func checkScenarios(t *testing.T, checks int) {
	setDefaultChecks(t, checks)
	start := time.Now()
	n := 0
	// first is the first failure rapid met, before shrinking: a replay of
	// a history with concurrent steps may not fail the same way.
	first := ""
	stats.runs.Store(0)
	stats.faulty.Store(0)
	stats.completed.Store(0)
	stats.goaways.Store(0)
	stats.sshExits.Store(0)
	stats.keyFailures.Store(0)
	stats.resumes.Store(0)
	rapid.Check(t, func(rt *rapid.T) {
		n++
		var failure any
		t.Run(fmt.Sprintf("history%d", n), func(t *testing.T) {
			synctest.Test(t, func(bt *testing.T) {
				// rapid reports a failed property by panicking; carry
				// the panic out of the bubble to rapid's goroutine. A
				// leak also ends the bubble with synctest's deadlock
				// panic, which rapid never sees: log the failure first.
				defer func() {
					failure = recover()
					if s := fmt.Sprint(failure); strings.HasPrefix(s, "LEAK") {
						bt.Log(s)
					}
				}()
				history(rt)
			})
		})
		if failure != nil {
			if first == "" && !invalidData(failure) {
				first = fmt.Sprint(failure)
				t.Logf("first failure (before shrinking), history %d: %s", n, first)
			}
			rethrow(failure, failureDepth(failure))
		}
	})
	if took := time.Since(start); took > 0 {
		t.Logf("%d histories (with shrinking) in %v: %.2f histories/s; %d replication runs, %d with a fault, %d filesystems completed by a step, %d sends resumed; %d runs got GOAWAY too_many_pings, %d lost an ssh process mid-use; %d filesystems failed for want of a key",
			n, took.Round(time.Millisecond), float64(n)/took.Seconds(), stats.runs.Load(), stats.faulty.Load(), stats.completed.Load(), stats.resumes.Load(), stats.goaways.Load(), stats.sshExits.Load(), stats.keyFailures.Load())
	}
}

// rethrow re-panics a history's failure in rapid's goroutine, depth calls
// deep. rapid's shrinker takes a smaller history as failing the same way
// when its panic's traceback is the same, and every failure is re-panicked
// here: a depth per kind of failure keeps the shrinker on one kind, and
// apart from rapid's own invalid-data panics (a shrunk history that ran
// out of draws), which it would otherwise take for the failure.
func rethrow(failure any, depth int) {
	if depth > 0 {
		rethrow(failure, depth-1)
		return
	}
	panic(failure)
}

// failureDepth is 0 for rapid's invalid data, else 1 plus a hash of the
// failure's kind: the text before its first colon ("INVARIANT completed",
// "LIVENESS", ...).
func failureDepth(failure any) int {
	if invalidData(failure) {
		return 0
	}
	kind, _, _ := strings.Cut(fmt.Sprint(failure), ":")
	h := fnv.New32a()
	h.Write([]byte(kind))
	return 1 + int(h.Sum32()%61)
}

// invalidData: rapid's panic for a history it cannot draw (a type it does
// not export).
func invalidData(failure any) bool {
	return fmt.Sprintf("%T", failure) == "rapid.invalidData"
}

// TestScenarios is the simulator's bounded run (make test). Replay a
// failure with go test ./scenarios -run 'TestScenarios$' -rapid.seed=S.
func TestScenarios(t *testing.T) {
	checkScenarios(t, defaultChecks)
}

// TestScenarioLong is the long run for make fuzz and soak testing.
func TestScenarioLong(t *testing.T) {
	if os.Getenv("ZREPL_SCENARIOS_LONG") != "1" {
		t.Skip("set ZREPL_SCENARIOS_LONG=1 for the long simulation")
	}
	checkScenarios(t, 500)
}

// regressions are histories that once failed, by rapid seed (a seed fixes
// a history's draws). Each must pass now. Add a line when a failure is
// fixed: the seed is in rapid's "To reproduce" line. A seed names a
// history only for the actions and draws of its time: when they change,
// it replays another history (kept as coverage; the comment says which
// change it predates).
var regressions = []struct {
	seed uint64
	why  string
}{
	// Both predate the drawn attempts per run, the pull job, encryption
	// and the keepalive and ssh faults: they replay other histories now.
	{9096100523423863516, "a step suspended by a resize counts the bytes in flight twice: the resumability check allows for them"},
	{848528315303454903, "after a receiver rollback the receiver's newest snapshot survives on the sender only as another job's cursor: nothing is left to send"},
	{864054, "a newest-only step after a finished interrupted full receive, interrupted too, resumes (was a foreign partial receive for good; TestNewestOnlyStepResumes)"},
	{3334660, "ssh exits right after a data connection's hello: the call claiming it must name ssh's exit (was a bad request about the ticket; TestDeadDataConnNamesSSH)"},
	{482895, "a key is unloaded, but the plain job's filesystem fails for its encrypted placeholder (a conflict of its own), not for the key"},
}

func TestRegressionSeeds(t *testing.T) {
	for _, r := range regressions {
		t.Run(strconv.FormatUint(r.seed, 10), func(t *testing.T) {
			setFlag(t, "rapid.seed", strconv.FormatUint(r.seed, 10))
			setFlag(t, "rapid.checks", "1")
			setFlag(t, "rapid.nofailfile", "true")
			t.Log(r.why)
			checkScenarios(t, 1)
		})
	}
}

// setFlag sets a rapid flag for the rest of the test.
func setFlag(t *testing.T, name, value string) {
	f := flag.Lookup(name)
	if f == nil {
		t.Fatalf("no flag %s", name)
	}
	old := f.Value.String()
	if err := f.Value.Set(value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Value.Set(old) })
}
