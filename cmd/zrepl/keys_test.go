package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v3"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/inspect"
)

// sample is what the key walk sets a key to.
type sample struct {
	// applied are values the daemon applies, each different from the
	// base's value (or default): each must change what it builds.
	applied []string
	// refused is a value a Partial key refuses.
	refused string
	// bad is an invalid value: the error names the key, its line and
	// what is allowed.
	bad string
	// warns is a value an Inert key accepts with a warning.
	warns string
	// with sets sibling keys in the base and the variant alike, where the
	// key only works together with them.
	with map[string]string
}

// samples has an entry for every key of the registry that is not
// Structure. A helper who makes a key work adds its applied values here.
var samples = map[string]sample{
	"global.logging.stdout.level":          {applied: []string{"debug"}, bad: "loud"},
	"global.logging.syslog.level":          {applied: []string{"error"}, bad: "loud"},
	"global.logging.stdout.format":         {applied: []string{"json", "logfmt"}, bad: "xml"},
	"global.logging.syslog.format":         {applied: []string{"json", "logfmt"}, bad: "xml"},
	"global.logging.stdout.time":           {applied: []string{"false"}, bad: "maybe"},
	"global.logging.stdout.color":          {applied: []string{"false"}, bad: "maybe"},
	"global.logging.syslog.facility":       {applied: []string{"daemon"}, bad: "local9"},
	"global.logging.syslog.retry_interval": {applied: []string{"5s"}, bad: "1d"},
	"global.logging.tcp.level":             {applied: []string{"warn"}, bad: "loud"},
	"global.logging.tcp.format":            {applied: []string{"json", "logfmt"}, bad: "xml"},
	"global.logging.tcp.address":           {applied: []string{`"127.0.0.1:2"`}, bad: "nowhere"},
	"global.logging.tcp.net":               {applied: []string{"tcp4"}, bad: "pigeon"},
	"global.logging.tcp.retry_interval":    {applied: []string{"5s"}, bad: "1d"},
	"global.logging.tcp.tls.ca":            {applied: []string{`"{{tmp}}/ca2.crt"`}, bad: `""`},
	"global.logging.tcp.tls.cert":          {applied: []string{`"{{tmp}}/b.crt"`}, bad: "[a]", with: map[string]string{"key": `"{{tmp}}/b.key"`}},
	"global.logging.tcp.tls.key":           {applied: []string{`"{{tmp}}/b.key"`}, bad: "[a]", with: map[string]string{"cert": `"{{tmp}}/b.crt"`}},

	"global.monitoring.prometheus.listen":          {applied: []string{`"127.0.0.1:19812"`}, bad: "nowhere"},
	"global.monitoring.prometheus.listen_freebind": {applied: []string{"true"}, bad: "maybe"},
	"global.zfs_backend":                           {applied: []string{"real"}, bad: "fake", with: map[string]string{"model_state_dir": "~"}},
	"global.model_state_dir":                       {applied: []string{`"{{tmp}}/state2"`}, bad: "[a]"},
	"global.model_checkpoint_every":                {applied: []string{"16 MiB", "0 B"}, bad: "lots"},
	"global.control.sockpath":                      {applied: []string{`"{{tmp}}/control2"`}, bad: "[a]"},
	"global.serve.stdinserver.sockdir":             {applied: []string{`"{{tmp}}/stdin2"`}, bad: "[a]"},

	"jobs.name": {applied: []string{"renamed", `"with space"`}, bad: `"with/slash"`},

	"include": {applied: []string{`["{{tmp}}/more.yml"]`, `["{{tmp}}/more.d"]`}, bad: `["{{tmp}}/nothing.yml"]`},
}

