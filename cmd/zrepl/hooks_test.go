package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// configcheck finds a hook that could not run (here: not executable, and
// a DSN that does not parse) with key and line, and accepts the hooks once
// the script is executable.
func TestConfigcheckHooks(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "hook.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n"), 0o644))
	cfg := filepath.Join(dir, "zrepl.yml")
	write := func(dsn string) {
		require.NoError(t, os.WriteFile(cfg, []byte(`jobs:
  - name: snap
    type: snap
    filesystems: {"pool<": true}
    snapshotting:
      type: periodic
      prefix: zrepl_
      interval: 10m
      hooks:
        - type: command
          path: `+script+`
        - type: mysql-lock-tables
          dsn: "`+dsn+`"
          filesystems: {"pool/mysql": true}
    pruning:
      keep: [{type: last_n, count: 10}]
`), 0o600))
	}
	write("zrepl:secret@tcp(localhost)")
	out, err := run(t, "configcheck", "--config", cfg)
	require.Error(t, err)
	assert.Contains(t, out, cfg+": jobs[0].snapshotting.hooks[1].dsn: line 13: invalid dsn: missing the slash separating the database name")
	assert.NotContains(t, out, "secret")

	write("zrepl:secret@tcp(localhost)/")
	out, err = run(t, "configcheck", "--config", cfg)
	require.Error(t, err)
	assert.Contains(t, out, cfg+": jobs[0].snapshotting.hooks[0].path: line 11: "+script+" is not executable (mode -rw-r--r--)")

	require.NoError(t, os.Chmod(script, 0o755))
	out, err = run(t, "configcheck", "--config", cfg)
	require.NoError(t, err)
	assert.Contains(t, out, "ok (1 jobs)")
}
