package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // timestamp_location names must resolve on any host

	"github.com/robfig/cron/v3"
	yaml "go.yaml.in/yaml/v3"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/snapper"
	"zrepl.dev/zrepl/engine/zfs"
)

// Parse parses and validates a config document. On any problem it returns
// nil and an *Errors listing all of them. The document has no file name,
// so its include paths must be absolute; ParseFile resolves relative ones.
func Parse(b []byte) (*Config, error) { return parse(b, "") }

// ParseFile reads and parses the config file name and the files it
// includes. Problems in the documents come as *Errors naming the file; a
// config file that cannot be read gives the os error.
func ParseFile(name string) (*Config, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	cfg, err := parse(b, name)
	var errs *Errors
	if errors.As(err, &errs) {
		errs.File = name
	}
	return cfg, err
}

func parse(b []byte, name string) (*Config, error) {
	var doc yaml.Node
	if err := unmarshal(b, &doc); err != nil {
		return nil, &Errors{List: []*Error{syntaxError(err)}}
	}
	d := &decoder{budget: 4*countNodes(&doc) + 100_000, mainFile: name}
	var cfg Config
	m := d.mapping("", "", docRoot(&doc), 1)
	cfg.Global = d.global(m)
	cfg.Jobs = d.jobs(m)
	cfg.Jobs = append(cfg.Jobs, d.includes(m, name)...)
	m.done()
	d.validate(&cfg)
	if len(d.errs) > 0 {
		e := &Errors{List: d.errs}
		if d.overBudget {
			// Everything after the budget ran out is noise.
			for _, x := range d.errs {
				if strings.HasPrefix(x.Msg, "document too complex") {
					e.List = []*Error{x}
				}
			}
		}
		e.sort()
		return nil, e
	}
	cfg.Warnings = d.warns
	return &cfg, nil
}

// docRoot is the top mapping of a document. An empty document (or one of
// comments only) is a config with the defaults and no jobs, as in zrepl;
// the daemon then serves only its control socket.
func docRoot(doc *yaml.Node) *yaml.Node {
	if doc.Kind == 0 {
		return nil
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0]
	}
	return doc
}

// includes reads the files the include key of the config file names, as
// zrepl does: each path is a file ending in .yml or a directory whose
// *.yml files are read in name order; an included file has jobs only, and
// its jobs follow the config file's. Relative paths are relative to the
// config file's directory (zrepl resolves them against its working
// directory when the config's path is absolute, / under systemd). An
// included file's global section is refused: zrepl ignores it.
func (d *decoder) includes(m *mapping, name string) []Job {
	items := m.strList("include")
	if len(items) == 0 {
		return nil
	}
	d.included = true
	type file struct {
		path string
		it   strItem
	}
	var files []file
	seen := map[string]strItem{}
	for _, it := range items {
		p := it.S
		if !filepath.IsAbs(p) {
			if name == "" {
				d.errf(it.Path, it.Line, "relative include path %q needs the config's file name (want an absolute path)", p)
				continue
			}
			p = filepath.Join(filepath.Dir(name), p)
		}
		st, err := os.Stat(p)
		if err != nil {
			d.errf(it.Path, it.Line, "cannot include %q: %v (want a .yml file or a directory of them)", it.S, unwrapPathError(err))
			continue
		}
		var paths []string
		switch {
		case st.IsDir():
			paths, err = filepath.Glob(filepath.Join(globEscape(p), "*.yml"))
			if err != nil {
				d.errf(it.Path, it.Line, "cannot include %q: %v", it.S, err)
				continue
			}
		case st.Mode().IsRegular():
			if filepath.Ext(p) != ".yml" {
				d.errf(it.Path, it.Line, "cannot include %q: an included file's name must end in .yml", it.S)
				continue
			}
			paths = []string{p}
		default:
			d.errf(it.Path, it.Line, "cannot include %q: not a file or directory (want a .yml file or a directory of them)", it.S)
			continue
		}
		for _, fp := range paths {
			clean := filepath.Clean(fp)
			if first, dup := seen[clean]; dup {
				d.errf(it.Path, it.Line, "%s is included twice (first by %s at line %d): its jobs would be defined twice", clean, first.Path, first.Line)
				continue
			}
			seen[clean] = it
			files = append(files, file{clean, it})
		}
	}
	var jobs []Job
	for _, f := range files {
		jobs = append(jobs, d.includeFile(f.path, f.it)...)
	}
	return jobs
}

