package platformtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tlsFiles are a CA's certificate and, per common name, a certificate
// (for server and client use, the name also as its DNS name) and key.
type tlsFiles struct {
	dir string
	ca  string
}

func (f tlsFiles) cert(cn string) string { return filepath.Join(f.dir, cn+".crt") }
func (f tlsFiles) key(cn string) string  { return filepath.Join(f.dir, cn+".key") }

func newTLSFiles(t *testing.T, cns ...string) tlsFiles {
	t.Helper()
	f := tlsFiles{dir: t.TempDir()}
	f.ca = filepath.Join(f.dir, "ca.crt")
	writePEM := func(path, typ string, der []byte) {
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interop-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	writePEM(f.ca, "CERTIFICATE", caDER)
	for i, cn := range cns {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
		require.NoError(t, err)
		writePEM(f.cert(cn), "CERTIFICATE", der)
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		writePEM(f.key(cn), "PRIVATE KEY", kder)
	}
	return f
}

// Push over tls both ways between our daemon and zrepl v0.7.0: a full
// and an incremental step; the sink places the client's filesystems
// below the client certificate's common name, and after each run both
// sides carry what zrepl expects.
func TestInteropPushTLS(t *testing.T) {
	bin := upstreamZrepl(t)
	certs := newTLSFiles(t, "sink", "client")
	serve := func(port int) string {
		return fmt.Sprintf(`{type: tls, listen: "127.0.0.1:%d", ca: %q, cert: %q, key: %q, client_cns: ["client"]}`,
			port, certs.ca, certs.cert("sink"), certs.key("sink"))
	}
	connect := func(port int) string {
		return fmt.Sprintf(`{type: tls, address: "127.0.0.1:%d", ca: %q, cert: %q, key: %q, server_cn: "sink"}`,
			port, certs.ca, certs.cert("client"), certs.key("client"))
	}
	const pushJob = `
  - name: %s
    type: push
    connect: %s
    filesystems: {%q: true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
`
	const sinkJob = `
  - name: %s
    type: sink
    root_fs: %q
    serve: %s
    recv: {placeholder: {encryption: off}}
`
	for _, tc := range []struct {
		name             string
		zreplPushes      bool
		sendJob, recvJob string
	}{
		{"OursToZreplSink", false, "opush", "zsink"},
		{"ZreplToOurSink", true, "zpush", "osink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newInteropFixture(t)
			port := freePort(t)
			sink := fmt.Sprintf(sinkJob, tc.recvJob, f.root, serve(port))
			push := fmt.Sprintf(pushJob, tc.sendJob, connect(port), f.plain)
			var runOK func()
			if tc.zreplPushes {
				startOurs(t, "jobs:"+sink)
				z := startZrepl(t, bin, push)
				runOK = func() { z.runOK(tc.sendJob) }
			} else {
				startZrepl(t, bin, sink)
				o := startOurs(t, "jobs:"+push)
				runOK = func() { o.runOK(tc.sendJob) }
			}
			dst := f.root + "/client/" + f.plain
			for i, s := range []string{"s1", "s2"} {
				f.snap(t, s, int64(i+1), 1<<20)
				runOK()
				requireSameSnapshot(t, f.plain, dst, s, true)
				requireAbstractions(t, f.plain, tc.sendJob, dst, tc.recvJob, s)
			}
		})
	}
}
