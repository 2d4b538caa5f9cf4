package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
	"zrepl.dev/zrepl/zfsmodel"
)

var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// TestMain removes the binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildBinary builds the zrepl command once per test process.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "zrbin")
		if built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "zrepl")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", built.bin, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	require.NoError(t, built.err)
	return built.bin
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a daemon process of the test.
type proc struct {
	t   *testing.T
	cmd *exec.Cmd
	log string
}

func startProc(t *testing.T, bin, cfg, log string) *proc {
	t.Helper()
	return startProcEnv(t, bin, cfg, log, nil)
}

// startProcEnv starts a daemon with env added to the test's environment.
func startProcEnv(t *testing.T, bin, cfg, log string, env []string) *proc {
	t.Helper()
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	cmd := exec.Command(bin, "daemon", "--config", cfg)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
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

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		b, _ := os.ReadFile(p.log)
		require.NoError(p.t, err, "daemon exit; log:\n%s", b)
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		<-done
		p.t.Fatalf("daemon did not stop within 60s after SIGTERM")
	}
}

// waitFor polls cond every 50ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func loadModel(t *testing.T, dir string) *zfsmodel.Model {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, modelStateFile))
	require.NoError(t, err)
	defer f.Close()
	m, err := zfsmodel.Load(f, zfsmodel.Options{})
	require.NoError(t, err)
	return m
}

const e2eBlocks = 8192 // 1 GiB of model data: a stream long enough to cut

// Two daemons of the real binary, a sender (push) and a receiver (sink)
// over loopback TCP, both on the model backend. The receiver is stopped
// in the middle of the first (full) stream and keeps its partial receive
// state; after its restart the sender's run resumes from the token instead
// of sending everything again.
//
// The same runs over TLS with certificates made here: the client's
// identity is its certificate's CN, the server is checked by its CN.
func TestEndToEndPushSinkResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and moves a GiB through two processes")
	}
	bin := buildBinary(t)
	for _, kind := range []string{"tcp", "tls"} {
		t.Run(kind, func(t *testing.T) { endToEnd(t, bin, kind) })
	}
}