func (d *decoder) includeFile(path string, it strItem) []Job {
	b, err := os.ReadFile(path)
	if err != nil {
		d.errf(it.Path, it.Line, "cannot include %s: %v", path, unwrapPathError(err))
		return nil
	}
	var doc yaml.Node
	if err := unmarshal(b, &doc); err != nil {
		e := syntaxError(err)
		e.File = path
		d.errs = append(d.errs, e)
		return nil
	}
	d.budget += 4 * countNodes(&doc)
	d.file = path
	defer func() { d.file = "" }()
	m := d.mapping("", "", docRoot(&doc), 1)
	if m.has("global") {
		d.errf("global", m.keyLine("global"), "an included file may define jobs only (want global in the config file %s; zrepl ignores it here)", d.mainFileName())
	}
	if m.has("include") {
		d.errf("include", m.keyLine("include"), "an included file must not include other files (want every include in the config file %s)", d.mainFileName())
	}
	jobs := d.jobs(m)
	m.done()
	for i := range jobs {
		jobs[i].File = path
	}
	return jobs
}

func (d *decoder) mainFileName() string {
	if d.mainFile == "" {
		return "itself"
	}
	return d.mainFile
}

// unwrapPathError drops the path an *os.PathError repeats.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// globEscape quotes the glob metacharacters of a directory name.
func globEscape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// unmarshal reads the one document of b. It guards against panics in the
// YAML library: bad input must give an error, never crash the daemon.
func unmarshal(b []byte, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot parse document: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(n); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty input: an empty document
		}
		return err
	}
	// A second document would be silently ignored; refuse it instead.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return err
	default:
		return fmt.Errorf("yaml: line %d: a config is one YAML document, found another", next.Line)
	}
}

var yamlLineRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

func syntaxError(err error) *Error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Msg: "YAML syntax: " + m[2]}
	}
	return &Error{Msg: "YAML syntax: " + msg}
}

// typeOf reads the "type" key of m and checks it against want; the error
// names m's path, as in "jobs[1].connect: line 8: unknown transport type".
func (d *decoder) typeOf(m *mapping, what string, want ...string) (string, bool) {
	s, ok := m.str("type")
	if !ok {
		if m.get("type") == nil {
			m.missing("type", "want "+strings.Join(want, ", "))
		}
		return "", false
	}
	for _, w := range want {
		if s == w {
			m.branch(s)
			return s, true
		}
	}
	d.errf(m.path, m.keyLine("type"), "unknown %s type %q (want %s)", what, s, strings.Join(want, ", "))
	return "", false
}

