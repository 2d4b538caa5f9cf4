// Package plantedbugs holds switches that plant known bugs in the engine,
// so the simulator in scenarios/ can show that its invariants catch them.
// Every switch is false in a normal binary. Only a test binary (see
// testing.Testing) reads them from the environment variable
// ZREPL_PLANTED_BUGS, a comma-separated list of switch names: scenarios/
// lies outside engine/ and cannot set them directly (internal package),
// so it re-runs its own test binary with the variable set.
package plantedbugs

import (
	"os"
	"strings"
	"testing"
)

// EnvVar names the switches to turn on in a test binary.
const EnvVar = "ZREPL_PLANTED_BUGS"

// Names of the switches in EnvVar.
const (
	NameEarlyStepRelease     = "early-step-release"
	NameCursorInSend         = "cursor-in-send"
	NameSkipResumeTokenCheck = "skip-resume-token-check"
)

var (
	// EarlyStepRelease: the sender releases the step hold on the step's
	// target right after starting the send, before the receiver confirmed.
	EarlyStepRelease bool
	// CursorInSend: the sender moves the replication cursor to the step's
	// target when the send starts, not when the receiver confirmed it.
	CursorInSend bool
	// SkipResumeTokenCheck: the sender does not check that a resume token
	// encodes the requested step.
	SkipResumeTokenCheck bool
)

func init() {
	if !testing.Testing() {
		return
	}
	for _, name := range strings.Split(os.Getenv(EnvVar), ",") {
		switch strings.TrimSpace(name) {
		case NameEarlyStepRelease:
			EarlyStepRelease = true
		case NameCursorInSend:
			CursorInSend = true
		case NameSkipResumeTokenCheck:
			SkipResumeTokenCheck = true
		}
	}
}
