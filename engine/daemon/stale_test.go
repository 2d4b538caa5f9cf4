package daemon

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

const sourceHostConfig = `
global:
  zfs_backend: model
jobs:
  - name: src
    type: source
    serve: {type: tcp, listen: "127.0.0.1:9", clients: {"127.0.0.1": backup}}
    filesystems: {"pool/data<": true}
    snapshotting: {type: manual}
`

// On a source host, a pull in the middle of its second step holds s1 (the
// step's incremental source, the cursor's snapshot) and s2 (its target):
// release-stale, through the daemon or without one, must keep both, or the
// pull cannot resume (and s2 may be pruned underneath it). A leftover
// step hold on s0, older than the cursor, is stale.
func TestReleaseStaleKeepsASourcesOpenStep(t *testing.T) {
	bg := context.Background()
	m := zfsmodel.New(zfsmodel.Options{Seed: 3, Clock: time.Now})
	require.NoError(t, m.CreatePool("pool"))
	fs := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	snapData(t, m, fs.String(), "s0", "s1", "s2")
	vs := map[string]zfs.FilesystemVersion{}
	all, err := m.ListVersions(bg, fs)
	require.NoError(t, err)
	for _, v := range all {
		vs[v.Name] = v
	}
	src := endpoint.MustJobID("src")
	// What the source's sender did for the pull: s1 sent and confirmed,
	// then the step s1 -> s2 started and its stream half read.
	s := &endpoint.Sender{ZFS: m, Job: src, Roots: []zfs.DatasetPath{fs}, Filter: func(zfs.DatasetPath) bool { return true }}
	first := endpoint.SendRequest{FS: fs.String(), To: vs["s1"]}
	rc, err := s.Send(bg, first)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.NoError(t, s.StepCompleted(bg, first, true))
	from := vs["s1"]
	rc, err = s.Send(bg, endpoint.SendRequest{FS: fs.String(), From: &from, To: vs["s2"]})
	require.NoError(t, err)
	_, err = io.CopyN(io.Discard, rc, 10)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.NoError(t, m.Hold(bg, zfs.SnapshotRef(fs, "s0"), endpoint.StepHoldTag(src)))

	cfg := parse(t, sourceHostConfig)
	d, err := New(Options{Config: cfg, ZFS: m})
	require.NoError(t, err)
	c := NewClientHandler(d.controlHandler())
	want := []string{"pool/data@s0"}
	dry, err := c.ReleaseStale(bg, AbstractionQuery{}, true)
	require.NoError(t, err)
	assert.Equal(t, want, versions(dry), "through the daemon")
	offline, err := ReleaseStale(bg, m, cfg, func(string) bool { return false }, AbstractionQuery{}, true)
	require.NoError(t, err)
	assert.Equal(t, want, versions(offline), "without a daemon")

	released, err := c.ReleaseStale(bg, AbstractionQuery{}, false)
	require.NoError(t, err)
	assert.Equal(t, want, versions(released))
	holds, err := m.Holds(bg, []zfs.VersionRef{zfs.SnapshotRef(fs, "s1"), zfs.SnapshotRef(fs, "s2")})
	require.NoError(t, err)
	assert.Equal(t, []string{endpoint.StepHoldTag(src)}, holds["s1"], "the open step's source stays held")
	assert.Equal(t, []string{endpoint.StepHoldTag(src)}, holds["s2"], "the open step's target stays held")
}

func versions(hs []Hold) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Version)
	}
	return out
}

// The staleness rule per case, on listings alone.
func TestStaleRule(t *testing.T) {
	cfg := parse(t, sourceHostConfig+`
  - name: push
    type: push
    connect: {type: tcp, address: "127.0.0.1:1"}
    filesystems: {"pool/other<": true}
    snapshotting: {type: manual}
    pruning: {keep_sender: [{type: not_replicated}], keep_receiver: [{type: last_n, count: 1}]}
`)
	fs := zfs.MustDatasetPath("pool/data")
	ab := func(kind endpoint.AbstractionKind, job string, txg uint64) endpoint.Abstraction {
		k := zfs.Snapshot
		if kind == endpoint.StepBookmark || kind == endpoint.ReplicationCursorV2 {
			k = zfs.Bookmark
		}
		return endpoint.Abstraction{Kind: kind, Job: endpoint.MustJobID(job), TXG: txg,
			Version: zfs.VersionRef{FS: fs, Kind: k, Name: string(rune('a' + txg))}}
	}
	cursor := func(job string, txg uint64) endpoint.Abstraction { return ab(endpoint.ReplicationCursorV2, job, txg) }
	hold := func(job string, txg uint64) endpoint.Abstraction { return ab(endpoint.StepHold, job, txg) }
	bm := func(job string, txg uint64) endpoint.Abstraction { return ab(endpoint.StepBookmark, job, txg) }
	none := func(string) bool { return false }
	for _, tc := range []struct {
		name        string
		abs         []endpoint.Abstraction
		replicating func(string) bool
		want        []endpoint.Abstraction
	}{
		{"an open step above the cursor keeps its source", []endpoint.Abstraction{cursor("src", 5), hold("src", 3), hold("src", 5), hold("src", 7)}, none,
			[]endpoint.Abstraction{hold("src", 3)}},
		{"no open step: the hold at the cursor goes", []endpoint.Abstraction{cursor("src", 5), hold("src", 5)}, none,
			[]endpoint.Abstraction{hold("src", 5)}},
		{"a step bookmark at the cursor duplicates it", []endpoint.Abstraction{cursor("src", 5), bm("src", 5), bm("src", 6), hold("src", 6)}, none,
			[]endpoint.Abstraction{bm("src", 5)}},
		{"no cursor: the newest step is the open first one", []endpoint.Abstraction{hold("src", 2), hold("src", 4), bm("src", 4)}, none,
			[]endpoint.Abstraction{hold("src", 2)}},
		{"an active job replicating now keeps everything", []endpoint.Abstraction{cursor("push", 5), hold("push", 1)}, func(j string) bool { return j == "push" },
			nil},
		{"an idle active job: the cursor decides", []endpoint.Abstraction{cursor("push", 5), hold("push", 1), hold("push", 9)}, func(j string) bool { return j == "src" },
			[]endpoint.Abstraction{hold("push", 1)}},
		{"a job the config does not have", []endpoint.Abstraction{cursor("gone", 5), hold("gone", 9), bm("gone", 9)}, none,
			[]endpoint.Abstraction{hold("gone", 9), bm("gone", 9)}},
		{"cursors are per job", []endpoint.Abstraction{cursor("push", 9), hold("src", 3)}, none,
			nil},
	} {
		assert.Equal(t, tc.want, stale(tc.abs, cfg, tc.replicating), tc.name)
	}
}