func (d *decoder) global(root *mapping) Global {
	g := Global{
		ZFSBackend:           BackendReal,
		ModelCheckpointEvery: DefaultModelCheckpointEvery,
		ControlSockPath:      DefaultControlSockPath,
		StdinserverSockDir:   DefaultStdinserverSockDir,
	}
	m := d.mapping("global", "global", root.get("global"), root.keyLine("global"))
	if items, ok := m.list("logging"); ok {
		seen := map[string]int{}
		for i, it := range items {
			p := index("global.logging", i)
			if d.resolve(it) == nil {
				d.errf(p, it.Line, "want an outlet mapping, got null")
				continue
			}
			om := d.mapping(p, "global.logging", it, it.Line)
			if !om.valid {
				continue
			}
			o, ok := d.outlet(om)
			if !ok {
				continue
			}
			if first, dup := seen[o.Type]; dup && o.Type != OutletTCP {
				d.errf(p, om.line, "a %s outlet may appear only once (first at global.logging[%d])", o.Type, first)
			}
			seen[o.Type] = i
			g.Logging = append(g.Logging, o)
		}
	}
	if m.get("logging") == nil {
		g.Logging = []LogOutlet{DefaultLogOutlet()}
	}
	if items, ok := m.list("monitoring"); ok {
		for i, it := range items {
			p := index("global.monitoring", i)
			if d.resolve(it) == nil {
				d.errf(p, it.Line, "want a monitoring mapping, got null")
				continue
			}
			mm := d.mapping(p, "global.monitoring", it, it.Line)
			if !mm.valid {
				continue
			}
			if _, ok := d.typeOf(mm, "monitoring", "prometheus"); !ok {
				continue
			}
			mon := Monitoring{Type: "prometheus", Listen: mm.reqStr("listen", ""), ListenFreebind: mm.boolean("listen_freebind", false)}
			if mon.Listen != "" {
				d.checkHostPort(child(p, "listen"), mm.keyLine("listen"), mon.Listen)
			}
			mm.done()
			if len(g.Monitoring) > 0 {
				d.errf(p, mm.line, "the prometheus monitoring endpoint may be configured only once")
			}
			g.Monitoring = append(g.Monitoring, mon)
		}
	}
	g.ZFSBackend = Backend(m.enum("zfs_backend", string(BackendReal), string(BackendReal), string(BackendModel)))
	if dir, ok := m.str("model_state_dir"); ok {
		g.ModelStateDir = dir
		if g.ZFSBackend != BackendModel {
			d.errf("global.model_state_dir", m.keyLine("model_state_dir"), "only meaningful with zfs_backend: model")
		}
	}
	if s, ok := m.str("model_checkpoint_every"); ok {
		const key = "global.model_checkpoint_every"
		line := m.keyLine("model_checkpoint_every")
		v, err := ParseSize(s)
		switch {
		case err != nil:
			d.errf(key, line, "%v", err)
		case v < 0 || v != float64(int64(v)):
			d.errf(key, line, "%q is not a whole number of bytes of at least 0 (want e.g. 64 MiB, or 0 B to turn checkpoints off)", s)
		case g.ModelStateDir == "":
			d.errf(key, line, "only meaningful with zfs_backend: model and a model_state_dir (checkpoints are saves of the model's state)")
		default:
			g.ModelCheckpointEvery = int64(v)
		}
	}
	if m.has("control") {
		cm := d.mapping("global.control", "global.control", m.get("control"), m.keyLine("control"))
		if s, ok := cm.str("sockpath"); ok && s != "" {
			g.ControlSockPath = s
		}
		cm.done()
	}
	if m.has("serve") {
		sm := d.mapping("global.serve", "global.serve", m.get("serve"), m.keyLine("serve"))
		if sm.has("stdinserver") {
			ssm := d.mapping("global.serve.stdinserver", "global.serve.stdinserver", sm.get("stdinserver"), sm.keyLine("stdinserver"))
			if s, ok := ssm.str("sockdir"); ok && s != "" {
				g.StdinserverSockDir = s
			}
			ssm.done()
		}
		sm.done()
	}
	m.done()
	return g
}

// logNets are the networks a tcp outlet may dial (Go's stream and
// datagram networks; zrepl passes net to the dialer unchecked).
var logNets = []string{"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix", "unixgram", "unixpacket"}

var syslogFacilities = []string{
	"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
	"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
}

