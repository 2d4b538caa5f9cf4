package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// zrepl's ssh handshake messages, as go-netssh (zrepl v0.7.0's ssh
// transport) puts them on the wire: 31 bytes, the ASCII name padded with
// NULs.
func TestSSHHandshakeMessages(t *testing.T) {
	pad := func(s string) []byte { return append([]byte(s), bytes.Repeat([]byte{0}, 31-len(s))...) }
	assert.Equal(t, pad("SSHCON_HELO"), sshHelo)
	assert.Equal(t, pad("SSHCON_BEGIN"), sshBegin)
	assert.Equal(t, pad("SSHCON_PROXY_ERROR"), sshProxyError)
}

// shMsg is a printf argument writing msg (NULs as octal escapes).
func shMsg(msg []byte) string {
	return strings.ReplaceAll(string(bytes.TrimRight(msg, "\x00")), "%", "%%") + strings.Repeat(`\000`, len(msg)-len(bytes.TrimRight(msg, "\x00")))
}

// The dialling end waits for SSHCON_HELO, answers SSHCON_BEGIN, and only
// then hands the connection to the rpc.
func TestSSHDialHandshake(t *testing.T) {
	dir := t.TempDir()
	got := filepath.Join(dir, "begin")
	dial, err := SSHDialer([]string{"sh", "-c", "printf '" + shMsg(sshHelo) + "'; head -c 31 >" + got + "; cat"})
	require.NoError(t, err)
	c, err := dial(context.Background())
	require.NoError(t, err)
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf), "nothing of the handshake is left in the stream")
	b, err := os.ReadFile(got)
	require.NoError(t, err)
	assert.Equal(t, sshBegin, b)
	require.NoError(t, c.Close())
}

// A remote that is no stdinserver, one that could not reach its daemon,
// and one that stays silent: the dial fails and says which.
func TestSSHDialHandshakeRefused(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		timeout      time.Duration
		want         []string
	}{
		{"proxy error", "printf '" + shMsg(sshProxyError) + "'; echo 'dial unix /var/run/zrepl/stdinserver/alice: no such file' >&2; exit 1", 0,
			[]string{"could not reach its zrepl daemon", "sh exited with status 1: dial unix /var/run/zrepl/stdinserver/alice: no such file"}},
		{"not a stdinserver", "printf 'ZREPL_ZFS_REPLICATION_PROTOCOL_VERSION=7'; exec sleep 10", 0,
			[]string{`no zrepl stdinserver: it began with "ZREPL_ZFS_REPLICATION_PROTOCOL_" instead of SSHCON_HELO`}},
		{"short", "printf 'SSHCON'; exit 0", 0, []string{`the remote command sent "SSHCON", then`}},
		{"silent", "exec sleep 10", 100 * time.Millisecond, []string{"no greeting from the remote stdinserver", "deadline exceeded"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial, err := SSHDialer([]string{"sh", "-c", tc.script})
			require.NoError(t, err)
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			c, err := dial(ctx)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.ErrorIs(t, err, ErrSSHHandshake)
			for _, w := range tc.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

// The serving end (the forced command) sends SSHCON_HELO once it reached
// the daemon and wants SSHCON_BEGIN back; it sends SSHCON_PROXY_ERROR
// when it cannot reach the daemon.
func TestStdinServerHandshake(t *testing.T) {
	var out bytes.Buffer
	err := StdinServer(context.Background(), "/nonexistent.sock", "alice", strings.NewReader(""), &out)
	assert.ErrorContains(t, err, "connect to the zrepl daemon")
	assert.Equal(t, sshProxyError, out.Bytes())

	dir := shortTempDir(t)
	socket := filepath.Join(dir, "s.sock")
	l, err := ListenStdinServer(socket)
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	out.Reset()
	err = StdinServer(context.Background(), socket, "alice", strings.NewReader("SSHCON_HELLO\n"), &out)
	assert.ErrorIs(t, err, ErrSSHHandshake)
	assert.ErrorContains(t, err, `the client sent "SSHCON_HELLO\n", then`)
	assert.Equal(t, sshHelo, out.Bytes())
	out.Reset()
	err = StdinServer(context.Background(), socket, "alice", bytes.NewReader(sshMsg("HELLO")), &out)
	assert.ErrorIs(t, err, ErrSSHHandshake)
	assert.ErrorContains(t, err, `the client sent "HELLO" instead of SSHCON_BEGIN`)
	assert.False(t, errors.Is(err, io.EOF))
}
