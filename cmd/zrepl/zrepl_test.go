package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
)

// zreplRecord reruns zrepl v0.7.0 on every case of the table and rewrites
// its recorded verdicts: go test ./cmd/zrepl -run TestConfigcheckAgreesWithZrepl -zrepl-record
var zreplRecord = flag.Bool("zrepl-record", false, "record zrepl v0.7.0's configcheck verdicts (needs "+zreplBinary+")")

// zreplBinary is zrepl v0.7.0, beside the repository on the project's
// machines.
const zreplBinary = "../../../shared/upstream/zrepl"

const verdictsFile = "testdata/zrepl-verdicts.json"

// verdict is what a configcheck said of one case.
type verdict struct {
	// Sha identifies the case's document (before {{tmp}} is replaced), so
	// that a changed base or sample asks for a new recording.
	Sha string `json:"sha"`
	OK  bool   `json:"ok"`
	// Says is what zrepl printed, at most 4 lines (for the reader).
	Says string `json:"says,omitempty"`
}

// zcase is one small config: a base, or a base with one key set.
type zcase struct {
	name string
	kind string // base, applied, refused, warns, bad
	key  string // schema
	doc  string // template
	line int
}

func (c zcase) sha() string {
	s := sha256.Sum256([]byte(c.doc))
	return hex.EncodeToString(s[:8])
}

// zreplCases are the table's configs: each base, and each key of the
// registry set to each of its samples.
func zreplCases(t *testing.T, env *keyEnv) []zcase {
	var out []zcase
	names := make([]string, 0, len(env.bases))
	for n := range env.bases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, zcase{name: "base " + n, kind: "base", doc: env.bases[n]})
	}
	for _, x := range zreplExtra {
		out = append(out, zcase{name: x.name, kind: "extra", doc: x.doc})
	}
	for _, k := range config.Keys() {
		if k.Status == config.Structure {
			continue
		}
		s := samples[k.Schema]
		add := func(kind, v string) {
			c, ok := env.keyDoc(t, k.Schema, v, s.with)
			require.True(t, ok, "no base has the section of %s", k.Schema)
			out = append(out, zcase{name: k.Schema + ": " + v, kind: kind, key: k.Schema, doc: c.doc, line: c.line})
		}
		for _, v := range s.applied {
			add("applied", v)
		}
		if s.refused != "" {
			add("refused", s.refused)
		}
		if s.warns != "" {
			add("warns", s.warns)
		}
		if s.bad != "" {
			add("bad", s.bad)
		}
	}
	return out
}

// zreplExtra are cases that are no key's sample: whole documents.
var zreplExtra = []struct{ name, doc string }{
	{"empty file", ""},
	{"only a comment", "# nothing yet\n"},
	{"job name starting with _", `jobs:
  - name: _internal
    type: snap
    filesystems: {"pool<": true}
    snapshotting: {type: manual}
    pruning: {keep: [{type: last_n, count: 1}]}
`},
	{"include: a job name defined twice", `include: ["{{tmp}}/more.yml"]
jobs:
  - name: included
    type: snap
    filesystems: {"pool<": true}
    snapshotting: {type: manual}
    pruning: {keep: [{type: last_n, count: 1}]}
`},
	{"include: a file not ending in .yml", `include: ["{{tmp}}/more.d/ignored.yaml"]
`},
	{"include: only includes", `include: ["{{tmp}}/more.yml", "{{tmp}}/more.d"]
`},
	{"empty keep list", `jobs:
  - name: s
    type: snap
    filesystems: {"pool<": true}
    snapshotting: {type: manual}
    pruning: {keep: []}
`},
}

// zreplDiffers are the cases where our configcheck disagrees with zrepl's
// on purpose, each with why; README's "Config: where we differ from zrepl"
// says the same to users.
var zreplDiffers = map[string]string{}

func init() {
	differ := func(why string, names ...string) {
		for _, n := range names {
			zreplDiffers[n] = why
		}
	}
	const model = "ours: global.zfs_backend and model_state_dir select the in-memory model backend"
	differ(model, "base model.yml", `global.model_state_dir: "{{tmp}}/state2"`, "global.zfs_backend: real",
		"global.model_checkpoint_every: 16 MiB", "global.model_checkpoint_every: 0 B")
	differ("zrepl takes any net and fails at the first log line; we take the networks Go can dial",
		"global.logging.tcp.net: pigeon")
	differ("zrepl passes zfs send -S with the step's snapshot, which OpenZFS refuses: every send would fail",
		"jobs.push.send.saved: true", "jobs.source.send.saved: true")
	differ("a client identity names one dataset below root_fs; zrepl takes it and fails at the first connection",
		`jobs.push.connect.local.client_identity: "a/b"`, `jobs.pull.connect.local.client_identity: "a/b"`,
		`jobs.sink.serve.tls.client_cns: ["a/b"]`, `jobs.source.serve.tls.client_cns: ["a/b"]`)
	differ("zrepl takes a local connect no job of the config serves, and fails every run",
		"jobs.push.connect.local.listener_name: nobody", "jobs.pull.connect.local.listener_name: nobody")
	differ("zrepl takes a root_fs that is no dataset name, and fails every run",
		`jobs.sink.root_fs: "/abs"`, `jobs.pull.root_fs: "/abs"`)
	differ("a hook runs without a shell; a relative path would depend on the daemon's working directory",
		"jobs.push.snapshotting.periodic.hooks.command.path: relative/hook",
		"jobs.source.snapshotting.periodic.hooks.command.path: relative/hook",
		"jobs.snap.snapshotting.periodic.hooks.command.path: relative/hook",
		"jobs.push.snapshotting.cron.hooks.command.path: relative/hook",
		"jobs.source.snapshotting.cron.hooks.command.path: relative/hook",
		"jobs.snap.snapshotting.cron.hooks.command.path: relative/hook")
	differ("zrepl takes 0 and then fails every TLS handshake at once",
		"jobs.sink.serve.tls.handshake_timeout: 0s", "jobs.source.serve.tls.handshake_timeout: 0s")
}

