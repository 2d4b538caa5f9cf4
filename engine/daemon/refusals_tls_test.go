package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clientCert is a client certificate for cn signed by parent.
func clientCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// testCA is a CA without extended key usages (issue's CA has the
// server's, which Go's verification then requires of client chains too).
func testCA(t *testing.T) (*x509.Certificate, []byte, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c, der, key
}

// Issue 12.9 over TLS: a certificate of another CA and an allowed CA's
// certificate for a CN not in client_cns are each logged once, with their
// reason, however often they retry, and counted.
func TestTLSRefusalsAreLogged(t *testing.T) {
	dir := t.TempDir()
	ca, caDER, caKey := testCA(t)
	_, serverDER, serverKey := issue(t, "backup", ca, caKey)
	other, _, otherKey := testCA(t)
	kb, err := x509.MarshalECPrivateKey(serverKey)
	require.NoError(t, err)
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "backup.crt"), filepath.Join(dir, "backup.key")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: serverDER}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	addr := freeTCPAddr(t)
	cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - name: sink
    type: sink
    serve: {type: tls, listen: %q, ca: %q, cert: %q, key: %q, client_cns: [laptop]}
    root_fs: backup
`, addr, caFile, certFile, keyFile))
	var logs lockedBuffer
	d := runDaemon(t, Options{Config: cfg, ZFS: model(t), Log: slog.New(slog.NewTextHandler(&logs, nil))})
	const n = 5
	for _, cert := range []tls.Certificate{clientCert(t, "mallory", ca, caKey), clientCert(t, "laptop", other, otherKey)} {
		for range n {
			c, err := dialWhenUp(t, addr)
			require.NoError(t, err)
			tc := tls.Client(c, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true})
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			err = tc.Handshake()
			if err == nil {
				_, err = tc.Read(make([]byte, 1)) // TLS 1.3: the refusal comes after the client's handshake
			}
			assert.Error(t, err)
			tc.Close()
		}
	}
	require.Eventually(t, func() bool {
		m := metricsText(t, d)
		return strings.Contains(m, fmt.Sprintf(`zrepl_daemon_connections_refused_total{reason="certificate_not_allowed",zrepl_job="sink"} %d`, n)) &&
			strings.Contains(m, fmt.Sprintf(`zrepl_daemon_connections_refused_total{reason="tls_handshake",zrepl_job="sink"} %d`, n))
	}, 10*time.Second, 10*time.Millisecond, "every refusal counted:\n%s", grepLines(metricsText(t, d), "refused"))
	refusals := grepLines(logs.String(), "connection refused")
	assert.Equal(t, 1, strings.Count(refusals, "reason=certificate_not_allowed"), "%s", refusals)
	assert.Contains(t, refusals, `\"mallory\" is not among the allowed clients`)
	assert.Equal(t, 1, strings.Count(refusals, "reason=tls_handshake"), "%s", refusals)
	assert.Equal(t, 2, strings.Count(refusals, "peer=127.0.0.1"), "%s", refusals)
}

// The same for stdinserver: a bad greeting and another identity on the
// socket of laptop are each logged once and counted.
func TestStdinserverRefusalsAreLogged(t *testing.T) {
	dir, err := os.MkdirTemp("", "zr") // a unix socket's path is short
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := parse(t, fmt.Sprintf(`
global:
  zfs_backend: model
  serve: {stdinserver: {sockdir: %s/stdin}}
jobs:
  - name: sink
    type: sink
    serve: {type: stdinserver, client_identities: [laptop]}
    root_fs: backup
`, dir))
	var logs lockedBuffer
	d := runDaemon(t, Options{Config: cfg, ZFS: model(t), Log: slog.New(slog.NewTextHandler(&logs, nil))})
	sock := filepath.Join(dir, "stdin", "laptop")
	const n = 5
	for _, greeting := range []string{"HELLO laptop\n", "ZREPL-STDINSERVER bob\n"} {
		for range n {
			var c net.Conn
			require.Eventually(t, func() bool {
				c, err = net.Dial("unix", sock)
				return err == nil
			}, 10*time.Second, 10*time.Millisecond)
			c.Write([]byte(greeting))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1))
			assert.Error(t, err, "refused")
			c.Close()
		}
	}
	require.Eventually(t, func() bool {
		m := metricsText(t, d)
		return strings.Contains(m, fmt.Sprintf(`zrepl_daemon_connections_refused_total{reason="stdinserver_greeting",zrepl_job="sink"} %d`, n)) &&
			strings.Contains(m, fmt.Sprintf(`zrepl_daemon_connections_refused_total{reason="identity_mismatch",zrepl_job="sink"} %d`, n))
	}, 10*time.Second, 10*time.Millisecond, "every refusal counted:\n%s", grepLines(metricsText(t, d), "refused"))
	refusals := grepLines(logs.String(), "connection refused")
	assert.Equal(t, 1, strings.Count(refusals, "reason=stdinserver_greeting"), "%s", refusals)
	assert.Equal(t, 1, strings.Count(refusals, "reason=identity_mismatch"), "%s", refusals)
	assert.Contains(t, refusals, "client=bob")
	assert.Contains(t, refusals, "peer=local")
}
