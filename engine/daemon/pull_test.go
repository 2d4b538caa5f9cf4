package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

const pullSourceSnapConfig = `
global:
  zfs_backend: model
jobs:
  - name: src
    type: source
    serve: {type: local, listener_name: src}
    filesystems: {"pool/data<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 10s}
  - name: pull
    type: pull
    connect: {type: local, listener_name: src, client_identity: backup}
    root_fs: backup/pulled
    interval: 10s
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 2}]
      keep_receiver: [{type: last_n, count: 4}]
  - name: snap
    type: snap
    filesystems: {"pool/home<": true}
    snapshotting: {type: periodic, prefix: snap_, interval: 10s}
    pruning:
      keep: [{type: last_n, count: 3}]
`

// A source, a pull job pulling from it over the local transport, and a
// snap job, in one daemon in virtual time; then the metrics they left.
func TestPullSourceAndSnapJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := zfsmodel.New(zfsmodel.Options{Seed: 5, Clock: time.Now})
		require.NoError(t, m.CreatePool("pool"))
		require.NoError(t, m.CreatePool("backup"))
		for _, fs := range []string{"pool/data", "pool/home"} {
			require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{}))
		}
		d, err := New(Options{Config: parse(t, pullSourceSnapConfig), ZFS: m, Control: newPipeListener()})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()

		time.Sleep(75 * time.Second)
		synctest.Wait()
		// Whichever of source and pull ran first at 70s, a wakeup now
		// pulls the newest snapshot.
		p, err := d.Job("pull")
		require.NoError(t, err)
		p.Wakeup()
		synctest.Wait()

		src := snapshots(t, m, "pool/data")
		recv := snapshots(t, m, "backup/pulled/pool/data")
		assert.Len(t, src, 2, "keep_sender last_n 2 applied to the source: %v", src)
		assert.Len(t, recv, 4, "keep_receiver last_n 4: %v", recv)
		assert.Equal(t, src, recv[2:])
		assert.Len(t, snapshots(t, m, "pool/home"), 3, "the snap job keeps 3")

		st := d.Status()
		require.Len(t, st, 3)
		for _, s := range st {
			assert.Empty(t, s.LastError, s.Name)
		}
		assert.Equal(t, "src", st[2].Name)
		assert.Equal(t, 8, st[2].Runs, "the source snapshotted 8 times")

		rec := httptest.NewRecorder()
		d.metrics.handler(d).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		assert.Equal(t, http.StatusOK, rec.Code)
		body := rec.Body.String()
		for _, want := range []string{
			`zrepl_job_runs_total{zrepl_job="snap"} 8`,
			`zrepl_snapshots_taken_total{zrepl_job="src"} 8`,
			`zrepl_pruned_snapshots_total{side="local",zrepl_job="snap"} 5`,
			`zrepl_abstractions{kind="last-received-hold",zrepl_job="pull"} 1`,
			`zrepl_abstractions{kind="replication-cursor-v2",zrepl_job="src"} 1`,
			`zrepl_replication_bytes_total{zrepl_job="pull"}`,
		} {
			assert.Contains(t, body, want)
		}
		// One step per pulled snapshot: 8, or 7 when the first pull came
		// after the second snapshot and sent only the newest.
		assert.Regexp(t, `zrepl_step_send_duration_seconds_count\{zrepl_job="src"\} [78]\n`, body)
		assert.Contains(t, body, `zrepl_job_run_errors_total{zrepl_job="pull"} 0`, "no failed runs")

		cancel()
		require.NoError(t, <-done)
	})
}
