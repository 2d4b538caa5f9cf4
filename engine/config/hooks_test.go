package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/hooks"
	"zrepl.dev/zrepl/engine/zfs"
)

// The hook examples of zrepl's docs/configuration/snapshotting.rst, as
// printed there: the command example is a whole job (its elided keys
// filled in after it); the two database examples are list items, pasted
// as a block under the hooks of a push job.
const (
	docCommandHooksJob = `
jobs:
- type: push
  filesystems: {
    "<": true,
    "tmp": false
  }
  snapshotting:
    type: periodic
    prefix: zrepl_
    interval: 10m
    hooks:
    - type: command
      path: /etc/zrepl/hooks/zrepl-notify.sh
      timeout: 30s
      err_is_fatal: false
    - type: command
      path: /etc/zrepl/hooks/special-snapshot.sh
      filesystems: {
        "tank/special": true
      }
  name: push_with_hooks
  connect: {type: tcp, address: "backup:8888"}
  pruning:
    keep_sender: [{type: last_n, count: 10}]
    keep_receiver: [{type: last_n, count: 10}]
`
	docDatabaseHooksJob = `
jobs:
- type: push
  name: push_db
  connect: {type: tcp, address: "backup:8888"}
  filesystems: {"p1<": true, "tank<": true}
  pruning:
    keep_sender: [{type: last_n, count: 10}]
    keep_receiver: [{type: last_n, count: 10}]
  snapshotting:
    type: periodic
    prefix: zrepl_
    interval: 10m
    hooks:
    - type: postgres-checkpoint
      dsn: "host=localhost port=5432 user=postgres password=yourpasswordhere sslmode=disable"
      filesystems: {
          "p1/postgres/data11": true
      }
    - type: mysql-lock-tables
      dsn: "zrepl_lock_tables:yourpasswordhere@tcp(localhost)/"
      filesystems: {
        "tank/mysql": true
      }
`
)

func matches(f hooks.Filter, fs string) bool {
	return f == nil || f.Match(zfs.MustDatasetPath(fs))
}

// zrepl's documented hook examples parse unchanged, with zrepl's
// defaults (timeout 30s, err_is_fatal false, a command hook without a
// filter runs for every filesystem).
func TestHookDocExamples(t *testing.T) {
	cfg, err := Parse([]byte(docCommandHooksJob))
	require.NoError(t, err)
	hs := cfg.Jobs[0].Snapshotting.Hooks
	require.Len(t, hs, 2)
	assert.Equal(t, hooks.Command, hs[0].Type)
	assert.Equal(t, "/etc/zrepl/hooks/zrepl-notify.sh", hs[0].Path)
	assert.Equal(t, 30*time.Second, hs[0].Timeout)
	assert.False(t, hs[0].ErrIsFatal)
	assert.Nil(t, hs[0].Filesystems, "no filter: every filesystem the job snapshots")
	assert.Equal(t, "/etc/zrepl/hooks/special-snapshot.sh", hs[1].Path)
	assert.Equal(t, hooks.DefaultTimeout, hs[1].Timeout)
	assert.True(t, matches(hs[1].Filesystems, "tank/special"))
	assert.False(t, matches(hs[1].Filesystems, "tank/special/child"))
	assert.False(t, matches(hs[1].Filesystems, "tank"))
	assert.Equal(t, []int{13, 17}, []int{hs[0].Line, hs[1].Line})

	cfg, err = Parse([]byte(docDatabaseHooksJob))
	require.NoError(t, err)
	hs = cfg.Jobs[0].Snapshotting.Hooks
	require.Len(t, hs, 2)
	assert.Equal(t, hooks.PostgresCheckpoint, hs[0].Type)
	assert.Equal(t, "host=localhost port=5432 user=postgres password=yourpasswordhere sslmode=disable", hs[0].DSN)
	assert.True(t, matches(hs[0].Filesystems, "p1/postgres/data11"))
	assert.False(t, matches(hs[0].Filesystems, "p1/postgres"))
	assert.Equal(t, hooks.MySQLLockTables, hs[1].Type)
	assert.Equal(t, "zrepl_lock_tables:yourpasswordhere@tcp(localhost)/", hs[1].DSN)
	assert.True(t, matches(hs[1].Filesystems, "tank/mysql"))
	specs := cfg.Jobs[0].Snapshotting.HookSpecs()
	require.Len(t, specs, 2)
	assert.Equal(t, hs[1].Spec, specs[1])
}

// CheckFiles reports each command hook whose executable is missing or not
// executable, with the key's path and line; database hooks and good
// executables pass.
func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.sh")
	require.NoError(t, os.WriteFile(good, []byte("#!/bin/sh\n"), 0o755))
	plain := filepath.Join(dir, "plain.sh")
	require.NoError(t, os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644))
	cfg := mustParse(t, `
		jobs:
		  - name: s
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting:
		      type: periodic
		      prefix: z_
		      interval: 1h
		      hooks:
		        - {type: command, path: `+good+`}
		        - {type: command, path: `+plain+`}
		        - {type: postgres-checkpoint, dsn: "host=x", filesystems: {"pool/pg": true}}
		        - type: command
		          path: `+filepath.Join(dir, "missing.sh")+`
		    pruning: {keep: [{type: regex, regex: ".*"}]}
		`)
	err := CheckFiles(cfg)
	var errs *Errors
	require.True(t, errors.As(err, &errs), "%v", err)
	require.Len(t, errs.List, 2)
	assert.Equal(t, Error{"jobs[0].snapshotting.hooks[1].path", 11, plain + " is not executable (mode -rw-r--r--)", ""}, *errs.List[0])
	assert.Equal(t, "jobs[0].snapshotting.hooks[3].path", errs.List[1].Path)
	assert.Equal(t, 14, errs.List[1].Line)
	assert.Contains(t, errs.List[1].Msg, "no such file or directory")
	assert.ErrorIs(t, err, ErrInvalid)

	// The documented example passes once its scripts exist; until then
	// exactly those two paths are reported.
	cfg, err = Parse([]byte(docCommandHooksJob))
	require.NoError(t, err)
	err = CheckFiles(cfg)
	if _, statErr := os.Stat("/etc/zrepl/hooks/zrepl-notify.sh"); statErr != nil {
		require.True(t, errors.As(err, &errs))
		var paths []string
		for _, e := range errs.List {
			paths = append(paths, e.Path)
		}
		assert.Equal(t, []string{"jobs[0].snapshotting.hooks[0].path", "jobs[0].snapshotting.hooks[1].path"}, paths)
	}
	for i := range cfg.Jobs[0].Snapshotting.Hooks {
		cfg.Jobs[0].Snapshotting.Hooks[i].Path = good
	}
	assert.NoError(t, CheckFiles(cfg))
}

// README's database example is a config the parser accepts, with the
// hooks it describes.
func TestReadmeHookExample(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	s := string(b)
	start := strings.Index(s, "```yaml\njobs:\n  - name: db_backup")
	require.GreaterOrEqual(t, start, 0, "README has the db_backup example")
	s = s[start+len("```yaml\n"):]
	cfg, err := Parse([]byte(s[:strings.Index(s, "```")]))
	require.NoError(t, err)
	var types []hooks.Type
	for _, h := range cfg.Jobs[0].Snapshotting.Hooks {
		types = append(types, h.Type)
	}
	assert.Equal(t, []hooks.Type{hooks.PostgresCheckpoint, hooks.MySQLLockTables, hooks.Command}, types)
	assert.True(t, cfg.Jobs[0].Snapshotting.Hooks[1].ErrIsFatal)
}
