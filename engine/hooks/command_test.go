package hooks

import (
	"bytes"
	"context"
	"log/slog"
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

	"zrepl.dev/zrepl/engine/zfs"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// script writes an executable shell script into dir.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
	return p
}

// records is a slog handler that keeps every record.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// output returns the logged hook output lines of stream, with their
// levels.
func (r *records) output(stream string) (lines []string, levels []slog.Level) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == stream && rec.Message == "hook output" {
				lines = append(lines, a.Value.String())
				levels = append(levels, rec.Level)
			}
			return true
		})
	}
	return lines, levels
}

func (r *records) has(msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if strings.Contains(rec.Message, msg) {
			return true
		}
	}
	return false
}

func commandList(t *testing.T, log *slog.Logger, specs ...Spec) *List {
	t.Helper()
	l, err := New(specs, Options{Log: log})
	require.NoError(t, err)
	return l
}

// A command hook sees zrepl's environment variables, with the daemon's
// own environment, once per edge.
func TestCommandEnvironment(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	t.Setenv("ZREPL_TEST_INHERITED", "yes")
	p := script(t, dir, "env.sh", `
{ echo "type=$ZREPL_HOOKTYPE fs=$ZREPL_FS snap=$ZREPL_SNAPNAME timeout=$ZREPL_TIMEOUT inherited=$ZREPL_TEST_INHERITED"
  if [ -z "${ZREPL_DRYRUN+set}" ]; then echo dryrun=unset; else echo "dryrun=[$ZREPL_DRYRUN]"; fi
} >>`+out+"\n")
	l := commandList(t, discard(), Spec{Type: Command, Path: p, Timeout: 90 * time.Second})
	rep := l.Run(context.Background(), fsA, "zrepl_20380119_031407_000", func(context.Context) error { return nil })
	require.NoError(t, rep.HookErr())
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, `type=pre_snapshot fs=pool/a snap=zrepl_20380119_031407_000 timeout=90 inherited=yes
dryrun=[]
type=post_snapshot fs=pool/a snap=zrepl_20380119_031407_000 timeout=90 inherited=yes
dryrun=[]
`, string(b))
	require.Len(t, rep.Results, 2)
	assert.Equal(t, "command "+p, rep.Results[0].Hook)
	assert.Equal(t, []Phase{PreSnapshot, PostSnapshot}, []Phase{rep.Results[0].Phase, rep.Results[1].Phase})
}

// A failing command's exit status is the error; its output is logged
// (stdout at info, stderr at warn) and its tail is in the Result; a
// failed pre edge skips its post edge.
func TestCommandFailure(t *testing.T) {
	dir := t.TempDir()
	rec := &records{}
	p := script(t, dir, "fail.sh", `echo "to stdout"; echo "to stderr" >&2; [ "$ZREPL_HOOKTYPE" = post_snapshot ] && echo post ran; exit 3`+"\n")
	l := commandList(t, slog.New(rec), Spec{Type: Command, Path: p})
	rep := l.Run(context.Background(), fsA, "s", func(context.Context) error { return nil })
	require.Len(t, rep.Results, 1, "no post edge after a failed pre edge")
	r := rep.Results[0]
	require.Error(t, r.Err)
	assert.Contains(t, r.Err.Error(), "exit status 3")
	assert.Contains(t, r.Err.Error(), "pre_snapshot hook command "+p+" on pool/a")
	assert.Contains(t, r.Output, "to stdout")
	assert.Contains(t, r.Output, "to stderr")
	assert.False(t, rep.Skipped, "err_is_fatal is false")
	lines, levels := rec.output("stdout")
	assert.Equal(t, []string{"to stdout"}, lines)
	assert.Equal(t, []slog.Level{slog.LevelInfo}, levels)
	lines, levels = rec.output("stderr")
	assert.Equal(t, []string{"to stderr"}, lines)
	assert.Equal(t, []slog.Level{slog.LevelWarn}, levels)
}

// alive tells whether process pid exists (and is not a zombie of ours).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no procfs: kill(0) said it exists
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) == 0 || f[0] != "Z"
}

