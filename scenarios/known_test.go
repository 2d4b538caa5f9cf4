package scenarios

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// Engine issues the simulator found, as short scripted histories over the
// local endpoints (no network: they are about the driver and planner).
// Each test pins today's behaviour; when one fails, the issue is fixed:
// turn it into a test of the right behaviour and tighten the simulator
// where its comment says.

type pairT struct {
	src, dst *zfsmodel.Model
	sender   *endpoint.Sender
	receiver *endpoint.Receiver
}

func newPairT(t *testing.T) *pairT {
	src := zfsmodel.New(zfsmodel.Options{Seed: 1})
	dst := zfsmodel.New(zfsmodel.Options{Seed: 2})
	require.NoError(t, src.CreatePool("src"))
	require.NoError(t, dst.CreatePool("dst"))
	require.NoError(t, src.CreateFilesystem(zfs.MustDatasetPath("src/data"), zfsmodel.FSOptions{}))
	j := jobs[0]
	return &pairT{
		src: src, dst: dst,
		sender: &endpoint.Sender{ZFS: src, Job: j.id, Roots: []zfs.DatasetPath{zfs.MustDatasetPath("src")},
			Filter: func(fs zfs.DatasetPath) bool { return fs.HasPrefix(zfs.MustDatasetPath(srcRoot)) }},
		receiver: &endpoint.Receiver{ZFS: dst, Job: sinkJob, Root: zfs.MustDatasetPath("dst/sink")},
	}
}

func (p *pairT) snap(t *testing.T, name string, seed int64) {
	require.NoError(t, p.src.WriteData(zfs.MustDatasetPath("src/data"), seed, 4))
	require.NoError(t, p.src.Snapshot(context.Background(), zfs.MustDatasetPath("src/data"), name))
}

func (p *pairT) run() replication.Report {
	noSleep := func(context.Context, time.Duration) error { return nil }
	return replication.NewRun(p.sender, p.receiver, replication.Config{Sleep: noSleep}).Do(context.Background())
}

func abstractionsT(t *testing.T, z zfs.ZFS, fs string) []string {
	abs, err := endpoint.ListAbstractions(context.Background(), z, []zfs.DatasetPath{zfs.MustDatasetPath(fs)}, endpoint.AbstractionFilter{})
	require.NoError(t, err)
	var out []string
	for _, a := range abs {
		out = append(out, fmt.Sprintf("%s %s", a.Kind, a.Version))
	}
	slices.Sort(out)
	return out
}

// Known issue "up to date not reconciled": a step whose receive committed
// but whose last-received hold failed (or whose StepCompleted failed) is
// retried as "up to date": the run reports success, yet the cursor, the
// step holds and the last-received hold stay on the previous snapshot.
// (Simulator: run's completed check is weak for up-to-date filesystems.)
func TestKnownIssueUpToDateNotReconciled(t *testing.T) {
	p := newPairT(t)
	p.snap(t, "s1", 1)
	require.NoError(t, p.run().Err())
	p.snap(t, "s2", 2)
	busy := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "hold", Msg: "dataset is busy"}
	require.NoError(t, p.dst.FailNext("Hold", 1, busy))
	rep := p.run()
	require.NoError(t, rep.Err(), "the retry finds the filesystem up to date")
	require.Equal(t, replication.FSUpToDate, rep.Filesystems[0].State)
	s1 := mustGUID(t, p.src, "src/data", "s1")
	s2 := mustGUID(t, p.src, "src/data", "s2")
	require.Equal(t, []string{
		"last-received-hold dst/sink/src/data@s1",
	}, abstractionsT(t, p.dst, "dst/sink/src/data"), "the hold should have moved to s2")
	require.Equal(t, []string{
		fmt.Sprintf("replication-cursor-v2 src/data#%s", endpoint.CursorBookmarkName(s1, jobs[0].id)),
		"step-hold src/data@s1",
		"step-hold src/data@s2",
	}, abstractionsT(t, p.src, "src/data"), "the cursor should be at s2 (%016x), without step holds", s2)
}

// Known issue "rollback strands a partial receive": rolling the receiver
// back below the source of a resumable partial receive leaves state that
// the planner calls foreign, permanently, though zrepl made it and it can
// never resume: only a manual `zfs recv -A` gets replication going again.
// (Simulator: the simulated operator does not roll back under a partial
// receive.)
func TestKnownIssueRollbackStrandsPartialReceive(t *testing.T) {
	p := newPairT(t)
	p.snap(t, "s1", 1)
	require.NoError(t, p.run().Err())
	p.snap(t, "s2", 2)
	require.NoError(t, p.run().Err())
	p.snap(t, "s3", 3)
	require.NoError(t, p.src.CutNextSend(1000))
	noSleep := func(context.Context, time.Duration) error { return nil }
	rep := replication.NewRun(p.sender, p.receiver, replication.Config{Sleep: noSleep, MaxAttempts: 1}).Do(context.Background())
	require.Error(t, rep.Err(), "the cut attempt leaves partial state of s2->s3")
	dst := zfs.MustDatasetPath("dst/sink/src/data")
	require.NoError(t, p.dst.Release(context.Background(), zfs.SnapshotRef(dst, "s2"), endpoint.LastReceivedHoldTag(sinkJob)))
	require.NoError(t, p.dst.Rollback(context.Background(), zfs.SnapshotRef(dst, "s1"), true))
	for i := 0; i < 3; i++ {
		rep = p.run()
	}
	require.Error(t, rep.Err(), "replication should resume from s1 after aborting the stale partial receive")
	require.Equal(t, replication.FSConflict, rep.Filesystems[0].State)
	require.ErrorContains(t, rep.Err(), "foreign partial receive")
}

func mustGUID(t *testing.T, z zfs.ZFS, fs, snap string) uint64 {
	vs, err := z.ListVersions(context.Background(), zfs.MustDatasetPath(fs))
	require.NoError(t, err)
	for _, v := range vs {
		if v.Kind == zfs.Snapshot && v.Name == snap {
			return v.GUID
		}
	}
	t.Fatalf("%s@%s not found", fs, snap)
	return 0
}
