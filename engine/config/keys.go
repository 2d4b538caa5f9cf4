package config

import (
	"fmt"
	"sort"
	"strings"
)

// KeyStatus is what the daemon does with a key of the config.
type KeyStatus int

const (
	// Applied: every valid value reaches the daemon.
	Applied KeyStatus = iota + 1
	// Partial: the values in Allowed reach the daemon; any other value is
	// refused with an error naming the key, its line and Why.
	Partial
	// Inert: accepted and without effect, with a warning saying Why; only
	// for keys zrepl itself accepts and ignores.
	Inert
	// Structure: a section whose own keys are registered, or the type key
	// that selects which keys a section has.
	Structure
)

func (s KeyStatus) String() string {
	switch s {
	case Applied:
		return "applied"
	case Partial:
		return "partial"
	case Inert:
		return "inert"
	case Structure:
		return "structure"
	}
	return fmt.Sprintf("KeyStatus(%d)", int(s))
}

// KeyInfo is one key of the registry.
type KeyInfo struct {
	// Schema is the key's place in the config: its parent keys and the
	// types that select them, joined by dots, as in
	// "jobs.push.connect.tls.ca" or "global.logging.syslog.facility". The
	// type segment follows the key whose mapping (or list of mappings)
	// has the type key.
	Schema string
	Status KeyStatus
	// Allowed lists the values a Partial key accepts (booleans as true and
	// false, whatever spelling the document uses).
	Allowed []string
	// Why says why other values are refused (Partial) or why the key does
	// nothing (Inert).
	Why string
}

// The registry lists every key the parser reads, each with what the
// daemon does with it. The parser refuses to read a key that is not here
// (an internal error: see mapping.know), refuses the values a Partial key
// does not allow and warns about Inert keys, all in one place (mapping.get),
// so that a key is never accepted and ignored. cmd/zrepl's key walk
// (TestEveryKeyReachesTheDaemon) proves that each Applied key and each
// allowed value changes what the daemon builds.
//
// Helpers that make a refused value work change its entry to Applied (or
// widen Allowed) and give the walk a sample value of it.
//
// Entries are written with {a,b} alternatives, expanded by init.
var registry = map[string]KeyInfo{}

const (
	// savedRefused: zrepl adds -S to the zfs send of every step, with
	// the step's snapshot (and -i); OpenZFS 2.1.11 refuses both ("saved
	// send must specify the dataset with partially-received state",
	// "incompatible flags combined with saved send flag"), so with it
	// every send of the job fails. 2.3.9 says the same.
	savedRefused = "would make every send fail: zfs send -S sends only a partially received filesystem's state, " +
		"never a snapshot or an incremental, and OpenZFS refuses it with either"
)

