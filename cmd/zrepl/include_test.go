package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConfigcheckIncludes: configcheck reads the included files relative
// to the config file (not the working directory), counts their jobs, and
// names the included file in its warnings and errors.
func TestConfigcheckIncludes(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "zrepl.yml")
	inc := filepath.Join(dir, "zrepl.d", "push.yml")
	require.NoError(t, os.MkdirAll(filepath.Dir(inc), 0o755))
	require.NoError(t, os.WriteFile(main, []byte("include: [zrepl.d]\njobs:\n  - {name: sink, type: sink, serve: {type: local, listener_name: sink}, root_fs: backup}\n"), 0o600))
	require.NoError(t, os.WriteFile(inc, []byte(`jobs:
  - name: push
    type: push
    connect: {type: local, listener_name: sink, client_identity: laptop, dial_timeout: 5s}
    filesystems: {"pool<": true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: regex, regex: ".*"}]
      keep_receiver: [{type: regex, regex: ".*"}]
`), 0o600))
	t.Chdir(t.TempDir())
	var out, errOut bytes.Buffer
	root := newRootCommand(&out, &errOut)
	root.SetArgs([]string{"configcheck", "--config", main})
	require.NoError(t, root.Execute(), out.String())
	assert.Equal(t, main+": ok (2 jobs)\n", out.String())
	assert.Contains(t, errOut.String(), inc+": warning: jobs[0].connect.dial_timeout: line 4: ")

	require.NoError(t, os.WriteFile(inc, []byte("jobs:\n  - {name: sink, type: sink, serve: {type: local, listener_name: other}, root_fs: backup2}\n"), 0o600))
	got, err := run(t, "configcheck", "--config", main)
	require.Error(t, err)
	assert.Contains(t, got, inc+`: jobs[0].name: line 2: duplicate job name "sink" (first used by jobs[0] at line 3 of `+main+")")
}
