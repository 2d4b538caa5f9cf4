package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mustParse(t *testing.T, y string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(doc(y)))
	require.NoError(t, err)
	return cfg
}

func parseErrors(t *testing.T, y string) []*Error {
	t.Helper()
	_, err := Parse([]byte(doc(y)))
	var errs *Errors
	require.True(t, errors.As(err, &errs), "want *Errors, got %v", err)
	return errs.List
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Path: "jobs[1].pruning.keep_sender[0]", Line: 23, Msg: `unknown rule type "lastn" (want grid, last_n, regex, not_replicated)`}
	assert.Equal(t, `jobs[1].pruning.keep_sender[0]: line 23: unknown rule type "lastn" (want grid, last_n, regex, not_replicated)`, e.Error())
	assert.Equal(t, "line 3: x", (&Error{Line: 3, Msg: "x"}).Error())
	assert.Equal(t, "x", (&Error{Msg: "x"}).Error())
	errs := &Errors{List: []*Error{e, {Path: "a", Line: 1, Msg: "b"}}}
	assert.Equal(t, e.Error()+"\na: line 1: b", errs.Error())
	var one *Error
	require.True(t, errors.As(errs, &one))
	assert.Same(t, e, one)
	assert.True(t, errors.Is(errs, ErrInvalid))
	assert.True(t, errors.Is(e, ErrInvalid))
}

func TestErrorsAreSortedByLine(t *testing.T) {
	// The cross-job error (line 9) is found after the per-job one (line 12)
	// but listed first.
	errs := parseErrors(t, `
		jobs:
		  - name: a
		    type: sink
		    serve: {type: local, listener_name: l}
		    root_fs: backup
		  - name: b
		    type: push
		    connect:
		      type: local
		      listener_name: elsewhere
		      client_identity: c
		    filesystems: {"pool<": nope}
		    snapshotting: {type: manual}
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		`)
	require.Len(t, errs, 2)
	assert.Equal(t, 10, errs[0].Line)
	assert.Equal(t, "jobs[1].connect.listener_name", errs[0].Path)
	assert.Equal(t, 12, errs[1].Line)
}

func TestTCPServeClients(t *testing.T) {
	cfg := mustParse(t, `
		jobs:
		  - name: sink
		    type: sink
		    serve:
		      type: tcp
		      listen: "[::1]:8888"
		      listen_freebind: false
		      clients:
		        "192.168.122.123": mysql01
		        "10.1.0.0/16": "client-*"
		        "fe80::1": v6host
		    root_fs: pool/sink
		`)
	s := cfg.Jobs[0].Serve
	assert.Equal(t, "[::1]:8888", s.Listen)
	assert.False(t, s.ListenFreebind)
	assert.Equal(t, []TCPClient{
		{netip.MustParsePrefix("192.168.122.123/32"), "mysql01"},
		{netip.MustParsePrefix("10.1.0.0/16"), "client-*"},
		{netip.MustParsePrefix("fe80::1/128"), "v6host"},
	}, s.Clients)
}

func TestConnectDefaultsAndOptions(t *testing.T) {
	cfg := mustParse(t, `
		jobs:
		  - name: p
		    type: pull
		    connect: {type: tcp, address: "10.23.42.23:8888", dial_timeout: 3s}
		    root_fs: pool/pulled
		    interval: manual
		    pruning:
		      keep_sender: [{type: regex, regex: ".*"}]
		      keep_receiver: [{type: last_n, count: 3, regex: "^zrepl_"}]
		  - name: q
		    type: pull
		    connect: {type: ssh+stdinserver, host: h, user: root, identity_file: /id}
		    root_fs: pool/pulled2
		    interval: 1d
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		`)
	p := cfg.Jobs[0]
	assert.Equal(t, 3*time.Second, p.Connect.DialTimeout)
	assert.Equal(t, PullInterval{Manual: true}, p.Interval)
	assert.Equal(t, ".*", p.Pruning.KeepSender[0].Regex.String())
	assert.Equal(t, "^zrepl_", p.Pruning.KeepReceiver[0].Regex.String())
	q := cfg.Jobs[1]
	assert.Equal(t, 22, q.Connect.Port)
	assert.Equal(t, DefaultDialTimeout, q.Connect.DialTimeout)
	assert.Equal(t, PullInterval{Every: 24 * time.Hour}, q.Interval)
	assert.NotNil(t, q.Pruning.KeepSender, "an empty rule list is kept as empty, not absent")
}

