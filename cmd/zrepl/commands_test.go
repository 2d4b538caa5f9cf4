package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
)

// syncBuffer is a buffer the daemon's logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConfigcheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	require.NoError(t, os.WriteFile(bad, []byte(`jobs:
  - name: a
    type: push
    filesystems: {"pool<": true}
  - name: b
    type: snap
    filesystems: {"x<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 0s}
`), 0o600))
	out, err := run(t, "configcheck", "--config", bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "problem(s)")
	for _, want := range []string{"jobs[0]", "connect", "line 2", "jobs[1]", bad} {
		assert.Contains(t, out, want)
	}
	assert.GreaterOrEqual(t, strings.Count(out, "\n"), 2, "one line per problem:\n%s", out)

	out, err = run(t, "configcheck", "--config", "../../examples/quickstart.yml")
	require.NoError(t, err)
	assert.Contains(t, out, "ok (2 jobs)")

	_, err = run(t, "configcheck", "--config", filepath.Join(dir, "missing.yml"))
	assert.ErrorContains(t, err, "missing.yml")
}

// shortDir is a temporary directory with a path short enough for a unix
// socket (108 bytes).
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "zr")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func quickstartIn(t *testing.T, dir, interval string) string {
	b, err := os.ReadFile("../../examples/quickstart.yml")
	require.NoError(t, err)
	s := strings.ReplaceAll(string(b), "./.zrepl-quickstart", dir)
	s = strings.ReplaceAll(s, "interval: 5s", "interval: "+interval)
	s = strings.Replace(s, "global:\n", fmt.Sprintf("global:\n  monitoring: [{type: prometheus, listen: \"127.0.0.1:%d\"}]\n", freePort(t)), 1)
	p := filepath.Join(dir, "zrepl.yml")
	require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
	return p
}

// The daemon command with the quickstart config, driven by the CLI over
// its control socket: status --json, signal, holds list; then a clean
// stop that saves the model, and a restart that loads it.
func TestDaemonAndClientCommands(t *testing.T) {
	dir := shortDir(t)
	cfg := quickstartIn(t, dir, "1h")
	startDaemon := func() (*syncBuffer, func()) {
		var logs syncBuffer
		root := newRootCommand(&logs, &logs)
		root.SetArgs([]string{"daemon", "--config", cfg})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- root.ExecuteContext(ctx) }()
		// Bounded wait for the first run (snapshot, replication).
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(logs.String(), "replication done") {
			require.True(t, time.Now().Before(deadline), "daemon did not replicate in time; log:\n%s", logs.String())
			select {
			case err := <-done:
				t.Fatalf("daemon ended early: %v; log:\n%s", err, logs.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		return &logs, func() {
			cancel()
			require.NoError(t, <-done)
		}
	}
	logs, stop := startDaemon()
	assert.Contains(t, logs.String(), "created the pools and filesystems")

	// The prometheus endpoint (port chosen by the kernel, read from the
	// log).
	addr := regexp.MustCompile(`prometheus metrics listening address="([^"]+)"`).FindStringSubmatch(logs.String())
	require.Len(t, addr, 2, logs.String())
	var body []byte
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Contains(body, []byte(`zrepl_job_runs_total{zrepl_job="quickstart_push"} 1`)) {
		require.True(t, time.Now().Before(deadline), "the first run is not counted:\n%s", body)
		resp, err := http.Get("http://" + addr[1] + "/metrics")
		require.NoError(t, err)
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		time.Sleep(10 * time.Millisecond)
	}
	assert.Contains(t, string(body), `zrepl_abstractions{kind="replication-cursor-v2",zrepl_job="quickstart_push"} 1`)

	// The first run ends (its pruning follows the replication).
	var st []job.Status
	deadline = time.Now().Add(10 * time.Second)
	for {
		out, err := run(t, "status", "--json", "--config", cfg)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal([]byte(out), &st), out)
		require.Len(t, st, 2)
		// The next run is set a moment after the run ends.
		if st[0].Runs == 1 && !st[0].LastRunEnd.IsZero() && st[0].State == job.StateIdle && st[0].NextRun.After(time.Now()) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the first run did not end: %s", out)
		time.Sleep(10 * time.Millisecond)
	}
	assert.Equal(t, "quickstart_push", st[0].Name)
	assert.Equal(t, job.StateIdle, st[0].State)
	require.NotNil(t, st[0].Replication)
	assert.Positive(t, st[0].Replication.BytesDone)
	assert.Equal(t, "quickstart_sink", st[1].Name)
	assert.Equal(t, job.StateServing, st[1].State)

	out, err := run(t, "status", "--config", cfg)
	require.NoError(t, err)
	assert.Contains(t, out, "Job: quickstart_push (push), idle, next run in")
	assert.Contains(t, out, "pool/data")

	out, err = run(t, "holds", "list", "--config", cfg, "--job", "quickstart_push")
	require.NoError(t, err)
	assert.Contains(t, out, "replication-cursor-bookmark-v2")
	assert.Equal(t, 1, strings.Count(out, "\n"), out)

	require.NoError(t, runErr(t, "signal", "wakeup", "quickstart_push", "--config", cfg))
	assert.ErrorContains(t, runErr(t, "signal", "wakeup", "nope", "--config", cfg), `no job "nope"`)
	assert.ErrorContains(t, runErr(t, "signal", "concurrency", "quickstart_push", "x", "--config", cfg), "at least 1")
	require.NoError(t, runErr(t, "signal", "concurrency", "quickstart_push", "2", "--config", cfg))
	out, err = run(t, "holds", "release-stale", "--dry-run", "--config", cfg)
	require.NoError(t, err)
	assert.Empty(t, out, "no stale step holds after completed runs")
	out, err = run(t, "migrate", "replication-cursor:v1-v2", "--dry-run", "--config", cfg)
	require.NoError(t, err)
	assert.Empty(t, out)

	stop()
	assert.Contains(t, logs.String(), "daemon stopped")
	_, err = os.Stat(filepath.Join(dir, "model.json"))
	require.NoError(t, err, "model state saved")
	_, err = run(t, "status", "--config", cfg)
	assert.ErrorContains(t, err, "is the daemon running?")

	// Without a daemon, holds commands work on the backend itself only
	// with --offline.
	_, err = run(t, "holds", "list", "--config", cfg, "--job", "quickstart_push")
	assert.ErrorContains(t, err, "add --offline")
	out, err = run(t, "holds", "list", "--offline", "--config", cfg, "--job", "quickstart_push")
	require.NoError(t, err)
	assert.Contains(t, out, "replication-cursor-bookmark-v2")
	m := loadModel(t, dir)
	fs := zfs.MustDatasetPath("pool/data")
	vs, err := m.ListVersions(context.Background(), fs)
	require.NoError(t, err)
	require.NoError(t, m.Hold(context.Background(), zfs.SnapshotRef(fs, vs[0].Name), endpoint.StepHoldTag(endpoint.MustJobID("quickstart_push"))))
	require.NoError(t, saveModel(m, dir))
	out, err = run(t, "holds", "release-stale", "--offline", "--config", cfg)
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(out, "destroy step-hold"), out)
	out, err = run(t, "holds", "release-stale", "--offline", "--config", cfg, "--dry-run")
	require.NoError(t, err)
	assert.Empty(t, out, "released for good (the state was saved)")

	out, err = run(t, "test", "filesystems", "--config", cfg, "--job", "quickstart_push")
	require.NoError(t, err)
	assert.Equal(t, "pool/data\n", out)

	logs, stop = startDaemon()
	assert.Contains(t, logs.String(), "loaded state")
	stop()
}

