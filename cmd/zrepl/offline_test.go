package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// stateFile is the model state's bytes and modification time.
type stateFile struct {
	b   []byte
	mod time.Time
}

func readState(t *testing.T, dir string) stateFile {
	t.Helper()
	p := filepath.Join(dir, modelStateFile)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	fi, err := os.Stat(p)
	require.NoError(t, err)
	return stateFile{b, fi.ModTime()}
}

// A model state with a snapshot of pool/data that carries a stale step
// hold (of a job the config does not have).
func stateWithStaleHold(t *testing.T, dir string) {
	t.Helper()
	m := zfsmodel.New(zfsmodel.Options{Seed: 4})
	require.NoError(t, m.CreatePool("pool"))
	require.NoError(t, m.CreatePool("backup"))
	fs := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	require.NoError(t, m.Snapshot(context.Background(), fs, "s1"))
	require.NoError(t, m.Hold(context.Background(), zfs.SnapshotRef(fs, "s1"), endpoint.StepHoldTag(endpoint.MustJobID("gone"))))
	require.NoError(t, saveModel(m, dir))
}

// With no daemon answering, a command that would change the backend does
// not fall back to it by itself (the daemon may still run behind a
// deleted socket): only --offline works directly, and then read-only
// commands (list, --dry-run) leave the state file as it was.
func TestOfflineOnlyWhenAsked(t *testing.T) {
	dir := shortDir(t)
	cfg := quickstartIn(t, dir, "1h")
	stateWithStaleHold(t, dir)
	before := readState(t, dir)

	for _, args := range [][]string{
		{"holds", "release-stale"},
		{"holds", "list"},
		{"migrate", "replication-cursor:v1-v2"},
	} {
		_, err := run(t, append(args, "--config", cfg)...)
		assert.ErrorContains(t, err, "is the daemon running?", args)
		assert.ErrorContains(t, err, "add --offline", args)
	}
	assert.Equal(t, before, readState(t, dir), "nothing written without --offline")

	out, err := run(t, "holds", "list", "--offline", "--config", cfg)
	require.NoError(t, err)
	assert.Contains(t, out, "step-hold")
	out, err = run(t, "holds", "release-stale", "--offline", "--dry-run", "--config", cfg)
	require.NoError(t, err)
	assert.Contains(t, out, `would destroy step-hold "zrepl_STEP_J_gone" on pool/data@s1`)
	_, err = run(t, "migrate", "replication-cursor:v1-v2", "--offline", "--dry-run", "--config", cfg)
	require.NoError(t, err)
	_, err = run(t, "test", "filesystems", "--job", "quickstart_push", "--config", cfg)
	require.NoError(t, err)
	assert.Equal(t, before, readState(t, dir), "read-only commands never write the state")

	out, err = run(t, "holds", "release-stale", "--offline", "--config", cfg)
	require.NoError(t, err)
	assert.Contains(t, out, `destroy step-hold "zrepl_STEP_J_gone" on pool/data@s1 ... OK`)
	m := loadModel(t, dir)
	holds, err := m.Holds(context.Background(), []zfs.VersionRef{zfs.SnapshotRef(zfs.MustDatasetPath("pool/data"), "s1")})
	require.NoError(t, err)
	assert.Empty(t, holds["s1"], "released and saved")
}

// writeModelConfig writes a config of one snap job on the model backend.
func writeModelConfig(t *testing.T, path, stateDir, sock string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`
global:
  zfs_backend: model
  model_state_dir: %s
  control: {sockpath: %s}
  logging: [{type: stdout, level: info, format: human}]
jobs:
  - name: snap
    type: snap
    filesystems: {"pool/data<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 1h}
    pruning: {keep: [{type: last_n, count: 10}]}
`, stateDir, sock)), 0o600))
}

// A daemon owns its state: a second daemon on the same model_state_dir, or
// with its control socket in the same directory, refuses to start before
// it touches the state, naming the first one's PID; so does every
// --offline command while the daemon runs.
func TestOneDaemonPerState(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs daemons")
	}
	bin := buildBinary(t)
	dir := shortDir(t)
	state, other := filepath.Join(dir, "state"), filepath.Join(dir, "other")
	stateWithStaleHold(t, state)
	first := filepath.Join(dir, "first.yml")
	writeModelConfig(t, first, state, filepath.Join(dir, "ctl", "sock"))
	p := startProc(t, bin, first, filepath.Join(dir, "first.log"))
	pid := strconv.Itoa(p.cmd.Process.Pid)
	waitFor(t, 30*time.Second, "the first daemon's control socket", func() bool {
		return exec.Command(bin, "status", "--json", "--config", first).Run() == nil
	})
	waitFor(t, 30*time.Second, "the first daemon's snapshot", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "first.log"))
		return strings.Contains(string(b), "snapshots taken")
	})
	lock, err := os.ReadFile(filepath.Join(state, daemon.LockFile))
	require.NoError(t, err)
	assert.Equal(t, pid+"\n", string(lock), "the lock file names its holder")

	for _, args := range [][]string{
		{"holds", "release-stale", "--offline"},
		{"holds", "release-stale", "--offline", "--dry-run"},
		{"holds", "list", "--offline"},
		{"migrate", "replication-cursor:v1-v2", "--offline"},
	} {
		out, err := exec.Command(bin, append(args, "--config", first)...).CombinedOutput()
		assert.Error(t, err, "%v: %s", args, out)
		assert.Contains(t, string(out), "global.model_state_dir "+state+" is held by zrepl process "+pid, args)
	}

	sameState := filepath.Join(dir, "same-state.yml")
	writeModelConfig(t, sameState, state, filepath.Join(dir, "ctl2", "sock"))
	sameSocketDir := filepath.Join(dir, "same-sockdir.yml")
	writeModelConfig(t, sameSocketDir, other, filepath.Join(dir, "ctl", "sock2"))
	for cfg, want := range map[string]string{
		sameState:     "global.model_state_dir " + state + " is held by zrepl process " + pid,
		sameSocketDir: "the directory of global.control.sockpath " + filepath.Join(dir, "ctl") + " is held by zrepl process " + pid,
	} {
		before := readState(t, state)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, "daemon", "--config", cfg).CombinedOutput()
		cancel()
		assert.Error(t, err, "a second daemon with %s: %s", cfg, out)
		assert.Contains(t, string(out), want)
		assert.Equal(t, before, readState(t, state), "the second daemon did not touch the state")
	}
	_, err = os.Stat(filepath.Join(other, modelStateFile))
	assert.ErrorIs(t, err, os.ErrNotExist, "the refused daemon created no state of its own")

	p.stop()
	out, err := exec.Command(bin, "holds", "release-stale", "--offline", "--config", first).CombinedOutput()
	require.NoError(t, err, "once the daemon stopped: %s", out)
	assert.Contains(t, string(out), `destroy step-hold "zrepl_STEP_J_gone" on pool/data@s1 ... OK`)
}