func TestGlobalSection(t *testing.T) {
	cfg := mustParse(t, `
		global:
		  zfs_backend: model
		  model_state_dir: /var/lib/zrepl/model
		  logging:
		    - {type: stdout, level: debug, format: json, time: false, color: false}
		    - {type: syslog, level: error, format: logfmt, facility: daemon, retry_interval: 1m30s}
		    - {type: tcp, level: info, format: json, address: "logs:514", tls: {ca: /ca, cert: /c, key: /k}}
		    - {type: tcp, level: warn, format: human, net: tcp6, address: "[::1]:514", retry_interval: 2s}
		  control: {sockpath: /run/z/control}
		  serve: {stdinserver: {sockdir: /run/z/stdin}}
		`)
	g := cfg.Global
	assert.Equal(t, BackendModel, g.ZFSBackend)
	assert.Equal(t, "/var/lib/zrepl/model", g.ModelStateDir)
	require.Len(t, g.Logging, 4)
	for i := range g.Logging {
		g.Logging[i].Pos = Pos{}
		if g.Logging[i].TLS != nil {
			g.Logging[i].TLS.Pos = Pos{}
		}
	}
	assert.Equal(t, []LogOutlet{
		{Type: "stdout", Level: LevelDebug, Format: FormatJSON},
		{Type: "syslog", Level: LevelError, Format: FormatLogfmt, Facility: "daemon", RetryInterval: 90 * time.Second},
		{Type: "tcp", Level: LevelInfo, Format: FormatJSON, Net: "tcp", Address: "logs:514", RetryInterval: DefaultRetryInterval, TLS: &LogTLS{CA: "/ca", Cert: "/c", Key: "/k"}},
		{Type: "tcp", Level: LevelWarn, Format: FormatHuman, Net: "tcp6", Address: "[::1]:514", RetryInterval: 2 * time.Second},
	}, g.Logging)
	assert.Equal(t, "/run/z/control", g.ControlSockPath)
	assert.Equal(t, "/run/z/stdin", g.StdinserverSockDir)
	assert.Empty(t, cfg.Jobs)

	def := mustParse(t, "jobs: []\n")
	assert.Equal(t, BackendReal, def.Global.ZFSBackend)
	assert.Equal(t, DefaultControlSockPath, def.Global.ControlSockPath)
	assert.Equal(t, DefaultStdinserverSockDir, def.Global.StdinserverSockDir)
	assert.Equal(t, int64(DefaultModelCheckpointEvery), def.Global.ModelCheckpointEvery)
}

func TestModelCheckpointEvery(t *testing.T) {
	doc := func(v string) string {
		return "global:\n  zfs_backend: model\n  model_state_dir: /m\n  model_checkpoint_every: " + v + "\n"
	}
	for v, want := range map[string]int64{"16 MiB": 16 << 20, "0 B": 0, "1 GiB": 1 << 30, `"512 KiB"`: 512 << 10} {
		assert.Equal(t, want, mustParse(t, doc(v)).Global.ModelCheckpointEvery, v)
	}
	for v, msg := range map[string]string{
		"lots":    `invalid size "lots"`,
		"-1 B":    `"-1 B" is not a whole number of bytes of at least 0`,
		"12 bit":  `"12 bit" is not a whole number of bytes`,
		"[64MiB]": "",
	} {
		errs := parseErrors(t, doc(v))
		require.NotEmpty(t, errs, v)
		assert.Equal(t, "global.model_checkpoint_every", errs[0].Path, v)
		assert.Equal(t, 4, errs[0].Line, v)
		assert.Contains(t, errs[0].Msg, msg, v)
	}
	errs := parseErrors(t, "global:\n  zfs_backend: model\n  model_checkpoint_every: 1 MiB\n")
	require.Len(t, errs, 1)
	assert.Equal(t, Error{"global.model_checkpoint_every", 3, "only meaningful with zfs_backend: model and a model_state_dir (checkpoints are saves of the model's state)", ""}, *errs[0])
}