func endToEnd(t *testing.T, bin, kind string) {
	dir := shortDir(t)
	port := freePort(t)
	connect := fmt.Sprintf(`{type: tcp, address: "127.0.0.1:%d"}`, port)
	serve := fmt.Sprintf(`{type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "snd"}}`, port)
	if kind == "tls" {
		ca := newTestCA(t)
		ca.issue(t, dir, "backup", true)
		ca.issue(t, dir, "snd", false)
		caFile := filepath.Join(dir, "ca.crt")
		require.NoError(t, os.WriteFile(caFile, ca.pem, 0o600))
		connect = fmt.Sprintf(`{type: tls, address: "127.0.0.1:%d", ca: %s, cert: %s, key: %s, server_cn: backup}`,
			port, caFile, filepath.Join(dir, "snd.crt"), filepath.Join(dir, "snd.key"))
		serve = fmt.Sprintf(`{type: tls, listen: "127.0.0.1:%d", ca: %s, cert: %s, key: %s, client_cns: [snd]}`,
			port, caFile, filepath.Join(dir, "backup.crt"), filepath.Join(dir, "backup.key"))
	}
	sndDir, rcvDir := filepath.Join(dir, "snd"), filepath.Join(dir, "rcv")

	// The sender's pool, prepared as its saved state.
	m := zfsmodel.New(zfsmodel.Options{Seed: 11})
	require.NoError(t, m.CreatePool("pool"))
	data := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(data, zfsmodel.FSOptions{}))
	require.NoError(t, m.WriteData(data, 1, e2eBlocks))
	require.NoError(t, saveModel(m, sndDir))

	sndCfg := filepath.Join(dir, "snd.yml")
	require.NoError(t, os.WriteFile(sndCfg, []byte(fmt.Sprintf(`
global:
  zfs_backend: model
  model_state_dir: %s
  control: {sockpath: %s}
  logging: [{type: stdout, level: info, format: human}]
jobs:
  - name: push
    type: push
    connect: %s
    filesystems: {"pool/data<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 1h}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
`, sndDir, filepath.Join(sndDir, "control"), connect)), 0o600))
	rcvCfg := filepath.Join(dir, "rcv.yml")
	require.NoError(t, os.WriteFile(rcvCfg, []byte(fmt.Sprintf(`
global:
  zfs_backend: model
  model_state_dir: %s
  control: {sockpath: %s}
  logging: [{type: stdout, level: info, format: human}]
jobs:
  - name: sink
    type: sink
    serve: %s
    root_fs: backup
`, rcvDir, filepath.Join(rcvDir, "control"), serve)), 0o600))

	rcv := startProc(t, bin, rcvCfg, filepath.Join(dir, "rcv.log"))
	snd := startProc(t, bin, sndCfg, filepath.Join(dir, "snd.log"))
	// The sender's state as `zrepl status --json` prints it.
	status := func() job.Status {
		out, err := exec.Command(bin, "status", "--json", "--config", sndCfg).Output()
		var st []job.Status
		if err != nil || json.Unmarshal(out, &st) != nil || len(st) != 1 {
			return job.Status{}
		}
		return st[0]
	}

	// Mid-stream: bytes moved, the run not finished.
	var full int64
	waitFor(t, 60*time.Second, "the full send to be under way", func() bool {
		r := status().Replication
		if r != nil && r.Finished {
			t.Fatalf("the stream ended before the test could cut it: %+v", r)
		}
		if r != nil && r.BytesDone > r.BytesExpected/10 && r.BytesDone < r.BytesExpected/2 {
			full = r.BytesExpected
			return true
		}
		return false
	})
	rcv.stop()
	rm := loadModel(t, rcvDir)
	infos, err := rm.ListFilesystems(context.Background(), zfs.MustDatasetPath("backup/snd/pool/data"))
	require.NoError(t, err, "the receiver saved the partial receive")
	require.NotEmpty(t, infos[0].ReceiveResumeToken, "partial state with a resume token")

	rcv = startProc(t, bin, rcvCfg, filepath.Join(dir, "rcv.log"))
	var final job.Status
	waitFor(t, 120*time.Second, "the run to finish after the receiver's restart", func() bool {
		final = status()
		return final.Replication != nil && final.Replication.Finished && final.State == job.StateIdle
	})
	assert.Empty(t, final.LastError)
	assert.GreaterOrEqual(t, final.Replication.Attempt, 2, "a later attempt finished the run")
	// A fresh full send would move at least the full size again.
	assert.Less(t, final.Replication.BytesDone, full-(1<<20), "the last attempt resumed (sent %d of %d bytes)", final.Replication.BytesDone, full)
	if t.Failed() {
		b, _ := os.ReadFile(filepath.Join(dir, "snd.log"))
		t.Logf("sender log:\n%s", b)
		b, _ = os.ReadFile(filepath.Join(dir, "rcv.log"))
		t.Logf("receiver log:\n%s", b)
	}

	snd.stop()
	rcv.stop()
	sm, rm := loadModel(t, sndDir), loadModel(t, rcvDir)
	sv, err := sm.ListVersions(context.Background(), data)
	require.NoError(t, err)
	rfs := zfs.MustDatasetPath("backup/snd/pool/data")
	rv, err := rm.ListVersions(context.Background(), rfs)
	require.NoError(t, err)
	var sent, got []zfs.FilesystemVersion
	for _, v := range sv {
		if v.Kind == zfs.Snapshot {
			sent = append(sent, v)
		}
	}
	for _, v := range rv {
		if v.Kind == zfs.Snapshot {
			got = append(got, v)
		}
	}
	require.Len(t, got, 1)
	require.Len(t, sent, 1)
	assert.Equal(t, sent[0].GUID, got[0].GUID)
	want, err := sm.Checksum(sent[0].Ref(data))
	require.NoError(t, err)
	have, err := rm.Checksum(got[0].Ref(rfs))
	require.NoError(t, err)
	assert.Equal(t, want, have, "the received snapshot has the sent content")
}

// kill stops the daemon with SIGKILL: nothing of its own runs after.
func (p *proc) kill() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Kill())
	p.cmd.Wait()
}