func (d *decoder) outlet(m *mapping) (LogOutlet, bool) {
	typ, ok := d.typeOf(m, "logging outlet", OutletStdout, OutletSyslog, OutletTCP)
	if !ok {
		return LogOutlet{}, false
	}
	o := LogOutlet{Type: typ, Pos: m.pos()}
	// zrepl has no default level or format for an outlet.
	if m.get("level") == nil {
		m.missing("level", "want error, warn, info or debug")
	}
	o.Level = LogLevel(m.enum("level", string(LevelWarn), "error", "warn", "info", "debug"))
	if m.get("format") == nil {
		m.missing("format", "want human, logfmt or json")
	}
	o.Format = LogFormat(m.enum("format", string(FormatHuman), "human", "logfmt", "json"))
	switch typ {
	case OutletStdout:
		o.Time = m.boolean("time", true)
		o.Color = m.boolean("color", true)
	case OutletSyslog:
		o.Facility = m.enum("facility", "local0", syslogFacilities...)
		o.RetryInterval = m.goDuration("retry_interval", DefaultRetryInterval, false)
	case OutletTCP:
		o.Address = m.reqStr("address", "")
		if o.Address != "" {
			d.checkHostPort(child(m.path, "address"), m.keyLine("address"), o.Address)
		}

		o.RetryInterval = m.goDuration("retry_interval", DefaultRetryInterval, false)
		if tm, ok := d.section(m, "tls", ""); ok {
			o.TLS = &LogTLS{Pos: tm.pos()}
			o.TLS.CA = tm.reqStr("ca", "the CA of the log server's certificate")
			o.TLS.Cert = tm.reqStr("cert", "")
			o.TLS.Key = tm.reqStr("key", "")
			tm.done()
		}
		o.Net = m.enum("net", "tcp", logNets...)
		if o.TLS != nil && strings.HasPrefix(o.Net, "udp") {
			d.errf(child(m.path, "net"), m.keyLine("net"), "TLS needs a stream: net %s cannot carry it (want tcp, tcp4, tcp6 or unix)", o.Net)
		}
	}
	m.done()
	return o, true
}

func (d *decoder) jobs(root *mapping) []Job {
	items, ok := root.list("jobs")
	if !ok {
		return nil
	}
	var out []Job
	for i, it := range items {
		p := index("jobs", i)
		if d.resolve(it) == nil {
			d.errf(p, it.Line, "want a job mapping, got null")
			continue
		}
		if j, ok := d.job(p, it); ok {
			j.index = i
			out = append(out, j)
		}
	}
	return out
}

// job decodes one job. ok is false if the job is too broken to take part
// in cross-job checks.
func (d *decoder) job(path string, n *yaml.Node) (Job, bool) {
	m := d.mapping(path, "jobs", n, n.Line)
	if !m.valid {
		return Job{}, false
	}
	j := Job{Line: m.line}
	j.Name = m.reqStr("name", "")
	j.nameLine = m.keyLine("name")
	if strings.HasPrefix(j.Name, "_") {
		d.errf(child(path, "name"), m.keyLine("name"), "job name %q is reserved for internal use (want a name that does not start with _)", j.Name)
	} else if j.Name != "" {
		id, err := endpoint.NewJobID(j.Name)
		if err != nil {
			d.errf(child(path, "name"), m.keyLine("name"), "%v", err)
		}
		j.ID = id
	}
	typ, ok := d.typeOf(m, "job", string(JobPush), string(JobSink), string(JobPull), string(JobSource), string(JobSnap))
	if !ok {
		return j, false
	}
	j.Type = JobType(typ)
	j.rootFSLine, j.filesystemsLine = m.keyLine("root_fs"), m.keyLine("filesystems")
	why := fmt.Sprintf("a %s job needs it", typ)
	switch j.Type {
	case JobPush:
		j.Connect = d.connect(m, why)
		j.Filesystems = d.filesystems(m, why)
		j.Snapshotting = d.snapshotting(m, why)
		j.Pruning = d.pruning(m, j.Type, why)
		j.Send = d.send(m)
		j.Replication = d.replication(m)
		j.ConflictResolution = d.conflictResolution(m)
	case JobSink:
		j.Serve = d.serve(m, why)
		j.RootFS = d.rootFS(m, why)
		j.Recv = d.recv(m)
	case JobPull:
		j.Connect = d.connect(m, why)
		j.RootFS = d.rootFS(m, why)
		j.Interval = d.pullInterval(m, why)
		j.Pruning = d.pruning(m, j.Type, why)
		j.Recv = d.recv(m)
		j.Replication = d.replication(m)
		j.ConflictResolution = d.conflictResolution(m)
	case JobSource:
		j.Serve = d.serve(m, why)
		j.Filesystems = d.filesystems(m, why)
		j.Snapshotting = d.snapshotting(m, why)
		j.Send = d.send(m)
	case JobSnap:
		j.Filesystems = d.filesystems(m, why)
		j.Snapshotting = d.snapshotting(m, why)
		j.Pruning = d.pruning(m, j.Type, why)
	}
	m.done()
	return j, true
}