// A hook that outlives its timeout is killed with everything it started
// in its process group, promptly, and the snapshot is skipped when the
// hook is fatal.
func TestCommandTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	p := script(t, dir, "hang.sh", `sleep 1000 &
echo $! >`+pids+`
echo $$ >>`+pids+`
echo started
sleep 1000
`)
	l := commandList(t, discard(), Spec{Type: Command, Path: p, Timeout: 500 * time.Millisecond, ErrIsFatal: true})
	start := time.Now()
	took := false
	rep := l.Run(context.Background(), fsA, "s", func(context.Context) error { took = true; return nil })
	elapsed := time.Since(start)
	require.Len(t, rep.Results, 1)
	r := rep.Results[0]
	assert.ErrorIs(t, r.Err, ErrTimeout)
	assert.Contains(t, r.Err.Error(), "killed with its process group")
	assert.Contains(t, r.Output, "started")
	assert.True(t, rep.Skipped)
	assert.False(t, took)
	assert.Less(t, elapsed, 500*time.Millisecond+waitDelay, "the run ends at the timeout, not when the hook would")
	b, err := os.ReadFile(pids)
	require.NoError(t, err)
	fields := strings.Fields(string(b))
	require.Len(t, fields, 2)
	for _, f := range fields {
		pid, err := strconv.Atoi(f)
		require.NoError(t, err)
		assert.Eventually(t, func() bool { return !alive(pid) }, 5*time.Second, 20*time.Millisecond, "process %d of the hook's group is gone", pid)
	}
}

// A hook that exits while a background process keeps its output open
// succeeds without waiting for that process.
func TestCommandBackgroundChildDoesNotHold(t *testing.T) {
	dir := t.TempDir()
	pidf := filepath.Join(dir, "pid")
	p := script(t, dir, "bg.sh", `[ "$ZREPL_HOOKTYPE" = pre_snapshot ] && { sleep 30 & echo $! >`+pidf+"; }\necho done\n")
	l := commandList(t, discard(), Spec{Type: Command, Path: p})
	start := time.Now()
	rep := l.Run(context.Background(), fsA, "s", func(context.Context) error { return nil })
	assert.NoError(t, rep.HookErr())
	assert.Less(t, time.Since(start), 2*(waitDelay+time.Second))
	b, err := os.ReadFile(pidf)
	require.NoError(t, err)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Output is logged and kept within bounds, however much a hook prints.
func TestCommandOutputBounded(t *testing.T) {
	dir := t.TempDir()
	rec := &records{}
	// 1 MiB of 100-byte lines on stdout, one 1 MiB line on stderr.
	p := script(t, dir, "loud.sh", `
line=$(printf '%099d' 0)
i=0; while [ $i -lt 10486 ]; do echo "$line"; i=$((i+1)); done
head -c 1048576 /dev/zero | tr '\0' x >&2
echo end >&2
`)
	l := commandList(t, slog.New(rec), Spec{Type: Command, Path: p, Timeout: time.Minute})
	rep := l.Run(context.Background(), fsA, "s", func(context.Context) error { return nil })
	require.NoError(t, rep.HookErr())
	for _, stream := range []string{"stdout", "stderr"} {
		lines, _ := rec.output(stream)
		n := 0
		for _, l := range lines {
			n += len(l) + 1
			assert.LessOrEqual(t, len(l), maxLineBytes)
		}
		assert.NotZero(t, n, stream)
		assert.LessOrEqual(t, n, 2*maxLogBytes, "%s: two edges ran, each within the bound", stream)
	}
	assert.True(t, rec.has("hook output not logged"))
	for _, r := range rep.Results {
		assert.LessOrEqual(t, len(r.Output), maxTailBytes+len("…"))
		assert.True(t, strings.HasSuffix(r.Output, "xend\n"), "the tail is the end of the output")
	}
}

func TestCheckExecutable(t *testing.T) {
	dir := t.TempDir()
	exe := script(t, dir, "ok.sh", "exit 0\n")
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("x"), 0o644))
	assert.NoError(t, CheckExecutable(exe))
	for path, want := range map[string]string{
		"":                            "no path",
		"hooks/ok.sh":                 "not absolute",
		filepath.Join(dir, "missing"): "no such file",
		dir:                           "not a regular file",
		plain:                         "not executable",
	} {
		err := CheckExecutable(path)
		assert.ErrorIs(t, err, ErrBadSpec, path)
		assert.ErrorContains(t, err, want, path)
	}
}

// A hook whose filter matches none of the filesystems a run snapshots is
// warned about (its filter is likely wrong); a hook without filter never.
func TestWarnUnmatched(t *testing.T) {
	rec := &records{}
	l := commandList(t, slog.New(rec),
		Spec{Type: Command, Path: "/bin/true"},
		Spec{Type: Command, Path: "/bin/true", Filesystems: onlyFS(fsA)})
	l.WarnUnmatched([]zfs.DatasetPath{fsA})
	assert.False(t, rec.has("matches none"))
	l.WarnUnmatched([]zfs.DatasetPath{zfs.MustDatasetPath("pool/b")})
	assert.True(t, rec.has("matches none"))
}
