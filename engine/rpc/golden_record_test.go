package rpc

// Recording zrepl v0.7.0 talking to itself, for the golden tests
// (golden_test.go). Run on a host without ZFS:
//
//	go test ./engine/rpc -run TestRecordZreplHandshakes -golden.record
//
// A zrepl pull job lists the source's filesystems first (a push job
// lists its own, which fails without ZFS before it connects): the
// control connection's handshake and gRPC calls need no ZFS on the
// client, and the source answers from zfs list (which fails here, or, on
// a host with ZFS, lists no pool/data). The recordings of the
// replication PDUs and data connections with real ZFS come from the VM
// (platformtest/interop_record_test.go) into the same directory.

import (
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var goldenConsole = flag.String("golden.console", "", "write the ZREPL-RECORDING blocks of a platformtest console log (make platformtest PLATFORMTEST_ARGS='-test.run TestInteropZreplToZrepl -interop.record') into testdata/zrepl-v0.7.0")

var goldenRecord = flag.Bool("golden.record", false, "record zrepl v0.7.0 talking to itself into testdata/zrepl-v0.7.0 (needs ../shared/upstream/zrepl or $ZREPL_UPSTREAM)")

const goldenDir = "testdata/zrepl-v0.7.0"

// recordingProxy forwards TCP connections and keeps each one's bytes in
// both directions.
type recordingProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []*recordedConn
	wg     sync.WaitGroup
}

type recordedConn struct {
	mu       sync.Mutex
	c2s, s2c []byte
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &recordingProxy{l: l, target: target}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			rc := &recordedConn{}
			p.mu.Lock()
			p.conns = append(p.conns, rc)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn, into *[]byte) {
				defer p.wg.Done()
				buf := make([]byte, 64<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						rc.mu.Lock()
						*into = append(*into, buf[:n]...)
						rc.mu.Unlock()
						if _, err := dst.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			p.wg.Add(2)
			go pipe(s, c, &rc.c2s)
			go pipe(c, s, &rc.s2c)
		}
	}()
	return p
}

// label is the connection's label (after both banners), or "unknown".
func (rc *recordedConn) label() string {
	rest, err := skipBanner(rc.c2s)
	if err != nil || len(rest) < labelLen {
		return "unknown"
	}
	return strings.TrimRight(string(rest[:labelLen]), "\x00")
}

// skipBanner returns what follows the banner at the start of b.
func skipBanner(b []byte) ([]byte, error) {
	if len(b) < bannerPrefixLen {
		return nil, io.ErrUnexpectedEOF
	}
	var n int
	if _, err := fmt.Sscanf(string(b[:10]), "%d", &n); err != nil {
		return nil, err
	}
	if len(b) < bannerPrefixLen+n {
		return nil, io.ErrUnexpectedEOF
	}
	return b[bannerPrefixLen+n:], nil
}

// save writes each connection as <name>/<n>-<label>.c2s and .s2c.
func (p *recordingProxy) save(t *testing.T, name string) {
	p.l.Close()
	p.wg.Wait()
	dir := filepath.Join(goldenDir, name)
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for i, rc := range p.conns {
		base := filepath.Join(dir, fmt.Sprintf("%02d-%s", i, strings.TrimPrefix(rc.label(), "zrepl_")))
		require.NoError(t, os.WriteFile(base+".c2s", rc.c2s, 0o644))
		require.NoError(t, os.WriteFile(base+".s2c", rc.s2c, 0o644))
		t.Logf("recorded %s: %d bytes client to server, %d back", base, len(rc.c2s), len(rc.s2c))
	}
}

func upstreamZreplForRecording(t *testing.T) string {
	p := os.Getenv("ZREPL_UPSTREAM")
	if p == "" {
		p = filepath.Join("..", "..", "..", "shared", "upstream", "zrepl")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("-golden.record needs zrepl v0.7.0 at %s (or $ZREPL_UPSTREAM): %v", p, err)
	}
	abs, err := filepath.Abs(p)
	require.NoError(t, err)
	return abs
}

func freeLoopbackPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runZreplPair runs one zrepl daemon with a passive job listening on a
// port and an active job connecting to it through a recording proxy,
// wakes the active job up and lets it run until it gave up (no ZFS).
func runZreplPair(t *testing.T, name, passive, active string) {
	bin := upstreamZreplForRecording(t)
	dir, err := os.MkdirTemp("", "zrrec")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	port := freeLoopbackPort(t)
	proxy := newRecordingProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	cfg := fmt.Sprintf(`global:
  logging: [{type: stdout, level: debug, format: human}]
  control: {sockpath: %[1]s/control}
  serve: {stdinserver: {sockdir: %[1]s/stdinserver}}
jobs:
%[2]s
%[3]s
`, dir, fmt.Sprintf(passive, port), fmt.Sprintf(active, proxy.l.Addr().String()))
	cfgPath := filepath.Join(dir, "zrepl.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command(bin, "--config", cfgPath, "daemon")
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command(bin, "--config", cfgPath, "signal", "wakeup", "active").CombinedOutput()
		if err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "zrepl signal wakeup: %v: %s", err, out)
		time.Sleep(200 * time.Millisecond)
	}
	// Connectivity check, planning error, and zrepl closing its
	// endpoints after the run.
	time.Sleep(8 * time.Second)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	if len(proxy.conns) == 0 {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("zrepl opened no connection; its log:\n%s", b)
	}
	proxy.save(t, name)
}

func TestRecordZreplHandshakes(t *testing.T) {
	if !*goldenRecord {
		t.Skip("records only with -golden.record")
	}
	runZreplPair(t, "pull-source-nozfs", `
  - name: passive
    type: source
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
    serve: {type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "client"}}`, `
  - name: active
    type: pull
    connect: {type: tcp, address: %q}
    root_fs: pool/sink
    interval: manual
    pruning:
      keep_sender: [{type: last_n, count: 1}]
      keep_receiver: [{type: last_n, count: 1}]`)
}

// TestRecordFromConsole writes the recordings TestInteropZreplToZrepl
// printed in the VM (platformtest -interop.record) into goldenDir.
func TestRecordFromConsole(t *testing.T) {
	if *goldenConsole == "" {
		t.Skip("extracts recordings only with -golden.console=LOG")
	}
	b, err := os.ReadFile(*goldenConsole)
	require.NoError(t, err)
	var name string
	var body strings.Builder
	written := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "ZREPL-RECORDING-BEGIN "):
			name = strings.TrimPrefix(line, "ZREPL-RECORDING-BEGIN ")
			require.False(t, strings.Contains(name, ".."), name)
			body.Reset()
		case line == "ZREPL-RECORDING-END" && name != "":
			raw, err := base64.StdEncoding.DecodeString(body.String())
			require.NoError(t, err, name)
			dir := filepath.Join(goldenDir, filepath.Dir(name))
			if !written[dir] {
				require.NoError(t, os.RemoveAll(dir))
				written[dir] = true
			}
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(goldenDir, name), raw, 0o644))
			t.Logf("wrote %s (%d bytes)", name, len(raw))
			name = ""
		case name != "":
			body.WriteString(line)
		}
	}
	require.NotEmpty(t, written, "no ZREPL-RECORDING blocks in %s", *goldenConsole)
}
