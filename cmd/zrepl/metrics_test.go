package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// zreplMetrics are the metrics zrepl v0.7 registers (its
// internal/**/prometheus.New* calls) that apply here, with their types
// and label names (zrepl's ConstLabels included). zrepl's frameconn
// metrics are left out: its data connection layer is not ours.
var zreplMetrics = map[string]struct {
	typ    dto.MetricType
	labels []string
}{
	"zrepl_start_time":                                      {dto.MetricType_GAUGE, []string{"raw", "version_info"}},
	"zrepl_daemon_log_entries":                              {dto.MetricType_COUNTER, []string{"level", "zrepl_job"}},
	"zrepl_replication_bytes_replicated":                    {dto.MetricType_COUNTER, []string{"filesystem", "zrepl_job"}},
	"zrepl_replication_filesystem_errors":                   {dto.MetricType_GAUGE, []string{"zrepl_job"}},
	"zrepl_replication_last_successful":                     {dto.MetricType_GAUGE, []string{"zrepl_job"}},
	"zrepl_replication_state_time":                          {dto.MetricType_HISTOGRAM, []string{"state", "zrepl_job"}},
	"zrepl_pruning_time":                                    {dto.MetricType_HISTOGRAM, []string{"prune_side", "zrepl_job"}},
	"zrepl_zfs_list_filesystem_versions_duration":           {dto.MetricType_HISTOGRAM, []string{"filesystem"}},
	"zrepl_zfs_snapshot_duration":                           {dto.MetricType_HISTOGRAM, []string{"filesystem"}},
	"zrepl_zfs_bookmark_duration":                           {dto.MetricType_HISTOGRAM, []string{"filesystem"}},
	"zrepl_zfs_destroy_duration":                            {dto.MetricType_HISTOGRAM, []string{"dataset_type", "filesystem"}},
	"zrepl_zfs_list_unmatched_user_specified_dataset_count": {dto.MetricType_GAUGE, []string{"jobid"}},
	"zrepl_zfscmd_runtime":                                  {dto.MetricType_HISTOGRAM, []string{"jobid", "zfsbinary", "zfsverb"}},
	"zrepl_trace_active_tasks":                              {dto.MetricType_GAUGE, nil},
	"zrepl_endpoint_abstractions_cache_entry_count":         {dto.MetricType_GAUGE, nil},
	"zrepl_control_request_begin":                           {dto.MetricType_COUNTER, []string{"endpoint"}},
	"zrepl_control_request_finished":                        {dto.MetricType_HISTOGRAM, []string{"endpoint"}},
}

// dashboardQueries are the series zrepl's published Grafana dashboard
// (dist/grafana/grafana-prometheus-zrepl.json) queries, with the labels
// its queries and legends select by.
var dashboardQueries = map[string][]string{
	"zrepl_start_time":                                      nil,
	"zrepl_daemon_log_entries":                              {"zrepl_job", "level"},
	"zrepl_replication_filesystem_errors":                   {"zrepl_job"},
	"zrepl_replication_bytes_replicated":                    {"zrepl_job"},
	"zrepl_zfs_list_unmatched_user_specified_dataset_count": {"jobid"},
	"zrepl_trace_active_tasks":                              nil,
	"zrepl_endpoint_abstractions_cache_entry_count":         nil,
	"go_goroutines":                                         nil,
	"go_memstats_sys_bytes":                                 nil,
	"go_memstats_alloc_bytes":                               nil,
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	slices.Sort(out)
	return out
}

