//go:build !plantedbugs

package plantedbugs

// Enabled is whether this build can plant bugs at all.
const Enabled = false

// The switches, each documented in planted_on.go: constant false, so the
// code behind them is not compiled in.
const (
	EarlyStepRelease     = false
	CursorInSend         = false
	SkipResumeTokenCheck = false
)