// A sender (push) and a receiver (sink) daemon on the model backend. Right
// after the first replication finished, both are killed with SIGKILL:
// what the run did is there anyway (the received snapshot with its
// last-received hold, the sender's cursor), as on real ZFS, and after
// the restart the next run has nothing to send again.
func TestEndToEndKill9KeepsWhatWasDone(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two processes")
	}
	bin := buildBinary(t)
	dir := shortDir(t)
	port := freePort(t)
	sndDir, rcvDir := filepath.Join(dir, "snd"), filepath.Join(dir, "rcv")
	m := zfsmodel.New(zfsmodel.Options{Seed: 12})
	require.NoError(t, m.CreatePool("pool"))
	data := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(data, zfsmodel.FSOptions{}))
	require.NoError(t, m.WriteData(data, 1, 64))
	require.NoError(t, saveModel(m, sndDir))

	sndCfg, rcvCfg := writeTCPPairConfigs(t, dir, sndDir, rcvDir, port)
	status := func() job.Status {
		out, err := exec.Command(bin, "status", "--json", "--config", sndCfg).Output()
		var st []job.Status
		if err != nil || json.Unmarshal(out, &st) != nil || len(st) != 1 {
			return job.Status{}
		}
		return st[0]
	}
	finished := func(s job.Status) bool {
		return s.Replication != nil && s.Replication.Finished
	}
	defer func() {
		if t.Failed() {
			for _, l := range []string{"snd.log", "rcv.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, l))
				t.Logf("%s:\n%s", l, b)
			}
		}
	}()

	rcv := startProc(t, bin, rcvCfg, filepath.Join(dir, "rcv.log"))
	snd := startProc(t, bin, sndCfg, filepath.Join(dir, "snd.log"))
	var first job.Status
	waitFor(t, 60*time.Second, "the first replication to finish", func() bool {
		first = status()
		return finished(first)
	})
	rcv.kill()
	snd.kill()
	require.Empty(t, first.LastError)

	ctx := context.Background()
	sm, rm := loadModel(t, sndDir), loadModel(t, rcvDir)
	sv, err := sm.ListVersions(ctx, data)
	require.NoError(t, err)
	var snap zfs.FilesystemVersion
	var cursors []string
	for _, v := range sv {
		switch {
		case v.Kind == zfs.Snapshot:
			snap = v
		case v.Kind == zfs.Bookmark && strings.HasPrefix(v.Name, "zrepl_CURSOR_"):
			cursors = append(cursors, v.Name)
		}
	}
	require.NotZero(t, snap.GUID, "the sender kept its snapshot")
	assert.Equal(t, []string{endpoint.CursorBookmarkName(snap.GUID, endpoint.MustJobID("push"))}, cursors, "the sender kept its cursor")
	rfs := zfs.MustDatasetPath("backup/snd/pool/data")
	rv, err := rm.ListVersions(ctx, rfs)
	require.NoError(t, err, "the receiver kept the received filesystem")
	require.Len(t, rv, 1)
	assert.Equal(t, snap.GUID, rv[0].GUID, "the receiver kept the received snapshot")
	holds, err := rm.Holds(ctx, []zfs.VersionRef{rv[0].Ref(rfs)})
	require.NoError(t, err)
	assert.Equal(t, []string{endpoint.LastReceivedHoldTag(endpoint.MustJobID("sink"))}, holds[rv[0].Name], "and its last-received hold")

	// After the restart the push job replicates at once (its snapshot is
	// not due): there is nothing left to send.
	rcv = startProc(t, bin, rcvCfg, filepath.Join(dir, "rcv.log"))
	snd = startProc(t, bin, sndCfg, filepath.Join(dir, "snd.log"))
	var again job.Status
	waitFor(t, 60*time.Second, "the run after the restart to finish", func() bool {
		again = status()
		return finished(again) && again.State == job.StateIdle
	})
	assert.Empty(t, again.LastError)
	assert.Zero(t, again.Replication.BytesDone, "nothing was sent again")
	snd.stop()
	rcv.stop()
}

