package platformtest

import (
	"os"
	"testing"

	"zrepl.dev/zrepl/engine/zfs/zfstest"
	"zrepl.dev/zrepl/zfsreal/zfsrealtest"
)

// TestConformance runs the conformance suite, which `make test` runs on
// zfsmodel, against zfsreal on real OpenZFS.
func TestConformance(t *testing.T) {
	t.Logf("conformance cases: %d", len(zfstest.CaseNames()))
	zfsrealtest.Run(t, os.Getenv(EnvVar) != "")
}
