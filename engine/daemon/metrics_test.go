package daemon

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// Every log record counts by job and level, also those the outlets do
// not print; only enabled ones are printed.
func TestLogEntriesCounted(t *testing.T) {
	m := newMetrics("v1", time.Unix(0, 0), func() float64 { return 0 })
	var out bytes.Buffer
	log := slog.New(&logCounter{inner: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}), m: m})
	log.Debug("quiet")
	log.Info("daemon")
	j := log.With("job", "push")
	j.Warn("w")
	j.Error("e")
	j.WithGroup("g").With("job", "inner").Info("grouped")
	log.Info("by attr", "job", "snap")
	for _, c := range []struct {
		job, level string
		n          float64
	}{{"_nojobid", "debug", 1}, {"_nojobid", "info", 1}, {"push", "warn", 1}, {"push", "error", 1}, {"push", "info", 1}, {"snap", "info", 1}} {
		assert.Equal(t, c.n, testutil.ToFloat64(m.logEntries.WithLabelValues(c.job, c.level)), "%s %s", c.job, c.level)
	}
	assert.NotContains(t, out.String(), "quiet")
	assert.Contains(t, out.String(), "g.job=inner")
}

// filesystem_errors counts the failed filesystems of the last
// replication, -1 when none was enumerated; last_successful moves only on
// success; a filter rule naming no dataset counts as unmatched at each
// snapshot.
func TestReplicationMetrics(t *testing.T) {
	m := newMetrics("v1", time.Unix(0, 0), func() float64 { return 0 })
	end := time.Unix(1000, 0)
	m.ReplicationDone("push", time.Second, &job.ReplicationStatus{Filesystems: []job.FSStatus{
		{FS: "pool/a", State: "failed", BytesDone: 10}, {FS: "pool/b", State: "done", BytesDone: 5}, {FS: "pool/c", State: "failed"},
	}}, assert.AnError, end)
	assert.Equal(t, 2.0, testutil.ToFloat64(m.fsErrors.WithLabelValues("push")))
	assert.Equal(t, 0.0, testutil.ToFloat64(m.lastSuccessful.WithLabelValues("push")))
	assert.Equal(t, 10.0, testutil.ToFloat64(m.bytesReplicated.WithLabelValues("push", "pool/a")))
	m.ReplicationDone("push", time.Second, &job.ReplicationStatus{Filesystems: []job.FSStatus{{FS: "(receiver)", State: "failed"}}}, assert.AnError, end)
	assert.Equal(t, -1.0, testutil.ToFloat64(m.fsErrors.WithLabelValues("push")))
	m.ReplicationDone("push", time.Second, &job.ReplicationStatus{Filesystems: []job.FSStatus{{FS: "pool/a", State: "done", BytesDone: 3}}}, nil, end)
	assert.Equal(t, 0.0, testutil.ToFloat64(m.fsErrors.WithLabelValues("push")))
	assert.Equal(t, 1000.0, testutil.ToFloat64(m.lastSuccessful.WithLabelValues("push")))
	assert.Equal(t, 13.0, testutil.ToFloat64(m.bytesReplicated.WithLabelValues("push", "pool/a")), "a new replication counts from zero")
	assert.Equal(t, 2, testutil.CollectAndCount(m.stateTime), "done and failed")
}

// A running replication's bytes count at each scrape, and its end adds
// only the rest.
func TestBytesReplicatedWhileRunning(t *testing.T) {
	m := newMetrics("v1", time.Unix(0, 0), func() float64 { return 0 })
	m.countBytes("push", &job.ReplicationStatus{Filesystems: []job.FSStatus{{FS: "pool/a", BytesDone: 100}}})
	assert.Equal(t, 100.0, testutil.ToFloat64(m.bytesReplicated.WithLabelValues("push", "pool/a")))
	m.countBytes("push", &job.ReplicationStatus{Filesystems: []job.FSStatus{{FS: "pool/a", BytesDone: 90}}})
	assert.Equal(t, 100.0, testutil.ToFloat64(m.bytesReplicated.WithLabelValues("push", "pool/a")), "never backwards")
	m.ReplicationDone("push", time.Second, &job.ReplicationStatus{Filesystems: []job.FSStatus{{FS: "pool/a", State: "done", BytesDone: 150}}}, nil, time.Unix(5, 0))
	assert.Equal(t, 150.0, testutil.ToFloat64(m.bytesReplicated.WithLabelValues("push", "pool/a")))
}

func TestUnmatchedFilterRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := zfsmodel.New(zfsmodel.Options{Seed: 1, Clock: time.Now})
		require.NoError(t, m.CreatePool("pool"))
		require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/data"), zfsmodel.FSOptions{}))
		d := runDaemon(t, Options{Config: parse(t, `
jobs:
  - name: snap
    type: snap
    filesystems: {"pool/data<": true, "pool/data/gone": false, "pool/typo<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 10s}
    pruning: {keep: [{type: last_n, count: 10}]}
`), ZFS: m})
		time.Sleep(25 * time.Second)
		synctest.Wait()
		rec := httptest.NewRecorder()
		d.metrics.handler(d).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		// Each listing (for each snapshot, and for when the next one is
		// due) counts the two rules naming nothing.
		got := regexp.MustCompile(`zrepl_zfs_list_unmatched_user_specified_dataset_count\{jobid="snap"\} (\d+)\n`).FindStringSubmatch(rec.Body.String())
		require.Len(t, got, 2, rec.Body.String())
		n, err := strconv.Atoi(got[1])
		require.NoError(t, err)
		assert.True(t, n >= 6 && n%2 == 0, "two rules, at least three listings: %d", n)
		a, err := d.Job("snap")
		require.NoError(t, err)
		t.Log(a.Status().LastError)
	})
}
