package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// The environment of a command hook, as zrepl sets it.
const (
	EnvHookType = "ZREPL_HOOKTYPE"
	EnvFS       = "ZREPL_FS"
	EnvSnapName = "ZREPL_SNAPNAME"
	EnvDryRun   = "ZREPL_DRYRUN"
	EnvTimeout  = "ZREPL_TIMEOUT"
)

// waitDelay bounds how long a command hook's output is read after the
// hook exited or was killed: a process it started in the background (or
// that left its process group) may hold the pipes open forever.
const waitDelay = 2 * time.Second

// CheckExecutable reports whether path can be a command hook: absolute,
// and a regular file the daemon may execute.
func CheckExecutable(path string) error {
	if path == "" {
		return badSpec("no path")
	}
	if !filepath.IsAbs(path) {
		return badSpec("path %q is not absolute", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return badSpec("%w", err)
	}
	if !fi.Mode().IsRegular() {
		return badSpec("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	// access(2) answers for the daemon's user (for root: any x bit) and
	// knows noexec mounts.
	if err := syscall.Access(path, 1 /* X_OK */); err != nil {
		return badSpec("%s is not executable (mode %s)", path, fi.Mode().Perm())
	}
	return nil
}

type commandHook struct{ path string }

func (c commandHook) before(ctx context.Context, inv invocation) (afterFunc, string, error) {
	out, err := c.run(ctx, inv)
	if err != nil {
		return nil, out, err
	}
	return c.run, out, nil
}

// run runs the command once for inv's phase.
func (c commandHook) run(ctx context.Context, inv invocation) (string, error) {
	cmd := exec.CommandContext(ctx, c.path)
	cmd.Env = append(os.Environ(),
		EnvHookType+"="+string(inv.phase),
		EnvFS+"="+inv.fs.String(),
		EnvSnapName+"="+inv.snapshot,
		EnvDryRun+"=",
		EnvTimeout+"="+fmt.Sprintf("%.f", math.Floor(inv.timeout.Seconds())),
	)
	// A group of its own, so that the timeout kills what the hook
	// started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	var t tail
	stdout := &lineLog{log: inv.log, level: slog.LevelInfo, stream: "stdout"}
	stderr := &lineLog{log: inv.log, level: slog.LevelWarn, stream: "stderr"}
	cmd.Stdout = io.MultiWriter(stdout, &t)
	cmd.Stderr = io.MultiWriter(stderr, &t)
	err := cmd.Run()
	stdout.close()
	stderr.close()
	switch {
	case err == nil:
	case errors.Is(err, exec.ErrWaitDelay):
		// The hook succeeded; something it left behind still holds its
		// output.
		inv.log.Warn("hook exited, but a process it started still holds its output; stopped reading", "after", waitDelay)
		err = nil
	case errors.Is(context.Cause(ctx), errEdgeTimeout):
		err = fmt.Errorf("%w after %s (killed with its process group): %w", ErrTimeout, inv.timeout, err)
	case ctx.Err() != nil:
		err = fmt.Errorf("%w (killed with its process group): %w", context.Cause(ctx), err)
	}
	return t.String(), err
}