// includedFiles are what the include samples name, below {{tmp}}.
var includedFiles = map[string]string{
	"more.yml": `jobs:
  - name: included
    type: snap
    filesystems: {"pool/inc<": true}
    snapshotting: {type: manual}
    pruning: {keep: [{type: last_n, count: 1}]}
`,
	"more.d/a.yml": `jobs:
  - name: included_a
    type: snap
    filesystems: {"pool/inc_a<": true}
    snapshotting: {type: periodic, prefix: a_, interval: 1h}
    pruning: {keep: [{type: last_n, count: 1}]}
`,
	"more.d/b.yml": `jobs:
  - name: included_b
    type: snap
    filesystems: {"pool/inc_b<": true}
    snapshotting: {type: manual}
    pruning: {keep: [{type: last_n, count: 2}]}
`,
	"more.d/ignored.yaml": "not: [a config\n",
}

func init() {
	for _, j := range []string{"push", "pull"} {
		c := "jobs." + j + ".connect."
		for _, tr := range []string{"tcp", "tls"} {
			samples[c+tr+".address"] = sample{applied: []string{`"other.example.com:9999"`}, bad: `"no-port"`}
		}
		for _, tr := range []string{"tcp", "tls", "ssh+stdinserver"} {
			samples[c+tr+".dial_timeout"] = sample{applied: []string{"3s"}, bad: "soon"}
		}
		samples[c+"local.dial_timeout"] = sample{warns: "5s", bad: "soon"}
		samples[c+"tls.ca"] = sample{applied: []string{`"{{tmp}}/ca2.crt"`}, bad: "[a]"}
		samples[c+"tls.cert"] = sample{applied: []string{`"{{tmp}}/b.crt"`}, bad: "[a]", with: map[string]string{"key": `"{{tmp}}/b.key"`}}
		samples[c+"tls.key"] = sample{applied: []string{`"{{tmp}}/b.key"`}, bad: "[a]", with: map[string]string{"cert": `"{{tmp}}/b.crt"`}}
		samples[c+"tls.server_cn"] = sample{applied: []string{"other"}, bad: "[a]"}
		ssh := c + "ssh+stdinserver."
		samples[ssh+"host"] = sample{applied: []string{"other.example.com"}, bad: "[a]"}
		samples[ssh+"user"] = sample{applied: []string{"zrepl"}, bad: "[a]"}
		samples[ssh+"port"] = sample{applied: []string{"2222"}, bad: "70000"}
		samples[ssh+"identity_file"] = sample{applied: []string{"/other/identity"}, bad: "[a]"}
		samples[ssh+"options"] = sample{applied: []string{`["Compression=on"]`}, bad: "yes please"}
		samples[ssh+"transport_open_command"] = sample{warns: `[ssh, -p, "2222"]`, bad: "{a: b}"}
		samples[ssh+"ssh_command"] = sample{warns: "/usr/local/bin/ssh", bad: "[a]"}
		samples[c+"local.listener_name"] = sample{applied: []string{map[string]string{"push": "spare", "pull": "source_spare"}[j]}, bad: "nobody"}
		samples[c+"local.client_identity"] = sample{applied: []string{"other"}, bad: `"a/b"`}

		p := "jobs." + j + ".pruning."
		for _, side := range []string{"keep_sender", "keep_receiver"} {
			keepSamples(p + side + ".")
		}
		samples[p+"keep_sender.not_replicated.keep_snapshot_at_cursor"] = sample{applied: []string{"false"}, bad: "maybe"}
		r := "jobs." + j + ".replication."
		samples[r+"protection.initial"] = sample{applied: []string{"guarantee_incremental", "guarantee_nothing"}, bad: "always"}
		samples[r+"protection.incremental"] = sample{applied: []string{"guarantee_incremental", "guarantee_nothing"}, bad: "always"}
		samples[r+"concurrency.steps"] = sample{applied: []string{"3"}, bad: "0"}
		samples[r+"concurrency.size_estimates"] = sample{applied: []string{"8"}, bad: "x"}
		samples["jobs."+j+".conflict_resolution.initial_replication"] = sample{applied: []string{"all", "fail"}, bad: "newest"}
	}
	keepSamples("jobs.snap.pruning.keep.")
	for _, j := range []string{"sink", "source"} {
		s := "jobs." + j + ".serve."
		for _, tr := range []string{"tcp", "tls"} {
			samples[s+tr+".listen"] = sample{applied: []string{`":18899"`}, bad: `"no-port"`}
			samples[s+tr+".listen_freebind"] = sample{applied: []string{"true"}, bad: "maybe"}
		}
		samples[s+"tcp.clients"] = sample{applied: []string{`{"192.0.2.9": other}`}, bad: `{"not-an-ip": x}`}
		samples[s+"tls.ca"] = sample{applied: []string{`"{{tmp}}/ca2.crt"`}, bad: "[a]"}
		samples[s+"tls.cert"] = sample{applied: []string{`"{{tmp}}/b.crt"`}, bad: "[a]", with: map[string]string{"key": `"{{tmp}}/b.key"`}}
		samples[s+"tls.key"] = sample{applied: []string{`"{{tmp}}/b.key"`}, bad: "[a]", with: map[string]string{"cert": `"{{tmp}}/b.crt"`}}
		samples[s+"tls.handshake_timeout"] = sample{applied: []string{"3s"}, bad: "0s"}
		samples[s+"tls.client_cns"] = sample{applied: []string{"[other]"}, bad: `["a/b"]`}
		samples[s+"stdinserver.client_identities"] = sample{applied: []string{"[other]"}, bad: `["a/b"]`}
		samples[s+"local.listener_name"] = sample{applied: []string{"spare2"}, bad: "[a]"}
	}
	for _, j := range []string{"push", "source", "snap"} {
		samples["jobs."+j+".filesystems"] = sample{applied: []string{`{"pool/other<": true}`, `{"pool/a<": true, "pool/a/tmp": false}`}, bad: `{"a@b": true}`}
		sp := "jobs." + j + ".snapshotting.periodic."
		samples[sp+"prefix"] = sample{applied: []string{"auto_"}, bad: `"a/b"`}
		samples[sp+"interval"] = sample{applied: []string{"1h"}, bad: "0s"}
		samples[sp+"timestamp_format"] = sample{applied: []string{"human", "iso-8601", "unix-seconds"}, bad: `"2006/01"`}
		samples[sp+"timestamp_location"] = sample{applied: []string{"Europe/Berlin"}, bad: "Mars/Olympus", with: map[string]string{"timestamp_format": "iso-8601"}}
		cr := "jobs." + j + ".snapshotting.cron."
		samples[cr+"prefix"] = sample{applied: []string{"auto_"}, bad: `"a/b"`}
		samples[cr+"cron"] = sample{applied: []string{`"0 * * * *"`, `"15 0 * * * *"`}, bad: `"@daily"`}
		samples[cr+"timestamp_format"] = sample{applied: []string{"human", "iso-8601", "unix-seconds"}, bad: `"2006/01"`}
		samples[cr+"timestamp_location"] = sample{applied: []string{"Europe/Berlin"}, bad: "Mars/Olympus", with: map[string]string{"timestamp_format": "iso-8601"}}
		samples["jobs."+j+".snapshotting.manual.hooks"] = sample{refused: "[{type: command, path: /bin/true}]", bad: "[{type: command, path: /bin/true}]"}
		for _, h := range []string{sp + "hooks.", cr + "hooks."} {
			samples[h+"command.path"] = sample{applied: []string{"/bin/false"}, bad: "relative/hook"}
			for _, typ := range []string{"command", "postgres-checkpoint", "mysql-lock-tables"} {
				samples[h+typ+".timeout"] = sample{applied: []string{"5s"}, bad: "0s"}
				samples[h+typ+".err_is_fatal"] = sample{applied: []string{"true"}, bad: "maybe"}
				samples[h+typ+".filesystems"] = sample{applied: []string{`{"pool/other<": true}`}, bad: `{"a@b": true}`}
			}
			samples[h+"postgres-checkpoint.dsn"] = sample{applied: []string{`"host=127.0.0.1 port=2 dbname=db"`}, bad: `"port=notanumber"`}
			samples[h+"mysql-lock-tables.dsn"] = sample{applied: []string{`"zrepl@tcp(127.0.0.1:2)/"`}, bad: `"not a dsn"`}
		}
	}
	for _, j := range []string{"push", "source"} {
		s := "jobs." + j + ".send."
		samples[s+"bandwidth_limit.max"] = sample{applied: []string{"1 MiB", "100 Mb", "-1 B"}, bad: "10 parsecs"}
		samples[s+"bandwidth_limit.bucket_capacity"] = sample{applied: []string{"1 MiB"}, bad: "0 B"}
		samples[s+"step_holds"] = sample{refused: "{disable_incremental: true}", bad: "{disable_incremental: true}"}
	}
	for _, j := range []string{"push", "source"} {
		for _, k := range []string{"encrypted", "raw", "compressed", "large_blocks", "embedded_data", "send_properties", "backup_properties"} {
			samples["jobs."+j+".send."+k] = sample{applied: []string{"true"}, bad: "maybe"}
		}
		samples["jobs."+j+".send.saved"] = sample{refused: "true", bad: "maybe"}
	}
	for _, j := range []string{"sink", "pull"} {
		r := "jobs." + j + ".recv."
		samples["jobs."+j+".root_fs"] = sample{applied: []string{"backup/other"}, bad: `"/abs"`}
		samples[r+"properties.override"] = sample{applied: []string{`{compression: lz4}`}, bad: `{"bad name": x}`}
		samples[r+"properties.inherit"] = sample{applied: []string{`[canmount]`}, bad: `["bad name"]`}
		samples[r+"bandwidth_limit.max"] = sample{applied: []string{"1 MiB", "-5 B"}, bad: "10 MiBps"}
		samples[r+"bandwidth_limit.bucket_capacity"] = sample{applied: []string{"1 MiB"}, bad: "0 B", with: map[string]string{"max": "1 MiB"}}
		samples[r+"placeholder.encryption"] = sample{applied: []string{"off", "unspecified"}, bad: "maybe"}
	}
	samples["jobs.pull.interval"] = sample{applied: []string{"2h", "manual"}, bad: "sometimes"}
}

