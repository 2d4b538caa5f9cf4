package replication_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
)

// loseConfirmations is a sender whose StepCompleted never arrives (a
// connection lost after the receive).
type loseConfirmations struct{ *endpoint.Sender }

func (loseConfirmations) StepCompleted(context.Context, endpoint.SendRequest, bool) error {
	return errors.New("connection lost")
}

// guarantee_incremental survives a lost step confirmation: the step's
// target is the receiver's newest snapshot, and once the sender pruned it
// the sender's tentative cursor (zrepl's #zrepl_CURSORTENTATIVE_, made
// before the send) is still a common version, so the next run goes on
// incrementally instead of finding none.
func TestIncrementalSurvivesALostConfirmation(t *testing.T) {
	for _, prot := range []endpoint.Protection{endpoint.GuaranteeIncremental, endpoint.GuaranteeResumability} {
		t.Run(prot.String(), func(t *testing.T) {
			p := newPair(t, "push")
			p.create("src/data", false)
			p.write("src/data", 1, 8)
			p.snap("src/data", "s1")
			cfg := replication.Config{Protection: replication.Protection{Initial: prot, Incremental: prot}}
			requireOK(t, p.run(cfg))
			p.write("src/data", 2, 8)
			p.snap("src/data", "s2")

			lost := cfg
			lost.MaxAttempts = 1
			rep := replication.NewRun(loseConfirmations{p.sender}, p.receiver, lost).Do(ctx)
			require.Error(t, rep.Err(), "the confirmation is lost")
			assert.Equal(t, []string{"s1", "s2"}, snapNames(versions(t, p.dst, "dst/client/src/data"), zfs.Snapshot), "s2 arrived")

			if prot == endpoint.GuaranteeIncremental {
				// Nothing holds s2 on the sender: the pruner may take it.
				require.NoError(t, p.src.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(p.fs("src/data"), "s2")}))
				var bms []string
				for _, v := range versions(t, p.src, "src/data") {
					if n, ok := endpoint.ParseBookmarkName(v.Name); ok && v.Kind == zfs.Bookmark && n.Kind == endpoint.TentativeCursor {
						bms = append(bms, v.Name)
					}
				}
				assert.Len(t, bms, 2, "tentative cursors of s1 and s2: %v", bms)
			} else {
				require.Error(t, p.src.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(p.fs("src/data"), "s2")}), "resumability holds s2")
			}
			p.write("src/data", 3, 8)
			p.snap("src/data", "s3")
			requireOK(t, p.run(cfg))
			snaps := []string{"s1", "s2", "s3"}
			assert.Equal(t, snaps, snapNames(versions(t, p.dst, "dst/client/src/data"), zfs.Snapshot))
			// Confirmed now: the real cursor is at s3 and no tentative
			// cursor is left.
			cur, err := p.sender.ReplicationCursor(ctx, "src/data")
			require.NoError(t, err)
			require.NotNil(t, cur)
			assert.Equal(t, versions(t, p.src, "src/data")[len(versions(t, p.src, "src/data"))-1].GUID, cur.GUID)
			abs, err := endpoint.ListAbstractions(ctx, p.src, []zfs.DatasetPath{p.fs("src/data")}, endpoint.AbstractionFilter{Job: &p.job})
			require.NoError(t, err)
			for _, a := range abs {
				assert.NotEqual(t, endpoint.TentativeCursor, a.Kind, "%+v left", a)
			}
		})
	}
}
