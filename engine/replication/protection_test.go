package replication_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
)

// stepMarks interrupts an incremental step s1 -> s2 half way and returns
// the job's holds and bookmarks on the sender while the step is open.
func openStepMarks(t *testing.T, prot endpoint.Protection) (*pair, []string) {
	p := newPair(t, "push")
	p.create("src/data", false)
	p.write("src/data", 1, 8)
	p.snap("src/data", "s1")
	cfg := replication.Config{Protection: replication.Protection{Initial: prot, Incremental: prot}}
	requireOK(t, p.run(cfg))
	p.write("src/data", 2, 64)
	p.snap("src/data", "s2")
	require.NoError(t, p.src.CutNextSend(1000))
	cfg.MaxAttempts = 1
	require.Error(t, p.run(cfg).Err(), "the step is cut")
	abs, err := endpoint.ListAbstractions(ctx, p.src, []zfs.DatasetPath{p.fs("src/data")}, endpoint.AbstractionFilter{Job: &p.job})
	require.NoError(t, err)
	var out []string
	for _, a := range abs {
		out = append(out, a.Kind.String()+" "+a.Version.Kind.Delimiter()+a.Version.Name)
	}
	return p, out
}

// guidOf is the GUID of the sender's snapshot src/data@name.
func guidOf(t *testing.T, p *pair, name string) uint64 {
	t.Helper()
	for _, v := range versions(t, p.src, "src/data") {
		if v.Kind == zfs.Snapshot && v.Name == name {
			return v.GUID
		}
	}
	t.Fatalf("no snapshot src/data@%s", name)
	return 0
}

func TestProtectionOfAnOpenStep(t *testing.T) {
	s1 := func(p *pair) uint64 { return versions(t, p.src, "src/data")[0].GUID }
	t.Run("resumability", func(t *testing.T) {
		p, marks := openStepMarks(t, endpoint.GuaranteeResumability)
		assert.ElementsMatch(t, []string{
			"replication-cursor-v2 #" + endpoint.CursorBookmarkName(s1(p), p.job),
			"step-hold @s1", "step-hold @s2",
		}, marks)
		assert.Error(t, p.src.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(p.fs("src/data"), "s2")}), "the step's target is held")
	})
	t.Run("incremental", func(t *testing.T) {
		p, marks := openStepMarks(t, endpoint.GuaranteeIncremental)
		assert.ElementsMatch(t, []string{
			"replication-cursor-v2 #" + endpoint.CursorBookmarkName(s1(p), p.job),
			"tentative-replication-cursor #" + endpoint.TentativeCursorBookmarkName(s1(p), p.job),
			"tentative-replication-cursor #" + endpoint.TentativeCursorBookmarkName(guidOf(t, p, "s2"), p.job),
		}, marks)

		// The target may go while the step is open: its partial receive
		// is discarded and replication goes on from the source.
		require.NoError(t, p.src.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(p.fs("src/data"), "s2")}))
		p.write("src/data", 3, 8)
		p.snap("src/data", "s3")
		requireOK(t, p.run(replication.Config{Protection: replication.Protection{Incremental: endpoint.GuaranteeIncremental}}))
		p.assertReplicated("src/data", "s1", "s3")
	})
	t.Run("nothing", func(t *testing.T) {
		p, marks := openStepMarks(t, endpoint.GuaranteeNothing)
		assert.Equal(t, []string{"replication-cursor-v2 #" + endpoint.CursorBookmarkName(s1(p), p.job)}, marks)
		requireOK(t, p.run(replication.Config{Protection: replication.Protection{Incremental: endpoint.GuaranteeNothing}}))
		p.assertReplicated("src/data", "s1", "s2")
	})
}

func TestParseProtection(t *testing.T) {
	for _, p := range []endpoint.Protection{endpoint.GuaranteeResumability, endpoint.GuaranteeIncremental, endpoint.GuaranteeNothing} {
		got, err := endpoint.ParseProtection(p.String())
		require.NoError(t, err)
		assert.Equal(t, p, got)
	}
	_, err := endpoint.ParseProtection("guarantee_everything")
	assert.ErrorContains(t, err, `unknown protection "guarantee_everything"`)
}