func keepSamples(p string) {
	samples[p+"grid.grid"] = sample{applied: []string{"1x1h(keep=all) | 48x1h"}, bad: "1x1h(keep=none)"}
	samples[p+"grid.regex"] = sample{applied: []string{`"^auto_"`}, bad: `"(["`}
	samples[p+"last_n.count"] = sample{applied: []string{"3"}, bad: "0"}
	samples[p+"last_n.regex"] = sample{applied: []string{`"^auto_"`}, bad: `"(["`}
	samples[p+"regex.regex"] = sample{applied: []string{`"^auto_"`}, bad: `"(["`}
	samples[p+"regex.negate"] = sample{applied: []string{"true"}, bad: "maybe"}
}

// keyEnv is the bases of the walk, the documents of testdata/keys, and
// a directory with the TLS files they name as {{tmp}}.
type keyEnv struct {
	bases map[string]string
	tmp   string
}

func newKeyEnv(t *testing.T) *keyEnv {
	t.Helper()
	tmp := t.TempDir()
	writeTestPKI(t, tmp)
	for name, content := range includedFiles {
		p := filepath.Join(tmp, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	}
	files, err := filepath.Glob(filepath.Join("testdata", "keys", "*.yml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	e := &keyEnv{bases: map[string]string{}, tmp: tmp}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		e.bases[filepath.Base(f)] = string(b)
	}
	return e
}

// writeTestPKI writes the TLS files the bases name: ca.crt and a.crt/a.key
// it signed, ca2.crt and b.crt/b.key (by ca).
func writeTestPKI(t *testing.T, dir string) {
	ca, ca2 := newTestCA(t), newTestCA(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), ca.pem, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca2.crt"), ca2.pem, 0o600))
	ca.issue(t, dir, "a", true)
	ca.issue(t, dir, "b", true)
}

// in replaces {{tmp}}.
func (e *keyEnv) in(doc string) string { return strings.ReplaceAll(doc, "{{tmp}}", e.tmp) }

// locate finds the mapping that holds the key of schema in doc: each
// segment names a key, and after a key whose value is a list, or a
// mapping with a type key, the next segment is the type of the item or
// mapping to go into (the first item, for the list's last segment).
func locate(doc *yaml.Node, schema string) (*yaml.Node, string, bool) {
	seg := strings.Split(schema, ".")
	n := doc
	if n.Kind == yaml.DocumentNode {
		n = n.Content[0]
	}
	for i := 0; i < len(seg)-1; {
		v := value(n, seg[i])
		i++
		if v == nil {
			return nil, "", false
		}
		switch v.Kind {
		case yaml.SequenceNode:
			if i == len(seg)-1 {
				if len(v.Content) == 0 {
					return nil, "", false
				}
				n = v.Content[0]
				continue
			}
			var found *yaml.Node
			for _, it := range v.Content {
				if tv := value(it, "type"); tv != nil && tv.Value == seg[i] {
					found = it
					break
				}
			}
			if found == nil {
				return nil, "", false
			}
			n, i = found, i+1
		case yaml.MappingNode:
			if tv := value(v, "type"); tv != nil && i < len(seg)-1 {
				if tv.Value != seg[i] {
					return nil, "", false
				}
				i++
			}
			n = v
		default:
			return nil, "", false
		}
	}
	return n, seg[len(seg)-1], n.Kind == yaml.MappingNode
}

func value(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// set sets key of mapping m to the YAML value v ("~" removes it).
func set(t *testing.T, m *yaml.Node, key, v string) {
	t.Helper()
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			break
		}
	}
	if v == "~" {
		return
	}
	var vn yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(v), &vn), "sample value %s", v)
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, vn.Content[0])
}

