package config

import (
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// Config is a parsed, validated daemon configuration with defaults applied.
type Config struct {
	Global Global
	Jobs   []Job
	// Warnings are problems that do not stop the daemon, such as keys
	// that do nothing (zrepl accepts them too); configcheck prints them.
	Warnings []*Error
}

// Job returns the job called name.
func (c *Config) Job(name string) (*Job, bool) {
	for i := range c.Jobs {
		if c.Jobs[i].Name == name {
			return &c.Jobs[i], true
		}
	}
	return nil, false
}

// Backend selects the implementation of zfs.ZFS the daemon runs on.
type Backend string

const (
	BackendReal  Backend = "real"  // the zfs CLI (zfsreal)
	BackendModel Backend = "model" // the in-memory model (zfsmodel)
)

type Global struct {
	Logging    []LogOutlet // default: one stdout outlet, level warn, format human
	Monitoring []Monitoring
	// ZFSBackend is ours, not zrepl's; default BackendReal.
	ZFSBackend Backend
	// ModelStateDir is where the model backend persists its pools; empty
	// keeps them in memory only. Only valid with BackendModel.
	ModelStateDir string
	// ModelCheckpointEvery is how many bytes of a resumable receive the
	// model backend takes between saves of its partial state
	// (global.model_checkpoint_every; 0 turns them off). Only valid with
	// a ModelStateDir. Default DefaultModelCheckpointEvery.
	ModelCheckpointEvery int64
	// ControlSockPath is the daemon's control socket (global.control.sockpath).
	ControlSockPath string
	// StdinserverSockDir holds the ssh+stdinserver sockets
	// (global.serve.stdinserver.sockdir).
	StdinserverSockDir string
}

// DefaultModelCheckpointEvery: a daemon on the model backend killed
// mid-stream resumes from its last checkpoint, as a real pool resumes from
// its last transaction group sync. Real ZFS syncs every 5 s or once a
// fifth of zfs_dirty_data_max (10% of RAM) is dirty: some hundred MiB on a
// small host. A save writes the whole model (JSON, fsync): 10 to 40 ms
// while a GiB arrives into a small model (BenchmarkModelReceiveCheckpoints
// in cmd/zrepl), the time the daemon streams a few MiB over loopback at a
// few hundred MiB/s. 64 MiB (16 saves per GiB) keeps that near a tenth of
// the stream's time and re-sends at most 64 MiB after a kill. The save
// grows with the model's whole state, so on a model of many GiB the share
// grows too.
const DefaultModelCheckpointEvery = 64 << 20

const (
	DefaultControlSockPath    = "/var/run/zrepl/control"
	DefaultStdinserverSockDir = "/var/run/zrepl/stdinserver"
)

type LogLevel string

const (
	LevelError LogLevel = "error"
	LevelWarn  LogLevel = "warn"
	LevelInfo  LogLevel = "info"
	LevelDebug LogLevel = "debug"
)

type LogFormat string

const (
	FormatHuman  LogFormat = "human"
	FormatLogfmt LogFormat = "logfmt"
	FormatJSON   LogFormat = "json"
)

// Logging outlet types.
const (
	OutletStdout = "stdout"
	OutletSyslog = "syslog"
	OutletTCP    = "tcp"
)

type LogOutlet struct {
	Type   string // OutletStdout, OutletSyslog or OutletTCP
	Level  LogLevel
	Format LogFormat
	// Stdout only: Time writes time stamps when stdout is not a terminal
	// (on a terminal they are always written); Color colours by level on
	// a terminal. Both default to true, as in zrepl.
	Time, Color bool
	// Syslog only.
	Facility string // default local0
	// Syslog and tcp: how long after a failed connection the outlet
	// tries again (messages meanwhile are dropped); default 10s.
	RetryInterval time.Duration
	// TCP only.
	Net     string // tcp (default), or another network of Go's dialer
	Address string
	// TLS is nil for a plain connection.
	TLS *LogTLS
	// Pos locates its keys, for errors found after parsing.
	Pos Pos
}

// LogTLS is a tcp outlet's TLS with client authentication.
type LogTLS struct {
	CA   string
	Cert string
	Key  string
	Pos  Pos
}

// DefaultRetryInterval is zrepl's default of retry_interval.
const DefaultRetryInterval = 10 * time.Second

// DefaultLogOutlet is the outlet of a config without global.logging.
func DefaultLogOutlet() LogOutlet {
	return LogOutlet{Type: OutletStdout, Level: LevelWarn, Format: FormatHuman, Time: true, Color: true}
}

type Monitoring struct {
	Type           string // "prometheus"
	Listen         string
	ListenFreebind bool
}

// JobType is the kind of a job.
type JobType string

const (
	JobPush   JobType = "push"
	JobSink   JobType = "sink"
	JobPull   JobType = "pull"
	JobSource JobType = "source"
	JobSnap   JobType = "snap"
)

// Job is one entry of jobs. Which fields are set depends on Type:
//
//	push:   Connect, Filesystems, Snapshotting, Pruning (sender+receiver), Send, Replication, ConflictResolution
//	sink:   Serve, RootFS, Recv
//	pull:   Connect, RootFS, Interval, Pruning (sender+receiver), Recv, Replication, ConflictResolution
//	source: Serve, Filesystems, Snapshotting, Send
//	snap:   Filesystems, Snapshotting, Pruning (Keep)
type Job struct {
	Name string
	ID   endpoint.JobID
	Type JobType
	// Line is where the job starts in the document.
	Line int
	// File is the included file that defines the job (see include),
	// empty for the config file itself.
	File string

	Connect      *Connect
	Serve        *Serve
	Filesystems  *Filter
	RootFS       zfs.DatasetPath
	Interval     PullInterval
	Snapshotting *Snapshotting
	Pruning      *Pruning
	Send         SendOptions
	Recv         RecvOptions
	Replication  Replication

	ConflictResolution ConflictResolution

	index           int // in the document's jobs list
	nameLine        int
	rootFSLine      int
	filesystemsLine int
}

// PullInterval is a pull job's interval: a period, or Manual (replicate
// only on wakeup).
type PullInterval struct {
	Manual bool
	Every  time.Duration
}

// Transport types.
const (
	TransportTCP         = "tcp"
	TransportTLS         = "tls"
	TransportSSH         = "ssh+stdinserver" // connect side
	TransportStdinserver = "stdinserver"     // serve side of ssh+stdinserver
	TransportLocal       = "local"
)

// Connect is the active side's transport.
type Connect struct {
	Type        string // tcp, tls, ssh+stdinserver, local
	DialTimeout time.Duration

	// tcp, tls
	Address string
	// tls
	CA, Cert, Key, ServerCN string
	// ssh+stdinserver
	Host, User   string
	Port         int
	IdentityFile string
	Options      []string
	// local
	ListenerName   string
	ClientIdentity string

	// Pos locates its keys, for errors found after parsing.
	Pos Pos
}

// Pos locates the keys of one section in the document, for errors found
// after parsing, such as a certificate file that cannot be read.
type Pos struct {
	path  string
	line  int // of the section
	lines map[string]int
	file  string // an included file, empty for the config file
}

// Line is the line of key, or of the section if key is absent.
func (p Pos) Line(key string) int {
	if l, ok := p.lines[key]; ok {
		return l
	}
	return p.line
}

// Of names key as errors do: "jobs[0].connect.cert: line 7".
func (p Pos) Of(key string) string {
	e := Error{Path: child(p.path, key), Line: p.Line(key)}
	s := strings.TrimSuffix(e.Error(), ": ")
	if p.file != "" {
		s = p.file + ": " + s
	}
	return s
}

// TCPClient maps a client address or network to its identity. An identity
// containing '*' (networks only) stands for the client's address.
type TCPClient struct {
	Prefix   netip.Prefix
	Identity string
}

// Serve is the passive side's transport.
type Serve struct {
	Type string // tcp, tls, stdinserver, local

	// tcp, tls
	Listen         string
	ListenFreebind bool
	// tcp
	Clients []TCPClient
	// tls
	CA, Cert, Key    string
	ClientCNs        []string
	HandshakeTimeout time.Duration
	// stdinserver
	ClientIdentities []string
	// local
	ListenerName string

	// Pos locates its keys, for errors found after parsing.
	Pos Pos
}

type SnapshottingType string

const (
	SnapshottingPeriodic SnapshottingType = "periodic"
	SnapshottingCron     SnapshottingType = "cron"
	SnapshottingManual   SnapshottingType = "manual"
)

type Snapshotting struct {
	Type     SnapshottingType
	Prefix   string
	Interval time.Duration // periodic
	// Cron is the cron spec of cron snapshotting, as written, and
	// CronSchedule what it parsed to (read in the daemon's local time,
	// as zrepl does).
	Cron         string
	CronSchedule cron.Schedule
	// TimestampFormat is dense (default), human, iso-8601, unix-seconds
	// or a Go time layout; see SnapshotName.
	TimestampFormat string
	// TimestampLocation is the time zone of the timestamp; nil is UTC.
	TimestampLocation *time.Location
	// Hooks run around each filesystem's snapshot, in config order.
	Hooks []Hook
}

// Scheduled reports whether the daemon takes the snapshots by itself
// (periodic or cron), rather than only on request (manual).
func (s *Snapshotting) Scheduled() bool {
	return s != nil && (s.Type == SnapshottingPeriodic || s.Type == SnapshottingCron)
}

// KeepType is the type of a pruning rule.
type KeepType string

const (
	KeepGrid          KeepType = "grid"
	KeepLastN         KeepType = "last_n"
	KeepRegex         KeepType = "regex"
	KeepNotReplicated KeepType = "not_replicated"
)

// KeepRule is one pruning rule: a snapshot kept by any rule stays.
type KeepRule struct {
	Type KeepType
	// Regex restricts grid and last_n, and is the whole of a regex rule;
	// nil for last_n without regex.
	Regex  *regexp.Regexp
	Negate bool     // regex only: keep what does not match
	Grid   GridSpec // grid only
	Count  int      // last_n only
	// KeepSnapshotAtCursor (not_replicated only, default true) keeps the
	// snapshot the replication cursor points at; false lets the rules
	// destroy it, the cursor bookmark then being the incremental base.
	KeepSnapshotAtCursor bool
}

// Considers reports whether the rule looks at a snapshot called name: its
// regex matches (inverted by Negate for regex rules); a rule without a
// regex considers every snapshot.
func (r KeepRule) Considers(name string) bool {
	if r.Regex == nil {
		return true
	}
	return r.Regex.MatchString(name) != (r.Type == KeepRegex && r.Negate)
}

type Pruning struct {
	KeepSender   []KeepRule // push, pull
	KeepReceiver []KeepRule // push, pull
	Keep         []KeepRule // snap
}

// BandwidthLimit caps a stream's rate with a token bucket.
type BandwidthLimit struct {
	// Max is bytes per second; -1 (the default) is unlimited.
	Max            int64
	BucketCapacity int64
}

const DefaultBucketCapacity = 128 << 10

// SendOptions are a push or source job's send section.
type SendOptions struct {
	// Policy is send.encrypted and the send flags (send.raw,
	// send_properties, backup_properties, large_blocks, compressed,
	// embedded_data, saved), as the job's sender applies them.
	Policy         zfs.SendPolicy
	BandwidthLimit BandwidthLimit
}

// PlaceholderEncryption is how a receiver creates placeholder filesystems
// below an encrypted parent (recv.placeholder.encryption); below an
// unencrypted parent all three are the same.
type PlaceholderEncryption string

const (
	// PlaceholderUnspecified (the default) refuses to create one, with an
	// error naming the option.
	PlaceholderUnspecified PlaceholderEncryption = "unspecified"
	// PlaceholderOff creates it unencrypted, so that the sender's
	// filesystem can replace it later by a (non-raw) full receive.
	PlaceholderOff PlaceholderEncryption = "off"
	// PlaceholderInherit creates it encrypted like its parent; ZFS cannot
	// replace it by a full receive once the sender's filesystem has
	// snapshots.
	PlaceholderInherit PlaceholderEncryption = "inherit"
)

type RecvOptions struct {
	// Properties: zfs recv -o name=value and -x name.
	Override       map[string]string
	Inherit        []string
	BandwidthLimit BandwidthLimit
	Placeholder    PlaceholderEncryption
}

type Protection string

const (
	GuaranteeResumability Protection = "guarantee_resumability"
	GuaranteeIncremental  Protection = "guarantee_incremental"
	GuaranteeNothing      Protection = "guarantee_nothing"
)

type Replication struct {
	Initial, Incremental Protection // default GuaranteeResumability
	Steps                int        // concurrent steps, default 1
	SizeEstimates        int        // concurrent size estimates, default 4
}

type InitialReplication string

const (
	InitialMostRecent InitialReplication = "most_recent"
	InitialAll        InitialReplication = "all"
	InitialFail       InitialReplication = "fail"
)

type ConflictResolution struct {
	InitialReplication InitialReplication // default InitialMostRecent
}