// section returns the mapping under key, reporting it missing if required.
func (d *decoder) section(m *mapping, key, whyRequired string) (*mapping, bool) {
	n := m.get(key)
	if n == nil {
		if whyRequired != "" {
			m.missing(key, whyRequired)
		}
		return nil, false
	}
	sm := d.mapping(child(m.path, key), child(m.schema, key), n, m.keyLine(key))
	return sm, sm.valid
}

// dict is section for a map whose keys are data.
func (d *decoder) dict(m *mapping, key, whyRequired string) (*mapping, bool) {
	n := m.get(key)
	if n == nil {
		if whyRequired != "" {
			m.missing(key, whyRequired)
		}
		return nil, false
	}
	sm := d.newMapping(child(m.path, key), child(m.schema, key), n, m.keyLine(key), true)
	return sm, sm.valid
}

func (d *decoder) rootFS(m *mapping, why string) zfs.DatasetPath {
	s := m.reqStr("root_fs", why)
	if s == "" {
		return zfs.DatasetPath{}
	}
	p, err := zfs.NewDatasetPath(s)
	if err != nil {
		d.errf(child(m.path, "root_fs"), m.keyLine("root_fs"), "%v (want a dataset name like pool/backup)", err)
	}
	return p
}

func (d *decoder) pullInterval(m *mapping, why string) PullInterval {
	s := m.reqStr("interval", why)
	if s == "" {
		return PullInterval{}
	}
	if s == "manual" {
		return PullInterval{Manual: true}
	}
	dur, err := ParseDuration(s)
	if err != nil {
		d.errf(child(m.path, "interval"), m.keyLine("interval"), "invalid interval %q (want a duration like 15m or 1d, or manual)", s)
	}
	return PullInterval{Every: dur}
}

func (d *decoder) filesystems(m *mapping, why string) *Filter {
	fm, ok := d.dict(m, "filesystems", why)
	if !ok {
		return nil
	}
	path := fm.path
	var rules []FilterRule
	bad := false
	for _, pat := range fm.order {
		fm.know(pat)
		p := mapKey(path, pat)
		line := fm.keys[pat].Line
		r, err := ParseFilterPattern(pat)
		if err != nil {
			d.errf(p, line, "%v (want a dataset name, ending in < for its subtree, like pool/data<)", err)
			bad = true
			continue
		}
		v := d.resolve(fm.vals[pat])
		accept, ok := false, false
		if v != nil {
			accept, ok = boolValue(v)
		}
		if !ok {
			got := "null"
			if v != nil {
				got = describe(v)
			}
			d.errf(p, line, "want true (include) or false (exclude), got %s", got)
			bad = true
			continue
		}
		r.Accept = accept
		rules = append(rules, r)
	}
	if len(fm.order) == 0 {
		d.errf(path, fm.line, "empty filter: no filesystem would be selected (e.g. {\"pool/data<\": true})")
		return nil
	}
	if bad {
		return nil
	}
	f, err := NewFilter(rules)
	if err != nil {
		d.errf(path, fm.line, "%v", err)
		return nil
	}
	return f
}

func (d *decoder) snapshotting(m *mapping, why string) *Snapshotting {
	sm, ok := d.section(m, "snapshotting", why)
	if !ok {
		return nil
	}
	typ, ok := d.typeOf(sm, "snapshotting", string(SnapshottingPeriodic), string(SnapshottingCron), string(SnapshottingManual))
	if !ok {
		return nil
	}
	s := &Snapshotting{Type: SnapshottingType(typ)}
	switch s.Type {
	case SnapshottingPeriodic:
		s.Prefix = sm.reqStr("prefix", "periodic snapshots are named prefix + timestamp")
		s.Interval = sm.duration("interval", 0)
		if s.Interval == 0 && sm.get("interval") == nil {
			sm.missing("interval", "")
		}
		d.naming(sm, s)
		s.Hooks = d.hooks(sm)
	case SnapshottingCron:
		s.Prefix = sm.reqStr("prefix", "cron snapshots are named prefix + timestamp")
		if spec := sm.reqStr("cron", `when to snapshot, like "*/5 * * * *"`); spec != "" {
			sched, err := cronParser.Parse(spec)
			if err != nil {
				d.errf(child(sm.path, "cron"), sm.keyLine("cron"), "invalid cron spec %q: %v (%s)", spec, err, cronWant)
			}
			s.Cron, s.CronSchedule = spec, sched
		}
		d.naming(sm, s)
		s.Hooks = d.hooks(sm)
	default:
		sm.get("hooks") // refused by the registry
	}
	sm.done()
	return s
}