func render(t *testing.T, n *yaml.Node) string {
	if n == nil {
		return ""
	}
	b, err := yaml.Marshal(n)
	require.NoError(t, err)
	return string(b)
}

// keyCase is one document of the walk: a base with key set.
type keyCase struct {
	base string
	doc  string // with the key set to the value
	orig string // the base with only the sample's siblings set
	line int    // of the key in doc
	same bool   // the base has the key with this value already
}

// keyDoc sets schema's key to v in the first base that has its section;
// {{tmp}} is left for in.
func (e *keyEnv) keyDoc(t *testing.T, schema, v string, with map[string]string) (keyCase, bool) {
	t.Helper()
	bases := e.bases
	names := make([]string, 0, len(bases))
	for n := range bases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(bases[name]), &doc), name)
		m, key, ok := locate(&doc, schema)
		if !ok {
			continue
		}
		for k, wv := range with {
			set(t, m, k, wv)
		}
		orig, err := yaml.Marshal(&doc)
		require.NoError(t, err)
		old := render(t, value(m, key))
		set(t, m, key, v)
		same := old != "" && old == render(t, value(m, key))
		out, err := yaml.Marshal(&doc)
		require.NoError(t, err)
		var again yaml.Node
		require.NoError(t, yaml.Unmarshal(out, &again))
		m2, _, _ := locate(&again, schema)
		line := 0
		for i := 0; i+1 < len(m2.Content); i += 2 {
			if m2.Content[i].Value == key {
				line = m2.Content[i].Line
			}
		}
		return keyCase{base: name, doc: string(out), orig: string(orig), line: line, same: same}, true
	}
	return keyCase{}, false
}

