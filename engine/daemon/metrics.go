package daemon

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"zrepl.dev/zrepl/engine/endpoint"
)

// Metrics are the daemon's Prometheus metrics, on a registry of its own so
// that tests and several daemons in one process do not collide.
type Metrics struct {
	reg         *prometheus.Registry
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
}

func newMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "job_runs_total", Help: "Finished runs of a job.",
		}, []string{"job"}),
		runSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Name: "job_run_duration_seconds", Help: "Duration of a job's runs (snapshot, replication, pruning).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"job"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "job_run_errors_total", Help: "Runs of a job that ended with an error.",
		}, []string{"job"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "replication_bytes_total", Help: "Bytes of send streams replicated.",
		}, []string{"job"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "pruned_snapshots_total", Help: "Snapshots destroyed by pruning.",
		}, []string{"job", "side"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "snapshots_taken_total", Help: "Snapshots taken by the snapshotter.",
		}, []string{"job"}),
		abstraction: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "zrepl", Name: "abstractions", Help: "Holds and bookmarks of each job, by kind (counted at scrape time).",
		}, []string{"job", "kind"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "zrepl", Name: "step_send_duration_seconds", Help: "Duration of each step's send stream, from its start to its close.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"job"}),
		hookRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "hook_runs_total", Help: "Snapshot hook edges run, by hook type and phase (pre_snapshot, post_snapshot).",
		}, []string{"job", "type", "phase"}),
		hookFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zrepl", Name: "hook_failures_total", Help: "Snapshot hook edges that failed (also timed out), by hook type and phase.",
		}, []string{"job", "type", "phase"}),
	}
	m.reg.MustRegister(m.runs, m.runSeconds, m.errors, m.bytes, m.pruned, m.snapshots, m.abstraction, m.steps, m.hookRuns, m.hookFails)
	return m
}

func (m *Metrics) RunDone(job string, took time.Duration, err error) {
	m.runs.WithLabelValues(job).Inc()
	m.runSeconds.WithLabelValues(job).Observe(took.Seconds())
	if err != nil {
		m.errors.WithLabelValues(job).Inc()
	}
}
func (m *Metrics) Replicated(job string, n int64) { m.bytes.WithLabelValues(job).Add(float64(n)) }
func (m *Metrics) Pruned(job, side string, n int) {
	m.pruned.WithLabelValues(job, side).Add(float64(n))
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

func (m *Metrics) Snapshotted(job string, n int) { m.snapshots.WithLabelValues(job).Add(float64(n)) }

// handler serves /metrics, counting holds and bookmarks first.
func (m *Metrics) handler(d *Daemon) http.Handler {
	inner := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		}
		inner.ServeHTTP(w, r)
	})
}

var _ = endpoint.StepHold
