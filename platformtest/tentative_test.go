package platformtest

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

// confirmationLost is a sender whose step confirmations never arrive.
type confirmationLost struct{ replication.Sender }

func (confirmationLost) StepCompleted(context.Context, endpoint.SendRequest, bool) error {
	return errors.New("connection lost (test)")
}

// zrepl's tentative cursors on real OpenZFS: a guarantee_incremental step
// bookmarks its source and target under zrepl's name before the send; the
// confirmation is lost, the sender destroys the step's target snapshot,
// and the next run still replicates incrementally from the tentative
// cursor, then leaves only the real cursor.
func TestTentativeCursorOnRealZFS(t *testing.T) {
	p := newRealPair(t, 1<<30)
	ctx := context.Background()
	fs := p.src
	snap := func(name string, seed int64) {
		require.NoError(t, p.h.WriteData(ctx, fs, seed, 1<<20))
		require.NoError(t, p.z.Snapshot(ctx, fs, name))
	}
	cfg := replication.Config{Protection: replication.Protection{Initial: endpoint.GuaranteeIncremental, Incremental: endpoint.GuaranteeIncremental}}
	snap("s1", 1)
	require.NoError(t, p.run(cfg, nil).Err())
	snap("s2", 2)
	lost := cfg
	lost.MaxAttempts = 1
	require.Error(t, p.run(lost, confirmationLost{p.sender}).Err())

	guid := map[string]uint64{}
	for _, v := range p.versions(fs) {
		if v.Kind == zfs.Snapshot {
			guid[v.Name] = v.GUID
		}
	}
	bookmarks := Run(t, "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-d", "1", fs.String())
	for _, s := range []string{"s1", "s2"} {
		assert.Contains(t, bookmarks, fs.String()+"#"+endpoint.TentativeCursorBookmarkName(guid[s], p.job), "zfs list -t bookmark")
	}
	require.NoError(t, p.z.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(fs, "s2")}))

	snap("s3", 3)
	require.NoError(t, p.run(cfg, nil).Err(), "incremental from the tentative cursor of s2")
	p.assertReplicated(fs, "s1", "s2", "s3")
}
