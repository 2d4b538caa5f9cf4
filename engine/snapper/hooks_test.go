package snapper

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/hooks"
	"zrepl.dev/zrepl/engine/zfs"
)

// journal is a file the hook scripts and the ZFS wrapper both append to,
// so the order of hooks and snapshots is observed as it happened.
type journal string

func (j journal) add(t *testing.T, line string) {
	f, err := os.OpenFile(string(j), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteString(line + "\n")
	require.NoError(t, err)
}

func (j journal) lines(t *testing.T) []string {
	b, err := os.ReadFile(string(j))
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// journaling is the model with each Snapshot call journaled.
type journaling struct {
	zfs.ZFS
	t *testing.T
	j journal
}

func (z journaling) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	z.j.add(z.t, "snapshot "+fs.String()+"@"+name)
	return z.ZFS.Snapshot(ctx, fs, name)
}

type onlyFS zfs.DatasetPath

func (o onlyFS) Match(p zfs.DatasetPath) bool { return p == zfs.DatasetPath(o) }

// hookScript journals its edge and filesystem, and fails where told.
func hookScript(t *testing.T, dir, name string, j journal, failPreOn string) string {
	p := filepath.Join(dir, name)
	body := `#!/bin/sh
echo "` + name + ` $ZREPL_HOOKTYPE $ZREPL_FS@$ZREPL_SNAPNAME" >>` + string(j) + `
if [ "$ZREPL_HOOKTYPE" = pre_snapshot ] && [ "$ZREPL_FS" = "` + failPreOn + `" ]; then echo "cannot freeze" >&2; exit 1; fi
`
	require.NoError(t, os.WriteFile(p, []byte(body), 0o755))
	return p
}

// Each filesystem's snapshot runs between the hooks matching it; a fatal
// hook's failure skips that filesystem's snapshot only, a non-fatal one
// is reported with the snapshot taken; both are errors of the run naming
// the filesystem.
func TestSnapshotRunsHooksAroundEachFilesystem(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j := journal(filepath.Join(dir, "journal"))
	w := newWorld(t, "pool/a", "pool/b", "pool/c")
	specs := []hooks.Spec{
		{Type: hooks.Command, Path: hookScript(t, dir, "fatal", j, "pool/b"), ErrIsFatal: true},
		{Type: hooks.Command, Path: hookScript(t, dir, "soft", j, "pool/c")},
		{Type: hooks.Command, Path: hookScript(t, dir, "only-a", j, ""), Filesystems: onlyFS(w.fss[0])},
	}
	hl, err := hooks.New(specs, hooks.Options{})
	require.NoError(t, err)
	s := New(journaling{w.m, t, j}, w.list, Config{Prefix: "zrepl_", Name: stamp, Hooks: hl})

	reps, err := s.Snapshot(ctx, t0)
	require.Error(t, err)
	assert.ErrorIs(t, err, hooks.ErrHookFailed)
	for _, want := range []string{"pool/b@zrepl_20260504_100000 not taken", "pre_snapshot hook command " + specs[1].Path + " on pool/c: exit status 1"} {
		assert.Contains(t, err.Error(), want)
	}
	snap := "@zrepl_20260504_100000"
	assert.Equal(t, []string{
		"fatal pre_snapshot pool/a" + snap,
		"soft pre_snapshot pool/a" + snap,
		"only-a pre_snapshot pool/a" + snap,
		"snapshot pool/a" + snap,
		"only-a post_snapshot pool/a" + snap,
		"soft post_snapshot pool/a" + snap,
		"fatal post_snapshot pool/a" + snap,
		// Fatal failure: nothing else, no snapshot.
		"fatal pre_snapshot pool/b" + snap,
		// Non-fatal failure: the snapshot, no post edge of the failed hook.
		"fatal pre_snapshot pool/c" + snap,
		"soft pre_snapshot pool/c" + snap,
		"snapshot pool/c" + snap,
		"fatal post_snapshot pool/c" + snap,
	}, j.lines(t))

	require.Len(t, reps, 3)
	assert.Equal(t, []State{Taken, Skipped, Taken}, []State{reps[0].State, reps[1].State, reps[2].State})
	assert.Len(t, reps[0].Hooks, 6)
	require.Len(t, reps[1].Hooks, 1)
	assert.Contains(t, reps[1].Hooks[0].Output, "cannot freeze")
	assert.Error(t, reps[1].Err)
	assert.NoError(t, reps[2].Err, "the snapshot itself went well")
	assert.Equal(t, []string{"zrepl_20260504_100000"}, w.snapshots(t, w.fss[0]))
	assert.Empty(t, w.snapshots(t, w.fss[1]))
	assert.Equal(t, []string{"zrepl_20260504_100000"}, w.snapshots(t, w.fss[2]))

	created, _ := s.SnapshotNow(ctx, t0.Add(1e9))
	assert.Len(t, created, 2, "SnapshotNow lists the snapshots taken")
}

// A failed snapshot still runs the post edges.
func TestSnapshotFailureRunsPostHooks(t *testing.T) {
	dir := t.TempDir()
	j := journal(filepath.Join(dir, "journal"))
	w := newWorld(t, "pool/a")
	hl, err := hooks.New([]hooks.Spec{{Type: hooks.Command, Path: hookScript(t, dir, "h", j, "")}}, hooks.Options{})
	require.NoError(t, err)
	busy := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "snapshot", Dataset: "pool/a@zrepl_20260504_100000", Msg: "dataset is busy"}
	require.NoError(t, w.m.FailNext("Snapshot", 1, busy))
	s := New(w.m, w.list, Config{Prefix: "zrepl_", Name: stamp, Hooks: hl})
	reps, err := s.Snapshot(context.Background(), t0)
	require.ErrorIs(t, err, zfs.ErrDatasetBusy)
	require.Len(t, reps, 1)
	assert.Equal(t, Failed, reps[0].State)
	assert.Equal(t, []string{"h pre_snapshot pool/a@zrepl_20260504_100000", "h post_snapshot pool/a@zrepl_20260504_100000"}, j.lines(t))
}