// A sender (push) and a receiver (sink) daemon on the model backend; the
// receiver is killed with SIGKILL well into the first (full) stream of
// 1 GiB, past several of its checkpoints (every 64 MiB), and restarted.
// As on real ZFS with zfs recv -s, what arrived up to its last checkpoint
// is there after the kill: the next attempt resumes from that token and
// sends at most a checkpoint interval (plus what was in flight) of what
// it had sent already; the data arrives whole. With checkpoints off
// (global.model_checkpoint_every: 0 B) the same kill loses the whole receive
// and the next attempt sends everything again, which the first case
// would catch.
func TestEndToEndKill9MidStreamResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and moves GiBs through two processes")
	}
	bin := buildBinary(t)
	t.Run("checkpoints", func(t *testing.T) { kill9MidStream(t, bin, true) })
	t.Run("off", func(t *testing.T) { kill9MidStream(t, bin, false) })
}

func kill9MidStream(t *testing.T, bin string, checkpoints bool) {
	dir := shortDir(t)
	port := freePort(t)
	sndDir, rcvDir := filepath.Join(dir, "snd"), filepath.Join(dir, "rcv")
	m := zfsmodel.New(zfsmodel.Options{Seed: 13})
	require.NoError(t, m.CreatePool("pool"))
	data := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(data, zfsmodel.FSOptions{}))
	require.NoError(t, m.WriteData(data, 1, e2eBlocks))
	require.NoError(t, saveModel(m, sndDir))

	sndCfg, rcvCfg := writeTCPPairConfigs(t, dir, sndDir, rcvDir, port)
	// A limited stream (about 8 s for the GiB) leaves the polls below
	// seconds to see it between 30% and 75%, also on a loaded machine;
	// unlimited, it can end between two polls.
	raw, err := os.ReadFile(sndCfg)
	require.NoError(t, err)
	limited := strings.Replace(string(raw), "    filesystems: {\"pool/data<\": true}\n", "    filesystems: {\"pool/data<\": true}\n    send: {bandwidth_limit: {max: 128 MiB}}\n", 1)
	require.NotEqual(t, string(raw), limited, "the sender's config names its filesystems")
	require.NoError(t, os.WriteFile(sndCfg, []byte(limited), 0o600))
	if !checkpoints {
		raw, err := os.ReadFile(rcvCfg)
		require.NoError(t, err)
		off := strings.Replace(string(raw), "  model_state_dir: "+rcvDir+"\n", "  model_state_dir: "+rcvDir+"\n  model_checkpoint_every: 0 B\n", 1)
		require.NotEqual(t, string(raw), off, "the receiver's config names its model_state_dir")
		require.NoError(t, os.WriteFile(rcvCfg, []byte(off), 0o600))
	}
	var env []string
	status := func() job.Status {
		out, err := exec.Command(bin, "status", "--json", "--config", sndCfg).Output()
		var st []job.Status
		if err != nil || json.Unmarshal(out, &st) != nil || len(st) != 1 {
			return job.Status{}
		}
		return st[0]
	}
	defer func() {
		if t.Failed() {
			for _, l := range []string{"snd.log", "rcv.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, l))
				t.Logf("%s:\n%s", l, b)
			}
		}
	}()

	rcv := startProcEnv(t, bin, rcvCfg, filepath.Join(dir, "rcv.log"), env)
	snd := startProc(t, bin, sndCfg, filepath.Join(dir, "snd.log"))
	// Well into the stream: past several checkpoints, far from its end.
	var full, sentBefore int64
	waitFor(t, 60*time.Second, "the full send to be well under way", func() bool {
		r := status().Replication
		if r != nil && r.Finished {
			t.Fatalf("the stream ended before the test could kill the receiver: %+v", r)
		}
		if r != nil && r.BytesDone > r.BytesExpected*3/10 && r.BytesDone < r.BytesExpected*3/4 {
			full, sentBefore = r.BytesExpected, r.BytesDone
			return true
		}
		return false
	})
	rcv.kill()
	t.Logf("killed the receiver after %d of %d bytes were sent", sentBefore, full)

	rfs := zfs.MustDatasetPath("backup/snd/pool/data")
	rm := loadModel(t, rcvDir)
	infos, err := rm.ListFilesystems(context.Background(), rfs)
	// What the sender counted may still have been in buffers on the way
	// (sockets, pipes) when the receiver died.
	const inFlight = 32 << 20
	var kept int64
	if checkpoints {
		require.NoError(t, err, "the receiver saved the partial receive before the kill")
		require.NotEmpty(t, infos[0].ReceiveResumeToken)
		tok, err := resumetoken.Decode(infos[0].ReceiveResumeToken)
		require.NoError(t, err)
		kept = int64(tok.Bytes)
		assert.Greater(t, kept, sentBefore-config.DefaultModelCheckpointEvery-inFlight, "at most a checkpoint interval and what was in flight is lost")
	} else {
		require.ErrorIs(t, err, zfs.ErrDatasetNotExist, "without checkpoints nothing of the receive was saved")
	}

	rcv = startProcEnv(t, bin, rcvCfg, filepath.Join(dir, "rcv.log"), env)
	var final job.Status
	waitFor(t, 120*time.Second, "the run to finish after the receiver's restart", func() bool {
		final = status()
		return final.Replication != nil && final.Replication.Finished && final.State == job.StateIdle
	})
	assert.Empty(t, final.LastError)
	assert.GreaterOrEqual(t, final.Replication.Attempt, 2, "a later attempt finished the run")
	again := final.Replication.BytesDone
	t.Logf("after the restart: sent %d bytes (%.0f%% of the stream)", again, 100*float64(again)/float64(full))
	if checkpoints {
		// The rest of the stream from the token, its header and the one
		// record a checkpoint has read but not verified.
		assert.LessOrEqual(t, again, full-kept+zfsmodel.BlockSize+(1<<16), "the attempt resumed from the last checkpoint")
		assert.Less(t, again, full-sentBefore+config.DefaultModelCheckpointEvery+inFlight, "re-sent at most a checkpoint interval of what went before")
	} else {
		assert.GreaterOrEqual(t, again, full-(1<<20), "without checkpoints the whole stream is sent again")
	}

	snd.stop()
	rcv.stop()
	sm, rm := loadModel(t, sndDir), loadModel(t, rcvDir)
	sv, err := sm.ListVersions(context.Background(), data)
	require.NoError(t, err)
	rv, err := rm.ListVersions(context.Background(), rfs)
	require.NoError(t, err)
	var sent, got []zfs.FilesystemVersion
	for _, v := range sv {
		if v.Kind == zfs.Snapshot {
			sent = append(sent, v)
		}
	}
	for _, v := range rv {
		if v.Kind == zfs.Snapshot {
			got = append(got, v)
		}
	}
	require.Len(t, sent, 1)
	require.Len(t, got, 1)
	assert.Equal(t, sent[0].GUID, got[0].GUID)
	want, err := sm.Checksum(sent[0].Ref(data))
	require.NoError(t, err)
	have, err := rm.Checksum(got[0].Ref(rfs))
	require.NoError(t, err)
	assert.Equal(t, want, have, "the received snapshot has the sent content")
	info, err := rm.Info(rfs)
	require.NoError(t, err)
	assert.Empty(t, info.ReceiveResumeToken, "no partial state is left")
}

