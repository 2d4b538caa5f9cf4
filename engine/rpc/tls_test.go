package rpc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// testCert issues a certificate for cn from ca (self-signed if ca is nil).
func testCert(t *testing.T, cn string, ca *tls.Certificate, isCA bool) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: isCA, BasicConstraintsValid: true,
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.Leaf, ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// Over mutual TLS the client's certificate CN is its identity and so its
// subtree on the sink.
func TestReplicateOverTLS(t *testing.T) {
	ca := testCert(t, "CA", nil, true)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	l, err := transport.ListenTLS("127.0.0.1:0", transport.TLSConfig{
		TLS:       &tls.Config{Certificates: []tls.Certificate{testCert(t, "sink", &ca, false)}, ClientCAs: pool},
		ClientCNs: []string{"laptop"},
	})
	require.NoError(t, err)
	h := newHosts(t)
	srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	client := testCert(t, "laptop", &ca, false)
	c := newClient(t, ClientConfig{Dial: transport.DialTLS(l.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{client}, RootCAs: pool, ServerName: "127.0.0.1",
	})})
	h.create("src/data")
	h.writeSnap("src/data", 1, 16, "s1")
	requireOK(t, run(h.sender, c.Receiver()))
	h.writeSnap("src/data", 2, 4, "s2")
	requireOK(t, run(h.sender, c.Receiver()))
	h.assertReplicated("src/data", "dst/sinks/laptop/src/data", "s1", "s2")
}
