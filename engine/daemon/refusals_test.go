package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
)

// Issue 12.9: refused peers are seen, garbage is not loud. A sink whose
// allow-list leaves out 127.0.0.1 logs one line for twenty connections
// from there; a sink that allows 127.0.0.1 logs one line for twenty
// connections of garbage; both count every refusal in
// zrepl_daemon_connections_refused_total.
func TestRefusalsAreLoggedOncePerPeer(t *testing.T) {
	closedAddr, openAddr := freeTCPAddr(t), freeTCPAddr(t)
	cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - name: closed
    type: sink
    serve: {type: tcp, listen: "%s", clients: {"192.0.2.7": "laptop"}}
    root_fs: backup
  - name: open
    type: sink
    serve: {type: tcp, listen: "%s", clients: {"127.0.0.1": "laptop"}}
    root_fs: other
`, closedAddr, openAddr))
	var logs lockedBuffer
	d := runDaemon(t, Options{Config: cfg, ZFS: model(t), Log: slog.New(slog.NewTextHandler(&logs, nil))})
	const n = 20
	for range n {
		c, err := dialWhenUp(t, closedAddr)
		require.NoError(t, err)
		// The listener closes it: the read ends.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		assert.Error(t, err)
		c.Close()
	}
	for range n {
		c, err := dialWhenUp(t, openAddr)
		require.NoError(t, err)
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("garbage", 20)))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		c.Close()
	}
	require.Eventually(t, func() bool {
		m := metricsText(t, d)
		return strings.Contains(m, fmt.Sprintf(`zrepl_daemon_connections_refused_total{reason="address_not_allowed",zrepl_job="closed"} %d`, n)) &&
			strings.Contains(m, fmt.Sprintf(`zrepl_daemon_connections_refused_total{reason="protocol",zrepl_job="open"} %d`, n))
	}, 10*time.Second, 10*time.Millisecond, "every refusal counted:\n%s", grepLines(metricsText(t, d), "refused"))
	refusals := grepLines(logs.String(), "refused")
	assert.Equal(t, 1, strings.Count(refusals, "job=closed"), "one line for the peer outside the allow-list:\n%s", refusals)
	assert.Contains(t, refusals, "127.0.0.1 is not in the allow-list")
	assert.Equal(t, 1, strings.Count(refusals, "job=open"), "one line for the allowed peer's garbage:\n%s", refusals)
	assert.Contains(t, refusals, "client=laptop")
}

func dialWhenUp(t *testing.T, addr string) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	for range 200 {
		if c, err = net.Dial("tcp", addr); err == nil {
			return c, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, err
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// fakeNow is a clock the test moves.
type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time { return f.t }

// The limiter: per peer and reason the first refusal of an interval is
// logged, later ones are counted and said with the next logged one; a
// flood of distinct peers logs at most refusalLines lines per interval,
// and the peers it holds stay bounded.
func TestRefusalLimiter(t *testing.T) {
	var logs lockedBuffer
	clock := &fakeNow{t: time.Unix(1000, 0)}
	counted := map[string]int{}
	r := newRefusals("sink", slog.New(slog.NewTextHandler(&logs, nil)), clock.now, func(reason string) { counted[reason]++ })
	lines := func() []string {
		s := strings.TrimSpace(logs.String())
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	bad := errors.New("bad certificate")
	for range 100 {
		r.notePeer("192.0.2.1", "tls_handshake", bad)
	}
	require.Len(t, lines(), 1)
	assert.Contains(t, lines()[0], "peer=192.0.2.1")
	assert.Contains(t, lines()[0], "reason=tls_handshake")
	assert.NotContains(t, lines()[0], "not_logged")
	r.notePeer("192.0.2.1", "protocol", bad)
	r.notePeer("192.0.2.2", "tls_handshake", bad)
	require.Len(t, lines(), 3, "another reason or peer is another line")

	clock.t = clock.t.Add(refusalInterval)
	r.notePeer("192.0.2.1", "tls_handshake", bad)
	require.Len(t, lines(), 4)
	assert.Contains(t, lines()[3], "not_logged=99", "the next line says how many went unlogged")
	assert.Equal(t, 102, counted["tls_handshake"])
	assert.Equal(t, 1, counted["protocol"])

	// A flood from many addresses.
	clock.t = clock.t.Add(refusalInterval)
	logs = lockedBuffer{}
	for i := range 100000 {
		r.notePeer(fmt.Sprintf("2001:db8::%x", i), "address_not_allowed", bad)
	}
	assert.Len(t, lines(), refusalLines, "at most refusalLines lines per interval")
	assert.LessOrEqual(t, len(r.peers), maxRefusalPeers+1)
	clock.t = clock.t.Add(refusalInterval)
	logs = lockedBuffer{}
	r.notePeer("2001:db8:1::1", "address_not_allowed", bad)
	require.Len(t, lines(), 2, "the peer, and the sum of what the flood left unlogged")
	assert.Contains(t, logs.String(), "not_logged=")
}

// Each transport's and the rpc server's refusals get their reason.
func TestRefusalReasons(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("outer: %w", err) }
	for err, want := range map[error]string{
		wrap(fmt.Errorf("%w: 192.0.2.1 is not in the allow-list", transport.ErrNotAllowed)): refusedAddress,
		wrap(fmt.Errorf("%w %q", transport.ErrCNNotAllowed, "mallory")):                     refusedCN,
		wrap(fmt.Errorf("%w: remote error: bad certificate", transport.ErrTLSHandshake)):    refusedTLS,
		wrap(fmt.Errorf("%w: none within 10s", transport.ErrGreeting)):                      refusedGreeting,
		errors.New("something else"): refusedOtherReason,
	} {
		assert.Equal(t, want, rejectReason(err), "%v", err)
	}
	for err, want := range map[error]string{
		wrap(rpc.ErrTooManyConns):                    refusedOverLimit,
		wrap(rpc.ErrVersionMismatch):                 refusedVersion,
		wrap(rpc.ErrNotZrepl):                        refusedProtocol,
		wrap(rpc.ErrProtocol):                        refusedProtocol,
		wrap(os.ErrDeadlineExceeded):                 refusedTimeout,
		wrap(errors.New("connection reset by peer")): refusedOtherReason,
	} {
		assert.Equal(t, want, connErrorReason(err), "%v", err)
	}
}
