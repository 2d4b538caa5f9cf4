package platformtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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