func TestGlobalErrors(t *testing.T) {
	errs := parseErrors(t, `
		global:
		  model_state_dir: /x
		  logging:
		    - {type: stdout, level: info, format: human}
		    - {type: stdout, format: human, level: info}
		    - ~
		    - {type: syslog, retry_interval: 1d}
		    - {type: tcp, level: info, format: json, address: "logs", net: udp, tls: {cert: /c}}
		`)
	want := []wantErr{
		{"global.model_state_dir", 2, "only meaningful with zfs_backend: model"},
		{"global.logging[1]", 5, "a stdout outlet may appear only once (first at global.logging[0])"},
		{"global.logging[2]", 6, "want an outlet mapping, got null"},
		{"global.logging[3]", 7, `missing required key "level" (want error, warn, info or debug)`},
		{"global.logging[3]", 7, `missing required key "format" (want human, logfmt or json)`},
		{"global.logging[3].retry_interval", 7, `invalid duration "1d" (want e.g. 500ms, 10s, 1m30s; units ns, us, ms, s, m, h)`},
		{"global.logging[4].address", 8, `invalid address "logs" (want host:port, e.g. "backup.example.com:8888" or ":8888")`},
		{"global.logging[4].tls", 8, `missing required key "ca" (the CA of the log server's certificate)`},
		{"global.logging[4].tls", 8, `missing required key "key"`},
		{"global.logging[4].net", 8, `TLS needs a stream: net udp cannot carry it (want tcp, tcp4, tcp6 or unix)`},
	}
	require.Len(t, errs, len(want))
	for i := range want {
		assert.Equal(t, want[i], wantErr{errs[i].Path, errs[i].Line, errs[i].Msg})
	}
}

func TestMergeKeysAndAnchors(t *testing.T) {
	cfg := mustParse(t, `
		jobs:
		  - &base
		    name: first
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting: {type: periodic, prefix: snap_, interval: 1h, timestamp_format: "20060102"}
		    pruning:
		      keep: &keep [{type: last_n, count: 7}]
		  - <<: *base
		    name: second
		    filesystems: {"other<": true}
		`)
	require.Len(t, cfg.Jobs, 2)
	second := cfg.Jobs[1]
	assert.Equal(t, "second", second.Name)
	assert.Equal(t, 7, second.Pruning.Keep[0].Count)
	// Names use UTC: 23:00 at UTC-1 is the next day.
	assert.Equal(t, "snap_20250302", second.Snapshotting.SnapshotName(time.Date(2025, 3, 1, 23, 0, 0, 0, time.FixedZone("x", -3600))))
	assert.True(t, second.Filesystems.Match(mustPath("other/x")))
	assert.False(t, second.Filesystems.Match(mustPath("pool")))
}

func TestSnapshotNameFormats(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.UTC)
	for format, want := range map[string]string{
		"":             "z_20240506_070809_000",
		"dense":        "z_20240506_070809_000",
		"human":        "z_2024-05-06_07:08:09",
		"iso-8601":     "z_2024-05-06T07:08:09.123Z",
		"unix-seconds": fmt.Sprintf("z_%d", at.Unix()),
		"2006-01-02":   "z_2024-05-06",
	} {
		s := Snapshotting{Prefix: "z_", TimestampFormat: format}
		assert.Equal(t, want, s.SnapshotName(at), format)
	}
}

func TestTimestampFormatMustGiveValidNames(t *testing.T) {
	errs := parseErrors(t, `
		jobs:
		  - name: s
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting: {type: periodic, prefix: z_, interval: 1h, timestamp_format: "2006/01/02"}
		    pruning: {keep: [{type: regex, regex: ".*"}]}
		`)
	require.Len(t, errs, 1)
	assert.Equal(t, Error{"jobs[0].snapshotting.timestamp_format", 5, `snapshot names would be invalid: invalid snapshot name "z_2020/06/01": unexpected '/' at position 6 (want dense, human, iso-8601, unix-seconds or a Go time layout)`, ""}, *errs[0])
}

