// Package plantedbugs holds switches that plant known bugs in the engine,
// so the simulator in scenarios/ can show that its invariants catch them.
//
// In a normal build every switch is the constant false, so the compiler
// drops the bug and a product binary has no way to turn one on. Only a
// build with the tag plantedbugs (which scenarios' TestPlantedBugsAreFound
// makes of its own test binary) has them as variables, read from the
// environment variable EnvVar, a comma-separated list of switch names:
// scenarios/ lies outside engine/ and cannot set them directly (internal
// package).
package plantedbugs

// EnvVar names the switches to turn on in a plantedbugs build.
const EnvVar = "ZREPL_PLANTED_BUGS"

// Names of the switches in EnvVar.
const (
	NameEarlyStepRelease     = "early-step-release"
	NameCursorInSend         = "cursor-in-send"
	NameSkipResumeTokenCheck = "skip-resume-token-check"
)
