package scenarios

import (
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
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
	// Histories allocate much and keep little: collecting at eight times
	// the live heap, not twice, takes a quarter less CPU for about 100 MB
	// (measured with 300 histories: 400 saved a quarter, 800 another 5%)
	// and changes no outcome.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(800)
	}
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
	if left := bubbleGoroutines(); left != "" {
		t.Fatalf("LEAK: goroutines left behind by the history:\n%s", left)
	}
}

// bubbleGoroutines lists the goroutines of the caller's synctest bubble
// other than the caller, as the runtime's dump of all goroutines tells
// them ("goroutine 7 [select, synctest bubble 3]:"), so that histories
// running side by side in bubbles of their own do not count each other's.
func bubbleGoroutines() string {
	// A dump of a few dozen goroutines fits; a 1 MiB buffer, zeroed for
	// every history, was 1% of the simulator's time.
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	dumps := strings.Split(string(buf), "\n\n")
	// The first is the caller's own.
	header, _, _ := strings.Cut(dumps[0], "\n")
	_, bubble, ok := strings.Cut(header, "synctest bubble ")
	if !ok {
		panic("scenarios: bubbleGoroutines outside a bubble: " + header)
	}
	bubble = strings.TrimSuffix(bubble, "]:")
	var out []string
	for _, d := range dumps[1:] {
		h, frames, _ := strings.Cut(d, "\n")
		// The bubble's own: its root and the goroutine that waits for
		// the test function.
		own := strings.HasPrefix(frames, "internal/synctest.Run(") || strings.HasPrefix(frames, "testing/synctest.testingSynctestTest(")
		if strings.Contains(h, "synctest bubble "+bubble+"]") && !own {
			out = append(out, d)
		}
	}
	return strings.Join(out, "\n\n")
}

// checkScenarios runs each history in its own synctest bubble, so every
// timer (gRPC backoff and keepalives, the driver's retry backoff,
// partitions) runs in virtual time that starts afresh, and a history's
// outcome depends on its draws alone. rapid itself stays outside, on real
// time, so its shrinking has a real time budget.
//
// Histories share nothing but the stats, so with more than one check and
// no fixed seed, one rapid.Check per CPU runs side by side, splitting the
// budget (each one shrinks its own failures; a failure's seed replays it
// alone).
func checkScenarios(t *testing.T, checks int) {
	setDefaultChecks(t, checks)
	start := time.Now()
	stats.runs.Store(0)
	stats.faulty.Store(0)
	stats.completed.Store(0)
	stats.goaways.Store(0)
	stats.sshExits.Store(0)
	stats.keyFailures.Store(0)
	stats.resumes.Store(0)
	total, _ := strconv.Atoi(flag.Lookup("rapid.checks").Value.String())
	workers := min(runtime.GOMAXPROCS(0), total)
	if seed := flag.Lookup("rapid.seed").Value.String(); seed != "0" || forceFault != "" || replayTrace != nil {
		workers = 1
	}
	var n atomic.Int64
	if workers <= 1 {
		n.Store(int64(checkHistories(t, "")))
	} else {
		setFlag(t, "rapid.checks", strconv.Itoa((total+workers-1)/workers))
		t.Run("workers", func(t *testing.T) {
			for i := range workers {
				t.Run(fmt.Sprintf("w%d", i), func(t *testing.T) {
					t.Parallel()
					n.Add(int64(checkHistories(t, fmt.Sprintf("w%d ", i))))
				})
			}
		})
	}
	if took := time.Since(start); took > 0 {
		t.Logf("%d histories (with shrinking) in %v: %.2f histories/s; %d replication runs, %d with a fault, %d filesystems completed by a step, %d sends resumed; %d runs got GOAWAY too_many_pings, %d lost an ssh process mid-use; %d filesystems failed for want of a key",
			n.Load(), took.Round(time.Millisecond), float64(n.Load())/took.Seconds(), stats.runs.Load(), stats.faulty.Load(), stats.completed.Load(), stats.resumes.Load(), stats.goaways.Load(), stats.sshExits.Load(), stats.keyFailures.Load())
	}
}

// checkHistories is one rapid.Check of histories; it returns how many
// ran (with shrinking).
func checkHistories(t *testing.T, worker string) int {
	n := 0
	// first is the first failure rapid met, before shrinking.
	first := ""
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
				t.Logf("%sfirst failure (before shrinking), history %d: %s", worker, n, first)
			}
			rethrow(failure, failureDepth(failure))
		}
	})
	return n
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
	{1842319325431631810, "ssh exits after a handler error's header, before its details: the call names ssh's exit beside the server's text (was a bare server error; TestHandlerErrorDetailsLost)"},
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

// The leak check sees a goroutine its bubble left behind, and not those
// of other bubbles or outside any.
func TestLeakCheckSeesItsBubble(t *testing.T) {
	outside := make(chan struct{})
	defer close(outside)
	go func() { <-outside }()
	other := make(chan struct{})
	otherDone := make(chan struct{})
	go synctest.Test(t, func(t *testing.T) {
		defer close(otherDone)
		go func() { <-other }()
		<-other
	})
	synctest.Test(t, func(t *testing.T) {
		if left := bubbleGoroutines(); left != "" {
			t.Fatalf("a fresh bubble has goroutines:\n%s", left)
		}
		stop := make(chan struct{})
		go func() { <-stop }()
		synctest.Wait()
		if left := bubbleGoroutines(); !strings.Contains(left, "TestLeakCheckSeesItsBubble") {
			t.Errorf("the left goroutine is not listed: %q", left)
		}
		close(stop)
		synctest.Wait()
		if left := bubbleGoroutines(); left != "" {
			t.Errorf("an ended goroutine is listed:\n%s", left)
		}
	})
	close(other)
	<-otherDone
}
