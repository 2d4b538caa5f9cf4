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
		for _, c := range inv {
			t.Logf("%s: %s %v", what, c.Start.Format("15:04:05.000"), c.Args)
		}
		fmt.Printf("PLATFORMTEST-ZFSCALLS run=%s fs=%d steps=%d seconds=%.2f total=%d %s\n",
			what, nfs, steps, took.Seconds(), len(inv), formatCounts(verbCounts(inv)))
		return inv
	}
	run("initial")
	snapAll("s3", 3)
	// Issue 13: an incremental run is about 3 zfs processes per
	// filesystem beyond its send and receive (the sender's step hold, the
	// cursor, the destroy of the old one), plus a few per run: the two
	// listings, the placeholder property, and the releases and the
	// receiver's hold the steps put off to the end of the run.
	inc := verbCounts(run("incremental"))
	beyond := -inc["send"] - inc["recv"]
	for _, n := range inc {
		beyond += n
	}
	assert.LessOrEqual(t, beyond, 3*nfs+6, "zfs processes of an incremental run beyond its sends and receives: %v", inc)
	// Issue 13: an up-to-date run is at most 2 zfs processes per side
	// whatever N: one listing, plus on the receiver the local placeholder
	// property where the listing shows one set (inherited values look alike).
	perSide := map[string]int{}
	inv := run("up-to-date")
	for _, c := range inv {
		root := c.Args[len(c.Args)-1]
		switch {
		case root == p.src.String() || strings.HasPrefix(root, p.src.String()+"/"):
			perSide["sender"]++
		case root == p.dst.String() || strings.HasPrefix(root, p.dst.String()+"/"):
			perSide["receiver"]++
		default:
			t.Errorf("an up-to-date run's zfs call names neither side's root: %v", c.Args)
		}
	}
	assert.Equal(t, 1, perSide["sender"], "the sender's zfs processes of an up-to-date run: %v", inv)
	assert.LessOrEqual(t, perSide["receiver"], 2, "the receiver's zfs processes of an up-to-date run: %v", inv)
	for _, fs := range fss {
		p.assertReplicated(fs, "s1", "s2", "s3")
	}
}
