package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

func issue(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, []byte, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c, der, key
}

func TestVerifyServerCN(t *testing.T) {
	ca, _, caKey := issue(t, "ca", nil, nil)
	other, _, otherKey := issue(t, "other ca", nil, nil)
	_, server, _ := issue(t, "backup", ca, caKey)
	_, impostor, _ := issue(t, "backup", other, otherKey)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	require.NoError(t, verifyServerCN([][]byte{server}, roots, "backup"))
	assert.ErrorContains(t, verifyServerCN([][]byte{server}, roots, "prod"), `server_cn wants "prod"`)
	assert.ErrorContains(t, verifyServerCN([][]byte{impostor}, roots, "backup"), "unknown authority")
	assert.Error(t, verifyServerCN(nil, roots, "backup"))
	assert.Error(t, verifyServerCN([][]byte{{1, 2, 3}}, roots, "backup"))
}

func TestRoots(t *testing.T) {
	f, err := config.FilterFromMap(map[string]bool{"a/b<": true, "a/b/c<": true, "a/b/d": false, "x/y": true})
	require.NoError(t, err)
	assert.ElementsMatch(t, []zfs.DatasetPath{zfs.MustDatasetPath("a/b"), zfs.MustDatasetPath("x/y")}, Roots(f))
	assert.Nil(t, Roots(nil))
}

func TestConfigRoots(t *testing.T) {
	cfg, err := config.Parse([]byte(`
jobs:
  - {name: a, type: snap, filesystems: {"p/x/y<": true}, snapshotting: {type: manual}, pruning: {keep: [{type: last_n, count: 1}]}}
  - {name: b, type: snap, filesystems: {"p/x<": true, "q<": true}, snapshotting: {type: manual}, pruning: {keep: [{type: last_n, count: 1}]}}
  - {name: s, type: sink, serve: {type: local, listener_name: s}, root_fs: q/sink}
`))
	require.NoError(t, err)
	assert.Equal(t, []zfs.DatasetPath{zfs.MustDatasetPath("p/x"), zfs.MustDatasetPath("q")}, ConfigRoots(cfg))
}

// A sink serves each client with one receiver for its lifetime, in the
// daemon's own push (local) and over the network alike, so the receiver
// remembers the client's listing from one request to the next.
func TestSinkKeepsOneReceiverPerClient(t *testing.T) {
	s := newSinkSpec(nil, &config.Job{Name: "sink", RootFS: zfs.MustDatasetPath("pool/sink")})
	a1, err := s.local("alice")
	require.NoError(t, err)
	a2, err := s.receiver("alice")
	require.NoError(t, err)
	b, err := s.local("bob")
	require.NoError(t, err)
	assert.Same(t, a1.ReceiverEndpoint, a2.(withRecvOptions).ReceiverEndpoint, "alice's receiver made anew")
	assert.NotSame(t, a1.ReceiverEndpoint, b.ReceiverEndpoint, "alice and bob share a receiver")
	assert.Equal(t, "pool/sink/bob", b.ReceiverEndpoint.(*endpoint.Receiver).Root.String())
}
