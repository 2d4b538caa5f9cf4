package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/zfs"
)

func modelConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
global: {zfs_backend: model, model_state_dir: %s}
jobs:
  - {name: s, type: sink, serve: {type: local, listener_name: s}, root_fs: backup}
`, dir)))
	require.NoError(t, err)
	return cfg
}

// snapGUID snapshots backup@name on the backend and returns its GUID.
func snapGUID(t *testing.T, b *backend, name string) uint64 {
	t.Helper()
	fs := zfs.MustDatasetPath("backup")
	require.NoError(t, b.zfs.Snapshot(context.Background(), fs, name))
	vs, err := b.zfs.ListVersions(context.Background(), fs)
	require.NoError(t, err)
	for _, v := range vs {
		if v.Name == name {
			return v.GUID
		}
	}
	t.Fatalf("no snapshot %s", name)
	return 0
}

// A model_state_dir restored from a backup (or a state that lost its last
// rename to a power cut) goes back in time; the snapshots made after that
// get new GUIDs, never those the lost ones had: a receiver that got the
// lost ones would take the new ones for them ("up to date") and build
// incrementals on the wrong base.
func TestModelBackendRestoredStateMakesNewGUIDs(t *testing.T) {
	dir := t.TempDir()
	open := func() *backend {
		b, err := openBackend(modelConfig(t, dir), slog.New(slog.DiscardHandler), false)
		require.NoError(t, err)
		return b
	}
	b := open()
	snapGUID(t, b, "a")
	state := filepath.Join(dir, modelStateFile)
	backup, err := os.ReadFile(state)
	require.NoError(t, err)
	lost := snapGUID(t, b, "b")
	require.NoError(t, os.WriteFile(state, backup, 0o600))
	again := snapGUID(t, open(), "b")
	assert.NotEqual(t, lost, again, "the restored state handed out the lost snapshot's GUID again")
}

// A model_state_dir others can write to is warned about at start, as
// whoever can write there can change the model's pools and holds.
func TestModelBackendWarnsAboutWritableStateDir(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	require.NoError(t, os.Chmod(dir, 0o700))
	_, err := openBackend(modelConfig(t, dir), log, false)
	require.NoError(t, err)
	assert.NotContains(t, logs.String(), "not private")
	require.NoError(t, os.Chmod(dir, 0o777))
	_, err = openBackend(modelConfig(t, dir), log, false)
	require.NoError(t, err)
	assert.Contains(t, logs.String(), "level=WARN msg=\"model backend: model_state_dir is not private")
	assert.Contains(t, logs.String(), dir+" is writable by users other than its owner")
}
