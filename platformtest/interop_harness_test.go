package platformtest

// The interop tests run zrepl v0.7.0 (../shared/upstream/zrepl, or
// $ZREPL_UPSTREAM; platformtest/vm/run.sh puts it into the VM) against
// this project's daemon on real OpenZFS, over loopback TCP, in every mixed
// direction. zrepl runs as its own process with its own config; our
// daemon runs in the test process (daemon.New with zfsreal), so the test
// can watch its zfs children and its job status.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/zfsreal"
)

// UpstreamEnvVar names the zrepl v0.7.0 binary for the interop tests;
// without it they look at ../shared/upstream/zrepl beside the repository.
const UpstreamEnvVar = "ZREPL_UPSTREAM"

// upstreamZrepl returns the path of zrepl v0.7.0, or skips the test.
func upstreamZrepl(t *testing.T) string {
	t.Helper()
	p := os.Getenv(UpstreamEnvVar)
	if p == "" {
		// go test runs in the package directory: the repository is "..".
		p = filepath.Join("..", "..", "shared", "upstream", "zrepl")
	}
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Skipf("zrepl v0.7.0 not found at %s (set %s or put it at ../shared/upstream/zrepl beside the repository): the interop tests need it", p, UpstreamEnvVar)
	}
	abs, err := filepath.Abs(p)
	require.NoError(t, err)
	out, err := exec.Command(abs, "version", "--show", "client").CombinedOutput()
	require.NoError(t, err, "%s version: %s", abs, out)
	require.Contains(t, string(out), "version=v0.7.", "the interop tests are written against zrepl v0.7")
	return abs
}