// A running daemon (the quickstart's push and sink) exports every metric
// zrepl does, with its type and labels, and every series zrepl's Grafana
// dashboard queries, so that dashboard works unchanged; Go's and the
// process's collectors are there too.
func TestMetricsAsZreplExportsThem(t *testing.T) {
	dir := shortDir(t)
	// Snapshots every second, the sender keeps one: the second run
	// prunes (destroys) one.
	cfg := quickstartIn(t, dir, "1s")
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfg, []byte(strings.Replace(string(b), "count: 10", "count: 1", 1)), 0o600))
	var logs syncBuffer
	root := newRootCommand(&logs, &logs)
	root.SetArgs([]string{"daemon", "--config", cfg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	var addr []string
	waitFor(t, 30*time.Second, "the first replication", func() bool {
		addr = regexp.MustCompile(`prometheus metrics listening address="([^"]+)"`).FindStringSubmatch(logs.String())
		return addr != nil && strings.Contains(logs.String(), "replication done")
	})
	// One control request, so that its metrics have a series.
	_, err = run(t, "status", "--json", "--config", cfg)
	require.NoError(t, err)

	var fams map[string]*dto.MetricFamily
	waitFor(t, 30*time.Second, "a run's pruning to destroy a snapshot", func() bool {
		fams = scrape(t, addr[1])
		_, ok := fams["zrepl_zfs_destroy_duration"]
		return ok
	})
	for name, want := range zreplMetrics {
		f, ok := fams[name]
		if !assert.True(t, ok, "zrepl's %s is exported", name) {
			continue
		}
		assert.Equal(t, want.typ, f.GetType(), name)
		require.NotEmpty(t, f.GetMetric(), name)
		for _, m := range f.GetMetric() {
			assert.Equal(t, want.labels, labelNames(m), name)
		}
	}
	for name, labels := range dashboardQueries {
		f, ok := fams[name]
		if !assert.True(t, ok, "the dashboard's %s", name) {
			continue
		}
		require.NotEmpty(t, f.GetMetric(), name)
		for _, l := range labels {
			assert.Contains(t, labelNames(f.GetMetric()[0]), l, name)
		}
	}
	// Our own dashboard queries only what the daemon exports.
	b, err = os.ReadFile("../../dist/grafana/zrepl.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	queried := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			// Every metric is followed by its selector; labels and
			// $variables are not.
			for _, m := range regexp.MustCompile(`(?:^|[^$\w])((?:zrepl|go|process)_[a-z_]+)\{`).FindAllStringSubmatch(tg.Expr, -1) {
				name := m[1]
				queried++
				base := name
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if _, ok := fams[base]; !ok {
						base = strings.TrimSuffix(base, suffix)
					}
				}
				_, ok := fams[base]
				assert.True(t, ok, "panel %q queries %s", p.Title, name)
			}
		}
	}
	assert.Greater(t, queried, 20)

	memstats := 0
	for name := range fams {
		if strings.HasPrefix(name, "go_memstats_") {
			memstats++
		}
	}
	assert.Greater(t, memstats, 10, "go_memstats_*")
	assert.Contains(t, fams, "process_start_time_seconds")

	value := func(name string, labels map[string]string) (float64, bool) {
		for _, m := range fams[name].GetMetric() {
			match := true
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					match = false
				}
			}
			if match {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue(), true
				case m.Gauge != nil:
					return m.Gauge.GetValue(), true
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount()), true
				}
			}
		}
		return 0, false
	}
	push := map[string]string{"zrepl_job": "quickstart_push"}
	v, ok := value("zrepl_replication_bytes_replicated", map[string]string{"zrepl_job": "quickstart_push", "filesystem": "pool/data"})
	assert.True(t, ok && v > 0, "bytes of pool/data: %v", v)
	v, _ = value("zrepl_replication_filesystem_errors", push)
	assert.Zero(t, v)
	v, _ = value("zrepl_replication_last_successful", push)
	assert.InDelta(t, float64(time.Now().Unix()), v, 120)
	v, _ = value("zrepl_replication_state_time", map[string]string{"zrepl_job": "quickstart_push", "state": "done"})
	assert.GreaterOrEqual(t, v, 1.0)
	v, _ = value("zrepl_start_time", map[string]string{"raw": version})
	assert.InDelta(t, float64(time.Now().Unix()), v, 120)
	v, _ = value("zrepl_daemon_log_entries", map[string]string{"zrepl_job": "quickstart_push", "level": "info"})
	assert.Positive(t, v, "the job's info lines are counted")
	v, ok = value("zrepl_zfscmd_runtime", map[string]string{"jobid": "quickstart_push", "zfsbinary": "zfsmodel", "zfsverb": "snapshot"})
	assert.True(t, ok && v >= 1, "the push job's snapshot: %v", v)
	v, ok = value("zrepl_zfscmd_runtime", map[string]string{"jobid": "quickstart_sink", "zfsverb": "recv"})
	assert.True(t, ok && v >= 1, "the sink's receive: %v", v)
	// A run's step holds go at its end, and with a snapshot every second a
	// scrape may fall inside a run: between runs only the push job's cursor
	// and the sink's last-received hold are left (a leaked hold never goes).
	waitFor(t, 30*time.Second, "between runs: the push job's cursor, the sink's last-received hold", func() bool {
		v, _ := value("zrepl_endpoint_abstractions_cache_entry_count", nil)
		if v == 2 {
			return true
		}
		fams = scrape(t, addr[1])
		return false
	})
}
