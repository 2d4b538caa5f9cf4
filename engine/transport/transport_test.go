package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Re-executed as the forced command of the ssh tests.
	if socket := os.Getenv("ZREPL_TEST_STDINSERVER_SOCKET"); socket != "" {
		if err := StdinServer(context.Background(), socket, os.Getenv("ZREPL_TEST_STDINSERVER_IDENTITY"), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestValidateIdentity(t *testing.T) {
	for _, ok := range []string{"alice", "host-1.example.com", "a_b:c", "192.0.2.7", "2001:db8::1"} {
		assert.NoError(t, ValidateIdentity(ok), ok)
	}
	for _, bad := range []string{"", ".", "..", "a/b", "../x", "a b", "a@b", "a#b", "ä", string(make([]byte, 201))} {
		err := ValidateIdentity(bad)
		assert.ErrorIs(t, err, ErrBadIdentity, "%q", bad)
	}
}

func TestLocal(t *testing.T) {
	reg := NewLocal()
	l, err := reg.Listen("sink")
	require.NoError(t, err)
	_, err = reg.Listen("sink")
	assert.ErrorContains(t, err, `"sink" already exists`)

	accepted := make(chan *AuthConn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := reg.Dialer("sink", "alice")(context.Background())
	require.NoError(t, err)
	s := <-accepted
	require.NotNil(t, s)
	assert.Equal(t, "alice", s.Identity)
	go c.Write([]byte("hi"))
	buf := make([]byte, 2)
	_, err = io.ReadFull(s, buf)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(buf))
	c.Close()
	s.Close()

	_, err = reg.Dialer("sink", "a/b")(context.Background())
	assert.ErrorIs(t, err, ErrBadIdentity)
	_, err = reg.Dialer("nope", "alice")(context.Background())
	assert.ErrorContains(t, err, `no listener "nope"`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = reg.Dialer("sink", "alice")(ctx)
	assert.ErrorIs(t, err, context.Canceled, "nobody accepts: the dial ends with its context")

	require.NoError(t, l.Close())
	_, err = l.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	_, err = reg.Dialer("sink", "alice")(context.Background())
	assert.Error(t, err)
	_, err = reg.Listen("sink")
	assert.NoError(t, err, "a closed listener's name is free again")
}

func TestTCPIdentify(t *testing.T) {
	rules, err := TCPClients{
		"192.0.2.7":       "db",
		"192.0.2.0/24":    "backup-*",
		"192.0.0.0/16":    "wide",
		"2001:db8::/32":   "v6-*",
		"2001:db8::1":     "v6one",
		"198.51.100.0/24": "lab",
	}.rules()
	require.NoError(t, err)
	cases := map[string]string{
		"192.0.2.7":        "db",
		"192.0.2.8":        "backup-192.0.2.8",
		"::ffff:192.0.2.8": "backup-192.0.2.8",
		"192.0.3.1":        "wide",
		"2001:db8::1":      "v6one",
		"2001:db8::2":      "v6-2001:db8::2",
		"198.51.100.255":   "lab",
	}
	for addr, want := range cases {
		got, ok := identify(rules, netip.MustParseAddr(addr))
		assert.True(t, ok, addr)
		assert.Equal(t, want, got, addr)
	}
	_, ok := identify(rules, netip.MustParseAddr("203.0.113.1"))
	assert.False(t, ok)

	for clients, want := range map[*TCPClients]string{
		{}:                      "empty",
		{"not-an-ip": "x"}:      `"not-an-ip" is no IP address`,
		{"192.0.2.0/33": "x"}:   `"192.0.2.0/33" is no IP address`,
		{"192.0.2.7": "a*"}:     "contains '*'",
		{"192.0.2.0/24": "a/b"}: "invalid client identity",
	} {
		_, err := clients.rules()
		assert.ErrorContains(t, err, want)
	}
}

func TestTCPListener(t *testing.T) {
	l, err := ListenTCP("127.0.0.1:0", TCPClients{"127.0.0.1": "alice"})
	require.NoError(t, err)
	defer l.Close()
	go func() {
		c, err := DialTCP(l.Addr().String())(context.Background())
		if err == nil {
			c.Close()
		}
	}()
	c, err := l.Accept()
	require.NoError(t, err)
	assert.Equal(t, "alice", c.Identity)
	c.Close()

	// Loopback is not in this allow-list: the connection is closed.
	deny, err := ListenTCP("127.0.0.1:0", TCPClients{"192.0.2.0/24": "x"})
	require.NoError(t, err)
	var mu sync.Mutex
	var rejected []error
	deny.OnReject = func(_ net.Addr, err error) {
		mu.Lock()
		rejected = append(rejected, err)
		mu.Unlock()
	}
	done := make(chan error, 1)
	go func() {
		_, err := deny.Accept()
		done <- err
	}()
	conn, err := DialTCP(deny.Addr().String())(context.Background())
	require.NoError(t, err)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	assert.Error(t, err, "the server closed the connection")
	conn.Close()
	deny.Close()
	assert.ErrorIs(t, <-done, net.ErrClosed)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, rejected, 1)
	assert.ErrorIs(t, rejected[0], ErrNotAllowed)
	assert.ErrorContains(t, rejected[0], "127.0.0.1 is not in the allow-list")
}

// pki is a CA and certificates it signed, made for the test.
type pki struct {
	t    *testing.T
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

var serial int64

func newPKI(t *testing.T) *pki {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &pki{t: t, key: key, cert: cert, pool: pool}
}

func (p *pki) issue(cn string, server bool) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(p.t, err)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	require.NoError(p.t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLS(t *testing.T) {
	ca := newPKI(t)
	other := newPKI(t)
	var mu sync.Mutex
	var rejected []error
	l, err := ListenTLS("127.0.0.1:0", TLSConfig{
		TLS:       &tls.Config{Certificates: []tls.Certificate{ca.issue("server", true)}, ClientCAs: ca.pool},
		ClientCNs: []string{"alice", "bob"},
		OnReject: func(_ net.Addr, err error) {
			mu.Lock()
			rejected = append(rejected, err)
			mu.Unlock()
		},
	})
	require.NoError(t, err)
	defer l.Close()
	addr := l.Addr().String()
	clientCfg := func(cert *tls.Certificate) *tls.Config {
		c := &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert}
		}
		return c
	}
	// dial connects and proves the connection works both ways, or fails.
	dial := func(cfg *tls.Config) (string, error) {
		c, err := DialTLS(addr, cfg)(context.Background())
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		return string(buf), err
	}
	noErr := func(id string, err error) string {
		t.Helper()
		require.NoError(t, err)
		return id
	}
	fails := func(_ string, err error) error { return err }
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write([]byte((c.Identity + "    ")[:4])) // the identity the server saw
				}
			}()
		}
	}()

	alice := ca.issue("alice", false)
	assert.Equal(t, "alic", noErr(dial(clientCfg(&alice))))
	mallory := ca.issue("mallory", false)
	assert.Error(t, fails(dial(clientCfg(&mallory))), "CN not allowed")
	forged := other.issue("alice", false)
	assert.Error(t, fails(dial(clientCfg(&forged))), "certificate of another CA")
	assert.Error(t, fails(dial(clientCfg(nil))), "no client certificate")

	// A silent client delays nobody.
	silent, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer silent.Close()
	bob := ca.issue("bob", false)
	assert.Equal(t, "bob ", noErr(dial(clientCfg(&bob))))

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(rejected) >= 3
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	var notAllowed, handshake int
	for _, e := range rejected {
		if errors.Is(e, ErrNotAllowed) {
			notAllowed++
			assert.ErrorContains(t, e, `"mallory"`)
			assert.ErrorIs(t, e, ErrCNNotAllowed)
			assert.NotErrorIs(t, e, ErrTLSHandshake)
		}
		if errors.Is(e, ErrTLSHandshake) {
			handshake++
		}
	}
	mu.Unlock()
	assert.Equal(t, 1, notAllowed)
	assert.Equal(t, 2, handshake, "another CA's certificate, no certificate: the daemon's refusal reasons tell them apart")

	// Close aborts the silent client's handshake and returns.
	closed := make(chan struct{})
	go func() {
		l.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a silent client's handshake")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := newPKI(t)
	cert := ca.issue("server", true)
	for cfg, want := range map[*TLSConfig]string{
		{}: "no server certificate",
		{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}:                                                 "no CA",
		{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: ca.pool}}:                             "no client CNs",
		{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: ca.pool}, ClientCNs: []string{"a/b"}}: "invalid client identity",
	} {
		_, err := ListenTLS("127.0.0.1:0", *cfg)
		assert.ErrorContains(t, err, want)
	}
}