// freePort is a loopback port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dumpTail logs the last lines of a log file when the test failed.
func dumpTail(t *testing.T, what, path string) {
	if !t.Failed() {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("%s log: %v", what, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 150 {
		lines = lines[len(lines)-150:]
	}
	t.Logf("--- last lines of %s's log (%s):\n%s", what, path, strings.Join(lines, "\n"))
}

// zreplProc is a zrepl v0.7.0 daemon with its own config, control socket
// and log file in a temp directory.
type zreplProc struct {
	t       *testing.T
	bin     string
	cfgPath string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	// control reaches the daemon's control socket.
	control *http.Client
}

// startZrepl writes a config of the given jobs (a YAML list under "jobs:")
// and starts `zrepl daemon` on it; it is stopped (SIGTERM) when the test
// ends. It returns once the control socket answers.
func startZrepl(t *testing.T, bin, jobs string) *zreplProc {
	t.Helper()
	// Short: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "zr")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	// zrepl's stdinserver serve wants its sockdir to exist already.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "stdinserver"), 0o700))
	cfg := fmt.Sprintf(`global:
  logging:
    - {type: stdout, level: info, format: human}
  control: {sockpath: %[1]s/control}
  serve: {stdinserver: {sockdir: %[1]s/stdinserver}}
jobs:
%[2]s`, dir, jobs)
	sock := filepath.Join(dir, "control")
	z := &zreplProc{t: t, bin: bin, cfgPath: filepath.Join(dir, "zrepl.yml"), logPath: filepath.Join(dir, "zrepl.log"),
		exited: make(chan struct{}),
		control: &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}}}}
	require.NoError(t, os.WriteFile(z.cfgPath, []byte(cfg), 0o600))
	out, err := exec.Command(bin, "--config", z.cfgPath, "configcheck").CombinedOutput()
	require.NoError(t, err, "zrepl configcheck of\n%s\n%s", cfg, out)
	logf, err := os.Create(z.logPath)
	require.NoError(t, err)
	z.cmd = exec.Command(bin, "--config", z.cfgPath, "daemon")
	z.cmd.Stdout, z.cmd.Stderr = logf, logf
	require.NoError(t, z.cmd.Start())
	go func() {
		z.waitErr = z.cmd.Wait()
		logf.Close()
		close(z.exited)
	}()
	t.Cleanup(func() {
		z.stop()
		dumpTail(t, "zrepl", z.logPath)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := z.status(); err == nil {
			return z
		} else if time.Now().After(deadline) {
			t.Fatalf("zrepl's control socket did not answer within 30s: %v", err)
		}
		select {
		case <-z.exited:
			t.Fatalf("zrepl daemon exited at start: %v", z.waitErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (z *zreplProc) stop() {
	select {
	case <-z.exited:
		return
	default:
	}
	_ = z.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-z.exited:
	case <-time.After(30 * time.Second):
		z.t.Errorf("zrepl did not stop within 30s of SIGTERM; killing it")
		_ = z.cmd.Process.Kill()
		<-z.exited
	}
}

// ctl runs a zrepl subcommand against the daemon's control socket.
func (z *zreplProc) ctl(args ...string) (string, error) {
	cmd := exec.Command(z.bin, append([]string{"--config", z.cfgPath}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("zrepl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// zreplActiveStatus is the part of zrepl's `status --mode raw` of an
// active job the tests read.
type zreplActiveStatus struct {
	Replication *struct {
		StartAt, FinishAt time.Time
		Attempts          []struct {
			State       string
			PlanError   *struct{ Err string }
			Filesystems []struct {
				Info *struct {
					Name string
				}
				State     string
				PlanError *struct{ Err string }
				StepError *struct{ Err string }
			}
		}
	}
	PruningSender, PruningReceiver *struct {
		State string
		Error string
	}
}

// status is what `zrepl status --mode raw` prints, asked of the control
// socket as zrepl's CLI asks it (POST /status, JSON both ways) but without
// a zrepl process per call: the tests poll it four times a second, and
// under the VM's emulation each process start costs a lot of CPU.
func (z *zreplProc) status() (map[string]json.RawMessage, error) {
	resp, err := z.control.Post("http://unix/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return nil, fmt.Errorf("zrepl control socket: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("zrepl control socket /status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("zrepl control socket /status: %s: %s", resp.Status, out)
	}
	var st struct{ Jobs map[string]json.RawMessage }
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("zrepl control socket /status: %v: %s", err, out)
	}
	return st.Jobs, nil
}

func (z *zreplProc) activeStatus(name string) (zreplActiveStatus, error) {
	jobs, err := z.status()
	if err != nil {
		return zreplActiveStatus{}, err
	}
	raw, ok := jobs[name]
	if !ok {
		return zreplActiveStatus{}, fmt.Errorf("zrepl has no job %q", name)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return zreplActiveStatus{}, err
	}
	var typ string
	if err := json.Unmarshal(m["type"], &typ); err != nil {
		return zreplActiveStatus{}, err
	}
	var st zreplActiveStatus
	if err := json.Unmarshal(m[typ], &st); err != nil {
		return zreplActiveStatus{}, fmt.Errorf("status of %s: %v: %s", name, err, m[typ])
	}
	return st, nil
}

// errors lists what went wrong in a finished run: plan errors, step
// errors, pruning errors.
func (s zreplActiveStatus) errors() []string {
	var out []string
	if r := s.Replication; r != nil {
		for i, a := range r.Attempts {
			if a.PlanError != nil {
				out = append(out, fmt.Sprintf("attempt %d: plan: %s", i, a.PlanError.Err))
			}
			for _, f := range a.Filesystems {
				name := "?"
				if f.Info != nil {
					name = f.Info.Name
				}
				if f.PlanError != nil {
					out = append(out, fmt.Sprintf("attempt %d: %s: plan: %s", i, name, f.PlanError.Err))
				}
				if f.StepError != nil {
					out = append(out, fmt.Sprintf("attempt %d: %s: step: %s", i, name, f.StepError.Err))
				}
			}
		}
	}
	for side, p := range map[string]*struct{ State, Error string }{"sender": s.PruningSender, "receiver": s.PruningReceiver} {
		if p != nil && p.Error != "" {
			out = append(out, "pruning "+side+": "+p.Error)
		}
	}
	return out
}

// run wakes zrepl's active job up and waits until its replication and
// both prunings ended; it returns the status (the attempts' errors are
// the caller's to judge: a cut connection fails one attempt).
func (z *zreplProc) run(name string) zreplActiveStatus {
	z.t.Helper()
	return z.start(name)()
}

// runAllOK runs the jobs at once and requires each run to be done
// without errors.
func (z *zreplProc) runAllOK(names ...string) {
	z.t.Helper()
	var waits []func() zreplActiveStatus
	for _, n := range names {
		waits = append(waits, z.start(n))
	}
	for i, w := range waits {
		z.checkOK(names[i], w())
	}
}

// start wakes zrepl's active job up; the func returned waits for the
// run's end, as run does.
func (z *zreplProc) start(name string) func() zreplActiveStatus {
	z.t.Helper()
	before, err := z.activeStatus(name)
	require.NoError(z.t, err)
	var prevStart time.Time
	if before.Replication != nil {
		prevStart = before.Replication.StartAt
	}
	_, err = z.ctl("signal", "wakeup", name)
	require.NoError(z.t, err)
	deadline := time.Now().Add(10 * time.Minute)
	// A run's pruners are nil until it creates them.
	ended := func(p *struct{ State, Error string }) bool {
		return p != nil && (p.State == "Done" || p.State == "PlanErr" || p.State == "ExecErr")
	}
	return func() zreplActiveStatus {
		z.t.Helper()
		for {
			st, err := z.activeStatus(name)
			require.NoError(z.t, err)
			if st.Replication != nil && st.Replication.StartAt.After(prevStart) &&
				ended(st.PruningSender) && ended(st.PruningReceiver) {
				return st
			}
			require.True(z.t, time.Now().Before(deadline), "zrepl job %s did not finish a run within 10 min: %+v", name, st)
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// runAfterCut runs zrepl's job once more if the first run failed: zrepl
// v0.7 retries within a run only errors it takes for the network's (it
// takes the failure of its own zfs recv, whose stream was cut, as
// permanent); its next run resumes. It returns the successful run.
func (z *zreplProc) runAfterCut(name string) zreplActiveStatus {
	z.t.Helper()
	st := z.run(name)
	if len(st.errors()) > 0 {
		z.t.Logf("zrepl job %s after the cut: %v; running it again", name, st.errors())
		return z.runOK(name)
	}
	return z.checkOK(name, st)
}

// runOK is run and requires the last attempt to be done without errors.
func (z *zreplProc) runOK(name string) zreplActiveStatus {
	z.t.Helper()
	return z.checkOK(name, z.run(name))
}

func (z *zreplProc) checkOK(name string, st zreplActiveStatus) zreplActiveStatus {
	z.t.Helper()
	atts := st.Replication.Attempts
	require.NotEmpty(z.t, atts, "zrepl job %s made no attempt", name)
	last := atts[len(atts)-1]
	require.Equal(z.t, "done", last.State, "zrepl job %s: %v", name, st.errors())
	for _, f := range last.Filesystems {
		require.Nil(z.t, f.StepError, "zrepl job %s: %v", name, st.errors())
	}
	require.Equal(z.t, "Done", st.PruningReceiver.State, "zrepl job %s: %v", name, st.errors())
	require.Equal(z.t, "Done", st.PruningSender.State, "zrepl job %s: %v", name, st.errors())
	return st
}

// ours is this project's daemon, in process, on real ZFS.
type ours struct {
	t       *testing.T
	cfg     *config.Config
	d       *daemon.Daemon
	calls   *invocationLog
	logPath string
}

// startOurs parses cfg (a whole config) and runs our daemon on it until
// the test ends.
func startOurs(t *testing.T, cfg string) *ours {
	t.Helper()
	// Our daemon's control socket in a short temp path of its own
	// (unix socket paths are limited to 108 bytes).
	sockDir, err := os.MkdirTemp("", "zo")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg = fmt.Sprintf("global:\n  control: {sockpath: %[1]s/control}\n  serve: {stdinserver: {sockdir: %[1]s/stdinserver}}\n", sockDir) + cfg
	c, err := config.Parse([]byte(cfg))
	require.NoError(t, err, "our config:\n%s", cfg)
	o := &ours{t: t, cfg: c, calls: &invocationLog{}, logPath: filepath.Join(t.TempDir(), "ours.log")}
	logf, err := os.Create(o.logPath)
	require.NoError(t, err)
	z := zfsreal.New(zfsreal.Options{Observe: o.calls.add})
	o.d, err = daemon.New(daemon.Options{Config: c, ZFS: z,
		Log: slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("our daemon: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("our daemon did not stop within 60s")
		}
		logf.Close()
		dumpTail(t, "our daemon", o.logPath)
	})
	return o
}

// run wakes our active job up and waits for the run to end.
func (o *ours) run(name string) job.Status {
	o.t.Helper()
	return o.start(name)()
}

// start wakes our active job up; the func returned waits for the run's
// end.
func (o *ours) start(name string) func() job.Status {
	o.t.Helper()
	j, err := o.d.Job(name)
	require.NoError(o.t, err)
	n := j.Status().Runs
	j.Wakeup()
	deadline := time.Now().Add(10 * time.Minute)
	return func() job.Status {
		o.t.Helper()
		for {
			st := j.Status()
			if st.Runs > n && st.State == job.StateIdle {
				return st
			}
			require.True(o.t, time.Now().Before(deadline), "our job %s did not finish a run within 10 min: %+v", name, st)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// runAllOK runs the jobs at once and requires each run to end without
// an error.
func (o *ours) runAllOK(names ...string) {
	o.t.Helper()
	var waits []func() job.Status
	for _, n := range names {
		waits = append(waits, o.start(n))
	}
	for i, w := range waits {
		require.Empty(o.t, w().LastError, "our job %s", names[i])
	}
}

func (o *ours) runOK(name string) job.Status {
	o.t.Helper()
	st := o.run(name)
	require.Empty(o.t, st.LastError, "our job %s", name)
	return st
}

// --- ZFS state, read with the zfs CLI -------------------------------------

func zfsLines(t *testing.T, args ...string) []string {
	t.Helper()
	out := Run(t, "zfs", args...)
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// snapNames are the snapshot names (after @) of fs, oldest first.
func snapNames(t *testing.T, fs string) []string {
	t.Helper()
	var out []string
	for _, l := range zfsLines(t, "list", "-H", "-o", "name", "-t", "snapshot", "-s", "createtxg", "-d", "1", fs) {
		out = append(out, l[strings.Index(l, "@")+1:])
	}
	return out
}

// bookmarkNames are the bookmark names (after #) of fs.
func bookmarkNames(t *testing.T, fs string) []string {
	t.Helper()
	var out []string
	for _, l := range zfsLines(t, "list", "-H", "-o", "name", "-t", "bookmark", "-d", "1", fs) {
		out = append(out, l[strings.Index(l, "#")+1:])
	}
	slices.Sort(out)
	return out
}

// holdTags maps each snapshot (name after @) of fs that has holds to its
// sorted hold tags.
func holdTags(t *testing.T, fs string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	snaps := snapNames(t, fs)
	if len(snaps) == 0 {
		return out
	}
	var full []string
	for _, s := range snaps {
		full = append(full, fs+"@"+s)
	}
	for _, l := range zfsLines(t, append([]string{"holds", "-H"}, full...)...) {
		f := strings.Split(l, "\t")
		if len(f) < 2 {
			t.Fatalf("zfs holds: unexpected line %q", l)
		}
		name := strings.TrimSpace(f[0])
		name = name[strings.Index(name, "@")+1:]
		out[name] = append(out[name], strings.TrimSpace(f[1]))
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out
}

func guidOf(t *testing.T, ds string) string {
	t.Helper()
	return Prop(t, ds, "guid")
}

// cursorName is zrepl's v2 replication cursor of job for the snapshot
// with that GUID (a decimal string, as zfs get prints it).
func cursorName(t *testing.T, guid, job string) string {
	t.Helper()
	var g uint64
	_, err := fmt.Sscan(guid, &g)
	require.NoError(t, err)
	return fmt.Sprintf("zrepl_CURSOR_G_%016x_J_%s", g, job)
}

// writeData replaces the file "data" of a mounted filesystem by size
// bytes drawn from seed.
func writeData(t *testing.T, fs string, seed int64, size int) {
	t.Helper()
	if Prop(t, fs, "mounted") != "yes" {
		Run(t, "zfs", "mount", fs)
	}
	b := make([]byte, size)
	x := uint64(seed)*0x9e3779b97f4a7c15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	require.NoError(t, os.WriteFile(filepath.Join(Prop(t, fs, "mountpoint"), "data"), b, 0o644))
}

var cloneSeq atomic.Int64

// contentOf hashes the file "data" in a snapshot, read through a clone
// in the snapshot's pool (no snapshot automount needed).
func contentOf(t *testing.T, snap string) string {
	t.Helper()
	pool := snap[:strings.IndexAny(snap, "/@")]
	clone := fmt.Sprintf("%s/interop-clone-%d", pool, cloneSeq.Add(1))
	mnt := filepath.Join(t.TempDir(), "clone")
	Run(t, "zfs", "clone", "-o", "mountpoint="+mnt, "-o", "readonly=on", snap, clone)
	defer Run(t, "zfs", "destroy", clone)
	if Prop(t, clone, "mounted") != "yes" {
		Run(t, "zfs", "mount", clone)
	}
	// With the pool's altroot, the clone mounts below it: ask zfs where.
	f, err := os.Open(filepath.Join(Prop(t, clone, "mountpoint"), "data"))
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// requireSameSnapshot: dst@name is src@name, by GUID and (where data)
// by the content of its file.
func requireSameSnapshot(t *testing.T, src, dst, name string, data bool) {
	t.Helper()
	require.Contains(t, snapNames(t, dst), name, "%s@%s was not replicated to %s", src, name, dst)
	require.Equal(t, guidOf(t, src+"@"+name), guidOf(t, dst+"@"+name), "GUID of %s@%s", dst, name)
	if data {
		require.Equal(t, contentOf(t, src+"@"+name), contentOf(t, dst+"@"+name), "content of %s@%s", dst, name)
	}
}

// requireAbstractions checks what zrepl leaves after a successful step to
// newest (with guarantee_resumability): the sender has the sending job's
// cursor on newest and no step holds or step bookmarks of it; the
// receiver has the receiving job's last-received hold on newest only.
func requireAbstractions(t *testing.T, src, sendJob, dst, recvJob, newest string) {
	t.Helper()
	cursor := cursorName(t, guidOf(t, src+"@"+newest), sendJob)
	var cursors []string
	for _, b := range bookmarkNames(t, src) {
		if strings.HasPrefix(b, "zrepl_CURSOR_") && strings.HasSuffix(b, "_J_"+sendJob) {
			cursors = append(cursors, b)
		}
		require.False(t, strings.HasPrefix(b, "zrepl_STEP_"), "a step bookmark is left on %s: %s", src, b)
	}
	require.Equal(t, []string{cursor}, cursors, "%s's replication cursor on %s", sendJob, src)
	for snap, tags := range holdTags(t, src) {
		require.NotContains(t, tags, "zrepl_STEP_J_"+sendJob, "a step hold is left on %s@%s", src, snap)
	}
	lr := "zrepl_last_received_J_" + recvJob
	for snap, tags := range holdTags(t, dst) {
		if snap != newest {
			require.NotContains(t, tags, lr, "%s@%s keeps the last-received hold, newest is %s", dst, snap, newest)
		}
	}
	require.Contains(t, holdTags(t, dst)[newest], lr, "%s@%s lacks the last-received hold", dst, newest)
}

// --- a TCP proxy that can cut a connection mid-stream ----------------------

// cutProxy forwards loopback connections to a target. Armed with cut(n),
// it cuts the next connection that carries more than n bytes (a send or
// receive stream's data connection), once: the sending side gets a reset,
// the receiving side what passed and then the end.
type cutProxy struct {
	t      *testing.T
	addr   string
	target string
	l      net.Listener

	mu     sync.Mutex
	limit  int64 // 0: not armed
	cuts   int
	closed bool
	conns  []net.Conn
	// recorded holds each connection's bytes, both ways, in accept
	// order, when record is set before the first connection.
	record   bool
	recorded []*recordedConn
	wg       sync.WaitGroup
}

type recordedConn struct {
	mu       sync.Mutex
	c2s, s2c []byte
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{t: t, addr: l.Addr().String(), target: target, l: l}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.l.Close()
	for _, c := range conns {
		c.Close()
	}
}

// cut arms the proxy: the next connection passing more than n bytes
// (either way) is reset.
func (p *cutProxy) cut(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limit = n
}

func (p *cutProxy) cutCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

func (p *cutProxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, c, s)
		var rc *recordedConn
		if p.record {
			rc = &recordedConn{}
			p.recorded = append(p.recorded, rc)
		}
		p.mu.Unlock()
		var passed atomic.Int64
		var once sync.Once
		reset := func() {
			once.Do(func() {
				// Linger 0: an RST, as a dying link or a killed peer gives.
				for _, x := range []net.Conn{c, s} {
					if tc, ok := x.(*net.TCPConn); ok {
						_ = tc.SetLinger(0)
					}
					x.Close()
				}
			})
		}
		// cut ends the connection whose src side sent past the limit: src
		// gets an RST, as from a dying link or a killed peer; dst, the
		// receiving side, gets what passed and then the end. An RST to
		// dst too would drop what its socket holds unread, under the
		// VM's emulation often all of it: a receiver that saw no stream
		// has no partial state to resume from.
		cut := func(dst, src net.Conn) {
			once.Do(func() {
				if tc, ok := src.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				src.Close()
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				time.AfterFunc(30*time.Second, func() { dst.Close() })
			})
		}
		pipe := func(dst, src net.Conn, into *[]byte) {
			defer p.wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 && rc != nil {
					rc.mu.Lock()
					*into = append(*into, buf[:n]...)
					rc.mu.Unlock()
				}
				if n > 0 {
					total := passed.Add(int64(n))
					p.mu.Lock()
					fire := p.limit > 0 && total > p.limit
					if fire {
						p.limit = 0
						p.cuts++
					}
					p.mu.Unlock()
					if fire {
						cut(dst, src)
						return
					}
					if _, werr := dst.Write(buf[:n]); werr != nil {
						reset()
						return
					}
				}
				if err != nil {
					if errors.Is(err, io.EOF) {
						if tc, ok := dst.(*net.TCPConn); ok {
							_ = tc.CloseWrite()
							return
						}
					}
					reset()
					return
				}
			}
		}
		var c2s, s2c *[]byte
		if rc != nil {
			c2s, s2c = &rc.c2s, &rc.s2c
		} else {
			c2s, s2c = new([]byte), new([]byte)
		}
		p.wg.Add(2)
		go pipe(s, c, c2s)
		go pipe(c, s, s2c)
	}
}

// sendResumed reports whether one of our zfs children was a resumed send
// (zfs send -t).
func sendResumed(calls []zfsreal.Invocation) bool {
	for _, c := range calls {
		if len(c.Args) > 0 && c.Args[0] == "send" && slices.Contains(c.Args, "-t") {
			return true
		}
	}
	return false
}

// zreplLogHas reports whether zrepl's log has a line containing all of
// the given strings.
func (z *zreplProc) logHas(parts ...string) bool {
	f, err := os.Open(z.logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		ok := true
		for _, p := range parts {
			if !strings.Contains(sc.Text(), p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
