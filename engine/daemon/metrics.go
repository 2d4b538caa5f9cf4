package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"zrepl.dev/zrepl/engine/job"
)

// Metrics are the daemon's Prometheus metrics, on a registry of its own so
// that tests and several daemons in one process do not collide.
//
// The zrepl_* metrics zrepl v0.7 exports keep its names, types and label
// names, so zrepl's Grafana dashboard and alerts work unchanged (where the
// meaning had to be adapted, the Help says how). Go's runtime (go_*) and
// the process's (process_*) collectors are registered as zrepl's default
// registry has them. The project's own metrics (zrepl_job_*, ...) label
// the job zrepl_job as well: Prometheus's own "job" label is the scrape
// target's.
type Metrics struct {
	reg *prometheus.Registry

	// zrepl v0.7's.
	startTime       prometheus.Gauge
	logEntries      *prometheus.CounterVec
	bytesReplicated *prometheus.CounterVec
	fsErrors        *prometheus.GaugeVec
	lastSuccessful  *prometheus.GaugeVec
	stateTime       *prometheus.HistogramVec
	pruneTime       *prometheus.HistogramVec
	listVersions    *prometheus.HistogramVec
	snapshotTime    *prometheus.HistogramVec
	bookmarkTime    *prometheus.HistogramVec
	destroyTime     *prometheus.HistogramVec
	unmatched       *prometheus.GaugeVec
	zfscmdRuntime   *prometheus.HistogramVec
	abstractionsAll prometheus.Gauge
	controlBegin    *prometheus.CounterVec
	controlFinished *prometheus.HistogramVec

	// The project's own.
	runs        *prometheus.CounterVec
	runSeconds  *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	pruned      *prometheus.CounterVec
	snapshots   *prometheus.CounterVec
	abstraction *prometheus.GaugeVec
	steps       *prometheus.HistogramVec
	hookRuns    *prometheus.CounterVec
	hookFails   *prometheus.CounterVec
	refused     *prometheus.CounterVec

	// counted is, per job and filesystem, how many bytes of the job's
	// current replication bytes_replicated has counted: a scrape counts
	// a running replication's progress so far, its end the rest.
	mu      sync.Mutex
	counted map[string]map[string]int64
}

// zfscmdBuckets are zrepl's for its zfscmd histograms.
var zfscmdBuckets = []float64{0.01, 0.1, 0.2, 0.5, 0.75, 1, 2, 5, 10, 60}

// versionInfo is zrepl_start_time's version_info label, in zrepl's format.
func versionInfo(version string) string {
	return fmt.Sprintf("zrepl version=%s go=%s GOOS=%s GOARCH=%s Compiler=%s",
		version, runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.Compiler)
}