// cronParser reads zrepl's cron syntax: minute, hour, day of month, month
// and day of week, with an optional seconds field first; no descriptors
// like @daily (zrepl has none).
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

const cronWant = `want minute hour day-of-month month day-of-week, with an optional seconds field first, like "*/5 * * * *" or "0 30 2 * * 1-5"`

// naming reads timestamp_format and timestamp_location, and checks that
// the prefix and format make valid snapshot names.
func (d *decoder) naming(sm *mapping, s *Snapshotting) {
	s.TimestampFormat = snapper.FormatDense
	if f, ok := sm.str("timestamp_format"); ok {
		s.TimestampFormat = f
	}
	loc := time.UTC
	if name, ok := sm.str("timestamp_location"); ok {
		l, err := time.LoadLocation(name)
		if err != nil {
			d.errf(child(sm.path, "timestamp_location"), sm.keyLine("timestamp_location"), "unknown time zone %q (want UTC, Local or an IANA name like Europe/Berlin)", name)
		} else {
			loc = l
		}
	}
	if s.Prefix != "" {
		_, err := snapper.NewNaming(s.Prefix, s.TimestampFormat, loc)
		switch {
		case errors.Is(err, snapper.ErrFormatNeedsUTC):
			d.errf(child(sm.path, "timestamp_location"), sm.keyLine("timestamp_location"), "timestamp_format %s has no time zone, so it needs timestamp_location UTC", s.TimestampFormat)
		case err != nil && zfs.ValidateVersionName(zfs.Snapshot, s.Prefix) != nil:
			d.errf(child(sm.path, "prefix"), sm.keyLine("prefix"), "%v (want letters, digits and any of -_.: and space)", err)
		case err != nil:
			d.errf(child(sm.path, "timestamp_format"), sm.keyLine("timestamp_format"), "%v (want dense, human, iso-8601, unix-seconds or a Go time layout)", err)
		}
	}
	if loc != time.UTC {
		s.TimestampLocation = loc
	}
}

// Naming is how the job names its snapshots.
func (s *Snapshotting) Naming() snapper.Naming {
	return snapper.Naming{Prefix: s.Prefix, Format: s.TimestampFormat, Location: s.TimestampLocation}
}

// SnapshotName is the name of a snapshot taken at t.
func (s *Snapshotting) SnapshotName(t time.Time) string { return s.Naming().Name(t) }

func (d *decoder) pruning(m *mapping, jt JobType, why string) *Pruning {
	pm, ok := d.section(m, "pruning", why)
	if !ok {
		return nil
	}
	p := &Pruning{}
	if jt == JobSnap {
		p.Keep = d.keepRules(pm, "keep", false)
	} else {
		p.KeepSender = d.keepRules(pm, "keep_sender", true)
		p.KeepReceiver = d.keepRules(pm, "keep_receiver", false)
	}
	pm.done()
	return p
}

var ruleTypes = []string{string(KeepGrid), string(KeepLastN), string(KeepRegex), string(KeepNotReplicated)}

