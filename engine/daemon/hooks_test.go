package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/hooks/dbtest"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// atSnapshot is the model with a function run inside each Snapshot call,
// before the model takes it: what the test sees there is what holds
// while the snapshot is taken.
type atSnapshot struct {
	*zfsmodel.Model
	at func(fs zfs.DatasetPath)
}

func (a atSnapshot) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	a.at(fs)
	return a.Model.Snapshot(ctx, fs, name)
}

func hookModel(t *testing.T, fss ...string) *zfsmodel.Model {
	m := zfsmodel.New(zfsmodel.Options{Seed: 7, Clock: time.Now})
	require.NoError(t, m.CreatePool("pool"))
	for _, fs := range fss {
		require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{}))
	}
	return m
}

func writeScript(t *testing.T, path, body string) string {
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755))
	return path
}

// snapStatus waits for the snap job's first run and returns its status
// as the control socket's JSON gives it.
func snapStatus(t *testing.T, d *Daemon) job.Status {
	t.Helper()
	j, err := d.Job("snap")
	require.NoError(t, err)
	waitRuns(t, j, 1)
	rec := httptest.NewRecorder()
	d.controlHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	var sts []job.Status
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &sts), rec.Body.String())
	for _, s := range sts {
		if s.Name == "snap" {
			require.NotNil(t, s.Snapshotting, rec.Body.String())
			return s
		}
	}
	t.Fatalf("no snap job in %s", rec.Body.String())
	return job.Status{}
}

func atoi(t *testing.T, s string) int {
	i, err := strconv.Atoi(strings.TrimSpace(s))
	require.NoError(t, err)
	return i
}

func fsStatus(t *testing.T, st job.Status, fs string) job.SnapshotFSStatus {
	t.Helper()
	for _, f := range st.Snapshotting.Filesystems {
		if f.FS == fs {
			return f
		}
	}
	t.Fatalf("no status of %s in %+v", fs, st.Snapshotting.Filesystems)
	return job.SnapshotFSStatus{}
}

