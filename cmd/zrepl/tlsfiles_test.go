package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 12.8: configcheck reads the TLS files of a push job and of a sink
// (unless --skip-cert-check) and names the key and line of each missing or
// garbage one.
func TestConfigcheckReadsTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	caFile := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(caFile, ca.pem, 0o600))
	ca.issue(t, dir, "backup", false)
	cert, key := filepath.Join(dir, "backup.crt"), filepath.Join(dir, "backup.key")
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a certificate\n"), 0o600))
	missing := filepath.Join(dir, "missing.key")
	write := func(name, cfg string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(cfg), 0o600))
		return p
	}
	push := write("push.yml", fmt.Sprintf(`jobs:
  - name: push
    type: push
    connect:
      type: tls
      address: "192.0.2.1:8888"
      ca: %q
      cert: %q
      key: %q
      server_cn: backup
    filesystems: {"pool<": true}
    snapshotting: {type: manual}
    pruning: {keep_sender: [{type: not_replicated}], keep_receiver: [{type: last_n, count: 1}]}
`, caFile, cert, missing))
	sink := write("sink.yml", fmt.Sprintf(`jobs:
  - name: sink
    type: sink
    serve:
      type: tls
      listen: "127.0.0.1:8888"
      ca: %q
      cert: %q
      key: %q
      client_cns: [laptop]
    root_fs: backup
`, caFile, garbage, key))

	out, err := run(t, "configcheck", "--config", push)
	require.Error(t, err)
	assert.Contains(t, out, "jobs[0].connect.key: line 9: open "+missing)
	out, err = run(t, "configcheck", "--config", sink)
	require.Error(t, err)
	assert.Contains(t, out, "jobs[0].serve.cert: line 8: "+garbage+": holds no PEM certificate")
	for _, cfg := range []string{push, sink} {
		out, err = run(t, "configcheck", "--config", cfg, "--skip-cert-check")
		assert.NoError(t, err, "%s", out)
	}
}
