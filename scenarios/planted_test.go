package scenarios

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The switches of engine/internal/plantedbugs, by the names its EnvVar
// takes (an internal package of engine/: scenarios/ may not import it).
const (
	plantedEnv           = "ZREPL_PLANTED_BUGS"
	earlyStepRelease     = "early-step-release"
	cursorInSend         = "cursor-in-send"
	skipResumeTokenCheck = "skip-resume-token-check"
)

// plantedRun re-runs this test binary's TestScenarios with a planted bug
// switched on (engine/internal/plantedbugs reads its switches from the
// environment of a test binary, since scenarios/ may not import it).
func plantedRun(t *testing.T, bug string, checks string) (string, error) {
	if os.Getenv(plantedEnv) != "" {
		t.Skip("already inside a planted-bug run")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestScenarios$", "-rapid.checks="+checks, "-rapid.nofailfile", "-rapid.shrinktime=2s")
	cmd.Env = append(os.Environ(), plantedEnv+"="+bug)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Each planted bug must make the simulator fail within the CI budget, on
// the invariant that guards against it. (TestScenarios itself is the run
// with every switch off.)
func TestPlantedBugsAreFound(t *testing.T) {
	for _, c := range []struct {
		bug        string
		invariants []string
	}{
		// Mostly an interrupted step without its hold; sometimes first a
		// completed run whose holds are off.
		{earlyStepRelease, []string{"INVARIANT step-protected", "INVARIANT completed"}},
		// An unconfirmed cursor, or a completed run whose abstractions
		// are off.
		{cursorInSend, []string{"INVARIANT cursor-confirmed", "INVARIANT completed"}},
		// A forged token's stream, the step holds the unchecked request
		// left (which a completed run then finds), or ZFS refusing the
		// forged token in our place with its own words (e.g. a plain
		// resume of an encrypted filesystem whose key is not loaded).
		{skipResumeTokenCheck, []string{"INVARIANT source-serves-request", "INVARIANT completed", "INVARIANT source-refuses-clearly"}},
	} {
		t.Run(c.bug, func(t *testing.T) {
			// Up to 500 histories: the run stops at the first failure,
			// typically within the first 100 (9 in 10 within 300).
			out, err := plantedRun(t, c.bug, "500")
			if err == nil {
				t.Fatalf("the simulator passed with planted bug %s:\n%s", c.bug, tail(out))
			}
			// The first failure counts: shrinking may lose it where a
			// history does not replay alike (see run).
			first := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "first failure (before shrinking)") {
					first = l
					break
				}
			}
			found := false
			for _, inv := range c.invariants {
				found = found || strings.Contains(first, inv)
			}
			if !found {
				t.Fatalf("planted bug %s failed, but not on %v:\n%s", c.bug, c.invariants, tail(out))
			}
			t.Log(strings.TrimSpace(first))
		})
	}
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	var keep []string
	for _, l := range lines {
		if strings.Contains(l, "first failure") || strings.Contains(l, "INVARIANT") || strings.Contains(l, "LIVENESS") || strings.Contains(l, "[rapid]") && !strings.Contains(l, "draw") {
			keep = append(keep, l)
		}
	}
	if len(keep) > 20 {
		keep = keep[:20]
	}
	return strings.Join(keep, "\n")
}
