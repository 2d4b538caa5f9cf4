package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// Options are what the caller chooses for a daemon.
type Options struct {
	Config *config.Config
	ZFS    zfs.ZFS
	Log    *slog.Logger
	// Persist saves backend state (the model backend's); called after
	// every job run and on shutdown. May be nil. A backend wrapped in
	// Durable also saves after every change, so that a killed daemon
	// loses nothing.
	Persist func() error
	// Version is the daemon's version (zrepl_start_time, version).
	Version string
	// SkipCertCheck builds the daemon without reading TLS files, for
	// configcheck --skip-cert-check; such a daemon refuses to Run.
	SkipCertCheck bool

	// Control, if not nil, is the listener Run serves the control API
	// on, instead of a socket it creates at global.control.sockpath: for
	// a caller that holds the listener already (a socket a service manager
	// passed on, an in-process listener). Run closes it when it returns.
	Control net.Listener
}

// Daemon runs the jobs of one config.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	local   *transport.Local
	metrics *Metrics

	active  []*activeJob
	passive []*passive
	byName  map[string]runner

	// controlPath is the control socket (global.control.sockpath).
	controlPath string
	// monitoring are the prometheus endpoints (global.monitoring).
	monitoring []monitorSpec

	persistMu sync.Mutex
	pprof     pprofServer

	clientsMu sync.Mutex
	clients   []*rpc.Client // of active jobs, closed on shutdown
}

// monitorSpec is a prometheus endpoint.
type monitorSpec struct {
	listen   string
	freebind bool
}

// client returns the rpc client of *slot, creating it on first use.
func (d *Daemon) client(slot **rpc.Client, c *dialSpec) (*rpc.Client, error) {
	d.clientsMu.Lock()
	defer d.clientsMu.Unlock()
	if *slot != nil {
		return *slot, nil
	}
	cl, err := newClient(c)
	if err != nil {
		return nil, err
	}
	*slot = cl
	d.clients = append(d.clients, cl)
	return cl, nil
}

func (d *Daemon) closeClients() {
	d.clientsMu.Lock()
	defer d.clientsMu.Unlock()
	for _, c := range d.clients {
		c.Close()
	}
	d.clients = nil
}

type runner interface {
	Name() string
	Status() job.Status
}

// activeJob is a push, pull or snap job: the job, and the parts the
// daemon built for it, which the functions of its job.Config are methods
// of.
type activeJob struct {
	*job.Active
	sides                  any // *pushSides or *pullSides; nil for snap
	pruneSender, pruneRecv *pruneRules
	pruneLocal             *pruneRules
	// local is what a snap job prunes (nil for the others).
	local job.PruneTarget
}

// passive is a sink or source: an rpc server on its listeners, and for a
// source with snapshotting, an active part that snapshots.
type passive struct {
	name      string
	typ       config.JobType
	serve     *serveSpec
	sink      *sinkSpec    // sink
	source    *sourceSides // source
	server    *rpc.Server
	listeners []transport.Listener
	snap      *job.Active
	refusals  *refusals
}

// sourceSides is what a source serves: its filesystems, under its send
// options, to each client (local or remote).
type sourceSides struct {
	sender  jobSender
	streams limitedSender
}

func (p *passive) Name() string { return p.name }
func (p *passive) Status() job.Status {
	s := job.Status{Name: p.name, Type: string(p.typ), State: job.StateServing}
	if p.snap != nil {
		a := p.snap.Status()
		s.Runs, s.LastRunStart, s.LastRunEnd, s.NextRun = a.Runs, a.LastRunStart, a.LastRunEnd, a.NextRun
		s.LastError, s.LastSnapshots, s.Snapshotting = a.LastError, a.LastSnapshots, a.Snapshotting
		if a.State != job.StateIdle && a.State != job.StateStopped {
			s.State = a.State
		}
	}
	return s
}

