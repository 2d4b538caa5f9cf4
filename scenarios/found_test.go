package scenarios

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/replication"
)

// Engine issues this session's simulator found, as short scripted
// histories over the local endpoints. Each pins today's behaviour; when
// one fails, the issue is fixed: turn it into a test of the right
// behaviour and drop the simulator's exception its comment names.

// Known issue "newest-only step stranded" (simulator: rapid seed 99,
// history 1315 of 3000; shrunk: snapshot, pull with the sender crashing
// mid full send, snapshot, snapshot, pull with a keepalive fault). An
// initial full receive, interrupted while newer snapshots appear, is
// finished and then continued straight to the newest snapshot (initial
// replication skips those between). If that second step is interrupted
// as well, later attempts plan incrementally through every snapshot after
// the base, call its partial state foreign, and stop for good: only `zfs
// recv -A` gets the filesystem going again, though its state continues
// the job's own step from the receiver's newest snapshot to a snapshot
// the sender has. (Simulator: converge accepts this conflict, see
// strandedNewestOnly.)
func TestKnownIssueNewestOnlyStepStranded(t *testing.T) {
	p := newPairT(t)
	once := func() replication.Report {
		noSleep := func(context.Context, time.Duration) error { return nil }
		return replication.NewRun(p.sender, p.receiver, replication.Config{Sleep: noSleep, MaxAttempts: 1}).Do(context.Background())
	}
	p.snap(t, "s1", 1)
	require.NoError(t, p.src.CutNextSend(1000))
	require.Error(t, once().Err(), "the full send of s1 is cut")
	p.snap(t, "s2", 2)
	p.snap(t, "s3", 3)
	require.NoError(t, p.src.CutNextSend(1<<40)) // the resumed full send of s1 goes through
	require.NoError(t, p.src.CutNextSend(1000))  // s1 -> s3 is cut
	rep := once()
	require.Error(t, rep.Err(), "s1 completes, s1 -> s3 is cut")
	require.Equal(t, 1, rep.Filesystems[0].StepsDone)
	rep = p.run()
	require.Equal(t, replication.FSConflict, rep.Filesystems[0].State, "the partial s1 -> s3 should resume, then s3 is the newest")
	require.ErrorContains(t, rep.Err(), "foreign partial receive")
}
