package platformtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zrepl.dev/zrepl/zfsreal"
)

// EnvVar is set by `make platformtest` ("vm" inside the VM, "host" on a host
// with ZFS). Where it is set, ZFS being unusable is a test failure: a run that
// was meant to exercise real ZFS must not pass by skipping.
const EnvVar = "ZREPL_PLATFORMTEST"

// zfsUnavailable says why real ZFS cannot be used here, or "" if it can.
func zfsUnavailable() string {
	var why []string
	if _, err := os.Stat("/dev/zfs"); err != nil {
		why = append(why, "no /dev/zfs (ZFS kernel module not loaded)")
	}
	for _, bin := range []string{"zfs", "zpool"} {
		if _, err := exec.LookPath(bin); err != nil {
			why = append(why, "no `"+bin+"` on PATH")
		}
	}
	if os.Geteuid() != 0 {
		why = append(why, "not running as root")
	}
	return strings.Join(why, "; ")
}

// RequireZFS skips the test where real ZFS is absent, or fails it when the
// run was started by `make platformtest` (EnvVar set).
func RequireZFS(t testing.TB) {
	t.Helper()
	why := zfsUnavailable()
	if why == "" {
		return
	}
	if env := os.Getenv(EnvVar); env != "" {
		t.Fatalf("%s=%s but real ZFS is not usable: %s", EnvVar, env, why)
	}
	t.Skipf("real ZFS not available (%s); run `make platformtest` to test against real OpenZFS in a VM", why)
}

// Run runs a command and returns its stdout without the trailing newline,
// failing the test with the exact stderr if it does not succeed.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	stdout, stderr, err := RunErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr: %s", name, strings.Join(args, " "), err, stderr)
	}
	return stdout
}

// RunErr runs a command and returns stdout and stderr (trailing newline
// trimmed) and its error, for tests that expect failures.
func RunErr(name string, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return strings.TrimRight(o.String(), "\n"), strings.TrimRight(e.String(), "\n"), err
}

// Pool is a throwaway zpool on a sparse file. Its datasets mount below
// AltRoot, so nothing outside the test's temp directory is touched.
type Pool struct {
	Name    string
	File    string
	AltRoot string

	destroyOnce sync.Once
	destroyErr  error
}

var poolSeq atomic.Int64

// DefaultPoolSize is large enough for a few hundred MiB of test data; the
// file is sparse, so only what is written costs memory (in the VM, /tmp is a
// tmpfs).
const DefaultPoolSize = 512 << 20

// NewPool creates a pool on a sparse file of the given size in a fresh temp
// directory; the pool is destroyed when the test ends. Names are unique in
// the process ("zpt<pid>_<n>") because pools are global to the kernel.
func NewPool(t testing.TB, size int64) *Pool {
	t.Helper()
	RequireZFS(t)
	dir := t.TempDir()
	p := &Pool{
		Name:    fmt.Sprintf("zpt%d_%d", os.Getpid(), poolSeq.Add(1)),
		File:    filepath.Join(dir, "vdev"),
		AltRoot: filepath.Join(dir, "mnt"),
	}
	f, err := os.Create(p.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatalf("making sparse vdev %s of %d bytes: %v", p.File, size, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// -R: altroot, which also keeps the pool out of any cachefile.
	Run(t, "zpool", "create", "-f", "-R", p.AltRoot, p.Name, p.File)
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if err := p.Destroy(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// DS returns the full name of a dataset in the pool ("" is the root).
func (p *Pool) DS(rel string) string {
	if rel == "" {
		return p.Name
	}
	return p.Name + "/" + rel
}

// Destroy destroys the pool once (later calls return the first result) and
// checks that it is gone.
func (p *Pool) Destroy() error {
	p.destroyOnce.Do(func() {
		if _, stderr, err := RunErr("zpool", "destroy", "-f", p.Name); err != nil {
			p.destroyErr = fmt.Errorf("zpool destroy %s: %v: %s", p.Name, err, stderr)
			return
		}
		names, stderr, err := RunErr("zpool", "list", "-H", "-o", "name")
		if err != nil {
			p.destroyErr = fmt.Errorf("zpool list: %v: %s", err, stderr)
			return
		}
		for _, n := range strings.Split(names, "\n") {
			if n == p.Name {
				p.destroyErr = errors.New("pool " + p.Name + " still listed after zpool destroy")
				return
			}
		}
	})
	return p.destroyErr
}

// Prop returns one property of a dataset, parsable (-p) and without header.
func Prop(t testing.TB, dataset, prop string) string {
	t.Helper()
	return Run(t, "zfs", "get", "-H", "-p", "-o", "value", prop, dataset)
}

// invocationLog collects zfsreal's Observe reports.
type invocationLog struct {
	mu  sync.Mutex
	inv []zfsreal.Invocation
}

func (l *invocationLog) add(inv zfsreal.Invocation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inv = append(l.inv, inv)
}

// take returns what was collected since the last take, by start time.
func (l *invocationLog) take() []zfsreal.Invocation {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.inv
	l.inv = nil
	slices.SortFunc(out, func(a, b zfsreal.Invocation) int { return a.Start.Compare(b.Start) })
	return out
}

// isStream tells the send and recv children, which carry a stream, from
// the one-shot ones (zfs send -nvP is a one-shot size estimate).
func isStream(inv zfsreal.Invocation) bool {
	if len(inv.Args) == 0 {
		return false
	}
	switch inv.Args[0] {
	case "recv", "receive":
		return !slices.Contains(inv.Args, "-A")
	case "send":
		return !slices.Contains(inv.Args, "-nvP")
	}
	return false
}

// nonStream sums the durations of the one-shot invocations.
func nonStream(invs []zfsreal.Invocation) time.Duration {
	var d time.Duration
	for _, inv := range invs {
		if !isStream(inv) {
			d += inv.Duration
		}
	}
	return d
}

// formatInvocations is one line per invocation: offset from the first
// start, duration, command line (long arguments shortened).
func formatInvocations(invs []zfsreal.Invocation) string {
	if len(invs) == 0 {
		return "  (none)"
	}
	var b strings.Builder
	t0 := invs[0].Start
	for _, inv := range invs {
		args := make([]string, len(inv.Args))
		for i, a := range inv.Args {
			if len(a) > 60 {
				a = a[:57] + "..."
			}
			args[i] = a
		}
		status := ""
		if inv.Err != nil {
			status = " (" + inv.Err.Error() + ")"
		}
		fmt.Fprintf(&b, "  +%6.3fs %6.3fs zfs %s%s\n", inv.Start.Sub(t0).Seconds(), inv.Duration.Seconds(), strings.Join(args, " "), status)
	}
	return strings.TrimRight(b.String(), "\n")
}