// writeTCPPairConfigs writes the configs of a push daemon and a sink daemon
// over loopback TCP on port, both on the model backend with their state in
// sndDir and rcvDir.
func writeTCPPairConfigs(t *testing.T, dir, sndDir, rcvDir string, port int) (sndCfg, rcvCfg string) {
	t.Helper()
	sndCfg = filepath.Join(dir, "snd.yml")
	require.NoError(t, os.WriteFile(sndCfg, []byte(fmt.Sprintf(`
global:
  zfs_backend: model
  model_state_dir: %s
  control: {sockpath: %s}
  logging: [{type: stdout, level: info, format: human}]
jobs:
  - name: push
    type: push
    connect: {type: tcp, address: "127.0.0.1:%d"}
    filesystems: {"pool/data<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 1h}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
`, sndDir, filepath.Join(sndDir, "control"), port)), 0o600))
	rcvCfg = filepath.Join(dir, "rcv.yml")
	require.NoError(t, os.WriteFile(rcvCfg, []byte(fmt.Sprintf(`
global:
  zfs_backend: model
  model_state_dir: %s
  control: {sockpath: %s}
  logging: [{type: stdout, level: info, format: human}]
jobs:
  - name: sink
    type: sink
    serve: {type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "snd"}}
    root_fs: backup
`, rcvDir, filepath.Join(rcvDir, "control"), port)), 0o600))
	return sndCfg, rcvCfg
}
