package zfsreal_test

import (
	"os"
	"testing"

	"zrepl.dev/zrepl/zfsreal/zfsrealtest"
)

// TestConformance runs the zfs.ZFS conformance suite against zfsreal on
// real ZFS. It skips where there is none, unless ZREPL_PLATFORMTEST is set
// (make platformtest), where that is a failure.
func TestConformance(t *testing.T) {
	zfsrealtest.Run(t, os.Getenv("ZREPL_PLATFORMTEST") != "")
}
