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
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

// Engine issues the simulator found, as short scripted histories over the
// local endpoints (no network: they are about the driver and planner),
// kept as regression tests of the fixed behaviour.

type pairT struct {
	src, dst *zfsmodel.Model
	sender   *endpoint.Sender
	receiver *endpoint.Receiver
}

func newPairT(t *testing.T) *pairT {
	mp, err := modelpair.New(modelpair.Options{Job: jobs[0].id.String()})
	require.NoError(t, err)
	require.NoError(t, mp.Src.CreateFilesystem(modelpair.Data, zfsmodel.FSOptions{}))
	return &pairT{
		src: mp.Src, dst: mp.Dst, sender: mp.Sender,
		receiver: &endpoint.Receiver{ZFS: mp.Dst, Job: sinkJob, Root: zfs.MustDatasetPath("dst/sink")},
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

// requireCompleted checks what a completed run leaves: on the sender only
// the job's cursor at snapshot at, on the receiver only the last-received
// hold on at.
func (p *pairT) requireCompleted(t *testing.T, at string) {
	t.Helper()
	guid := mustGUID(t, p.src, "src/data", at)
	require.Equal(t, []string{
		"last-received-hold dst/sink/src/data@" + at,
	}, abstractionsT(t, p.dst, "dst/sink/src/data"), "receiver")
	require.Equal(t, []string{
		fmt.Sprintf("replication-cursor-v2 src/data#%s", endpoint.CursorBookmarkName(guid, jobs[0].id)),
	}, abstractionsT(t, p.src, "src/data"), "sender")
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

// Found by the simulator (fault fail-zfs on the receiver's Hold): a step
// whose receive committed but whose last-received hold (or StepCompleted on
// the sender) failed was retried as "up to date", and the cursor, the step
// holds and the last-received hold stayed on the previous snapshot. The
// driver now reconciles an up-to-date filesystem whose marks are stale.
func TestUpToDateIsReconciled(t *testing.T) {
	busy := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "hold", Msg: "dataset is busy"}
	for _, tc := range []struct {
		name string
		fail func(p *pairT) error
	}{
		{"receiver hold fails", func(p *pairT) error { return p.dst.FailNext("Hold", 1, busy) }},
		{"sender cursor fails", func(p *pairT) error { return p.src.FailNext("Bookmark", 1, busy) }},
		{"sender release fails", func(p *pairT) error { return p.src.FailNext("Release", 1, busy) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPairT(t)
			p.snap(t, "s1", 1)
			require.NoError(t, p.run().Err())
			p.requireCompleted(t, "s1")
			p.snap(t, "s2", 2)
			require.NoError(t, tc.fail(p))
			rep := p.run()
			require.NoError(t, rep.Err())
			require.Equal(t, 2, rep.Attempts, "the first attempt fails after the receive committed")
			require.Equal(t, replication.FSUpToDate, rep.Filesystems[0].State)
			p.requireCompleted(t, "s2")
		})
	}
}

// Rolling the receiver back below the source of a resumable partial
// receive is refused (as by real ZFS: the partial state is a clone of that
// snapshot). An operator who aborts the partial receive first can roll
// back, and replication continues from there; the sender's cursor, ahead
// of the receiver now, moves back with the next step.
func TestRollbackBelowPartialReceive(t *testing.T) {
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
	require.Error(t, p.dst.Rollback(context.Background(), zfs.SnapshotRef(dst, "s1"), true), "s2 is the partial receive's origin")

	require.NoError(t, p.dst.AbortReceive(context.Background(), dst))
	require.NoError(t, p.dst.Rollback(context.Background(), zfs.SnapshotRef(dst, "s1"), true))
	require.NoError(t, p.run().Err())
	p.requireCompleted(t, "s3")
}

// A cursor newer than the receiver's newest snapshot (left by a rollback
// on the receiver) once stayed until a step newer than it completed, since
// StepCompleted destroyed only older cursors; meanwhile the sender's
// pruner took it as "replicated up to".
func TestCursorMovesBackAfterReceiverRollback(t *testing.T) {
	p := newPairT(t)
	for i, s := range []string{"s1", "s2", "s3"} {
		p.snap(t, s, int64(i+1))
		require.NoError(t, p.run().Err())
	}
	p.requireCompleted(t, "s3")
	dst := zfs.MustDatasetPath("dst/sink/src/data")
	require.NoError(t, p.dst.Release(context.Background(), zfs.SnapshotRef(dst, "s3"), endpoint.LastReceivedHoldTag(sinkJob)))
	require.NoError(t, p.dst.Rollback(context.Background(), zfs.SnapshotRef(dst, "s1"), true))
	// The sender loses s3: its cursor bookmark is all that is left of it.
	require.NoError(t, p.src.Destroy(context.Background(), []zfs.VersionRef{zfs.SnapshotRef(zfs.MustDatasetPath("src/data"), "s3")}))

	require.NoError(t, p.run().Err())
	p.requireCompleted(t, "s2")

	// Up to date with a stale cursor: reconciled without a step.
	require.NoError(t, p.dst.Release(context.Background(), zfs.SnapshotRef(dst, "s2"), endpoint.LastReceivedHoldTag(sinkJob)))
	require.NoError(t, p.dst.Rollback(context.Background(), zfs.SnapshotRef(dst, "s1"), true))
	require.NoError(t, p.src.Destroy(context.Background(), []zfs.VersionRef{zfs.SnapshotRef(zfs.MustDatasetPath("src/data"), "s2")}))
	rep := p.run()
	require.NoError(t, rep.Err())
	require.Equal(t, replication.FSUpToDate, rep.Filesystems[0].State)
	p.requireCompleted(t, "s1")
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
