package daemon

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// The control API as the CLI uses it: status, signals and their errors,
// stale step holds and the cursor migration.
func TestControlAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := model(t)
		d, err := New(Options{Config: parse(t, pushSinkConfig), ZFS: m, Control: newPipeListener()})
		require.NoError(t, err)
		c := NewClientHandler(d.controlHandler())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()
		bg := context.Background()

		// The first run is due at once (no snapshot yet); there is no
		// data on pool/data, but the snapshot is taken anyway.
		time.Sleep(time.Second)
		synctest.Wait()
		st, err := c.Status(bg)
		require.NoError(t, err)
		require.Len(t, st, 2)
		assert.Equal(t, 1, st[0].Runs)
		assert.Equal(t, "push", st[0].Name)
		assert.Equal(t, "push", st[0].Type)
		require.NotNil(t, st[0].Replication)
		assert.NotEmpty(t, st[0].Replication.Filesystems)
		states := map[string]string{}
		for _, f := range st[0].Replication.Filesystems {
			states[f.FS] = f.State
		}
		assert.Equal(t, "done", states["pool/data"])
		assert.Equal(t, "done", states["pool/data/child"])

		// wakeup replicates now, without a snapshot.
		before := len(snapshots(t, m, "pool/data"))
		require.NoError(t, c.Signal(bg, SignalRequest{Job: "push", Signal: "wakeup"}))
		synctest.Wait()
		st, err = c.Status(bg)
		require.NoError(t, err)
		assert.Equal(t, 2, st[0].Runs)
		assert.Len(t, snapshots(t, m, "pool/data"), before)

		err = c.Signal(bg, SignalRequest{Job: "push", Signal: "reset"})
		assert.ErrorContains(t, err, "no replication is running")
		assert.ErrorContains(t, c.Signal(bg, SignalRequest{Job: "nope", Signal: "wakeup"}), `no job "nope"`)
		assert.ErrorContains(t, c.Signal(bg, SignalRequest{Job: "sink", Signal: "wakeup"}), "passive job")
		assert.ErrorContains(t, c.Signal(bg, SignalRequest{Job: "push", Signal: "concurrency", N: 0}), "at least 1")
		assert.ErrorContains(t, c.Signal(bg, SignalRequest{Job: "push", Signal: "explode"}), "unknown signal")
		require.NoError(t, c.Signal(bg, SignalRequest{Job: "push", Signal: "concurrency", N: 3}))
		st, err = c.Status(bg)
		require.NoError(t, err)
		assert.Equal(t, 3, st[0].Concurrency)

		// Stale step holds and bookmarks: of this job (not replicating
		// now) and of a job this daemon does not know.
		fs := zfs.MustDatasetPath("pool/data")
		snap := snapshots(t, m, "pool/data")[0]
		vs, err := m.ListVersions(bg, fs)
		require.NoError(t, err)
		push, gone := endpoint.MustJobID("push"), endpoint.MustJobID("gone")
		require.NoError(t, m.Hold(bg, zfs.SnapshotRef(fs, snap), endpoint.StepHoldTag(push)))
		require.NoError(t, m.Hold(bg, zfs.SnapshotRef(fs, snap), endpoint.StepHoldTag(gone)))
		require.NoError(t, m.Bookmark(bg, zfs.SnapshotRef(fs, snap), endpoint.StepBookmarkName(vs[0].GUID, push)))
		// A last-received hold of a sink that was renamed: superseded
		// where the sink holds what it received since, kept elsewhere
		// (nothing else keeps that filesystem's incremental base).
		oldSink := endpoint.LastReceivedHoldTag(endpoint.MustJobID("oldsink"))
		recvFirst := zfs.SnapshotRef(zfs.MustDatasetPath("backup/laptop/pool/data"), snapshots(t, m, "backup/laptop/pool/data")[0])
		require.NoError(t, m.Hold(bg, recvFirst, oldSink))
		require.NoError(t, m.Hold(bg, zfs.SnapshotRef(fs, snap), oldSink))
		dry, err := c.ReleaseStale(bg, AbstractionQuery{}, true)
		require.NoError(t, err)
		assert.Len(t, dry, 4)
		oldsinkHolds := func(hs []Hold) []string {
			var out []string
			for _, h := range hs {
				if h.Job == "oldsink" {
					out = append(out, h.Version)
				}
			}
			return out
		}
		assert.Equal(t, []string{recvFirst.String()}, oldsinkHolds(dry), "the superseded hold goes")
		all, err := c.Holds(bg, "")
		require.NoError(t, err)
		assert.Len(t, all, 2+2+3+2, "cursors and last-received holds of two filesystems, the stale three and oldsink's two: %v", all)
		released, err := c.ReleaseStale(bg, AbstractionQuery{}, false)
		require.NoError(t, err)
		assert.ElementsMatch(t, dry, released)
		all, err = c.Holds(bg, "")
		require.NoError(t, err)
		for _, h := range all {
			assert.Contains(t, []string{"replication-cursor-v2", "last-received-hold"}, h.Kind, h.String())
		}
		assert.Len(t, all, 5)
		assert.Equal(t, []string{zfs.SnapshotRef(fs, snap).String()}, oldsinkHolds(all), "the hold without a successor stays")

		// v1 cursors go only where a v2 cursor exists.
		require.NoError(t, m.Bookmark(bg, zfs.SnapshotRef(fs, snap), endpoint.CursorV1BookmarkName))
		recvFS := zfs.MustDatasetPath("backup/laptop/pool/data")
		require.NoError(t, m.Bookmark(bg, zfs.SnapshotRef(recvFS, snapshots(t, m, recvFS.String())[0]), endpoint.CursorV1BookmarkName))
		want := []string{"pool/data#" + endpoint.CursorV1BookmarkName}
		out, err := c.MigrateCursors(bg, true)
		require.NoError(t, err)
		assert.Equal(t, want, out)
		out, err = c.MigrateCursors(bg, false)
		require.NoError(t, err)
		assert.Equal(t, want, out)
		out, err = c.MigrateCursors(bg, false)
		require.NoError(t, err)
		assert.Empty(t, out, "nothing left to migrate")
		recvHolds, err := ListHolds(bg, m, d.opts.Config, "")
		require.NoError(t, err)
		found := false
		for _, h := range recvHolds {
			found = found || h.Version == recvFS.String()+"#"+endpoint.CursorV1BookmarkName
		}
		assert.True(t, found, "the v1 cursor without a v2 cursor beside it stays")

		cancel()
		require.NoError(t, <-done)
	})
}