var registryEntries = []KeyInfo{
	{Schema: "jobs", Status: Structure},
	{Schema: "global", Status: Structure},
	{Schema: "include", Status: Applied},

	{Schema: "global.logging", Status: Structure},
	{Schema: "global.logging.type", Status: Structure},
	{Schema: "global.logging.{stdout,syslog,tcp}.{level,format}", Status: Applied},
	{Schema: "global.logging.stdout.{time,color}", Status: Applied},
	{Schema: "global.logging.syslog.{facility,retry_interval}", Status: Applied},
	{Schema: "global.logging.tcp.{address,net,retry_interval}", Status: Applied},
	{Schema: "global.logging.tcp.tls", Status: Structure},
	{Schema: "global.logging.tcp.tls.{ca,cert,key}", Status: Applied},
	{Schema: "global.monitoring", Status: Structure},
	{Schema: "global.monitoring.type", Status: Structure},
	{Schema: "global.monitoring.prometheus.listen", Status: Applied},
	{Schema: "global.monitoring.prometheus.listen_freebind", Status: Applied},
	{Schema: "global.zfs_backend", Status: Applied},
	{Schema: "global.model_state_dir", Status: Applied},
	{Schema: "global.model_checkpoint_every", Status: Applied},
	{Schema: "global.control", Status: Structure},
	{Schema: "global.control.sockpath", Status: Applied},
	{Schema: "global.serve", Status: Structure},
	{Schema: "global.serve.stdinserver", Status: Structure},
	{Schema: "global.serve.stdinserver.sockdir", Status: Applied},

	{Schema: "jobs.name", Status: Applied},
	{Schema: "jobs.type", Status: Structure},

	// connect
	{Schema: "jobs.{push,pull}.connect", Status: Structure},
	{Schema: "jobs.{push,pull}.connect.type", Status: Structure},
	{Schema: "jobs.{push,pull}.connect.{tcp,tls}.address", Status: Applied},
	{Schema: "jobs.{push,pull}.connect.{tcp,tls,ssh+stdinserver}.dial_timeout", Status: Applied},
	{Schema: "jobs.{push,pull}.connect.local.dial_timeout", Status: Inert,
		Why: "does nothing: the local transport reaches its peer job inside the daemon, there is nothing to dial"},
	{Schema: "jobs.{push,pull}.connect.tls.{ca,cert,key,server_cn}", Status: Applied},
	{Schema: "jobs.{push,pull}.connect.ssh+stdinserver.{host,user,port,identity_file,options}", Status: Applied},
	{Schema: "jobs.{push,pull}.connect.ssh+stdinserver.{transport_open_command,ssh_command}", Status: Inert,
		Why: "does nothing, in zrepl too: the daemon runs ssh from PATH with user, host, port, identity_file and options"},
	{Schema: "jobs.{push,pull}.connect.local.{listener_name,client_identity}", Status: Applied},

	// serve
	{Schema: "jobs.{sink,source}.serve", Status: Structure},
	{Schema: "jobs.{sink,source}.serve.type", Status: Structure},
	{Schema: "jobs.{sink,source}.serve.{tcp,tls}.listen", Status: Applied},
	{Schema: "jobs.{sink,source}.serve.{tcp,tls}.listen_freebind", Status: Applied},
	{Schema: "jobs.{sink,source}.serve.tls.handshake_timeout", Status: Applied},
	{Schema: "jobs.{sink,source}.serve.tcp.clients", Status: Applied},
	{Schema: "jobs.{sink,source}.serve.tls.{ca,cert,key,client_cns}", Status: Applied},
	{Schema: "jobs.{sink,source}.serve.stdinserver.client_identities", Status: Applied},
	{Schema: "jobs.{sink,source}.serve.local.listener_name", Status: Applied},

	{Schema: "jobs.{push,source,snap}.filesystems", Status: Applied},
	{Schema: "jobs.{sink,pull}.root_fs", Status: Applied},
	{Schema: "jobs.pull.interval", Status: Applied},

	// snapshotting
	{Schema: "jobs.{push,source,snap}.snapshotting", Status: Structure},
	{Schema: "jobs.{push,source,snap}.snapshotting.type", Status: Structure},
	{Schema: "jobs.{push,source,snap}.snapshotting.periodic.{prefix,interval,timestamp_format,timestamp_location}", Status: Applied},
	{Schema: "jobs.{push,source,snap}.snapshotting.cron.{prefix,cron,timestamp_format,timestamp_location}", Status: Applied},
	{Schema: "jobs.{push,source,snap}.snapshotting.{periodic,cron}.hooks", Status: Structure},
	{Schema: "jobs.{push,source,snap}.snapshotting.{periodic,cron}.hooks.type", Status: Structure},
	{Schema: "jobs.{push,source,snap}.snapshotting.{periodic,cron}.hooks.command.{path,timeout,err_is_fatal,filesystems}", Status: Applied},
	{Schema: "jobs.{push,source,snap}.snapshotting.{periodic,cron}.hooks.{postgres-checkpoint,mysql-lock-tables}.{dsn,timeout,err_is_fatal,filesystems}", Status: Applied},
	{Schema: "jobs.{push,source,snap}.snapshotting.manual.hooks", Status: Partial,
		Why: "needs periodic or cron snapshotting: manual snapshotting takes no snapshots to run hooks around (want snapshotting type periodic or cron, or no hooks)"},

	// pruning
	{Schema: "jobs.{push,pull,snap}.pruning", Status: Structure},
	{Schema: "jobs.{push,pull}.pruning.{keep_sender,keep_receiver}", Status: Structure},
	{Schema: "jobs.snap.pruning.keep", Status: Structure},
	{Schema: "jobs.{push,pull}.pruning.{keep_sender,keep_receiver}.type", Status: Structure},
	{Schema: "jobs.snap.pruning.keep.type", Status: Structure},
	{Schema: "jobs.{push,pull}.pruning.{keep_sender,keep_receiver}.grid.{grid,regex}", Status: Applied},
	{Schema: "jobs.{push,pull}.pruning.{keep_sender,keep_receiver}.last_n.{count,regex}", Status: Applied},
	{Schema: "jobs.{push,pull}.pruning.{keep_sender,keep_receiver}.regex.{regex,negate}", Status: Applied},
	{Schema: "jobs.{push,pull}.pruning.keep_sender.not_replicated.keep_snapshot_at_cursor", Status: Applied},
	{Schema: "jobs.snap.pruning.keep.grid.{grid,regex}", Status: Applied},
	{Schema: "jobs.snap.pruning.keep.last_n.{count,regex}", Status: Applied},
	{Schema: "jobs.snap.pruning.keep.regex.{regex,negate}", Status: Applied},

	// send
	{Schema: "jobs.{push,source}.send", Status: Structure},
	{Schema: "jobs.{push,source}.send.bandwidth_limit", Status: Structure},
	{Schema: "jobs.{push,source}.send.bandwidth_limit.{max,bucket_capacity}", Status: Applied},
	{Schema: "jobs.{push,source}.send.{encrypted,raw,compressed,large_blocks,embedded_data,send_properties,backup_properties}", Status: Applied},
	{Schema: "jobs.{push,source}.send.saved", Status: Partial, Allowed: []string{"false"}, Why: savedRefused},
	{Schema: "jobs.{push,source}.send.step_holds", Status: Partial,
		Why: "was replaced by replication.protection (want replication.protection.incremental: guarantee_incremental where step_holds.disable_incremental was true)"},

	// recv
	{Schema: "jobs.{sink,pull}.recv", Status: Structure},
	{Schema: "jobs.{sink,pull}.recv.properties", Status: Structure},
	{Schema: "jobs.{sink,pull}.recv.properties.{override,inherit}", Status: Applied},
	{Schema: "jobs.{sink,pull}.recv.bandwidth_limit", Status: Structure},
	{Schema: "jobs.{sink,pull}.recv.bandwidth_limit.{max,bucket_capacity}", Status: Applied},
	{Schema: "jobs.{sink,pull}.recv.placeholder", Status: Structure},
	{Schema: "jobs.{sink,pull}.recv.placeholder.encryption", Status: Applied},

	// replication
	{Schema: "jobs.{push,pull}.replication", Status: Structure},
	{Schema: "jobs.{push,pull}.replication.protection", Status: Structure},
	{Schema: "jobs.{push,pull}.replication.protection.{initial,incremental}", Status: Applied},
	{Schema: "jobs.{push,pull}.replication.concurrency", Status: Structure},
	{Schema: "jobs.{push,pull}.replication.concurrency.steps", Status: Applied},
	{Schema: "jobs.{push,pull}.replication.concurrency.size_estimates", Status: Applied},
	{Schema: "jobs.{push,pull}.conflict_resolution", Status: Structure},
	{Schema: "jobs.{push,pull}.conflict_resolution.initial_replication", Status: Applied},
}

func init() {
	for _, e := range registryEntries {
		for _, s := range expandBraces(e.Schema) {
			if _, dup := registry[s]; dup {
				panic("config: key registered twice: " + s)
			}
			k := e
			k.Schema = s
			registry[s] = k
		}
	}
}

// expandBraces expands each {a,b,...} of s, left to right.
func expandBraces(s string) []string {
	open := strings.IndexByte(s, '{')
	if open < 0 {
		return []string{s}
	}
	end := strings.IndexByte(s[open:], '}')
	if end < 0 {
		panic("config: unbalanced { in key registry: " + s)
	}
	end += open
	var out []string
	for _, alt := range strings.Split(s[open+1:end], ",") {
		out = append(out, expandBraces(s[:open]+alt+s[end+1:])...)
	}
	return out
}

// Keys returns every registered key, ordered by schema.
func Keys() []KeyInfo {
	out := make([]KeyInfo, 0, len(registry))
	for _, k := range registry {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Schema < out[j].Schema })
	return out
}

// LookupKey returns the registry entry of schema.
func LookupKey(schema string) (KeyInfo, bool) {
	k, ok := registry[schema]
	return k, ok
}