// newMetrics registers every metric. activeTasks counts what the daemon
// works on right now (zrepl_trace_active_tasks).
func newMetrics(version string, now time.Time, activeTasks func() float64) *Metrics {
	jobLabel := []string{"zrepl_job"}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		startTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "zrepl", Name: "start_time", Help: "zrepl daemon start time and version",
			ConstLabels: prometheus.Labels{"raw": version, "version_info": versionInfo(version)},
		}),
		logEntries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Subsystem: "daemon", Name: "log_entries",
			Help: "number of log entries per job and level (all levels, also those no outlet prints); _nojobid for the daemon's own",
		}, []string{"zrepl_job", "level"}),
		bytesReplicated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Subsystem: "replication", Name: "bytes_replicated",
			Help: "number of bytes replicated from sender to receiver per filesystem (a running replication's progress counts at each scrape)",
		}, []string{"zrepl_job", "filesystem"}),
		fsErrors: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "zrepl", Subsystem: "replication", Name: "filesystem_errors",
			Help: "number of filesystems that failed replication in the latest replication attempt, or -1 if the job failed before enumerating the filesystems",
		}, jobLabel),
		lastSuccessful: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "zrepl", Subsystem: "replication", Name: "last_successful",
			Help: "timestamp of last successful replication",
		}, jobLabel),
		stateTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Subsystem: "replication", Name: "state_time",
			Help: "seconds spent during replication, by how it ended (state done or failed)",
		}, []string{"zrepl_job", "state"}),
		pruneTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Subsystem: "pruning", Name: "time",
			Help: "seconds spent in pruner",
		}, []string{"zrepl_job", "prune_side"}),
		listVersions: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Subsystem: "zfs", Name: "list_filesystem_versions_duration",
			Help: "Seconds it took for listing the versions of a given filesystem",
		}, []string{"filesystem"}),
		snapshotTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Subsystem: "zfs", Name: "snapshot_duration",
			Help: "Seconds it took to create a snapshot a given filesystem",
		}, []string{"filesystem"}),
		bookmarkTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Subsystem: "zfs", Name: "bookmark_duration",
			Help: "Duration it took to bookmark a given snapshot",
		}, []string{"filesystem"}),
		destroyTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Subsystem: "zfs", Name: "destroy_duration",
			Help: "Duration it took to destroy a dataset (dataset_type snapshot, bookmark or filesystem)",
		}, []string{"dataset_type", "filesystem"}),
		unmatched: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "zrepl", Subsystem: "zfs", Name: "list_unmatched_user_specified_dataset_count",
			Help: "Incremented, each time a job lists the filesystems its filter matches, by the number of filter rules " +
				"naming a dataset that does not exist. Monitor for increases to detect filter rules that have no effect.",
		}, []string{"jobid"}),
		zfscmdRuntime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Subsystem: "zfscmd", Name: "runtime",
			Help:    "number of seconds a ZFS backend call took (a send: until its stream was closed); zfsbinary is zfs, or zfsmodel for the model backend",
			Buckets: zfscmdBuckets,
		}, []string{"jobid", "zfsbinary", "zfsverb"}),
		abstractionsAll: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "zrepl", Subsystem: "endpoint", Name: "abstractions_cache_entry_count",
			Help: "number of holds and bookmarks zrepl made on this host (counted at scrape time: there is no cache)",
		}),
		controlBegin: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Subsystem: "control", Name: "request_begin",
			Help: "number of request we started to handle",
		}, []string{"endpoint"}),
		controlFinished: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Subsystem: "control", Name: "request_finished",
			Help:    "time it took a request to finish",
			Buckets: []float64{1e-6, 10e-6, 100e-6, 500e-6, 1e-3, 10e-3, 100e-3, 200e-3, 400e-3, 800e-3, 1, 10, 20},
		}, []string{"endpoint"}),

		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "job_runs_total", Help: "Finished runs of a job.",
		}, jobLabel),
		runSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Name: "job_run_duration_seconds", Help: "Duration of a job's runs (snapshot, replication, pruning).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, jobLabel),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "job_run_errors_total", Help: "Runs of a job that ended with an error.",
		}, jobLabel),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "replication_bytes_total", Help: "Bytes of send streams replicated by finished replications.",
		}, jobLabel),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "pruned_snapshots_total", Help: "Snapshots destroyed by pruning.",
		}, []string{"zrepl_job", "side"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "snapshots_taken_total", Help: "Snapshots taken by the snapshotter.",
		}, jobLabel),
		abstraction: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "zrepl", Name: "abstractions", Help: "Holds and bookmarks of each job, by kind (counted at scrape time).",
		}, []string{"zrepl_job", "kind"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Name: "step_send_duration_seconds", Help: "Duration of each step's send stream, from its start to its close.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, jobLabel),
		hookRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "hook_runs_total", Help: "Snapshot hook edges run, by hook type and phase (pre_snapshot, post_snapshot).",
		}, []string{"zrepl_job", "type", "phase"}),
		hookFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "hook_failures_total", Help: "Snapshot hook edges that failed (also timed out), by hook type and phase.",
		}, []string{"zrepl_job", "type", "phase"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Subsystem: "daemon", Name: "connections_refused_total",
			Help: "Connections a serving job refused or closed before any call, by reason (the log says each peer at most once a minute).",
		}, []string{"zrepl_job", "reason"}),
		counted: map[string]map[string]int64{},
	}
	m.startTime.Set(float64(now.Unix()))
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.startTime, m.logEntries, m.bytesReplicated, m.fsErrors, m.lastSuccessful, m.stateTime, m.pruneTime,
		m.listVersions, m.snapshotTime, m.bookmarkTime, m.destroyTime, m.unmatched, m.zfscmdRuntime,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "zrepl", Subsystem: "trace", Name: "active_tasks",
			Help: "number of jobs running right now (snapshotting, replicating or pruning)",
		}, activeTasks),
		m.abstractionsAll, m.controlBegin, m.controlFinished,
		m.runs, m.runSeconds, m.errors, m.bytes, m.pruned, m.snapshots, m.abstraction, m.steps, m.hookRuns, m.hookFails, m.refused,
	)
	return m
}

// activeJob declares a job that runs (an active job, or a source's
// snapshotting), so that its counters exist at zero before it fails or
// snapshots for the first time.
func (m *Metrics) activeJob(job string) {
	m.runs.WithLabelValues(job)
	m.errors.WithLabelValues(job)
	m.snapshots.WithLabelValues(job)
}

// replicating declares a job that replicates, so that its gauges exist
// (zrepl's dashboard lists jobs by zrepl_replication_filesystem_errors)
// before its first replication ends.
func (m *Metrics) replicating(job string) {
	m.fsErrors.WithLabelValues(job)
	m.lastSuccessful.WithLabelValues(job)
}

// RunDone records a finished run of a job.
func (m *Metrics) RunDone(job string, took time.Duration, err error) {
	m.runs.WithLabelValues(job).Inc()
	m.runSeconds.WithLabelValues(job).Observe(took.Seconds())
	if err != nil {
		m.errors.WithLabelValues(job).Inc()
	}
}