// A small document whose aliases name a large subtree many times must be
// refused quickly instead of walked in full.
func TestAliasExpansionIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("r: &r [")
	for i := 0; i < 3000; i++ {
		b.WriteString("{type: last_n, count: 1},")
	}
	b.WriteString("]\nj: &j {name: s, type: snap, filesystems: {\"p<\": true}, snapshotting: {type: manual}, pruning: {keep: *r}}\njobs: [")
	for i := 0; i < 3000; i++ {
		b.WriteString("*j,")
	}
	b.WriteString("]\n")
	errs := parseErrors(t, b.String())
	require.Len(t, errs, 1)
	assert.Equal(t, "document too complex: aliases expand to too many nodes", errs[0].Msg)
}

func TestParseNeverReturnsPartialConfig(t *testing.T) {
	cfg, err := Parse([]byte("jobs: [{name: a, type: sink, serve: {type: local, listener_name: x}, root_fs: b}]\nglobal: {zfs_backend: x}\n"))
	assert.Nil(t, cfg)
	assert.Error(t, err)
}

func TestListItemsAndDataKeysAreNamedExactly(t *testing.T) {
	errs := parseErrors(t, `
		jobs:
		  - name: s
		    type: sink
		    serve:
		      type: tls
		      listen: ":1"
		      ca: a
		      cert: b
		      key: c
		      client_cns:
		        - ~
		        - good
		        - "bad/cn"
		        - good
		    root_fs: pool/s
		    recv:
		      properties:
		        inherit: [ok, "", "bad name"]
		  - name: p
		    type: snap
		    filesystems:
		      "pool<": true
		      "pool<": false
		    snapshotting: {type: manual}
		    pruning: {keep: [{type: regex, regex: ".*"}]}
		`)
	want := []wantErr{
		{"jobs[0].serve.client_cns[0]", 11, "want a string, got null"},
		{"jobs[0].serve.client_cns[2]", 13, `client identity "bad/cn" must not contain '/' (it names one dataset below root_fs)`},
		{"jobs[0].serve.client_cns[3]", 14, `client identity "good" appears twice`},
		{"jobs[0].recv.properties.inherit[1]", 18, "must not be empty"},
		{"jobs[0].recv.properties.inherit[2]", 18, `invalid property name "bad name" (want a ZFS property name: letters, digits and any of :._-+, like compression or com.example:tag)`},
		{"jobs[1].filesystems[\"pool<\"]", 23, `duplicate key "pool<" (first at line 22)`},
	}
	got := make([]wantErr, len(errs))
	for i, e := range errs {
		got[i] = wantErr{e.Path, e.Line, e.Msg}
	}
	assert.Equal(t, want, got)
}

func TestParseFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "zrepl.yml")
	require.NoError(t, os.WriteFile(bad, []byte("global: {zfs_backend: zfs}\n"), 0o600))
	_, err := ParseFile(bad)
	assert.EqualError(t, err, bad+`: global.zfs_backend: line 1: unknown value "zfs" (want real, model)`)

	cfg, err := ParseFile(filepath.Join("..", "..", "examples", "quickstart.yml"))
	require.NoError(t, err)
	assert.Len(t, cfg.Jobs, 2)

	_, err = ParseFile(filepath.Join(dir, "missing.yml"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// An empty file is a config with the defaults and no jobs, as in zrepl.
func TestEmptyDocument(t *testing.T) {
	for _, doc := range []string{"", "# just a comment\n", "---\n", "~\n"} {
		cfg, err := Parse([]byte(doc))
		require.NoError(t, err, "%q", doc)
		assert.Empty(t, cfg.Jobs)
		assert.Equal(t, DefaultControlSockPath, cfg.Global.ControlSockPath)
		assert.Equal(t, []LogOutlet{DefaultLogOutlet()}, cfg.Global.Logging)
	}
}

func TestOneDocumentOnly(t *testing.T) {
	errs := parseErrors(t, "jobs: []\n---\njobs: []\n")
	require.Len(t, errs, 1)
	assert.Equal(t, Error{"", 2, "YAML syntax: a config is one YAML document, found another", ""}, *errs[0], "the line of the second ---")
	// A leading document marker is fine.
	mustParse(t, "---\njobs: []\n")
}

func TestServeStdinserverAndRecvLimits(t *testing.T) {
	cfg := mustParse(t, `
		jobs:
		  - name: s
		    type: sink
		    serve: {type: stdinserver, client_identities: [c1, c2]}
		    root_fs: pool/s
		    recv:
		      bandwidth_limit: {max: -1 B, bucket_capacity: 1 MiB}
		`)
	s := cfg.Jobs[0]
	assert.Equal(t, TransportStdinserver, s.Serve.Type)
	assert.Equal(t, []string{"c1", "c2"}, s.Serve.ClientIdentities)
	assert.Equal(t, BandwidthLimit{Max: -1, BucketCapacity: 1 << 20}, s.Recv.BandwidthLimit)
	assert.Nil(t, s.Recv.Override)
}

func TestTimestampLocation(t *testing.T) {
	cfg := mustParse(t, `
		jobs:
		  - name: s
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting: {type: periodic, prefix: z_, interval: 1h, timestamp_format: iso-8601, timestamp_location: Etc/GMT-2}
		    pruning: {keep: [{type: regex, regex: ".*"}]}
		`)
	s := cfg.Jobs[0].Snapshotting
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	assert.Equal(t, "z_2024-05-06T09:08:09.000_0200", s.SnapshotName(at), "'+' of the offset becomes '_' (zrepl's iso-8601 layout has no colon in the offset)")

	errs := parseErrors(t, `
		jobs:
		  - name: s
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting: {type: periodic, prefix: z_, interval: 1h, timestamp_location: Europe/Berlin}
		    pruning: {keep: [{type: regex, regex: ".*"}]}
		  - name: t
		    type: snap
		    filesystems: {"tank<": true}
		    snapshotting: {type: periodic, prefix: z_, interval: 1h, timestamp_format: unix-seconds, timestamp_location: Mars/Olympus}
		    pruning: {keep: [{type: regex, regex: ".*"}]}
		`)
	got := make([]wantErr, len(errs))
	for i, e := range errs {
		got[i] = wantErr{e.Path, e.Line, e.Msg}
	}
	assert.Equal(t, []wantErr{
		{"jobs[0].snapshotting.timestamp_location", 5, "timestamp_format dense has no time zone, so it needs timestamp_location UTC"},
		{"jobs[1].snapshotting.timestamp_location", 10, `unknown time zone "Mars/Olympus" (want UTC, Local or an IANA name like Europe/Berlin)`},
	}, got)
}

func TestServeAddressTakenByMonitoring(t *testing.T) {
	errs := parseErrors(t, `
		global:
		  monitoring: [{type: prometheus, listen: ":9811"}]
		jobs:
		  - name: s
		    type: sink
		    serve: {type: tcp, listen: ":9811", clients: {"10.0.0.1": a}}
		    root_fs: pool/s
		`)
	require.Len(t, errs, 1)
	assert.Equal(t, Error{"jobs[0].serve.listen", 6, `address ":9811" is already served by the prometheus monitoring endpoint`, ""}, *errs[0])
}

func TestKeepRuleConsiders(t *testing.T) {
	cfg := mustParse(t, `
		jobs:
		  - name: s
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting: {type: manual}
		    pruning:
		      keep:
		        - {type: regex, regex: "^zrepl_"}
		        - {type: regex, regex: "^zrepl_", negate: true}
		        - {type: last_n, count: 2}
		        - {type: grid, grid: 1x1h, regex: "^manual_"}
		`)
	keep := cfg.Jobs[0].Pruning.Keep
	for _, tc := range []struct {
		rule int
		name string
		want bool
	}{
		{0, "zrepl_1", true}, {0, "manual_1", false},
		{1, "zrepl_1", false}, {1, "manual_1", true},
		{2, "anything", true},
		{3, "manual_1", true}, {3, "zrepl_1", false},
	} {
		assert.Equal(t, tc.want, keep[tc.rule].Considers(tc.name), "rule %d on %s", tc.rule, tc.name)
	}
}