func (d *decoder) keepRules(pm *mapping, key string, sender bool) []KeepRule {
	items, ok := pm.list(key)
	if !ok {
		if pm.get(key) == nil {
			pm.missing(key, "")
		}
		return nil
	}
	if len(items) == 0 {
		// As in zrepl: a side without rules is a mistake more often than
		// a wish to keep everything, which {type: regex, regex: ".*"} says.
		pm.d.errf(child(pm.path, key), pm.keyLine(key), "empty list of keep rules (want at least one rule; {type: regex, regex: \".*\"} keeps every snapshot)")
		return nil
	}
	rules := []KeepRule{}
	for i, it := range items {
		p := index(child(pm.path, key), i)
		if d.resolve(it) == nil {
			d.errf(p, it.Line, "want a rule mapping, got null")
			continue
		}
		rm := d.mapping(p, child(pm.schema, key), it, it.Line)
		if !rm.valid {
			continue
		}
		typ, ok := d.typeOf(rm, "rule", ruleTypes...)
		if !ok {
			continue
		}
		r := KeepRule{Type: KeepType(typ)}
		switch r.Type {
		case KeepGrid:
			if g := rm.reqStr("grid", ""); g != "" {
				spec, err := ParseGridSpec(g)
				if err != nil {
					d.errf(child(p, "grid"), rm.keyLine("grid"), "%v", err)
				}
				r.Grid = spec
			}
			r.Regex = d.regex(rm, true)
		case KeepLastN:
			if rm.get("count") == nil {
				rm.missing("count", "")
			}
			r.Count = rm.integer("count", 0, 1, 1<<31-1)
			r.Regex = d.regex(rm, false)
		case KeepRegex:
			r.Regex = d.regex(rm, true)
			r.Negate = rm.boolean("negate", false)
		case KeepNotReplicated:
			if !sender {
				d.errf(p, rm.keyLine("type"), "rule not_replicated only makes sense in keep_sender")
			} else {
				r.KeepSnapshotAtCursor = rm.boolean("keep_snapshot_at_cursor", true)
			}
		}
		rm.done()
		rules = append(rules, r)
	}
	return rules
}

func (d *decoder) regex(m *mapping, required bool) *regexp.Regexp {
	s, ok := m.str("regex")
	if !ok {
		if required && m.get("regex") == nil {
			m.missing("regex", "")
		}
		return nil
	}
	re, err := regexp.Compile(s)
	if err != nil {
		d.errf(child(m.path, "regex"), m.keyLine("regex"), "invalid regex %q: %v (want a regular expression in Go's RE2 syntax)", s, err)
		return nil
	}
	return re
}

func (d *decoder) bandwidthLimit(m *mapping) BandwidthLimit {
	bl := BandwidthLimit{Max: -1, BucketCapacity: DefaultBucketCapacity}
	bm, ok := d.section(m, "bandwidth_limit", "")
	if !ok {
		return bl
	}
	if s, ok := bm.str("max"); ok {
		v, err := ParseSize(s)
		switch {
		case err != nil:
			d.errf(child(bm.path, "max"), bm.keyLine("max"), "%v", err)
		case v < 0:
			// zrepl: any negative rate is no limit.
		case v < 1:
			// zrepl takes 0 B and then never sends a byte.
			d.errf(child(bm.path, "max"), bm.keyLine("max"), "rate %q is below one byte per second (want at least 1 B, or -1 B for no limit)", s)
		default:
			bl.Max = int64(v)
		}
	}
	if s, ok := bm.str("bucket_capacity"); ok {
		v, err := ParseSize(s)
		switch {
		case err != nil:
			d.errf(child(bm.path, "bucket_capacity"), bm.keyLine("bucket_capacity"), "%v", err)
		case v < 1:
			d.errf(child(bm.path, "bucket_capacity"), bm.keyLine("bucket_capacity"), "bucket capacity %q must be at least 1 B (want e.g. 128 KiB)", s)
		default:
			bl.BucketCapacity = int64(v)
		}
	}
	bm.done()
	return bl
}