// TestConfigcheckAgreesWithZrepl: one small config per key of zrepl's
// documentation and per sample value, and our configcheck accepts or
// refuses it as zrepl v0.7.0's does (recorded in testdata; -zrepl-record
// runs zrepl again), except where zreplDiffers says why not. A bad value's
// error names the key, its line and what is allowed.
func TestConfigcheckAgreesWithZrepl(t *testing.T) {
	env := newKeyEnv(t)
	cases := zreplCases(t, env)
	recorded := map[string]verdict{}
	if *zreplRecord {
		recorded = recordZrepl(t, env, cases)
	} else {
		b, err := os.ReadFile(verdictsFile)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &recorded))
	}
	dir := t.TempDir()
	var disagree []string
	for i, c := range cases {
		z, ok := recorded[c.name]
		if !assert.True(t, ok && z.Sha == c.sha(), "case %q is not recorded (or its document changed): run go test ./cmd/zrepl -run TestConfigcheckAgreesWithZrepl -zrepl-record", c.name) {
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("case%d.yml", i))
		require.NoError(t, os.WriteFile(path, []byte(env.in(c.doc)), 0o600))
		out, err := run(t, "configcheck", "--config", path, "--skip-cert-check")
		ours := err == nil
		why, differs := zreplDiffers[c.name]
		switch {
		case ours != z.OK && !differs:
			disagree = append(disagree, fmt.Sprintf("%s: ours %v, zrepl %v (%s)\n    ours: %s", c.name, ours, z.OK, z.Says, firstLine(out)))
		case ours == z.OK && differs:
			t.Errorf("%s: listed in zreplDiffers (%s), but both say %v", c.name, why, ours)
		}
		if c.kind == "bad" && !ours {
			assertBadValueError(t, c, out)
		}
	}
	assert.Empty(t, disagree, "our configcheck and zrepl's disagree:\n%s", strings.Join(disagree, "\n"))
}

// assertBadValueError checks that configcheck's output names the key and
// its line, and what is allowed.
func assertBadValueError(t *testing.T, c zcase, out string) {
	key := c.key[strings.LastIndexByte(c.key, '.')+1:]
	needle := "." + key
	if !strings.Contains(c.key, ".") {
		needle = ": " + key // a top-level key: "FILE: include[0]: line 1: ..."
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, needle) && strings.Contains(l, fmt.Sprintf("line %d:", c.line)) {
			assert.Regexp(t, `want|must|allowed`, l, "%s: the error should say what is allowed", c.name)
			return
		}
	}
	t.Errorf("%s: no error names %s at line %d:\n%s", c.name, key, c.line, out)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// recordZrepl runs zrepl's configcheck on every case and writes the
// verdicts.
func recordZrepl(t *testing.T, env *keyEnv, cases []zcase) map[string]verdict {
	bin, err := filepath.Abs(zreplBinary)
	require.NoError(t, err)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("-zrepl-record needs zrepl v0.7.0 at %s: %v", bin, err)
	}
	dir := t.TempDir()
	out := map[string]verdict{}
	for i, c := range cases {
		path := filepath.Join(dir, fmt.Sprintf("case%d.yml", i))
		require.NoError(t, os.WriteFile(path, []byte(env.in(c.doc)), 0o600))
		cmd := exec.Command(bin, "--config", path, "configcheck", "--skip-cert-check")
		b, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("running zrepl: %v", err)
		}
		says := strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(string(b)), env.tmp, "{{tmp}}"), path, "CONFIG")
		if lines := strings.Split(says, "\n"); len(lines) > 4 {
			says = strings.Join(lines[:4], "\n")
		}
		out[c.name] = verdict{Sha: c.sha(), OK: err == nil, Says: says}
	}
	b, err := json.MarshalIndent(out, "", " ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(verdictsFile, append(b, '\n'), 0o644))
	return out
}