func runErr(t *testing.T, args ...string) error {
	t.Helper()
	_, err := run(t, args...)
	return err
}

func TestLoggerFollowsOutlets(t *testing.T) {
	cfg, err := config.Parse([]byte(`
global:
  logging:
    - {type: stdout, level: error, format: json, time: false}
jobs:
  - {name: s, type: sink, serve: {type: local, listener_name: s}, root_fs: backup}
`))
	require.NoError(t, err)
	var b bytes.Buffer
	log, _, err := newLogger(cfg, &b)
	require.NoError(t, err)
	log.Info("quiet")
	log.Error("loud", "job", "s")
	out := b.String()
	assert.NotContains(t, out, "quiet")
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rec), out)
	assert.Equal(t, "loud", rec["msg"])
	assert.Equal(t, "s", rec["job"])
	assert.Equal(t, "error", rec["level"])
	assert.Contains(t, rec, "time", "zrepl's json format always has the time")
}

// configcheck --format prints what the config built, as zrepl's does:
// --what picks the part (the parsed config, the jobs, the logging), each
// format parses as what it says it is, and a bad value names the flag.
func TestConfigcheckFormat(t *testing.T) {
	const cfg = "../../examples/quickstart.yml"
	parts := map[string]string{"config": "ControlSockPath", "jobs": "quickstart_push", "logging": "outlets"}
	for what, want := range parts {
		out, err := run(t, "configcheck", "--config", cfg, "--format", "json", "--what", what)
		require.NoError(t, err, what)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &v), "--what %s --format json prints JSON:\n%.300s", what, out)
		assert.Contains(t, out, want, "--what %s", what)
		for other, w := range parts {
			if other != what && other != "jobs" && what != "jobs" {
				assert.NotContains(t, out, w, "--what %s prints only its part, not %s", what, other)
			}
		}
		out, err = run(t, "configcheck", "--config", cfg, "--format", "yaml", "--what", what)
		require.NoError(t, err, what)
		var y map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(out), &y), "--what %s --format yaml prints YAML", what)
		assert.Contains(t, out, want)
	}
	all, err := run(t, "configcheck", "--config", cfg, "--format", "pretty")
	require.NoError(t, err)
	for _, want := range parts {
		assert.Contains(t, all, want, "--what all (the default) prints every part")
	}
	assert.NotContains(t, all, "ok (2 jobs)", "with --format, the tree instead of the one-line verdict")

	_, err = run(t, "configcheck", "--config", cfg, "--format", "toml")
	assert.ErrorContains(t, err, `--format "toml"`)
	_, err = run(t, "configcheck", "--config", cfg, "--format", "json", "--what", "everything")
	assert.ErrorContains(t, err, `--what "everything"`)
}
