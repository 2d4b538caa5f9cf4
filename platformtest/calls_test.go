package platformtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsreal"
)

// verbCounts counts zfs children by verb; a size estimate (send -nvP)
// and an aborted receive (recv -A) count apart from the streams.
func verbCounts(invs []zfsreal.Invocation) map[string]int {
	out := map[string]int{}
	for _, inv := range invs {
		verb := "?"
		if len(inv.Args) > 0 {
			verb = inv.Args[0]
		}
		switch {
		case verb == "send" && slices.Contains(inv.Args, "-nvP"):
			verb = "send-size"
		case verb == "recv" && slices.Contains(inv.Args, "-A"):
			verb = "recv-abort"
		}
		out[verb]++
	}
	return out
}

func formatCounts(c map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range c {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
	}
	return strings.Join(parts, " ")
}

// TestZFSProcessesPerRun counts the zfs processes of an initial, an
// incremental and an up-to-date run of N filesystems, by verb, and prints
// one line per run (issue 13: the cost is the number of processes):
//
//	PLATFORMTEST-ZFSCALLS run=<initial|incremental|up-to-date> fs=N steps=S seconds=T total=P <verb>=<count> ...
func TestZFSProcessesPerRun(t *testing.T) {
	const nfs = 6
	calls := &invocationLog{}
	p := newRealPairOpts(t, 1<<30, zfsreal.Options{Observe: calls.add})
	ctx := context.Background()
	var fss []zfs.DatasetPath
	for i := range nfs {
		fs := zfs.MustDatasetPath(fmt.Sprintf("%s/fs%02d", p.src, i))
		require.NoError(t, p.h.CreateFilesystem(ctx, fs, false))
		fss = append(fss, fs)
	}
	snapAll := func(name string, seed int64) {
		for i, fs := range fss {
			require.NoError(t, p.h.WriteData(ctx, fs, seed+int64(i), 64<<10))
			require.NoError(t, p.z.Snapshot(ctx, fs, name))
		}
	}
	snapAll("s1", 1)
	snapAll("s2", 2)
	run := func(what string) []zfsreal.Invocation {
		calls.take()
		start := time.Now()
		rep := p.run(replication.Config{Policy: planner.Policy{InitialReplication: planner.AllSnapshots}}, nil)
		took := time.Since(start)
		require.NoError(t, rep.Err(), what)
		steps := 0
		for _, f := range rep.Filesystems {
			steps += f.StepsDone
		}
		inv := calls.take()
		fmt.Printf("PLATFORMTEST-ZFSCALLS run=%s fs=%d steps=%d seconds=%.2f total=%d %s\n",
			what, nfs, steps, took.Seconds(), len(inv), formatCounts(verbCounts(inv)))
		return inv
	}
	run("initial")
	snapAll("s3", 3)
	run("incremental")
	// Issue 13: an up-to-date run is one listing per side whatever N.
	assert.Len(t, run("up-to-date"), 2, "zfs processes of an up-to-date run")
	for _, fs := range fss {
		p.assertReplicated(fs, "s1", "s2", "s3")
	}
}