// A daemon given a listener serves the control API on it, with the
// client's calls as on the socket, creates no socket at
// global.control.sockpath, and closes the listener when it stops.
func TestControlOnGivenListener(t *testing.T) {
	dir := t.TempDir()
	cfg := parse(t, fmt.Sprintf(`
global:
  control: {sockpath: %s/control}
jobs:
  - name: snap
    type: snap
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
    pruning: {keep: [{type: last_n, count: 1}]}
`, dir))
	l := newPipeListener()
	d, err := New(Options{Config: cfg, ZFS: model(t), Control: l})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()

	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return l.Dial(ctx) }}
	c := &Client{http: &http.Client{Transport: tr, Timeout: time.Minute}}
	st, err := c.Status(context.Background())
	require.NoError(t, err)
	require.Len(t, st, 1)
	assert.Equal(t, "snap", st[0].Name)
	assert.ErrorContains(t, c.Signal(context.Background(), SignalRequest{Job: "nope", Signal: "wakeup"}), `no job "nope"`)
	_, err = os.Lstat(filepath.Join(dir, "control"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "no socket at global.control.sockpath")

	cancel()
	require.NoError(t, <-done)
	_, err = l.Dial(context.Background())
	assert.ErrorIs(t, err, net.ErrClosed, "Run closed the listener")
}
