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
	// Clock defaults to job.RealClock.
	Clock job.Clock
	// Persist saves backend state (the model backend's); called after
	// every job run and on shutdown. May be nil. A backend wrapped in
	// Durable also saves after every change, so that a killed daemon
	// loses nothing.
	Persist func() error
	// DemoData writes data into a job's filesystems before each periodic
	// snapshot (the model backend's live demo); nil for none.
	DemoData func(ctx context.Context, fss []zfs.DatasetPath) error
	// ReplicationSleep is passed to the replication driver (tests).
	ReplicationSleep func(ctx context.Context, d time.Duration) error
	// NoControlSocket skips the control socket (tests that call Handler).
	NoControlSocket bool
}

// Daemon runs the jobs of one config.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	local   *transport.Local
	metrics *Metrics

	active  []*job.Active
	passive []*passive
	byName  map[string]runner

	persistMu sync.Mutex

	clientsMu sync.Mutex
	clients   []*rpc.Client // of active jobs, closed on shutdown
}

// client returns the rpc client of *slot, creating it on first use.
func (d *Daemon) client(slot **rpc.Client, c *config.Connect) (*rpc.Client, error) {
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

// passive is a sink or source: an rpc server on its listeners, and for a
// source with snapshotting, an active part that snapshots.
type passive struct {
	cfg       *config.Job
	server    *rpc.Server
	listeners []transport.Listener
	snap      *job.Active
}

func (p *passive) Name() string { return p.cfg.Name }
func (p *passive) Status() job.Status {
	s := job.Status{Name: p.cfg.Name, Type: string(p.cfg.Type), State: job.StateServing}
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
	if opts.Clock == nil {
		opts.Clock = job.RealClock
	}
	// A hook that cannot run is found now, not at the first snapshot.
	if err := config.CheckFiles(opts.Config); err != nil {
		return nil, err
	}
	d := &Daemon{opts: opts, log: opts.Log, local: transport.NewLocal(), metrics: newMetrics(), byName: map[string]runner{}}
	for i := range opts.Config.Jobs {
		j := &opts.Config.Jobs[i]
		var err error
		switch j.Type {
		case config.JobSink, config.JobSource:
			err = d.buildPassive(j)
		default:
			err = d.buildActive(j)
		}
		if err != nil {
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

func (d *Daemon) demo(j *config.Job) func(ctx context.Context) error {
	if d.opts.DemoData == nil {
		return nil
	}
	return func(ctx context.Context) error {
		fss, err := d.filesystems(ctx, j.Filesystems)
		if err != nil {
			return err
		}
		d.log.Info("model backend: writing demo data before the snapshot", "job", j.Name, "filesystems", len(fss))
		return d.opts.DemoData(ctx, fss)
	}
}

// filesystems lists the filesystems a filter matches.
func (d *Daemon) filesystems(ctx context.Context, f *config.Filter) ([]zfs.DatasetPath, error) {
	return MatchFilesystems(ctx, d.opts.ZFS, f)
}

// MatchFilesystems lists the existing filesystems that f matches.
func MatchFilesystems(ctx context.Context, z zfs.ZFS, f *config.Filter) ([]zfs.DatasetPath, error) {
	var out []zfs.DatasetPath
	seen := map[zfs.DatasetPath]bool{}
	roots, err := filterRoots(ctx, z, f)
	if err != nil {
		return nil, err
	}
	for _, root := range roots {
		infos, err := z.ListFilesystems(ctx, root)
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, info := range infos {
			if !seen[info.Path] && f.Match(info.Path) {
				seen[info.Path] = true
				out = append(out, info.Path)
			}
		}
	}
	return out, nil
}

func (d *Daemon) jobConfig(j *config.Job) job.Config {
	return job.Config{
		Name: j.Name, ID: j.ID, Type: string(j.Type), Log: d.log, Clock: d.opts.Clock,
		AfterRun: d.afterRun, Observer: d.metrics, ReplicationSleep: d.opts.ReplicationSleep,
		Concurrency: j.Replication.Steps, SizeEstimates: j.Replication.SizeEstimates,
	}
}

func (d *Daemon) buildActive(j *config.Job) error {
	c := d.jobConfig(j)
	z := d.opts.ZFS
	var snap snapshotter
	if j.Snapshotting != nil {
		var err error
		if snap, err = d.newSnapshotter(j); err != nil {
			return err
		}
	}
	if j.Snapshotting != nil && j.Snapshotting.Type == config.SnapshottingPeriodic {
		c.Snapshotter = snap
		c.BeforeSnapshot = d.demo(j)
	}
	if j.Type == config.JobPush || j.Type == config.JobPull {
		p, err := protection(j)
		if err != nil {
			return err
		}
		c.Protection = p
	}
	switch j.Type {
	case config.JobSnap:
		c.LocalTarget = senderTarget{sender(z, j)}
		c.PruneLocal = newPrune(j.Pruning.Keep, j.Snapshotting)
		if c.Snapshotter == nil {
			c.Snapshotter = manualSnapshotter{snap}
		}
	case config.JobPush:
		c.Policy = policy(j)
		c.Connect = d.pushConnect(j)
		c.PruneSender = newPrune(j.Pruning.KeepSender, j.Snapshotting)
		c.PruneReceiver = newPrune(j.Pruning.KeepReceiver, j.Snapshotting)
	case config.JobPull:
		c.Policy = policy(j)
		c.Connect = d.pullConnect(j)
		if !j.Interval.Manual {
			c.Interval = j.Interval.Every
		}
		c.PruneReceiver = newPrune(j.Pruning.KeepReceiver, nil)
		c.PruneSender = newPrune(j.Pruning.KeepSender, nil)
	default:
		return fmt.Errorf("unknown job type %q", j.Type)
	}
	a, err := job.NewActive(c)
	if err != nil {
		return err
	}
	d.active = append(d.active, a)
	d.byName[j.Name] = a
	return nil
}

// pushConnect gives a push job's sides: the local sender, and the sink's
// receiver (in this process for the local transport, else over rpc).
func (d *Daemon) pushConnect(j *config.Job) func(ctx context.Context) (job.Sides, error) {
	s := sender(d.opts.ZFS, j)
	streams := streamSender(s, j, d.metrics, d.opts.Clock)
	if j.Connect.Type == config.TransportLocal {
		return func(ctx context.Context) (job.Sides, error) {
			sink, ok := d.localJob(j.Connect.ListenerName, config.JobSink)
			if !ok {
				return job.Sides{}, fmt.Errorf("no sink job listens on local listener %q", j.Connect.ListenerName)
			}
			ep, err := sinkFor(d.opts.ZFS, sink, d.opts.Clock)(j.Connect.ClientIdentity)
			if err != nil {
				return job.Sides{}, err
			}
			r, ok := ep.(withRecvOptions)
			if !ok {
				return job.Sides{}, fmt.Errorf("sink %s: unexpected receiver %T", sink.Name, ep)
			}
			return job.Sides{Sender: streams, Receiver: r, SenderPrune: senderTarget{s}, ReceiverPrune: r}, nil
		}
	}
	var slot *rpc.Client
	return func(ctx context.Context) (job.Sides, error) {
		client, err := d.client(&slot, j.Connect)
		if err != nil {
			return job.Sides{}, err
		}
		r := client.Receiver()
		return job.Sides{Sender: streams, Receiver: r, SenderPrune: senderTarget{s}, ReceiverPrune: r}, nil
	}
}

// pullConnect gives a pull job's sides: the source's sender and the local
// receiver below root_fs.
func (d *Daemon) pullConnect(j *config.Job) func(ctx context.Context) (job.Sides, error) {
	er := &endpoint.Receiver{ZFS: d.opts.ZFS, Job: j.ID, Root: j.RootFS, Placeholder: placeholderEncryption(j.Recv.Placeholder)}
	recv := withRecvOptions{rpc.SinkReceiver{Receiver: er}, j.Recv, newBucket(j.Recv.BandwidthLimit, d.opts.Clock)}
	if j.Connect.Type == config.TransportLocal {
		return func(ctx context.Context) (job.Sides, error) {
			src, ok := d.localJob(j.Connect.ListenerName, config.JobSource)
			if !ok {
				return job.Sides{}, fmt.Errorf("no source job listens on local listener %q", j.Connect.ListenerName)
			}
			s := sender(d.opts.ZFS, src)
			return job.Sides{Sender: streamSender(s, src, d.metrics, d.opts.Clock), Receiver: recv, SenderPrune: senderTarget{s}, ReceiverPrune: recv, SenderJob: src.ID}, nil
		}
	}
	var slot *rpc.Client
	return func(ctx context.Context) (job.Sides, error) {
		client, err := d.client(&slot, j.Connect)
		if err != nil {
			return job.Sides{}, err
		}
		// keep_sender prunes the source over the wire; the source decides
		// what may go (rpc.SourceSender).
		s := client.Sender()
		return job.Sides{Sender: s, Receiver: recv, SenderPrune: s, ReceiverPrune: recv}, nil
	}
}

// localJob finds the passive job serving a local listener.
func (d *Daemon) localJob(listener string, typ config.JobType) (*config.Job, bool) {
	for _, p := range d.passive {
		if p.cfg.Type == typ && p.cfg.Serve.Type == config.TransportLocal && p.cfg.Serve.ListenerName == listener {
			return p.cfg, true
		}
	}
	return nil, false
}

func (d *Daemon) buildPassive(j *config.Job) error {
	p := &passive{cfg: j}
	sc := rpc.ServerConfig{OnConnError: func(identity string, err error) {
		d.log.Warn("connection refused", "job", j.Name, "client", identity, "err", err)
	}}
	switch j.Type {
	case config.JobSink:
		sc.Receiver = sinkFor(d.opts.ZFS, j, d.opts.Clock)
	case config.JobSource:
		sc.Sender = rpc.Source(streamSender(sender(d.opts.ZFS, j), j, d.metrics, d.opts.Clock))
		if j.Snapshotting != nil && j.Snapshotting.Type == config.SnapshottingPeriodic {
			c := d.jobConfig(j)
			snap, err := d.newSnapshotter(j)
			if err != nil {
				return err
			}
			c.Snapshotter = snap
			c.BeforeSnapshot = d.demo(j)
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

	for _, p := range d.passive {
		if p.cfg.Serve.Type == config.TransportLocal {
			continue // reached in-process
		}
		ls, err := listen(&d.opts.Config.Global, p.cfg.Serve)
		if err != nil {
			return fmt.Errorf("job %s: %w", p.cfg.Name, err)
		}
		p.listeners = ls
		srv := p.server
		closers = append(closers, srv.Stop)
		for _, l := range ls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := srv.Serve(l); err != nil && !errors.Is(err, rpc.ErrServerStopped) && ctx.Err() == nil {
					d.log.Error("serving failed", "job", p.cfg.Name, "err", err)
				}
			}()
			d.log.Info("serving", "job", p.cfg.Name, "type", p.cfg.Type, "address", l.Addr().String())
		}
	}

	if !d.opts.NoControlSocket {
		l, err := listenControl(d.opts.Config.Global.ControlSockPath)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
		closers = append(closers, func() { srv.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Serve(l)
		}()
		d.log.Info("control socket listening", "path", d.opts.Config.Global.ControlSockPath)
	}
	for _, m := range d.opts.Config.Global.Monitoring {
		l, err := net.Listen("tcp", m.Listen)
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
	a, ok := r.(*job.Active)
	if !ok {
		return nil, fmt.Errorf("job %q is a passive job (sink or source)", name)
	}
	return a, nil
}
