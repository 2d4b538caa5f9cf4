package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// doc strips the common indentation of a test document, so the line
// numbers in the table are those seen in the source with the first line 1.
func doc(s string) string {
	s = strings.TrimPrefix(s, "\n")
	lines := strings.Split(s, "\n")
	indent := len(lines[0]) - len(strings.TrimLeft(lines[0], " \t"))
	for i, l := range lines {
		if len(l) >= indent {
			lines[i] = l[indent:]
		}
	}
	return strings.Join(lines, "\n")
}

var brokenConfigs = []struct {
	name string
	yaml string
	want []wantErr
}{
	{"unknown rule type", `
		jobs:
		  - name: p
		    type: push
		    connect: {type: local, listener_name: s, client_identity: c}
		    filesystems: {"pool<": true}
		    snapshotting: {type: manual}
		    pruning:
		      keep_sender:
		        - type: lastn
		          count: 3
		      keep_receiver: [{type: regex, regex: ".*"}]
		  - {name: s, type: sink, serve: {type: local, listener_name: s}, root_fs: backup}
		`, []wantErr{
		{"jobs[0].pruning.keep_sender[0]", 9, `unknown rule type "lastn" (want grid, last_n, regex, not_replicated)`},
	}},
	{"local replication into its own source", `
		jobs:
		  - name: loop
		    type: push
		    connect: {type: local, listener_name: l, client_identity: me}
		    filesystems: {"pool<": true, "pool/tmp<": false}
		    snapshotting: {type: manual}
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		  - name: sink
		    type: sink
		    serve: {type: local, listener_name: l}
		    root_fs: pool/backup
		  - name: nested
		    type: sink
		    serve: {type: local, listener_name: l3}
		    root_fs: pool/backup/deeper
		  - name: pull
		    type: pull
		    connect: {type: local, listener_name: l2, client_identity: me}
		    root_fs: tank/from_src
		    interval: manual
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		  - name: src
		    type: source
		    serve: {type: local, listener_name: l2}
		    filesystems: {"tank<": true}
		    snapshotting: {type: manual}
		`, []wantErr{
		{"jobs[0].filesystems", 5, `selects "pool/backup/me", where the local push/sink pair "loop"/"sink" receives: each run would replicate its own copies`},
		{"jobs[4].filesystems", 25, `selects "tank/from_src", where the local pull/source pair "pull"/"src" receives: each run would replicate its own copies`},
	}},
	{"odd values, hooks, merge of a non-mapping", `
		jobs:
		  - name: [not, a, string]
		    type: push
		    connect: {type: local, listener_name: l, client_identity: "bad@id"}
		    filesystems: {"pool<": true}
		    snapshotting:
		      type: periodic
		      prefix: z_
		      interval: 1h
		      hooks: [{type: command, path: bin/true}]
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		    send: {bandwidth_limit: {max: 0 B}, step_holds: {disable_incremental: true}}
		  - name: l
		    serve: {type: local, listener_name: l}
		  - name: s2
		    type: sink
		    serve: {type: stdinserver, client_identities: [c1]}
		    root_fs: pool/s2
		    recv: {bandwidth_limit: {max: -1 B, bucket_capacity: 1 MiB}, properties: {override: {compression: ~}}}
		  - <<: [1]
		    name: m
		`, []wantErr{
		{"jobs[0].name", 2, "want a string, got a list"},
		{"jobs[0].connect.client_identity", 4, `client identity "bad@id" is not a valid ZFS dataset name component: unexpected '@' in a dataset path`},
		{"jobs[0].connect.listener_name", 4, `no sink job in this config serves local listener "l" (want the listener_name of a sink job with serve type local; there is none)`},
		{"jobs[0].snapshotting.hooks[0].path", 10, `path "bin/true" must be absolute (hooks run without arguments; wrap a command line in a script)`},
		{"jobs[0].send.bandwidth_limit.max", 12, `rate "0 B" is below one byte per second (want at least 1 B, or -1 B for no limit)`},
		{"jobs[0].send.step_holds", 12, `key "step_holds" was replaced by replication.protection (want replication.protection.incremental: guarantee_incremental where step_holds.disable_incremental was true)`},
		{"jobs[1]", 13, `missing required key "type" (want push, sink, pull, source, snap)`},
		{"jobs[2].recv.properties.override[\"compression\"]", 19, "want a property value, got null (use inherit to drop a property)"},
		{"jobs[3]", 20, `merge key "<<" wants mappings`},
		{"jobs[3]", 20, `missing required key "type" (want push, sink, pull, source, snap)`},
	}},
	{"receivers writing into one subtree", `
		jobs:
		  - name: s1
		    type: sink
		    serve: {type: tls, listen: ":1", ca: c, cert: c, key: k, client_cns: [a, b]}
		    root_fs: pool/s
		  - name: s2
		    type: sink
		    serve: {type: stdinserver, client_identities: [c]}
		    root_fs: pool/s
		  - name: s3
		    type: sink
		    serve: {type: tcp, listen: ":2", clients: {"10.0.0.1": x}}
		    root_fs: pool/s/a
		  - name: p
		    type: pull
		    connect: {type: tcp, address: "h:1"}
		    root_fs: pool/s/c/deeper
		    interval: 1h
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		  - name: s4
		    type: sink
		    serve: {type: tcp, listen: ":3", clients: {"10.0.0.0/8": "host-*"}}
		    root_fs: pool
		`, []wantErr{
		{"jobs[2].root_fs", 13, `receives into "pool/s/a/x", which overlaps "pool/s/a" where sink job "s1" receives`},
		{"jobs[3].root_fs", 17, `receives into "pool/s/c/deeper", which overlaps "pool/s/c" where sink job "s2" receives`},
		{"jobs[4].root_fs", 23, `receives into "pool", which overlaps "pool/s/a" where sink job "s1" receives`},
	}},
	{"missing required sections", `
		jobs:
		  - name: p
		    type: push
		  - name: s
		    type: sink
		  - type: pull
		  - name: x@y
		    type: source
		    serve: {type: tcp, listen: ":99999", clients: {}}
		  - name: snappy
		    type: snap
		    filesystems: {}
		    snapshotting: {type: periodic}
		    pruning: {}
		`, []wantErr{
		{"jobs[0]", 2, `missing required key "connect" (a push job needs it)`},
		{"jobs[0]", 2, `missing required key "filesystems" (a push job needs it)`},
		{"jobs[0]", 2, `missing required key "snapshotting" (a push job needs it)`},
		{"jobs[0]", 2, `missing required key "pruning" (a push job needs it)`},
		{"jobs[1]", 4, `missing required key "serve" (a sink job needs it)`},
		{"jobs[1]", 4, `missing required key "root_fs" (a sink job needs it)`},
		{"jobs[2]", 6, `missing required key "name"`},
		{"jobs[2]", 6, `missing required key "connect" (a pull job needs it)`},
		{"jobs[2]", 6, `missing required key "root_fs" (a pull job needs it)`},
		{"jobs[2]", 6, `missing required key "interval" (a pull job needs it)`},
		{"jobs[2]", 6, `missing required key "pruning" (a pull job needs it)`},
		{"jobs[3].name", 7, `invalid job name "x@y": character '@' at position 1 is not allowed (use letters, digits, space and any of -_.:) (job names are embedded in ZFS hold tags and bookmark names)`},
		{"jobs[3]", 7, `missing required key "filesystems" (a source job needs it)`},
		{"jobs[3]", 7, `missing required key "snapshotting" (a source job needs it)`},
		{"jobs[3].serve.listen", 9, `invalid port "99999" in address ":99999" (want 1 to 65535)`},
		{"jobs[3].serve.clients", 9, "empty clients map: no client could connect"},
		{"jobs[4].filesystems", 12, `empty filter: no filesystem would be selected (e.g. {"pool/data<": true})`},
		{"jobs[4].snapshotting", 13, `missing required key "prefix" (periodic snapshots are named prefix + timestamp)`},
		{"jobs[4].snapshotting", 13, `missing required key "interval"`},
		{"jobs[4].pruning", 14, `missing required key "keep"`},
	}},
	{"unknown keys and types", `
		global:
		  zfs_backend: fake
		  logging:
		    - type: stdout
		      levle: info
		      level: info
		      format: human
		    - type: file
		  monitoring:
		    - type: prometheus
		      listen: ":9811"
		    - type: prometheus
		      listen: "9812"
		foo: 1
		jobs:
		  - name: p
		    type: pushy
		    wat: 1
		`, []wantErr{
		{"global.zfs_backend", 2, `unknown value "fake" (want real, model)`},
		{"global.logging[0].levle", 5, `unknown key "levle" (want type, level, format, time, color)`},
		{"global.logging[1]", 8, `unknown logging outlet type "file" (want stdout, syslog, tcp)`},
		{"global.monitoring[1]", 12, "the prometheus monitoring endpoint may be configured only once"},
		{"global.monitoring[1].listen", 13, `invalid address "9812" (want host:port, e.g. "backup.example.com:8888" or ":8888")`},
		{"foo", 14, `unknown key "foo" (want global, jobs, include)`},
		{"jobs[0]", 17, `unknown job type "pushy" (want push, sink, pull, source, snap)`},
	}},
	{"bad values in push and sink", `
		jobs:
		  - name: p
		    type: push
		    connect:
		      type: tls
		      address: host
		      ca: ""
		      cert: /c
		    filesystems: {"pool<": yes, "bad@name": true, "a<b": false, "": true, "<": maybe}
		    snapshotting:
		      type: periodic
		      prefix: "bad prefix/"
		      interval: 0s
		    pruning:
		      keep_sender:
		        - type: grid
		          grid: 1x1h(keep=none) | 24
		          regex: "(["
		        - type: last_n
		          count: 0
		      keep_receiver:
		        - type: not_replicated
		        - type: regex
		        - 5
		  - name: s
		    type: sink
		    serve:
		      type: tcp
		      listen: ":8888"
		      clients:
		        "10.0.0.1": "good"
		        "10.0.0.0/33": "bad net"
		        "10.1.0.0/16": "client-*"
		        "10.2.0.1": "a*"
		        "not-an-ip": x
		        "10.3.0.1": "has/slash"
		    root_fs: /backup
		`, []wantErr{
		{"jobs[0].connect", 5, `missing required key "key"`},
		{"jobs[0].connect", 5, `missing required key "server_cn" (the server certificate's expected common name)`},
		{"jobs[0].connect.address", 6, `invalid address "host" (want host:port, e.g. "backup.example.com:8888" or ":8888")`},
		{"jobs[0].connect.ca", 7, "must not be empty"},
		{"jobs[0].filesystems[\"bad@name\"]", 9, `invalid filter pattern "bad@name": invalid dataset "bad@name": unexpected '@' in a dataset path at position 3 (want a dataset name, ending in < for its subtree, like pool/data<)`},
		{"jobs[0].filesystems[\"a<b\"]", 9, `invalid filter pattern "a<b": '<' may only end a pattern (want a dataset name, ending in < for its subtree, like pool/data<)`},
		{"jobs[0].filesystems[\"\"]", 9, `empty filter pattern (use "<" to match every filesystem) (want a dataset name, ending in < for its subtree, like pool/data<)`},
		{"jobs[0].filesystems[\"<\"]", 9, `want true (include) or false (exclude), got "maybe"`},
		{"jobs[0].snapshotting.prefix", 12, `snapshot names would be invalid: invalid snapshot name "bad prefix/20200601_000000_000": unexpected '/' at position 10 (want letters, digits and any of -_.: and space)`},
		{"jobs[0].snapshotting.interval", 13, `duration "0s" must be positive`},
		{"jobs[0].pruning.keep_sender[0].grid", 17, `grid spec term 1 "1x1h(keep=none)": keep=none: want a positive integer or all`},
		{"jobs[0].pruning.keep_sender[0].regex", 18, "invalid regex \"([\": error parsing regexp: missing closing ]: `[` (want a regular expression in Go's RE2 syntax)"},
		{"jobs[0].pruning.keep_sender[1].count", 20, "want an integer from 1 to 2147483647, got 0"},
		{"jobs[0].pruning.keep_receiver[0]", 22, "rule not_replicated only makes sense in keep_sender"},
		{"jobs[0].pruning.keep_receiver[1]", 23, `missing required key "regex"`},
		{"jobs[0].pruning.keep_receiver[2]", 24, `want a mapping, got "5"`},
		{"jobs[1].serve.clients[\"10.0.0.0/33\"]", 32, `invalid network "10.0.0.0/33" (want an IP address or CIDR network like 10.0.0.0/24)`},
		{"jobs[1].serve.clients[\"10.2.0.1\"]", 34, `client identity "a*": a single '*' (standing for the client's address) is only allowed for networks`},
		{"jobs[1].serve.clients[\"not-an-ip\"]", 35, `invalid IP address "not-an-ip" (want an IP address or CIDR network like 10.0.0.0/24)`},
		{"jobs[1].serve.clients[\"10.3.0.1\"]", 36, `client identity "has/slash" must not contain '/' (it names one dataset below root_fs)`},
		{"jobs[1].root_fs", 37, `invalid dataset "/backup": leading slash at position 0 (want a dataset name like pool/backup)`},
	}},
	{"cross-job checks", `
		jobs:
		  - name: a
		    type: push
		    connect: {type: local, listener_name: nowhere, client_identity: c}
		    filesystems: {"pool<": true}
		    snapshotting: {type: manual}
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		  - name: a
		    type: sink
		    serve: {type: local, listener_name: l}
		    root_fs: backup
		  - name: b
		    type: source
		    serve: {type: local, listener_name: l}
		    filesystems: {"pool<": true}
		    snapshotting: {type: manual}
		  - name: c
		    type: pull
		    connect: {type: local, listener_name: l2, client_identity: c}
		    root_fs: backup
		    interval: manual
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		  - name: d
		    type: sink
		    serve: {type: local, listener_name: l2}
		    root_fs: backup2
		  - name: e
		    type: sink
		    serve: {type: tcp, listen: ":1", clients: {"1.2.3.4": x}}
		    root_fs: b3
		  - name: f
		    type: sink
		    serve: {type: tcp, listen: ":1", clients: {"1.2.3.4": x}}
		    root_fs: b4
		`, []wantErr{
		{"jobs[0].connect.listener_name", 4, `no sink job in this config serves local listener "nowhere" (want one of l, l2)`},
		{"jobs[1].name", 8, `duplicate job name "a" (first used by jobs[0] at line 2)`},
		{"jobs[2].serve.listener_name", 14, `local listener "l" is already served by job "a"`},
		{"jobs[3].connect.listener_name", 19, `local listener "l2" is served by sink job "d", but a pull job needs a source job`},
		{"jobs[6].serve.listen", 33, `address ":1" is already served by job "e"`},
	}},
	{"YAML syntax error", `
		jobs:
		  - name: a
		   type: push
		`, []wantErr{
		{"", 1, "YAML syntax: did not find expected '-' indicator"},
	}},
	{"unterminated flow list", `
		jobs: [
		`, []wantErr{
		{"", 1, "YAML syntax: did not find expected node content"},
	}},
	{"wrong node kinds", `
		global: []
		jobs:
		  name: x
		`, []wantErr{
		{"global", 1, "want a mapping, got a list"},
		{"jobs", 3, "want a list, got a mapping"},
	}},
	{"send recv replication options", `
		jobs:
		  - name: a
		    type: source
		    serve: {type: stdinserver, client_identities: [a, a, "b/c"]}
		    filesystems: {"pool<": true}
		    snapshotting: {type: cron, cron: "* * * * *"}
		    send:
		      encrypted: "true"
		      bandwidth_limit: {max: 10 parsecs, bucket_capacity: 0 B}
		      steps: 1
		  - name: b
		    type: sink
		    serve: {type: local, listener_name: x}
		    root_fs: b
		    recv:
		      properties:
		        override: {"bad name": 1, mountpoint: none}
		        inherit: [mountpoint, ok]
		      placeholder: {encryption: maybe}
		  - name: c
		    type: pull
		    connect: {type: ssh+stdinserver, host: h, user: u, port: 0}
		    root_fs: b2
		    interval: 1y
		    pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
		    replication:
		      protection: {initial: guarantee_incremental_replication}
		      concurrency: {steps: 0, size_estimates: x}
		    conflict_resolution: {initial_replication: newest}
		`, []wantErr{
		{"jobs[0].serve.client_identities[1]", 4, `client identity "a" appears twice`},
		{"jobs[0].serve.client_identities[2]", 4, `client identity "b/c" must not contain '/' (it names one dataset below root_fs)`},
		{"jobs[0].snapshotting", 6, `missing required key "prefix" (cron snapshots are named prefix + timestamp)`},
		{"jobs[0].send.encrypted", 8, `want true or false, got "true"`},
		{"jobs[0].send.bandwidth_limit.max", 9, `invalid size "10 parsecs" (want a number and a unit: B (bytes) or b, bit (bits), after K, M, G, T or Ki, Mi, Gi, Ti, e.g. 512 KiB, 23.5 MiB, 100 Mb)`},
		{"jobs[0].send.bandwidth_limit.bucket_capacity", 9, `bucket capacity "0 B" must be at least 1 B (want e.g. 128 KiB)`},
		{"jobs[0].send.steps", 10, `unknown key "steps" (want encrypted, raw, send_properties, backup_properties, large_blocks, compressed, embedded_data, saved, bandwidth_limit)`},
		{"jobs[1].recv.properties.override[\"bad name\"]", 17, `invalid property name "bad name" (want a ZFS property name: letters, digits and any of :._-+, like compression or com.example:tag)`},
		{"jobs[1].recv.properties.inherit[0]", 18, `property "mountpoint" is both overridden and inherited`},
		{"jobs[1].recv.placeholder.encryption", 19, `unknown value "maybe" (want unspecified, off, inherit)`},
		{"jobs[2].connect.port", 22, "want an integer from 1 to 65535, got 0"},
		{"jobs[2].connect", 22, `missing required key "identity_file"`},
		{"jobs[2].interval", 24, `invalid interval "1y" (want a duration like 15m or 1d, or manual)`},
		{"jobs[2].replication.protection.initial", 27, `unknown value "guarantee_incremental_replication" (want guarantee_resumability, guarantee_incremental, guarantee_nothing)`},
		{"jobs[2].replication.concurrency.steps", 28, "want an integer from 1 to 65536, got 0"},
		{"jobs[2].replication.concurrency.size_estimates", 28, `want an integer, got "x"`},
		{"jobs[2].conflict_resolution.initial_replication", 29, `unknown value "newest" (want most_recent, all, fail)`},
	}},
	{"duplicate keys nulls merge keys", `
		defaults: &keep
		  - type: last_n
		    count: 5
		jobs:
		  - name: a
		    name: b
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting: &snap {type: periodic, prefix: z_, interval: 1d}
		    pruning:
		      keep: *keep
		  - ~
		  - <<: {type: snap, name: c, filesystems: {"pool<": true}, snapshotting: *snap, pruning: {keep: *keep}}
		    name: d
		    [x]: 1
		`, []wantErr{
		{"defaults", 1, `unknown key "defaults" (want global, jobs, include)`},
		{"jobs[0].name", 6, `duplicate key "name" (first at line 5)`},
		{"jobs[1]", 12, "want a job mapping, got null"},
		{"jobs[2]", 15, "mapping keys must be strings"},
	}},
	{"hooks", `
		jobs:
		  - name: s
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting:
		      type: periodic
		      prefix: z_
		      interval: 1h
		      hooks:
		        - type: command
		        - type: command
		          path: /bin/true
		          timeout: 10
		          err_is_fatal: maybe
		          filesystems: {}
		          dsn: "x"
		        - type: postgres-checkpoint
		          dsn: "host=db port=notaport password=s3cret"
		        - type: mysql-lock-tables
		          dsn: "no slash"
		          filesystems: {"pool/mysql": true}
		          path: /bin/true
		        - type: mysql-lock-tables
		          filesystems: {"pool/mysql": true}
		        - type: lvm-snapshot
		        - ~
		        - [a]
		    pruning: {keep: [{type: regex, regex: ".*"}]}
		  - name: m
		    type: snap
		    filesystems: {"pool<": true}
		    snapshotting: {type: manual, hooks: []}
		    pruning: {keep: [{type: regex, regex: ".*"}]}
		`, []wantErr{
		{"jobs[0].snapshotting.hooks[0]", 10, `missing required key "path" (the executable to run before and after each snapshot)`},
		{"jobs[0].snapshotting.hooks[1].timeout", 13, `invalid duration "10" (want e.g. 30s, 10m, 2h, 1d, 1w)`},
		{"jobs[0].snapshotting.hooks[1].err_is_fatal", 14, `want true or false, got "maybe"`},
		{"jobs[0].snapshotting.hooks[1].filesystems", 15, `empty filter: no filesystem would be selected (e.g. {"pool/data<": true})`},
		{"jobs[0].snapshotting.hooks[1].dsn", 16, `unknown key "dsn" (want type, err_is_fatal, timeout, filesystems, path)`},
		{"jobs[0].snapshotting.hooks[2]", 17, `missing required key "filesystems" (a postgres-checkpoint hook runs only for the filesystems it names)`},
		{"jobs[0].snapshotting.hooks[2].dsn", 18, `invalid dsn: invalid port (want a libpq connection string like "host=db port=5432 user=zrepl dbname=app" or a postgres:// URL)`},
		{"jobs[0].snapshotting.hooks[3].dsn", 20, `invalid dsn: missing the slash separating the database name (want a DSN like "user:password@tcp(db:3306)/")`},
		{"jobs[0].snapshotting.hooks[3].path", 22, `unknown key "path" (want type, err_is_fatal, timeout, filesystems, dsn)`},
		{"jobs[0].snapshotting.hooks[4]", 23, `missing required key "dsn" (how to connect to the database)`},
		{"jobs[0].snapshotting.hooks[5]", 25, `unknown hook type "lvm-snapshot" (want command, postgres-checkpoint, mysql-lock-tables)`},
		{"jobs[0].snapshotting.hooks[6]", 26, "want a hook mapping, got null"},
		{"jobs[0].snapshotting.hooks[7]", 27, "want a mapping, got a list"},
		{"jobs[1].snapshotting.hooks", 32, `key "hooks" needs periodic or cron snapshotting: manual snapshotting takes no snapshots to run hooks around (want snapshotting type periodic or cron, or no hooks)`},
	}},
}

// wantErr is an Error of the config file itself.
type wantErr struct {
	Path string
	Line int
	Msg  string
}

func TestBrokenConfigs(t *testing.T) {
	for _, tc := range brokenConfigs {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(doc(tc.yaml)))
			require.Error(t, err)
			assert.Nil(t, cfg)
			assert.True(t, errors.Is(err, ErrInvalid))
			var errs *Errors
			require.True(t, errors.As(err, &errs))
			got := make([]wantErr, len(errs.List))
			for i, e := range errs.List {
				got[i] = wantErr{e.Path, e.Line, e.Msg}
				assert.Empty(t, e.File, "no file is included")
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s\ndocument:\n%s", diff, doc(tc.yaml))
			}
		})
	}
}