func metricsText(t *testing.T, d *Daemon) string {
	rec := httptest.NewRecorder()
	d.metrics.handler(d).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

const hookJobConfig = `
global:
  zfs_backend: model
jobs:
  - name: snap
    type: snap
    filesystems: {"pool<": true, "pool": false}
    snapshotting:
      type: periodic
      prefix: zrepl_
      interval: 1h
      hooks:
%s
    pruning:
      keep: [{type: last_n, count: 10}]
`

// Command hooks through the daemon: zrepl's environment, the order
// around the snapshot, a fatal failure skipping its filesystem's snapshot
// only, a hung hook killed at its timeout, and all of it in the JSON
// status and the metrics.
func TestCommandHooksThroughDaemon(t *testing.T) {
	dir := t.TempDir()
	journal := filepath.Join(dir, "journal")
	env := writeScript(t, filepath.Join(dir, "env.sh"), `echo "$ZREPL_HOOKTYPE $ZREPL_FS@$ZREPL_SNAPNAME dryrun=[$ZREPL_DRYRUN] timeout=$ZREPL_TIMEOUT" >>`+journal+"\necho hello from $ZREPL_FS\n")
	fail := writeScript(t, filepath.Join(dir, "fail.sh"), "echo cannot quiesce >&2\nexit 2\n")
	hang := writeScript(t, filepath.Join(dir, "hang.sh"), "echo $$ >"+filepath.Join(dir, "hang.pid")+"\nsleep 600\n")
	hooksYAML := fmt.Sprintf(`      - {type: command, path: %s}
      - {type: command, path: %s, err_is_fatal: true, filesystems: {"pool/skip": true}}
      - {type: command, path: %s, timeout: 1s, filesystems: {"pool/slow": true}}`, env, fail, hang)
	m := hookModel(t, "pool/a", "pool/skip", "pool/slow")
	var mu sync.Mutex
	var order []string
	z := atSnapshot{m, func(fs zfs.DatasetPath) {
		mu.Lock()
		defer mu.Unlock()
		b, _ := os.ReadFile(journal)
		order = append(order, fmt.Sprintf("%s: %d pre lines", fs, strings.Count(string(b), "pre_snapshot")))
	}}
	d := runDaemon(t, Options{Config: parse(t, fmt.Sprintf(hookJobConfig, hooksYAML)), ZFS: z})
	start := time.Now()
	st := snapStatus(t, d)
	assert.Less(t, time.Since(start), 20*time.Second, "the hung hook was killed at its timeout")

	a := fsStatus(t, st, "pool/a")
	assert.Equal(t, job.SnapDone, a.State)
	assert.Empty(t, a.Error)
	require.Len(t, a.Hooks, 2)
	assert.Equal(t, []string{"pre_snapshot", "post_snapshot"}, []string{a.Hooks[0].Phase, a.Hooks[1].Phase})
	assert.True(t, a.Hooks[0].OK && a.Hooks[1].OK)
	assert.Equal(t, "command "+env, a.Hooks[0].Hook)
	assert.Equal(t, "hello from pool/a\n", a.Hooks[0].Output)
	assert.Len(t, snapshots(t, m, "pool/a"), 1)

	skip := fsStatus(t, st, "pool/skip")
	assert.Equal(t, job.SnapSkipped, skip.State)
	assert.Contains(t, skip.Error, "err_is_fatal")
	assert.Contains(t, skip.Error, "exit status 2")
	require.Len(t, skip.Hooks, 3, "env pre, fail pre, env post")
	assert.False(t, skip.Hooks[1].OK)
	assert.Equal(t, "cannot quiesce\n", skip.Hooks[1].Output)
	assert.Empty(t, snapshots(t, m, "pool/skip"), "a fatal pre-hook failure skips the snapshot")

	slow := fsStatus(t, st, "pool/slow")
	assert.Equal(t, job.SnapDone, slow.State, "not fatal: the snapshot is taken")
	assert.Contains(t, slow.Error, "timed out after 1s")
	require.Len(t, slow.Hooks, 3)
	assert.False(t, slow.Hooks[1].OK)
	assert.GreaterOrEqual(t, slow.Hooks[1].DurationSeconds, 1.0)
	assert.Len(t, snapshots(t, m, "pool/slow"), 1)
	pid, err := os.ReadFile(filepath.Join(dir, "hang.pid"))
	require.NoError(t, err)
	assert.Error(t, syscall.Kill(atoi(t, string(pid)), 0), "the hung hook is gone")
	assert.Contains(t, st.LastError, "pool/skip", "the run reports the failures")
	assert.Contains(t, st.LastError, "pool/slow")

	snap := snapshots(t, m, "pool/a")[0]
	b, err := os.ReadFile(journal)
	require.NoError(t, err)
	for _, fs := range []string{"pool/a", "pool/skip", "pool/slow"} {
		for _, phase := range []string{"pre_snapshot", "post_snapshot"} {
			assert.Contains(t, string(b), phase+" "+fs+"@"+snap+" dryrun=[] timeout=30\n")
		}
	}
	mu.Lock()
	assert.Equal(t, []string{"pool/a: 1 pre lines", "pool/slow: 3 pre lines"}, order, "each snapshot after its pre hooks")
	mu.Unlock()

	metrics := metricsText(t, d)
	for _, want := range []string{
		`zrepl_hook_runs_total{phase="pre_snapshot",type="command",zrepl_job="snap"} 5`,
		`zrepl_hook_runs_total{phase="post_snapshot",type="command",zrepl_job="snap"} 3`,
		`zrepl_hook_failures_total{phase="pre_snapshot",type="command",zrepl_job="snap"} 2`,
	} {
		assert.Contains(t, metrics, want)
	}
	assert.NotContains(t, metrics, `zrepl_hook_failures_total{phase="post_snapshot",type="command",zrepl_job="snap"}`)
}

// A hook the daemon could not run stops it at start, naming the key and
// line, as configcheck does.
func TestDaemonRefusesMissingHook(t *testing.T) {
	cfg := parse(t, fmt.Sprintf(hookJobConfig, "      - {type: command, path: /nonexistent/zrepl-hook.sh}"))
	_, err := New(Options{Config: cfg, ZFS: hookModel(t)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "jobs[0].snapshotting.hooks[0].path: line 13: stat /nonexistent/zrepl-hook.sh: no such file or directory")
}

// The database hooks through the daemon against real servers: the
// checkpoint has happened when the snapshot is taken, the read lock is
// held during it (a write from another connection waits) and released
// after; both show in the status and the metrics.
func TestDatabaseHooksThroughDaemon(t *testing.T) {
	pg := dbtest.StartPostgres(t)
	my := dbtest.StartMariaDB(t)
	ctx := context.Background()
	pc := pg.Conn(t)
	_, err := pc.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)")
	require.NoError(t, err)
	var walBefore string
	require.NoError(t, pc.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walBefore))
	db := my.DB(t)
	_, err = db.Exec("CREATE TABLE zrepl_test.t (id INT PRIMARY KEY)")
	require.NoError(t, err)

	hooksYAML := fmt.Sprintf(`      - type: postgres-checkpoint
        dsn: "%s"
        filesystems: {"pool/postgres": true}
      - type: mysql-lock-tables
        dsn: "%s"
        filesystems: {"pool/mysql": true}`, pg.DSN(), my.LockDSN())
	m := hookModel(t, "pool/postgres", "pool/mysql", "pool/other")
	var mu sync.Mutex
	seen := map[string]string{}
	wrote := make(chan error, 1)
	writes := 0
	z := atSnapshot{m, func(fs zfs.DatasetPath) {
		mu.Lock()
		defer mu.Unlock()
		switch fs.String() {
		case "pool/postgres":
			var moved bool
			err := pc.QueryRow(ctx, "SELECT redo_lsn >= $1::pg_lsn FROM pg_control_checkpoint()", walBefore).Scan(&moved)
			seen["checkpointed"] = fmt.Sprint(moved, err)
		case "pool/mysql":
			writes++
			go func(id int) {
				_, err := db.Exec("INSERT INTO zrepl_test.t VALUES (?)", id)
				wrote <- err
			}(writes)
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			seen["write blocked"] = fmt.Sprint(dbtest.WaitBlocked(wctx, db, "INSERT INTO zrepl_test.t"))
			select {
			case <-wrote:
				seen["write blocked"] = "the write went through during the snapshot"
			default:
			}
		}
	}}
	d := runDaemon(t, Options{Config: parse(t, fmt.Sprintf(hookJobConfig, hooksYAML)), ZFS: z})
	st := snapStatus(t, d)
	mu.Lock()
	assert.Equal(t, map[string]string{"checkpointed": "true <nil>", "write blocked": "<nil>"}, seen)
	mu.Unlock()
	select {
	case err := <-wrote:
		assert.NoError(t, err, "the write goes through after the snapshot")
	case <-time.After(30 * time.Second):
		t.Fatal("the write still waits: the read lock was not released")
	}
	assert.Empty(t, st.LastError)
	p := fsStatus(t, st, "pool/postgres")
	require.Len(t, p.Hooks, 1)
	assert.Equal(t, fmt.Sprintf("postgres-checkpoint 127.0.0.1:%d", pg.Port), p.Hooks[0].Hook)
	assert.True(t, p.Hooks[0].OK)
	my1 := fsStatus(t, st, "pool/mysql")
	require.Len(t, my1.Hooks, 2)
	assert.True(t, my1.Hooks[0].OK && my1.Hooks[1].OK)
	assert.Empty(t, fsStatus(t, st, "pool/other").Hooks)
	for _, fs := range []string{"pool/postgres", "pool/mysql", "pool/other"} {
		assert.Len(t, snapshots(t, m, fs), 1, fs)
	}
	raw, err := json.Marshal(st)
	require.NoError(t, err)
	assert.NotContains(t, string(raw), dbtest.LockUserPassword, "no DSN in the status")
	metrics := metricsText(t, d)
	for _, want := range []string{
		`zrepl_hook_runs_total{phase="pre_snapshot",type="postgres-checkpoint",zrepl_job="snap"} 1`,
		`zrepl_hook_runs_total{phase="pre_snapshot",type="mysql-lock-tables",zrepl_job="snap"} 1`,
		`zrepl_hook_runs_total{phase="post_snapshot",type="mysql-lock-tables",zrepl_job="snap"} 1`,
	} {
		assert.Contains(t, metrics, want)
	}
	assert.NotContains(t, metrics, "zrepl_hook_failures_total{")

	// Again, with the snapshot of pool/mysql failing: the lock is held
	// while it is tried, and released after.
	busy := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "snapshot", Dataset: "pool/mysql", Msg: "dataset is busy"}
	require.NoError(t, m.FailNext("Snapshot", 1, busy), "pool/mysql is snapshotted first")
	mu.Lock()
	seen = map[string]string{}
	mu.Unlock()
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) // a new snapshot name
	j, err := d.Job("snap")
	require.NoError(t, err)
	j.Wakeup()
	waitRuns(t, j, 2)
	st = snapStatus(t, d)
	mu.Lock()
	assert.Equal(t, map[string]string{"checkpointed": "true <nil>", "write blocked": "<nil>"}, seen)
	mu.Unlock()
	select {
	case err := <-wrote:
		assert.NoError(t, err, "the write goes through after the failed snapshot")
	case <-time.After(30 * time.Second):
		t.Fatal("the write still waits after a failed snapshot: the read lock was not released")
	}
	my2 := fsStatus(t, st, "pool/mysql")
	assert.Equal(t, job.SnapFailed, my2.State)
	assert.Contains(t, my2.Error, "dataset is busy")
	require.Len(t, my2.Hooks, 2)
	assert.True(t, my2.Hooks[0].OK && my2.Hooks[1].OK, "FLUSH and UNLOCK both ran")
	assert.Len(t, snapshots(t, m, "pool/mysql"), 1)
	assert.Len(t, snapshots(t, m, "pool/postgres"), 2)
	assert.Contains(t, metricsText(t, d), `zrepl_hook_runs_total{phase="post_snapshot",type="mysql-lock-tables",zrepl_job="snap"} 2`)
}
