package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// tlsFiles writes a CA, a certificate and its key into dir.
func tlsFiles(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caCert, caDER, caKey := issue(t, "ca", nil, nil)
	_, der, k := issue(t, "backup", caCert, caKey)
	kb, err := x509.MarshalECPrivateKey(k)
	require.NoError(t, err)
	ca, cert, key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "backup.crt"), filepath.Join(dir, "backup.key")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return ca, cert, key
}

// TLS files are read when the daemon is built: a missing or broken one
// stops the start with the key and line at fault (issue 12, item 8),
// instead of a push job that fails every run or a sink that fails to
// listen without saying which file.
func TestTLSFilesAreCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := tlsFiles(t, dir)
	garbage := filepath.Join(dir, "garbage")
	require.NoError(t, os.WriteFile(garbage, []byte("not a pem file\n"), 0o600))
	_, otherCert, _ := tlsFiles(t, t.TempDir())
	push := func(ca, cert, key string) string {
		return fmt.Sprintf(`
jobs:
  - name: push
    type: push
    connect:
      type: tls
      address: "backup:8888"
      ca: %q
      cert: %q
      key: %q
      server_cn: backup
    filesystems: {"pool<": true}
    snapshotting: {type: manual}
    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
`, ca, cert, key)
	}
	sink := func(ca, cert, key string) string {
		return fmt.Sprintf(`
jobs:
  - name: sink
    type: sink
    serve:
      type: tls
      listen: %q
      ca: %q
      cert: %q
      key: %q
      client_cns: [laptop]
    root_fs: backup
`, freeTCPAddr(t), ca, cert, key)
	}
	m := zfsmodel.New(zfsmodel.Options{Seed: 1})
	for _, c := range []struct {
		doc, want string
	}{
		{push(ca, cert, filepath.Join(dir, "missing.key")), "jobs[0].connect.key: line 10: open " + filepath.Join(dir, "missing.key") + ": no such file or directory"},
		{push(ca, garbage, key), "jobs[0].connect.cert: line 9: " + garbage + ": holds no PEM certificate"},
		{push(garbage, cert, key), "jobs[0].connect.ca: line 8: " + garbage + " holds no PEM certificate"},
		{push(ca, otherCert, key), "jobs[0].connect.key: line 10: " + key + " does not hold the private key of " + otherCert},
		{sink(filepath.Join(dir, "nope"), cert, key), "jobs[0].serve.ca: line 8: open " + filepath.Join(dir, "nope")},
		{sink(ca, cert, garbage), "jobs[0].serve.key: line 10: " + garbage + " does not hold the private key of " + cert},
	} {
		_, err := New(Options{Config: parse(t, c.doc), ZFS: m})
		require.Error(t, err)
		assert.Contains(t, err.Error(), c.want)
	}
	_, err := New(Options{Config: parse(t, push(ca, cert, key)), ZFS: m})
	assert.NoError(t, err)
	_, err = New(Options{Config: parse(t, sink(ca, cert, key)), ZFS: m})
	assert.NoError(t, err)
}

// listen_freebind binds an address the host does not have (yet).
func TestListenFreebind(t *testing.T) {
	// 192.0.2.0/24 is TEST-NET-1: no host has it.
	addr := net.JoinHostPort("192.0.2.1", freePort(t))
	_, err := listenSocket(addr, false)
	require.Error(t, err, "binding a foreign address without freebind")
	l, err := listenSocket(addr, true)
	if err != nil && strings.Contains(err.Error(), "only supported on Linux") {
		t.Skip(err)
	}
	require.NoError(t, err)
	l.Close()

	// The daemon's sink and prometheus endpoint both start on such
	// addresses.
	mon := net.JoinHostPort("192.0.2.1", freePort(t))
	cfg := parse(t, fmt.Sprintf(`
global:
  monitoring: [{type: prometheus, listen: %q, listen_freebind: true}]
jobs:
  - name: sink
    type: sink
    serve: {type: tcp, listen: %q, listen_freebind: true, clients: {"192.0.2.9": laptop}}
    root_fs: backup
`, mon, addr))
	d, err := New(Options{Config: cfg, ZFS: zfsmodel.New(zfsmodel.Options{Seed: 1}), Control: newPipeListener()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	// Run fails at once if it cannot listen; give it a moment.
	select {
	case err := <-done:
		t.Fatalf("daemon stopped: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	require.NoError(t, <-done)

	// Without freebind the daemon does not start.
	cfg.Jobs[0].Serve.ListenFreebind = false
	cfg.Global.Monitoring = nil
	d, err = New(Options{Config: cfg, ZFS: zfsmodel.New(zfsmodel.Options{Seed: 1}), Control: newPipeListener()})
	require.NoError(t, err)
	assert.ErrorContains(t, d.Run(context.Background()), "cannot assign requested address")
}

func freePort(t *testing.T) string {
	_, port, err := net.SplitHostPort(freeTCPAddr(t))
	require.NoError(t, err)
	return port
}

// A snap job with manual snapshotting takes no snapshots: a wakeup only
// prunes (zrepl's manual snapshotting leaves snapshots to the
// administrator). It used to take snapshots named by the time alone.
func TestManualSnapJobOnlyPrunesOnWakeup(t *testing.T) {
	m := zfsmodel.New(zfsmodel.Options{Seed: 1})
	require.NoError(t, m.CreatePool("pool"))
	require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/data"), zfsmodel.FSOptions{}))
	snapData(t, m, "pool/data", "manual_1", "manual_2", "manual_3", "manual_4")
	d := runDaemon(t, Options{Config: parse(t, `
global:
  zfs_backend: model
jobs:
  - name: snap
    type: snap
    filesystems: {"pool/data<": true}
    snapshotting: {type: manual}
    pruning:
      keep: [{type: last_n, count: 2}]
`), ZFS: m})
	j, err := d.Job("snap")
	require.NoError(t, err)
	j.Wakeup()
	st := waitRuns(t, j, 1)
	assert.Empty(t, st.LastError)
	vs, err := m.ListVersions(context.Background(), zfs.MustDatasetPath("pool/data"))
	require.NoError(t, err)
	var names []string
	for _, v := range vs {
		names = append(names, v.Name)
	}
	assert.Equal(t, []string{"manual_3", "manual_4"}, names, "pruned to the newest two, no snapshot taken")
}