// ReplicationDone records a finished replication: its bytes per
// filesystem, its failed filesystems, its time.
func (m *Metrics) ReplicationDone(job string, took time.Duration, st *job.ReplicationStatus, err error, end time.Time) {
	if st != nil {
		m.countBytes(job, st)
		m.bytes.WithLabelValues(job).Add(float64(st.BytesDone))
	}
	m.mu.Lock()
	delete(m.counted, job)
	m.mu.Unlock()
	failed := 0
	if st != nil {
		for _, f := range st.Filesystems {
			// "(sender)" and "(receiver)" stand for a listing that
			// failed: no filesystem was enumerated.
			if f.State == "failed" && !strings.HasPrefix(f.FS, "(") {
				failed++
			}
		}
	}
	if err != nil && failed == 0 {
		failed = -1 // failed before (or without) a filesystem's failure
	}
	m.fsErrors.WithLabelValues(job).Set(float64(failed))
	state := "done"
	if err != nil {
		state = "failed"
	} else {
		m.lastSuccessful.WithLabelValues(job).Set(float64(end.Unix()))
	}
	m.stateTime.WithLabelValues(job, state).Observe(took.Seconds())
}

// countBytes adds what st moved since it was last counted.
func (m *Metrics) countBytes(job string, st *job.ReplicationStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.counted[job]
	if c == nil {
		c = map[string]int64{}
		m.counted[job] = c
	}
	for _, f := range st.Filesystems {
		if f.BytesDone > c[f.FS] {
			m.bytesReplicated.WithLabelValues(job, f.FS).Add(float64(f.BytesDone - c[f.FS]))
			c[f.FS] = f.BytesDone
		}
	}
}

// Pruned records one side's pruning.
func (m *Metrics) Pruned(job, side string, n int, took time.Duration) {
	m.pruned.WithLabelValues(job, side).Add(float64(n))
	m.pruneTime.WithLabelValues(job, side).Observe(took.Seconds())
}

// StepDone records one step's send duration.
func (m *Metrics) StepDone(job string, took time.Duration) {
	m.steps.WithLabelValues(job).Observe(took.Seconds())
}

// HookRan counts one edge of a snapshot hook.
func (m *Metrics) HookRan(job, typ, phase string, err error) {
	m.hookRuns.WithLabelValues(job, typ, phase).Inc()
	if err != nil {
		m.hookFails.WithLabelValues(job, typ, phase).Inc()
	}
}

// Refused counts a connection a serving job refused.
func (m *Metrics) Refused(job, reason string) { m.refused.WithLabelValues(job, reason).Inc() }

// Snapshotted records the snapshots one periodic snapshot took.
func (m *Metrics) Snapshotted(job string, n int) { m.snapshots.WithLabelValues(job).Add(float64(n)) }

// Unmatched records a listing of a job's filter with n rules naming no
// existing dataset.
func (m *Metrics) Unmatched(job string, n int) { m.unmatched.WithLabelValues(job).Add(float64(n)) }

var _ job.Observer = (*Metrics)(nil)

// handler serves /metrics: first the running replications' progress and
// the holds and bookmarks are counted.
func (m *Metrics) handler(d *Daemon) http.Handler {
	inner := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, st := range d.Status() {
			if st.Replication != nil && !st.Replication.Finished {
				m.countBytes(st.Name, st.Replication)
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if abs, err := d.Holds(ctx, ""); err == nil {
			m.abstraction.Reset()
			for _, a := range abs {
				job := a.Job
				if job == "" {
					job = "-"
				}
				m.abstraction.WithLabelValues(job, a.Kind).Inc()
			}
			m.abstractionsAll.Set(float64(len(abs)))
		}
		inner.ServeHTTP(w, r)
	})
}

// control counts and times the control socket's requests.
func (m *Metrics) control(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.controlBegin.WithLabelValues(r.URL.Path).Inc()
		start := time.Now()
		h.ServeHTTP(w, r)
		m.controlFinished.WithLabelValues(r.URL.Path).Observe(time.Since(start).Seconds())
	})
}

// logCounter is a slog.Handler that counts every record by job and level
// (zrepl_daemon_log_entries) before it hands the enabled ones on.
type logCounter struct {
	inner slog.Handler
	m     *Metrics
	job   string // from With("job", ...); "" outside any job
	group bool   // attributes now go into a group: not the job's
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }

func (h *logCounter) Handle(ctx context.Context, r slog.Record) error {
	job := h.job
	if !h.group {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "job" {
				job = a.Value.String()
				return false
			}
			return true
		})
	}
	if job == "" {
		job = "_nojobid"
	}
	h.m.logEntries.WithLabelValues(job, levelName(r.Level)).Inc()
	if !h.inner.Enabled(ctx, r.Level) {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

func (h *logCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	if !h.group {
		for _, a := range attrs {
			if a.Key == "job" {
				c.job = a.Value.String()
			}
		}
	}
	return &c
}

func (h *logCounter) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	c.group = true
	return &c
}

// levelName is zrepl's name of a level.
func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return strings.ToLower(slog.LevelError.String())
}
