package transport

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProcessConnEcho(t *testing.T) {
	dial := ProcessDialer(ExecProcess([]string{"cat"}))
	c, err := dial(context.Background())
	require.NoError(t, err)
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(buf))
	require.NoError(t, c.Close())
	<-c.(*processConn).exited
}

// A failing ssh (authentication, unknown host) reads as its exit status
// and stderr, not as a bare EOF.
func TestProcessConnFailure(t *testing.T) {
	dial, err := SSHDialer([]string{"sh", "-c", "echo 'Permission denied (publickey).' >&2; exit 255"})
	require.NoError(t, err)
	// ssh fails before the stdinserver's greeting: the dial says why.
	_, err = dial(context.Background())
	require.Error(t, err)
	assert.EqualError(t, err, "sh exited with status 255: Permission denied (publickey).")
	var xe *exec.ExitError
	require.ErrorAs(t, err, &xe, "the exec error stays reachable")
	assert.Equal(t, 255, xe.ExitCode())

	_, err = SSHDialer(nil)
	assert.Error(t, err)
	dial, err = SSHDialer([]string{"/nonexistent/ssh"})
	require.NoError(t, err)
	_, err = dial(context.Background())
	assert.ErrorContains(t, err, "/nonexistent/ssh")
}

func TestProcessConnDeadline(t *testing.T) {
	dial := ProcessDialer(ExecProcess([]string{"sh", "-c", "read x"})) // silent until stdin closes
	c, err := dial(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.NoError(t, c.Close())
	<-c.(*processConn).exited
}

func shortTempDir(t *testing.T) string {
	// Unix socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "zrepl")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// The whole ssh path, with the test binary standing in for ssh plus the
// forced stdinserver command.
func TestStdinServer(t *testing.T) {
	dir := shortTempDir(t)
	socket := filepath.Join(dir, "run", "sink.sock")
	l, err := ListenStdinServer(socket)
	require.NoError(t, err)
	defer l.Close()
	t.Setenv("ZREPL_TEST_STDINSERVER_SOCKET", socket)
	t.Setenv("ZREPL_TEST_STDINSERVER_IDENTITY", "alice")
	dial, err := SSHDialer([]string{os.Args[0], "-test.run=^$"})
	require.NoError(t, err)

	accepted := make(chan *AuthConn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := dial(context.Background())
	require.NoError(t, err)
	s := <-accepted
	require.NotNil(t, s)
	assert.Equal(t, "alice", s.Identity)

	// Both directions, then the server closes: the client sees EOF.
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(s, buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf))
	_, err = s.Write([]byte("pong"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "pong", string(buf))
	require.NoError(t, s.Close())
	_, err = c.Read(buf)
	assert.ErrorIs(t, err, io.EOF)
	require.NoError(t, c.Close())
	<-c.(*processConn).exited
	assert.NoError(t, c.(*processConn).err, "stdinserver exited cleanly")
}

func TestStdinServerRefusals(t *testing.T) {
	err := StdinServer(context.Background(), "/nonexistent.sock", "a/b", nil, nil)
	assert.ErrorIs(t, err, ErrBadIdentity)
	err = StdinServer(context.Background(), "/nonexistent.sock", "alice", nil, nil)
	assert.ErrorContains(t, err, "connect to the zrepl daemon")

	dir := shortTempDir(t)
	open := filepath.Join(dir, "open")
	require.NoError(t, os.Mkdir(open, 0o755))
	_, err = ListenStdinServer(filepath.Join(open, "s.sock"))
	assert.ErrorContains(t, err, "accessible to others")
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = ListenStdinServer(file)
	assert.ErrorContains(t, err, "no socket")

	// A connection that does not greet properly is skipped.
	socket := filepath.Join(dir, "s.sock")
	l, err := ListenStdinServer(socket)
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan *AuthConn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	for _, greeting := range []string{"HELLO alice\n", stdinServerGreeting + "../x\n"} {
		c, err := (&netDialer{}).dial("unix", socket)
		require.NoError(t, err)
		c.Write([]byte(greeting))
		_, err = c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "refused greeting %q", greeting)
		c.Close()
	}
	c, err := (&netDialer{}).dial("unix", socket)
	require.NoError(t, err)
	defer c.Close()
	c.Write([]byte(stdinServerGreeting + "bob\n"))
	s := <-accepted
	require.NotNil(t, s)
	assert.Equal(t, "bob", s.Identity)
	s.Close()
}

type netDialer struct{}

func (netDialer) dial(network, addr string) (net.Conn, error) { return net.Dial(network, addr) }

// A real child flooding stderr: the error ends with its last line, and the
// connection kept only the tail.
func TestProcessConnHugeStderr(t *testing.T) {
	dial := ProcessDialer(ExecProcess([]string{"sh", "-c", "yes 'debug1: noise' | head -n 70000 >&2; echo 'Connection closed by 192.0.2.1 port 22' >&2; exit 255"}))
	c, err := dial(context.Background())
	require.NoError(t, err)
	defer c.Close()
	_, err = io.ReadAll(c)
	var xe *ProcessExitError
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, 255, xe.Status)
	assert.Len(t, xe.Stderr, StderrLimit-1, "the tail, less the trimmed newline")
	assert.Equal(t, int64(70000*len("debug1: noise\n")+len("Connection closed by 192.0.2.1 port 22\n")-StderrLimit), xe.StderrDropped)
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "sh exited with status 255: [...] debug1: noise\n"), "cut at a line: %.80q", msg)
	assert.True(t, strings.HasSuffix(msg, "\ndebug1: noise\nConnection closed by 192.0.2.1 port 22"), "%.80q", msg[max(0, len(msg)-80):])
	assert.LessOrEqual(t, len(msg), StderrInError+50)
	assert.LessOrEqual(t, cap(c.(*processConn).stderr.buf), StderrLimit)
}
