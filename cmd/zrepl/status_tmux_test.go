package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// tmuxServer is a tmux server of the test's own (its own socket name).
type tmuxServer struct {
	t    *testing.T
	name string
}

func (s tmuxServer) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", s.name}, args...)...).CombinedOutput()
	require.NoError(s.t, err, "tmux %v: %s", args, out)
	return string(out)
}

func (s tmuxServer) screen() string {
	s.t.Helper()
	return s.run("capture-pane", "-p", "-t", "st")
}

// waitScreen waits until the screen shows every one of want.
func (s tmuxServer) waitScreen(what string, want ...string) string {
	s.t.Helper()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		last = s.screen()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(last, w)
		}
		if ok {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("the screen did not show %s (%q) in 30s; it shows:\n%s", what, want, last)
	return ""
}

// The interactive status screen as a person uses it, in tmux, while a
// real replication runs on the model backend (a push to a sink in one
// daemon, slowed by send.bandwidth_limit): progress, switching jobs,
// changing the concurrency, resetting and waking up the job, a terminal
// too small and one just big enough, quitting.
func TestStatusScreenInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a daemon")
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (make testdeps installs it; CI has it): the interactive status screen is not tested")
	}
	bin := buildBinary(t)
	dir := shortDir(t)
	m := zfsmodel.New(zfsmodel.Options{Seed: 21})
	require.NoError(t, m.CreatePool("pool"))
	require.NoError(t, m.CreatePool("backup"))
	data := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(data, zfsmodel.FSOptions{}))
	require.NoError(t, m.WriteData(data, 1, 512)) // 64 MiB
	require.NoError(t, saveModel(m, dir))
	cfg := filepath.Join(dir, "zrepl.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`
global:
  zfs_backend: model
  model_state_dir: %[1]s
  control: {sockpath: %[1]s/control}
  logging: [{type: stdout, level: info, format: human}]
jobs:
  - name: push
    type: push
    connect: {type: local, listener_name: sink, client_identity: laptop}
    filesystems: {"pool/data<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 1h}
    send: {bandwidth_limit: {max: 4 MiB}}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
  - name: sink
    type: sink
    serve: {type: local, listener_name: sink}
    root_fs: backup
`, dir)), 0o600))
	d := startProc(t, bin, cfg, filepath.Join(dir, "daemon.log"))
	defer d.stop()
	status := func() job.Status {
		out, err := exec.Command(bin, "status", "--json", "--config", cfg).Output()
		var st []job.Status
		if err != nil || json.Unmarshal(out, &st) != nil || len(st) == 0 {
			return job.Status{}
		}
		return st[0]
	}

	s := tmuxServer{t: t, name: fmt.Sprintf("zrepl-test-%d", os.Getpid())}
	s.run("-f", "/dev/null", "new-session", "-d", "-s", "st", "-x", "110", "-y", "40",
		fmt.Sprintf("TERM=xterm-256color %s status --config %s; sleep 30", bin, cfg))
	t.Cleanup(func() { exec.Command("tmux", "-L", s.name, "kill-server").Run() })

	scr := s.waitScreen("the push job replicating", "Job: push (push), replicating", "Progress: [", "* pool/data running", "@ ", "[push] sink")
	assert.Contains(t, scr, "Attempt #1, running")
	assert.Contains(t, scr, "zrepl status")
	for i, l := range strings.Split(strings.TrimRight(scr, "\n"), "\n") {
		assert.LessOrEqual(t, len([]rune(l)), 110, "line %d fits the width", i)
	}

	s.run("send-keys", "-t", "st", "Right")
	s.waitScreen("the sink", "Job: sink (sink), serving", " push [sink]")
	s.run("send-keys", "-t", "st", "Left")
	s.waitScreen("the push job again", "Job: push (push)")

	s.run("send-keys", "-t", "st", "+")
	s.waitScreen("the new concurrency", "concurrency of push: 2", "Step concurrency: 2")
	assert.Equal(t, 2, status().Concurrency)

	s.run("send-keys", "-t", "st", "r")
	s.waitScreen("the reset question", "reset push (cancel its replication)? y/n")
	s.run("send-keys", "-t", "st", "y")
	s.waitScreen("the reset", "reset sent")
	waitFor(t, 30*time.Second, "the reset replication to end", func() bool {
		st := status()
		return st.Replication != nil && st.Replication.Finished && st.State == job.StateIdle
	})
	s.waitScreen("the cut replication", "finished with errors")

	s.run("send-keys", "-t", "st", "w")
	s.waitScreen("the wakeup", "woke up push")
	s.waitScreen("the replication resumed and done", "Attempt #1, finished,", "Replicated:", "Pruning sender:", "Snapshotting:")

	// Too small: a notice, nothing else; just big enough: every line
	// within the width, the rest behind a scroll hint.
	s.run("resize-window", "-t", "st", "-x", "30", "-y", "5")
	scr = s.waitScreen("the notice", "terminal too small (30x5")
	assert.NotContains(t, scr, "Job:")
	s.run("resize-window", "-t", "st", "-x", "60", "-y", "12")
	scr = s.waitScreen("the small screen", "Job: push", "more lines")
	lines := strings.Split(strings.TrimRight(scr, "\n"), "\n")
	assert.LessOrEqual(t, len(lines), 12)
	for i, l := range lines {
		assert.LessOrEqual(t, len([]rune(l)), 60, "line %d: %q", i, l)
	}
	s.run("send-keys", "-t", "st", "PageDown")
	s.waitScreen("the scrolled screen", "Pruning sender:")

	s.run("send-keys", "-t", "st", "q")
	waitFor(t, 10*time.Second, "the screen to quit", func() bool {
		return !strings.Contains(s.screen(), "zrepl status")
	})
}
