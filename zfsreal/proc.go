package zfsreal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// tailBuffer keeps the last limit bytes written to it: zfs can print a lot
// on stderr (a rollback lists every snapshot in the way), and the end is
// where the error is.
type tailBuffer struct {
	mu      sync.Mutex
	limit   int
	buf     []byte
	dropped int64
}

func newTailBuffer(limit int) *tailBuffer { return &tailBuffer{limit: limit} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.limit {
		t.dropped += int64(len(t.buf) + len(p) - t.limit)
		t.buf = append(t.buf[:0], p[len(p)-t.limit:]...)
		return n, nil
	}
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.dropped += int64(over)
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return n, nil
}

// String is the kept text; when bytes were dropped it says how many and
// starts at the next whole line.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped == 0 {
		return string(t.buf)
	}
	b := t.buf
	if i := bytes.IndexByte(b, '\n'); i >= 0 && i+1 < len(b) {
		b = b[i+1:]
	}
	dropped := t.dropped + int64(len(t.buf)-len(b))
	return fmt.Sprintf("[%d bytes of stderr dropped]\n%s", dropped, b)
}

// startError marks a command that never ran (binary missing, context
// already done): retrying it for another name cannot help.
type startError struct{ err error }

func (e *startError) Error() string { return "cannot run zfs: " + e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// proc is one started zfs child.
type proc struct {
	c      *CLI
	cmd    *exec.Cmd
	stderr *tailBuffer
	start  time.Time

	waitOnce sync.Once
	waitErr  error
}

// wait reaps the child once; every caller gets the same result.
func (p *proc) wait() error {
	p.waitOnce.Do(func() {
		p.waitErr = p.cmd.Wait()
		p.c.observed(p.cmd, p.start, p.waitErr)
	})
	return p.waitErr
}

// observed reports a reaped child to Options.Observe.
func (c *CLI) observed(cmd *exec.Cmd, start time.Time, err error) {
	if c.observe == nil || cmd.Process == nil {
		return // not observed, or never started
	}
	c.observe(Invocation{Args: slices.Clone(cmd.Args[1:]), Start: start, Duration: time.Since(start), Err: err})
}

// kill ends the child. It is safe after the child was reaped (os.Process
// then refuses, and never signals a recycled pid).
func (p *proc) kill() { _ = p.cmd.Process.Kill() }

// command prepares a zfs child. LC_ALL=C because zfs translates its
// messages and the error kinds are scraped from the English text.
func (c *CLI) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// run runs one zfs command to its end and returns its stdout, its
// (bounded) stderr and, if it failed, a classified *zfs.Error.
func (c *CLI) run(ctx context.Context, op, dataset string, args []string) ([]byte, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", &zfs.Error{Op: op, Dataset: dataset, Err: &startError{err}}
	}
	cmd := c.command(ctx, args)
	var stdout bytes.Buffer
	stderr := newTailBuffer(c.stderrLimit)
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	start := time.Now()
	err := cmd.Run()
	c.observed(cmd, start, err)
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) && ctx.Err() == nil {
			err = &startError{err}
		}
		return stdout.Bytes(), stderr.String(), c.cmdError(ctx, op, dataset, stderr.String(), err)
	}
	return stdout.Bytes(), stderr.String(), nil
}

// cmdError turns a failed child into a *zfs.Error. When ctx ended, its
// error is the cause (errors.Is finds context.Canceled), next to whatever
// kind the child's last words give.
func (c *CLI) cmdError(ctx context.Context, op, dataset, stderr string, err error) *zfs.Error {
	e := &zfs.Error{Op: op, Dataset: dataset, Msg: zfsMessage(stderr)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		e.ExitStatus = ee.ExitCode()
	}
	var se *startError
	if errors.As(err, &se) {
		e.Err = se
		return e
	}
	e.Kind = classify(e.Msg)
	switch {
	case ctx.Err() != nil:
		e.Err = ctx.Err()
	case e.Msg == "":
		// Nothing printed: the exit status is all there is to say.
		e.Err = err
	}
	return e
}

// zfsMessage is zfs's stderr trimmed, without the usage text zfs prints
// after some errors (a bookmark of a missing snapshot, for one).
func zfsMessage(stderr string) string {
	if strings.HasPrefix(stderr, "usage:\n") {
		return ""
	}
	if i := strings.Index(stderr, "\nusage:\n"); i >= 0 {
		stderr = stderr[:i]
	}
	return strings.TrimSpace(stderr)
}

// isStartError reports whether err means zfs could not be run at all, or
// the context ended: in both cases trying further commands is pointless.
func isStartError(ctx context.Context, err error) bool {
	var se *startError
	return errors.As(err, &se) || ctx.Err() != nil
}
