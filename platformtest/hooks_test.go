package platformtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsreal"
	"zrepl.dev/zrepl/zfsreal/zfsrealtest"
)

// A snap job's command hooks around real ZFS snapshots, through the
// daemon: the pre_snapshot edge runs before `zfs snapshot` (the snapshot
// does not exist yet, and what the hook writes is in it), the
// post_snapshot edge after (the snapshot exists, and what it writes is
// not in it); a failing err_is_fatal hook leaves its filesystem without
// a snapshot. The status shows each edge.
func TestSnapshotHooksOnRealZFS(t *testing.T) {
	RequireZFS(t)
	pool := zfsrealtest.NewPool(t, DefaultPoolSize)
	z := zfsreal.New(zfsreal.Options{})
	h := zfsrealtest.NewHarness(t, pool, z)
	root := h.NewRoot(t)
	ctx := context.Background()
	db, fatal := root.String()+"/db", root.String()+"/fatal"
	for _, fs := range []string{db, fatal} {
		require.NoError(t, h.CreateFilesystem(ctx, zfs.MustDatasetPath(fs), false))
	}
	dir := t.TempDir()
	journal := filepath.Join(dir, "journal")
	script := filepath.Join(dir, "hook.sh")
	require.NoError(t, os.WriteFile(script, []byte(`#!/bin/sh
if zfs list -H -o name -t snapshot "$ZREPL_FS@$ZREPL_SNAPNAME" >/dev/null 2>&1; then exists=yes; else exists=no; fi
echo "$ZREPL_HOOKTYPE $ZREPL_FS exists=$exists" >>`+journal+`
mnt=$(zfs get -H -o value mountpoint "$ZREPL_FS")
echo "$ZREPL_HOOKTYPE" >"$mnt/marker"
`), 0o755))
	fail := filepath.Join(dir, "fail.sh")
	require.NoError(t, os.WriteFile(fail, []byte("#!/bin/sh\necho refusing >&2\nexit 1\n"), 0o755))

	cfg, err := config.Parse([]byte(fmt.Sprintf(`
jobs:
  - name: snap
    type: snap
    filesystems: {%q: true, %q: true}
    snapshotting:
      type: periodic
      prefix: zrepl_
      interval: 1h
      hooks:
        - {type: command, path: %s}
        - {type: command, path: %s, err_is_fatal: true, filesystems: {%q: true}}
    pruning:
      keep: [{type: last_n, count: 10}]
`, db, fatal, script, fail, fatal)))
	require.NoError(t, err)
	// The control socket in a short private directory (a unix socket's
	// path has a length limit t.TempDir's long names can exceed).
	sockDir, err := os.MkdirTemp("", "zc")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg.Global.ControlSockPath = filepath.Join(sockDir, "control")
	d, err := daemon.New(daemon.Options{Config: cfg, ZFS: z})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	j, err := d.Job("snap")
	require.NoError(t, err)
	deadline := time.Now().Add(5 * time.Minute)
	for j.Status().Runs < 1 || j.Status().State != job.StateIdle {
		require.True(t, time.Now().Before(deadline), "the snap job's first run did not end: %+v", j.Status())
		time.Sleep(100 * time.Millisecond)
	}
	st := j.Status()
	require.NotNil(t, st.Snapshotting)

	snaps := Run(t, "zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", root.String())
	var dbSnaps []string
	for _, s := range strings.Split(snaps, "\n") {
		switch {
		case strings.HasPrefix(s, db+"@"):
			dbSnaps = append(dbSnaps, s)
		case strings.HasPrefix(s, fatal+"@"):
			t.Errorf("a fatal pre-hook failure must skip the snapshot, found %s", s)
		}
	}
	require.Len(t, dbSnaps, 1, snaps)
	b, err := os.ReadFile(journal)
	require.NoError(t, err)
	assert.Equal(t, "pre_snapshot "+db+" exists=no\npost_snapshot "+db+" exists=yes\n"+
		"pre_snapshot "+fatal+" exists=no\npost_snapshot "+fatal+" exists=no\n", string(b))

	// The snapshot holds what the pre edge wrote, not the post edge.
	clone := root.String() + "/clone"
	Run(t, "zfs", "clone", dbSnaps[0], clone)
	defer RunErr("zfs", "destroy", clone)
	if Prop(t, clone, "mounted") != "yes" {
		Run(t, "zfs", "mount", clone)
	}
	marker, err := os.ReadFile(filepath.Join(Prop(t, clone, "mountpoint"), "marker"))
	require.NoError(t, err)
	assert.Equal(t, "pre_snapshot\n", string(marker))

	byFS := map[string]job.SnapshotFSStatus{}
	for _, f := range st.Snapshotting.Filesystems {
		byFS[f.FS] = f
	}
	assert.Equal(t, job.SnapDone, byFS[db].State)
	require.Len(t, byFS[db].Hooks, 2)
	assert.Equal(t, job.SnapSkipped, byFS[fatal].State)
	require.Len(t, byFS[fatal].Hooks, 3)
	assert.Equal(t, "refusing\n", byFS[fatal].Hooks[1].Output)
	assert.Contains(t, st.LastError, fatal)
}
