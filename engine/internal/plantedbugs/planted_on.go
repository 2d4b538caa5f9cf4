//go:build plantedbugs

package plantedbugs

import (
	"os"
	"strings"
)

// Enabled is whether this build can plant bugs at all.
const Enabled = true

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