// New builds every job of the config. Listeners are opened by Run.
func New(opts Options) (*Daemon, error) {
	if opts.Config == nil || opts.ZFS == nil {
		return nil, errors.New("daemon: config and ZFS backend are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	// A hook that cannot run is found now, not at the first snapshot.
	if err := config.CheckFiles(opts.Config); err != nil {
		return nil, err
	}
	d := &Daemon{opts: opts, local: transport.NewLocal(), byName: map[string]runner{},
		controlPath: opts.Config.Global.ControlSockPath}
	d.metrics = newMetrics(opts.Version, time.Now(), d.activeTasks)
	// Every log entry counts in zrepl_daemon_log_entries.
	d.log = slog.New(&logCounter{inner: opts.Log.Handler(), m: d.metrics})
	d.pprof.log = d.log
	for _, m := range opts.Config.Global.Monitoring {
		d.monitoring = append(d.monitoring, monitorSpec{listen: m.Listen, freebind: m.ListenFreebind})
	}
	// Passive jobs first: a local push or pull finds its peer among them.
	for i := range opts.Config.Jobs {
		j := &opts.Config.Jobs[i]
		if j.Type == config.JobSink || j.Type == config.JobSource {
			if err := d.buildPassive(j); err != nil {
				return nil, fmt.Errorf("job %s: %w", j.Name, err)
			}
		}
	}
	for i := range opts.Config.Jobs {
		j := &opts.Config.Jobs[i]
		if j.Type == config.JobSink || j.Type == config.JobSource {
			continue
		}
		if err := d.buildActive(j); err != nil {
			return nil, fmt.Errorf("job %s: %w", j.Name, err)
		}
	}
	return d, nil
}

func (d *Daemon) afterRun() {
	if err := d.persist(); err != nil {
		d.log.Error("saving backend state failed", "err", err)
	}
}

func (d *Daemon) persist() error {
	if d.opts.Persist == nil {
		return nil
	}
	d.persistMu.Lock()
	defer d.persistMu.Unlock()
	return d.opts.Persist()
}

// filesystems lists the filesystems a filter matches.
func (d *Daemon) filesystems(ctx context.Context, f *config.Filter) ([]zfs.DatasetPath, error) {
	return MatchFilesystems(ctx, d.opts.ZFS, f)
}

// MatchFilesystems lists the existing filesystems that f matches.
func MatchFilesystems(ctx context.Context, z zfs.ZFS, f *config.Filter) ([]zfs.DatasetPath, error) {
	out, _, err := matchFilesystems(ctx, z, f)
	return out, err
}

// matchFilesystems is MatchFilesystems, also counting the filter's rules
// that name a dataset not listed (zrepl_zfs_list_unmatched_...).
func matchFilesystems(ctx context.Context, z zfs.ZFS, f *config.Filter) (out []zfs.DatasetPath, unmatched int, err error) {
	seen := map[zfs.DatasetPath]bool{}
	listed := map[zfs.DatasetPath]bool{}
	roots, err := filterRoots(ctx, z, f)
	if err != nil {
		return nil, 0, err
	}
	for _, root := range roots {
		infos, err := z.ListFilesystems(ctx, root)
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		for _, info := range infos {
			listed[info.Path] = true
			if !seen[info.Path] && f.Match(info.Path) {
				seen[info.Path] = true
				out = append(out, info.Path)
			}
		}
	}
	for _, r := range f.Rules() {
		if !r.Path.IsZero() && !listed[r.Path] {
			unmatched++
		}
	}
	return out, unmatched, nil
}

// zfs is the backend as job j uses it (its calls timed in the metrics).
func (d *Daemon) zfs(j *config.Job) zfs.ZFS {
	binary := "zfs"
	if d.opts.Config.Global.ZFSBackend == config.BackendModel {
		binary = "zfsmodel"
	}
	return &metricsZFS{ZFS: d.opts.ZFS, m: d.metrics, job: j.Name, binary: binary}
}

// activeTasks is what the daemon works on now: running jobs (zrepl counts
// its tracing tasks; a job's run is the task here).
func (d *Daemon) activeTasks() float64 {
	n := 0
	for _, st := range d.Status() {
		switch st.State {
		case job.StateIdle, job.StateServing, job.StateStopped:
		default:
			n++
		}
	}
	return float64(n)
}

func (d *Daemon) jobConfig(j *config.Job) job.Config {
	d.metrics.activeJob(j.Name)
	return job.Config{
		Name: j.Name, ID: j.ID, Type: string(j.Type), Log: d.log,
		AfterRun: d.afterRun, Observer: d.metrics,
		Concurrency: j.Replication.Steps, SizeEstimates: j.Replication.SizeEstimates,
	}
}

func (d *Daemon) buildActive(j *config.Job) error {
	c := d.jobConfig(j)
	z := d.zfs(j)
	aj := &activeJob{}
	var snap snapshotter
	if j.Snapshotting != nil {
		var err error
		if snap, err = d.newSnapshotter(j); err != nil {
			return err
		}
	}
	if j.Snapshotting.Scheduled() {
		c.Snapshotter = snap
	}
	if j.Type == config.JobPush || j.Type == config.JobPull {
		p, err := protection(j)
		if err != nil {
			return err
		}
		c.Protection = p
	}
	if j.Type == config.JobPush || j.Type == config.JobPull {
		d.metrics.replicating(j.Name)
	}
	switch j.Type {
	case config.JobSnap:
		aj.local = sender(z, j)
		c.LocalTarget = aj.local
		aj.pruneLocal = newPrune(j.Pruning.Keep)
		c.PruneLocal = aj.pruneLocal.fn()
		if c.Snapshotter == nil {
			c.Snapshotter = noSnapshots{}
		}
	case config.JobPush:
		c.Policy = policy(j)
		ps, err := d.newPushSides(j)
		if err != nil {
			return err
		}
		aj.sides, c.Connect = ps, ps.sides
		aj.pruneSender, aj.pruneRecv = newPrune(j.Pruning.KeepSender), newPrune(j.Pruning.KeepReceiver)
	case config.JobPull:
		c.Policy = policy(j)
		ps, err := d.newPullSides(j)
		if err != nil {
			return err
		}
		aj.sides, c.Connect = ps, ps.sides
		if !j.Interval.Manual {
			c.Interval = j.Interval.Every
		}
		aj.pruneSender, aj.pruneRecv = newPrune(j.Pruning.KeepSender), newPrune(j.Pruning.KeepReceiver)
	default:
		return fmt.Errorf("unknown job type %q", j.Type)
	}
	c.PruneSender, c.PruneReceiver = aj.pruneSender.fn(), aj.pruneRecv.fn()
	a, err := job.NewActive(c)
	if err != nil {
		return err
	}
	aj.Active = a
	d.active = append(d.active, aj)
	d.byName[j.Name] = aj
	return nil
}

// localPeer is the passive job of this daemon an active job's local
// transport reaches, and the client identity it claims.
type localPeer struct {
	listener string
	identity string
}

// pushSides gives a push job's sides: its sender, and the sink's receiver
// (in this process for the local transport, else over rpc).
type pushSides struct {
	sender  jobSender
	streams limitedSender
	dial    *dialSpec // nil for local
	local   *passive  // the sink, for local
	peer    localPeer

	d    *Daemon
	slot *rpc.Client
}

func (d *Daemon) newPushSides(j *config.Job) (*pushSides, error) {
	s := sender(d.zfs(j), j)
	ps := &pushSides{sender: s, streams: streamSender(s, j, d.metrics), d: d}
	if j.Connect.Type == config.TransportLocal {
		ps.peer = localPeer{listener: j.Connect.ListenerName, identity: j.Connect.ClientIdentity}
		p, ok := d.localJob(ps.peer.listener, config.JobSink)
		if !ok {
			return nil, fmt.Errorf("%s: no sink job listens on local listener %q", j.Connect.Pos.Of("listener_name"), ps.peer.listener)
		}
		ps.local = p
		return ps, nil
	}
	dial, err := newDialSpec(j.Connect, d.opts.SkipCertCheck)
	if err != nil {
		return nil, err
	}
	ps.dial = dial
	return ps, nil
}

func (ps *pushSides) sides(ctx context.Context) (job.Sides, error) {
	if ps.local != nil {
		r, err := ps.local.sink.local(ps.peer.identity)
		if err != nil {
			return job.Sides{}, err
		}
		return job.Sides{Sender: ps.streams, Receiver: r, SenderPrune: ps.sender, ReceiverPrune: r}, nil
	}
	client, err := ps.d.client(&ps.slot, ps.dial)
	if err != nil {
		return job.Sides{}, err
	}
	r := client.Receiver()
	return job.Sides{Sender: ps.streams, Receiver: r, SenderPrune: ps.sender, ReceiverPrune: r}, nil
}

// pullSides gives a pull job's sides: the source's sender (in this process
// for the local transport, else over rpc) and the local receiver below
// root_fs.
type pullSides struct {
	recv  withRecvOptions
	dial  *dialSpec // nil for local
	local *passive  // the source, for local
	peer  localPeer

	d    *Daemon
	slot *rpc.Client
}

func (d *Daemon) newPullSides(j *config.Job) (*pullSides, error) {
	er := &endpoint.Receiver{ZFS: d.zfs(j), Job: j.ID, Root: j.RootFS, Placeholder: placeholderEncryption(j.Recv.Placeholder)}
	ps := &pullSides{recv: withRecvOptions{er, newRecvProps(j.Recv), newBucket(j.Recv.BandwidthLimit)}, d: d}
	if j.Connect.Type == config.TransportLocal {
		ps.peer = localPeer{listener: j.Connect.ListenerName, identity: j.Connect.ClientIdentity}
		p, ok := d.localJob(ps.peer.listener, config.JobSource)
		if !ok {
			return nil, fmt.Errorf("%s: no source job listens on local listener %q", j.Connect.Pos.Of("listener_name"), ps.peer.listener)
		}
		ps.local = p
		return ps, nil
	}
	dial, err := newDialSpec(j.Connect, d.opts.SkipCertCheck)
	if err != nil {
		return nil, err
	}
	ps.dial = dial
	return ps, nil
}

func (ps *pullSides) sides(ctx context.Context) (job.Sides, error) {
	if ps.local != nil {
		src := ps.local.source
		return job.Sides{Sender: src.streams, Receiver: ps.recv, SenderPrune: src.sender, ReceiverPrune: ps.recv, SenderJob: src.sender.Job}, nil
	}
	client, err := ps.d.client(&ps.slot, ps.dial)
	if err != nil {
		return job.Sides{}, err
	}
	// keep_sender prunes the source over the wire; the source decides
	// what may go, by the rules a local source applies
	// (endpoint.Sender.DestroySnapshots).
	s := client.Sender()
	return job.Sides{Sender: s, Receiver: ps.recv, SenderPrune: s, ReceiverPrune: ps.recv}, nil
}

// localJob finds the passive job serving a local listener.
func (d *Daemon) localJob(listener string, typ config.JobType) (*passive, bool) {
	for _, p := range d.passive {
		if p.typ == typ && p.serve.transport == config.TransportLocal && p.serve.listener == listener {
			return p, true
		}
	}
	return nil, false
}

func (d *Daemon) buildPassive(j *config.Job) error {
	serve, err := newServeSpec(&d.opts.Config.Global, j.Serve, d.opts.SkipCertCheck)
	if err != nil {
		return err
	}
	p := &passive{name: j.Name, typ: j.Type, serve: serve}
	p.refusals = newRefusals(j.Name, d.log, time.Now, func(reason string) { d.metrics.Refused(j.Name, reason) })
	sc := rpc.ServerConfig{OnConnError: p.refusals.onConnError}
	switch j.Type {
	case config.JobSink:
		p.sink = newSinkSpec(d.zfs(j), j)
		sc.Receiver = p.sink.receiver
	case config.JobSource:
		s := sender(d.zfs(j), j)
		p.source = &sourceSides{sender: s, streams: streamSender(s, j, d.metrics)}
		sc.Sender = rpc.Source(p.source.streams)
		if j.Snapshotting.Scheduled() {
			c := d.jobConfig(j)
			snap, err := d.newSnapshotter(j)
			if err != nil {
				return err
			}
			c.Snapshotter = snap
			a, err := job.NewActive(c)
			if err != nil {
				return err
			}
			p.snap = a
		}
	}
	srv, err := rpc.NewServer(sc)
	if err != nil {
		return err
	}
	p.server = srv
	d.passive = append(d.passive, p)
	d.byName[j.Name] = p
	return nil
}

// Run opens listeners, the control socket and the metrics endpoint, runs
// all jobs until ctx ends, then stops them, waits for them and persists
// the backend state.
func (d *Daemon) Run(ctx context.Context) error {
	if d.opts.SkipCertCheck {
		return errors.New("daemon: built without its TLS files (SkipCertCheck) and cannot run")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var closers []func()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		wg.Wait()
	}
	defer stop()
	closers = append(closers, d.pprof.stop)
	if l := d.opts.Control; l != nil {
		closers = append(closers, func() { l.Close() })
	}

	for _, p := range d.passive {
		if p.serve.transport == config.TransportLocal {
			continue // reached in-process
		}
		ls, err := p.serve.open(p.refusals)
		if err != nil {
			return fmt.Errorf("job %s: %w", p.name, err)
		}
		p.listeners = ls
		srv := p.server
		closers = append(closers, srv.Stop)
		for _, l := range ls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := srv.Serve(l); err != nil && !errors.Is(err, rpc.ErrServerStopped) && ctx.Err() == nil {
					d.log.Error("serving failed", "job", p.name, "err", err)
				}
			}()
			d.log.Info("serving", "job", p.name, "type", p.typ, "address", l.Addr().String())
		}
	}

	control, where := d.opts.Control, d.controlPath
	if control == nil {
		l, err := listenControl(d.controlPath)
		if err != nil {
			return err
		}
		control = l
	} else {
		where = control.Addr().String()
	}
	srv := &http.Server{Handler: d.metrics.control(d.controlHandler()), ReadHeaderTimeout: 10 * time.Second}
	closers = append(closers, func() { srv.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(control)
	}()
	d.log.Info("control socket listening", "path", where)
	for _, m := range d.monitoring {
		l, err := listenSocket(m.listen, m.freebind)
		if err != nil {
			return fmt.Errorf("prometheus endpoint: %w", err)
		}
		srv := &http.Server{Handler: d.metrics.handler(d), ReadHeaderTimeout: 10 * time.Second}
		closers = append(closers, func() { srv.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Serve(l)
		}()
		d.log.Info("prometheus metrics listening", "address", l.Addr().String())
	}

	var jobs sync.WaitGroup
	for _, a := range d.active {
		jobs.Add(1)
		go func() {
			defer jobs.Done()
			a.Run(ctx)
		}()
	}
	for _, p := range d.passive {
		if p.snap != nil {
			jobs.Add(1)
			go func() {
				defer jobs.Done()
				p.snap.Run(ctx)
			}()
		}
	}
	d.log.Info("daemon started", "jobs", len(d.byName))
	<-ctx.Done()
	d.log.Info("shutting down: cancelling runs (they resume on the next start)")
	jobs.Wait()
	d.closeClients()
	// Servers stop before the state is saved: their cancelled receives
	// leave partial state (with resume tokens) that must be in it.
	stop()
	if err := d.persist(); err != nil {
		return fmt.Errorf("saving backend state: %w", err)
	}
	return nil
}

func listenControl(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket: %s exists and is no socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket: %s: another daemon is running", path)
		}
		os.Remove(path)
	}
	// Only the daemon's user may signal it or release holds, from the
	// first instant: bind creates the socket with the umask's mode, so it
	// is bound in a private directory (0700 whatever the umask), made
	// 0600 there and only then renamed to its path.
	tmp, err := os.MkdirTemp(dir, ".c")
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	bound := filepath.Join(tmp, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s (bound first as %s): %w", path, bound, err)
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(bound, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Rename(bound, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &controlListener{UnixListener: l, path: path}, nil
}

// controlListener removes the socket from its path when closed (the
// listener itself only knows the path it was bound at).
type controlListener struct {
	*net.UnixListener
	path string
}

func (l *controlListener) Close() error {
	err := l.UnixListener.Close()
	os.Remove(l.path)
	return err
}

// Jobs is what the daemon built for each job, in config order of kind
// (passive, then active): for inspection (configcheck --what jobs).
func (d *Daemon) Jobs() any {
	return struct {
		Passive []*passive
		Active  []*activeJob
	}{d.passive, d.active}
}

// Status returns every job's status, ordered by name.
func (d *Daemon) Status() []job.Status {
	var out []job.Status
	for _, r := range d.byName {
		out = append(out, r.Status())
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Name < out[k].Name })
	return out
}

// Job returns the active job called name.
func (d *Daemon) Job(name string) (*job.Active, error) {
	r, ok := d.byName[name]
	if !ok {
		return nil, fmt.Errorf("no job %q", name)
	}
	a, ok := r.(*activeJob)
	if !ok {
		return nil, fmt.Errorf("job %q is a passive job (sink or source)", name)
	}
	return a.Active, nil
}