// buildFlat is what the daemon command builds of a document, flattened, or
// the error that stops it.
func buildFlat(t *testing.T, doc string) (map[string]string, error) {
	t.Helper()
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		return nil, err
	}
	s, err := buildSystem(cfg, io.Discard)
	if err != nil {
		return nil, err
	}
	t.Cleanup(s.close)
	return inspect.Flatten(inspect.Tree(s, inspect.Options{Skip: notBuilt})), nil
}

// notBuilt leaves out the config itself (what the daemon made of it is
// the point), the model's pools (the ZFS, not a job, endpoint or
// transport) and gRPC's internals (counters that differ between two
// builds of one config). A filter is the exception: it is the matcher
// senders and hooks call.
func notBuilt(t reflect.Type) bool {
	switch {
	case t.PkgPath() == "zrepl.dev/zrepl/engine/config":
		return t.Kind() == reflect.Struct && t != reflect.TypeOf(config.Filter{}) && t != reflect.TypeOf(config.FilterRule{})
	case t.PkgPath() == "zrepl.dev/zrepl/zfsmodel", strings.HasPrefix(t.PkgPath(), "google.golang.org/grpc"):
		return true
	}
	return false
}

// TestEveryKeyReachesTheDaemon walks the key registry: every value a key
// applies changes what the daemon command builds (its jobs, endpoints,
// transports, logging outlets and backend), every value it refuses is an
// error naming the key and line, an inert key warns, and every key has a
// sample, so that a key added without a consumer fails here.
func TestEveryKeyReachesTheDaemon(t *testing.T) {
	env := newKeyEnv(t)
	for _, k := range config.Keys() {
		if k.Status == config.Structure {
			continue
		}
		t.Run(k.Schema, func(t *testing.T) {
			s, ok := samples[k.Schema]
			require.True(t, ok, "key %s has no sample: add one to samples (keys_test.go)", k.Schema)
			switch k.Status {
			case config.Applied:
				require.NotEmpty(t, s.applied, "an applied key needs values to apply")
			case config.Partial:
				require.NotEmpty(t, s.refused, "a partial key needs a value it refuses")
			case config.Inert:
				require.Empty(t, s.applied)
				require.NotEmpty(t, s.warns, "an inert key needs a value it warns about")
			}
			for _, v := range s.applied {
				c, ok := env.keyDoc(t, k.Schema, v, s.with)
				require.True(t, ok, "no base in testdata/keys has the section of %s: add one", k.Schema)
				require.False(t, c.same, "%s: %s: the sample %s is the base's value", c.base, k.Schema, v)
				variant, err := buildFlat(t, env.in(c.doc))
				require.NoError(t, err, "%s: %s: %s", c.base, k.Schema, v)
				orig, origErr := buildFlat(t, env.in(c.orig))
				if origErr != nil {
					// Setting the key is what makes the base work (a key
					// that must match its certificate).
					continue
				}
				again, err := buildFlat(t, env.in(c.orig))
				require.NoError(t, err)
				noise := map[string]bool{}
				for _, p := range inspect.Diff(orig, again) {
					noise[p] = true
				}
				var changed []string
				for _, p := range inspect.Diff(orig, variant) {
					if !noise[p] {
						changed = append(changed, p)
					}
				}
				assert.NotEmpty(t, changed, "%s: %s: %s changes nothing the daemon builds", c.base, k.Schema, v)
			}
			if k.Status == config.Partial {
				c, ok := env.keyDoc(t, k.Schema, s.refused, s.with)
				require.True(t, ok, "no base has the section of %s", k.Schema)
				_, err := config.Parse([]byte(env.in(c.doc)))
				assertNamesKey(t, err, k.Schema, c.line)
			}
			if k.Status == config.Inert {
				c, ok := env.keyDoc(t, k.Schema, s.warns, s.with)
				require.True(t, ok, "no base has the section of %s", k.Schema)
				cfg, err := config.Parse([]byte(env.in(c.doc)))
				require.NoError(t, err)
				var found bool
				for _, w := range cfg.Warnings {
					found = found || w.Line == c.line && strings.HasSuffix(w.Path, "."+k.Schema[strings.LastIndexByte(k.Schema, '.')+1:])
				}
				assert.True(t, found, "no warning at line %d: %v", c.line, cfg.Warnings)
			}
		})
	}
}

// assertNamesKey checks that err is a config error at the key of schema
// and line.
func assertNamesKey(t *testing.T, err error, schema string, line int) {
	t.Helper()
	var errs *config.Errors
	require.True(t, errors.As(err, &errs), "want a config error, got %v", err)
	key := schema[strings.LastIndexByte(schema, '.')+1:]
	for _, e := range errs.List {
		if e.Line == line && (strings.HasSuffix(e.Path, "."+key) || strings.Contains(e.Path, "."+key+"[") || e.Path == key || strings.HasPrefix(e.Path, key+"[")) {
			return
		}
	}
	t.Errorf("no error names %s at line %d: %v", key, line, fmt.Sprint(errs))
}
