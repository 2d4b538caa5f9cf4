package replication_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
)

// conflict_resolution.initial_replication: fail refuses a first
// replication with a conflict naming the key, and nothing is received;
// once the receiver has a snapshot (here: after one run under
// most_recent) incremental replication is not affected.
func TestInitialReplicationFail(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data", false)
	p.write("src/data", 1, 4)
	p.snap("src/data", "s1")
	p.snap("src/data", "s2")
	fail := replication.Config{Policy: planner.Policy{InitialReplication: planner.Fail}}
	rep := p.run(fail)
	require.Len(t, rep.Filesystems, 1)
	err := rep.Filesystems[0].Err
	require.ErrorIs(t, err, planner.ConflictInitialReplication)
	assert.Contains(t, err.Error(), "conflict_resolution.initial_replication")
	assert.Contains(t, err.Error(), "src/data")
	_, infoErr := p.dst.Info(p.fs("dst/client/src/data"))
	assert.ErrorIs(t, infoErr, zfs.ErrDatasetNotExist, "nothing was received")
	assert.Empty(t, snapNames(versions(t, p.src, "src/data"), zfs.Bookmark), "no cursor, no step bookmark on the sender")

	requireOK(t, p.run(replication.Config{}))
	p.snap("src/data", "s3")
	requireOK(t, p.run(fail))
	p.assertReplicated("src/data", "s2", "s3")
}

// An initial full send cut in the middle, then snapshots taken before the
// next run: the next run finishes the full receive and then sends each
// newer snapshot incrementally, so the receiver has every one (as zrepl
// does), not just the newest.
func TestInterruptedInitialThenEachSnapshot(t *testing.T) {
	for _, pol := range []planner.InitialReplication{planner.MostRecent, planner.AllSnapshots} {
		t.Run(pol.String(), func(t *testing.T) {
			p := newPair(t, "push")
			p.create("src/data", false)
			p.write("src/data", 1, 16)
			p.snap("src/data", "s1")
			require.NoError(t, p.src.CutNextSend(1<<20))
			cfg := replication.Config{Policy: planner.Policy{InitialReplication: pol}, MaxAttempts: 1}
			require.Error(t, p.run(cfg).Err(), "the cut stream")
			info, err := p.dst.Info(p.fs("dst/client/src/data"))
			require.NoError(t, err)
			require.NotEmpty(t, info.ReceiveResumeToken)

			for i, s := range []string{"s2", "s3", "s4"} {
				p.write("src/data", int64(10+i), 2)
				p.snap("src/data", s)
			}
			cfg.MaxAttempts = 0
			requireOK(t, p.run(cfg))
			p.assertReplicated("src/data", "s1", "s2", "s3", "s4")
		})
	}
}
