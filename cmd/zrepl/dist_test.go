package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The systemd unit in dist/ starts what it says: its ExecStartPre and
// ExecStart are commands of this binary that work (configcheck passes,
// the daemon starts and stops cleanly on SIGTERM, its KillSignal); and
// systemd-analyze, where installed, finds nothing wrong with it.
func TestSystemdUnit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	unit, err := os.ReadFile("../../dist/systemd/zrepl.service")
	require.NoError(t, err)
	bin := buildBinary(t)
	dir := shortDir(t)
	cfg := quickstartIn(t, dir, "1h")
	subst := strings.NewReplacer("/usr/local/bin/zrepl", bin, "/etc/zrepl/zrepl.yml", cfg)
	cmds := map[string][]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.HasPrefix(k, "ExecStart") {
			assert.True(t, strings.HasPrefix(v, "/usr/local/bin/zrepl "), line)
			cmds[k] = strings.Fields(subst.Replace(v))
		}
	}
	require.Contains(t, cmds, "ExecStartPre")
	require.Contains(t, cmds, "ExecStart")
	assert.Contains(t, string(unit), "KillSignal=SIGTERM")

	out, err := runCmd(cmds["ExecStartPre"])
	require.NoError(t, err, "%s", out)
	p := startArgs(t, cmds["ExecStart"], filepath.Join(dir, "unit.log"))
	waitFor(t, 30*time.Second, "the daemon to start", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "unit.log"))
		return strings.Contains(string(b), "daemon started")
	})
	p.stop()

	analyze, err := lookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the unit file's syntax is not checked")
		return
	}
	copyPath := filepath.Join(dir, "zrepl.service")
	require.NoError(t, os.WriteFile(copyPath, []byte(subst.Replace(string(unit))), 0o600))
	out, err = runCmd([]string{analyze, "verify", copyPath})
	assert.NoError(t, err, "%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify has nothing to say")
}

func runCmd(args []string) ([]byte, error) {
	return exec.Command(args[0], args[1:]...).CombinedOutput()
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }

// startArgs starts a daemon process with exactly args, logging to log.
func startArgs(t *testing.T, args []string, log string) *proc {
	t.Helper()
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(t, cmd.Start())
	f.Close()
	p := &proc{t: t, cmd: cmd, log: log}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}
