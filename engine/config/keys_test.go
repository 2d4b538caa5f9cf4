package config

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v3"
)

func TestExpandBraces(t *testing.T) {
	assert.Equal(t, []string{"a"}, expandBraces("a"))
	assert.Equal(t, []string{"j.push.x.c", "j.push.x.d", "j.pull.x.c", "j.pull.x.d"}, expandBraces("j.{push,pull}.x.{c,d}"))
}

func TestRegistryEntriesAreWellFormed(t *testing.T) {
	for _, k := range Keys() {
		switch k.Status {
		case Partial:
			assert.NotEmpty(t, k.Why, "%s: a refusal must say why", k.Schema)
		case Inert:
			assert.NotEmpty(t, k.Why, "%s: a warning must say why", k.Schema)
			assert.Empty(t, k.Allowed, k.Schema)
		case Applied, Structure:
			assert.Empty(t, k.Allowed, k.Schema)
		default:
			t.Errorf("%s: no status", k.Schema)
		}
	}
}

// A key the parser reads without a registry entry fails every parse that
// reaches it, so it cannot go unnoticed.
func TestUnregisteredKeyIsAnInternalError(t *testing.T) {
	var n yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte("a: 1\nb: 2\n"), &n))
	d := &decoder{budget: 100}
	m := d.mapping("x", "global", n.Content[0], 1)
	m.get("zfs_backend") // registered
	m.get("a")
	require.Len(t, d.errs, 1)
	assert.Equal(t, Error{"x.a", 1, "internal error: the parser reads key global.a, which the key registry (engine/config/keys.go) does not list", ""}, *d.errs[0])
}

func TestPartialKeysRefuseWhatTheDaemonWouldIgnore(t *testing.T) {
	base := `
		jobs:
		  - name: p
		    type: push
		    connect: {type: tcp, address: "h:1"}
		    filesystems: {"pool<": true}
		    snapshotting: {type: manual}
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		    send:
		      saved: %s
		    conflict_resolution: {initial_replication: %s}
		`
	for _, ok := range [][2]string{{"false", "all"}, {"no", "most_recent"}, {"off", "fail"}} {
		cfg := mustParse(t, fmt.Sprintf(base, ok[0], ok[1]))
		assert.False(t, cfg.Jobs[0].Send.Policy.Flags.Saved)
		assert.Equal(t, InitialReplication(ok[1]), cfg.Jobs[0].ConflictResolution.InitialReplication)
	}
	errs := parseErrors(t, fmt.Sprintf(base, "true", "fail"))
	require.Len(t, errs, 1)
	assert.Equal(t, Error{"jobs[0].send.saved", 9, `value "true" ` + savedRefused + " (want false)", ""}, *errs[0])

	// An invalid value says so, not that it is not implemented.
	errs = parseErrors(t, fmt.Sprintf(base, "maybe", "all"))
	require.Len(t, errs, 1)
	assert.Equal(t, Error{"jobs[0].send.saved", 9, `want true or false, got "maybe"`, ""}, *errs[0])
}

func TestInertKeysWarn(t *testing.T) {
	cfg := mustParse(t, `
		jobs:
		  - name: p
		    type: push
		    connect: {type: local, listener_name: s, client_identity: c, dial_timeout: 5s}
		    filesystems: {"pool<": true}
		    snapshotting: {type: manual}
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		  - {name: s, type: sink, serve: {type: local, listener_name: s}, root_fs: backup}
		`)
	require.Len(t, cfg.Warnings, 1)
	assert.Equal(t, Error{"jobs[0].connect.dial_timeout", 4, `key "dial_timeout" does nothing: the local transport reaches its peer job inside the daemon, there is nothing to dial`, ""}, *cfg.Warnings[0])
}