func (d *decoder) send(m *mapping) SendOptions {
	o := SendOptions{BandwidthLimit: BandwidthLimit{Max: -1, BucketCapacity: DefaultBucketCapacity}}
	sm, ok := d.section(m, "send", "")
	if !ok {
		return o
	}
	o.Policy = zfs.SendPolicy{
		Encrypted: sm.boolean("encrypted", false),
		Flags: zfs.SendFlags{
			Raw:              sm.boolean("raw", false),
			Properties:       sm.boolean("send_properties", false),
			BackupProperties: sm.boolean("backup_properties", false),
			LargeBlocks:      sm.boolean("large_blocks", false),
			Compressed:       sm.boolean("compressed", false),
			EmbeddedData:     sm.boolean("embedded_data", false),
			Saved:            sm.boolean("saved", false),
		},
	}
	o.BandwidthLimit = d.bandwidthLimit(sm)
	sm.get("step_holds")
	sm.done()
	return o
}

const propWant = "want a ZFS property name: letters, digits and any of :._-+, like compression or com.example:tag"

// validPropName accepts ZFS native and user property names.
func validPropName(s string) bool {
	if s == "" || len(s) >= zfs.MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":._-+", c) >= 0) {
			return false
		}
	}
	return true
}

func (d *decoder) recv(m *mapping) RecvOptions {
	o := RecvOptions{
		BandwidthLimit: BandwidthLimit{Max: -1, BucketCapacity: DefaultBucketCapacity},
		Placeholder:    PlaceholderUnspecified,
	}
	rm, ok := d.section(m, "recv", "")
	if !ok {
		return o
	}
	if pm, ok := d.section(rm, "properties", ""); ok {
		if om, ok := d.dict(pm, "override", ""); ok {
			o.Override = map[string]string{}
			for _, k := range om.order {
				om.know(k)
				p, line := mapKey(om.path, k), om.keys[k].Line
				if !validPropName(k) {
					d.errf(p, line, "invalid property name %q (%s)", k, propWant)
					continue
				}
				v := d.resolve(om.vals[k])
				if v == nil {
					d.errf(p, line, "want a property value, got null (use inherit to drop a property)")
					continue
				}
				if s, ok := d.scalar(p, v); ok {
					o.Override[k] = s
				}
			}
		}
		items := pm.strList("inherit")
		o.Inherit = strs(items)
		for _, it := range items {
			if !validPropName(it.S) {
				d.errf(it.Path, it.Line, "invalid property name %q (%s)", it.S, propWant)
			} else if _, both := o.Override[it.S]; both {
				d.errf(it.Path, it.Line, "property %q is both overridden and inherited", it.S)
			}
		}
		pm.done()
	}
	o.BandwidthLimit = d.bandwidthLimit(rm)
	if pl, ok := d.section(rm, "placeholder", ""); ok {
		o.Placeholder = PlaceholderEncryption(pl.enum("encryption", string(PlaceholderUnspecified),
			string(PlaceholderUnspecified), string(PlaceholderOff), string(PlaceholderInherit)))
		pl.done()
	}
	rm.done()
	return o
}

func (d *decoder) replication(m *mapping) Replication {
	r := Replication{Initial: GuaranteeResumability, Incremental: GuaranteeResumability, Steps: 1, SizeEstimates: 4}
	rm, ok := d.section(m, "replication", "")
	if !ok {
		return r
	}
	prots := []string{string(GuaranteeResumability), string(GuaranteeIncremental), string(GuaranteeNothing)}
	if pm, ok := d.section(rm, "protection", ""); ok {
		r.Initial = Protection(pm.enum("initial", string(r.Initial), prots...))
		r.Incremental = Protection(pm.enum("incremental", string(r.Incremental), prots...))
		pm.done()
	}
	if cm, ok := d.section(rm, "concurrency", ""); ok {
		r.Steps = cm.integer("steps", r.Steps, 1, 1<<16)
		r.SizeEstimates = cm.integer("size_estimates", r.SizeEstimates, 1, 1<<16)
		cm.done()
	}
	rm.done()
	return r
}

func (d *decoder) conflictResolution(m *mapping) ConflictResolution {
	c := ConflictResolution{InitialReplication: InitialMostRecent}
	cm, ok := d.section(m, "conflict_resolution", "")
	if !ok {
		return c
	}
	c.InitialReplication = InitialReplication(cm.enum("initial_replication", string(InitialMostRecent),
		string(InitialMostRecent), string(InitialAll), string(InitialFail)))
	cm.done()
	return c
}
