package platformtest

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsreal"
	"zrepl.dev/zrepl/zfsreal/zfsrealtest"
)

var scaleFS = flag.Int("platformtest.scale-fs", 50, "filesystems of BenchmarkScale (issue 13: at least 50)")

// BenchmarkScale replicates a tree of N filesystems with 4 snapshots each
// (initial, all snapshots), then one new snapshot on each (incremental),
// then nothing new (up to date), and times the first two against the
// plain pipe of the same tree in the same run (`zfs send -R | zfs recv`,
// `zfs send -R -I | zfs recv`). It prints one line (issue 13)
//
//	PLATFORMTEST-SCALE fs=N initial=<s> incremental=<s> noop_calls=<n> ratio_initial=<engine/plain> ratio_incremental=<engine/plain> ...
//
// followed by the zfs processes of each run by verb. It is a benchmark, run
// once whatever b.N, because it is a speed target and long (under the
// VM's emulation each zfs process costs a large, host-dependent time: 50
// filesystems take longer than the default VM timeout on a busy host):
//
//	ZREPL_PLATFORMTEST_TIMEOUT=7200 make platformtest PLATFORMTEST_ARGS='-test.run ^$ -test.bench Scale -test.benchtime 1x -test.timeout 2h'
//
// What it asserts is what does not depend on the host: every snapshot
// arrived, and an up-to-date run costs one listing per side whatever N.
func BenchmarkScale(b *testing.B) {
	t := b
	nfs := *scaleFS
	calls := &invocationLog{}
	RequireZFS(t)
	pool := zfsrealtest.NewPool(t, 1<<30)
	z := zfsreal.New(zfsreal.Options{Observe: calls.add})
	p := newRealPairIn(t, zfsrealtest.NewHarness(t, pool, z), z, zfs.MustDatasetPath(pool.Name))
	ctx := context.Background()
	var fss []zfs.DatasetPath
	for i := range nfs {
		fs := zfs.MustDatasetPath(fmt.Sprintf("%s/fs%03d", p.src, i))
		require.NoError(t, p.h.CreateFilesystem(ctx, fs, false))
		fss = append(fss, fs)
	}
	// One recursive snapshot per round: the tree's setup is not what is
	// measured, and N snapshot processes per round would dominate it.
	snapAll := func(name string, seed int64) {
		for i, fs := range fss {
			require.NoError(t, p.h.WriteData(ctx, fs, seed*1000+int64(i), 32<<10))
		}
		Run(t, "zfs", "snapshot", "-r", p.src.String()+"@"+name)
	}
	for i, s := range []string{"s1", "s2", "s3", "s4"} {
		snapAll(s, int64(i+1))
	}
	// The plain pipe's copy lives beside the engine's sink.
	plainRoot, ok := p.dst.Parent()
	require.True(t, ok)
	plain := plainRoot.String() + "/plain"

	type runResult struct {
		took  time.Duration
		steps int
		inv   []zfsreal.Invocation
	}
	run := func(what string) runResult {
		calls.take()
		start := time.Now()
		rep := p.run(replication.Config{Policy: planner.Policy{InitialReplication: planner.AllSnapshots}}, nil)
		took := time.Since(start)
		require.NoError(t, rep.Err(), what)
		steps := 0
		for _, f := range rep.Filesystems {
			steps += f.StepsDone
		}
		return runResult{took: took, steps: steps, inv: calls.take()}
	}

	initial := run("initial")
	plainInitial := plainPipe(t, plain, "-R", p.src.String()+"@s4")
	snapAll("s5", 5)
	incremental := run("incremental")
	plainIncremental := plainPipe(t, plain, "-R", "-I", p.src.String()+"@s4", p.src.String()+"@s5")
	noop := run("up-to-date")

	fmt.Printf("PLATFORMTEST-SCALE fs=%d initial=%.2f incremental=%.2f noop_calls=%d ratio_initial=%.2f ratio_incremental=%.2f "+
		"plain_initial=%.2f plain_incremental=%.2f noop=%.2f steps_initial=%d steps_incremental=%d\n",
		nfs, initial.took.Seconds(), incremental.took.Seconds(), len(noop.inv),
		initial.took.Seconds()/plainInitial.Seconds(), incremental.took.Seconds()/plainIncremental.Seconds(),
		plainInitial.Seconds(), plainIncremental.Seconds(), noop.took.Seconds(), initial.steps, incremental.steps)
	for _, r := range []struct {
		what string
		res  runResult
	}{{"initial", initial}, {"incremental", incremental}, {"up-to-date", noop}} {
		perFS := float64(len(r.res.inv)) / float64(nfs+1)
		fmt.Printf("PLATFORMTEST-SCALE-CALLS run=%s fs=%d steps=%d total=%d per_fs=%.1f %s\n",
			r.what, nfs, r.res.steps, len(r.res.inv), perFS, formatCounts(verbCounts(r.res.inv)))
	}

	// Every filesystem (and the tree's root) got all five snapshots.
	assert.Equal(t, 5*(nfs+1), initial.steps+incremental.steps, "steps of the two runs")
	assert.Zero(t, noop.steps)
	var lists []string
	for _, inv := range noop.inv {
		lists = append(lists, strings.Join(inv.Args, " "))
	}
	assert.LessOrEqual(t, len(noop.inv), 2, "an up-to-date run is one listing per side: %s", strings.Join(lists, "; "))
	for _, fs := range append([]zfs.DatasetPath{p.src}, fss...) {
		got := p.versions(p.target(fs))
		var names []string
		for _, v := range got {
			if v.Kind == zfs.Snapshot {
				names = append(names, v.Name)
			}
		}
		assert.Equal(t, []string{"s1", "s2", "s3", "s4", "s5"}, names, "snapshots of %s", p.target(fs))
	}
}
