package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
)

// The control socket speaks HTTP with JSON bodies:
//
//	GET  /status                      []job.Status
//	POST /signal                      SignalRequest
//	GET  /holds?job=J                 []Hold
//	POST /holds/release-stale?dry_run=1   []Hold (what was, or would be, released)
//	POST /migrate/replication-cursor-v1-v2?dry_run=1   []string (v1 cursors destroyed)

// SignalRequest asks a job to wake up, reset or change its concurrency.
type SignalRequest struct {
	Job    string `json:"job"`
	Signal string `json:"signal"` // wakeup, reset, concurrency
	N      int    `json:"n,omitempty"`
}

// Hold is a hold or bookmark zrepl made (an endpoint.Abstraction).
type Hold struct {
	Kind    string `json:"kind"`
	Job     string `json:"job,omitempty"`
	Version string `json:"version"`
	Tag     string `json:"tag,omitempty"`
	GUID    uint64 `json:"guid"`
	TXG     uint64 `json:"createtxg"`
}

func (h Hold) String() string {
	job := h.Job
	if job == "" {
		job = "-"
	}
	if h.Tag != "" {
		return fmt.Sprintf("%-22s job=%s %s tag=%s", h.Kind, job, h.Version, h.Tag)
	}
	return fmt.Sprintf("%-22s job=%s %s", h.Kind, job, h.Version)
}

// Handler serves the control API.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, d.Status(), nil)
	})
	mux.HandleFunc("POST /signal", func(w http.ResponseWriter, r *http.Request) {
		var req SignalRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("bad signal request: %w", err))
			return
		}
		reply(w, map[string]string{"ok": req.Signal}, d.Signal(req))
	})
	mux.HandleFunc("GET /holds", func(w http.ResponseWriter, r *http.Request) {
		hs, err := d.Holds(r.Context(), r.URL.Query().Get("job"))
		reply(w, hs, err)
	})
	mux.HandleFunc("POST /holds/release-stale", func(w http.ResponseWriter, r *http.Request) {
		hs, err := d.ReleaseStale(r.Context(), r.URL.Query().Get("dry_run") != "")
		reply(w, hs, err)
	})
	mux.HandleFunc("POST /migrate/replication-cursor-v1-v2", func(w http.ResponseWriter, r *http.Request) {
		out, err := d.MigrateCursors(r.Context(), r.URL.Query().Get("dry_run") != "")
		reply(w, out, err)
	})
	return mux
}

type errorReply struct {
	Error string `json:"error"`
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(errorReply{Error: err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// Signal delivers a signal to a job.
func (d *Daemon) Signal(req SignalRequest) error {
	a, err := d.Job(req.Job)
	if err != nil {
		return err
	}
	switch req.Signal {
	case "wakeup":
		a.Wakeup()
		return nil
	case "reset":
		if !a.Reset() {
			return fmt.Errorf("job %s: no replication is running", req.Job)
		}
		return nil
	case "concurrency":
		return a.SetConcurrency(req.N)
	}
	return fmt.Errorf("unknown signal %q (want wakeup, reset or concurrency)", req.Signal)
}

// ConfigRoots are the filter roots and root_fs of every job.
func ConfigRoots(c *config.Config) []zfs.DatasetPath {
	var all []zfs.DatasetPath
	for _, j := range c.Jobs {
		all = append(all, Roots(j.Filesystems)...)
		if !j.RootFS.IsZero() {
			all = append(all, j.RootFS)
		}
	}
	var out []zfs.DatasetPath
	for _, p := range all {
		nested := false
		for _, q := range all {
			if p != q && p.HasPrefix(q) {
				nested = true
			}
		}
		if !nested && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// hostRoots are the existing datasets below which the config's jobs keep
// holds and bookmarks: every pool if a job's filter takes every pool.
func hostRoots(ctx context.Context, z zfs.ZFS, c *config.Config) ([]zfs.DatasetPath, error) {
	for _, j := range c.Jobs {
		if everyPool(j.Filesystems) {
			pools, err := z.ListPools(ctx)
			if err != nil {
				return nil, fmt.Errorf("list pools: %w", err)
			}
			return pools, nil
		}
	}
	return existingRoots(ctx, z, ConfigRoots(c))
}

// existingRoots drops roots that do not exist (a sink's root before its
// first receive).
func existingRoots(ctx context.Context, z zfs.ZFS, roots []zfs.DatasetPath) ([]zfs.DatasetPath, error) {
	var out []zfs.DatasetPath
	for _, r := range roots {
		_, err := z.ListVersions(ctx, r)
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func toHolds(abs []endpoint.Abstraction) []Hold {
	out := make([]Hold, 0, len(abs))
	for _, a := range abs {
		out = append(out, Hold{Kind: a.Kind.String(), Job: a.Job.String(), Version: a.Version.String(), Tag: a.Tag, GUID: a.GUID, TXG: a.TXG})
	}
	return out
}

// Holds lists the holds and bookmarks zrepl made below the config's roots,
// of one job or ("" ) of all.
func (d *Daemon) Holds(ctx context.Context, jobName string) ([]Hold, error) {
	return ListHolds(ctx, d.opts.ZFS, d.opts.Config, jobName)
}

// ListHolds lists zrepl's holds and bookmarks below the config's roots.
func ListHolds(ctx context.Context, z zfs.ZFS, c *config.Config, jobName string) ([]Hold, error) {
	var f endpoint.AbstractionFilter
	if jobName != "" {
		id, err := endpoint.NewJobID(jobName)
		if err != nil {
			return nil, err
		}
		f.Job = &id
	}
	roots, err := hostRoots(ctx, z, c)
	if err != nil {
		return nil, err
	}
	abs, err := endpoint.ListAbstractions(ctx, z, roots, f)
	if err != nil {
		return nil, err
	}
	return toHolds(abs), nil
}

// ReleaseStale releases the stale step holds and destroys the stale step
// bookmarks (stale says which), and the last-received holds of jobs the
// config no longer has (a renamed sink) on a filesystem where a job of
// the config holds what it last received: the filesystem's incremental
// base is then kept by the new hold, and the old one would keep its
// snapshot forever. Cursors stay.
func (d *Daemon) ReleaseStale(ctx context.Context, dryRun bool) ([]Hold, error) {
	return ReleaseStale(ctx, d.opts.ZFS, d.opts.Config, func(job string) bool {
		j, err := d.Job(job)
		return err == nil && j.Replicating()
	}, dryRun)
}

// ReleaseStale is Daemon.ReleaseStale on any backend; replicating tells
// which active jobs have a replication running (none, without a daemon).
func ReleaseStale(ctx context.Context, z zfs.ZFS, c *config.Config, replicating func(job string) bool, dryRun bool) ([]Hold, error) {
	roots, err := hostRoots(ctx, z, c)
	if err != nil {
		return nil, err
	}
	abs, err := endpoint.ListAbstractions(ctx, z, roots, endpoint.AbstractionFilter{Kinds: []endpoint.AbstractionKind{
		endpoint.StepHold, endpoint.StepBookmark, endpoint.LastReceivedHold, endpoint.ReplicationCursorV2}})
	if err != nil {
		return nil, err
	}
	abs = stale(abs, c, replicating)
	if dryRun {
		return toHolds(abs), nil
	}
	var done []endpoint.Abstraction
	var errs []error
	for _, a := range abs {
		var err error
		switch a.Kind {
		case endpoint.StepHold, endpoint.LastReceivedHold:
			err = z.Release(ctx, a.Version, a.Tag)
		case endpoint.StepBookmark:
			err = z.Destroy(ctx, []zfs.VersionRef{a.Version})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		done = append(done, a)
	}
	return toHolds(done), errors.Join(errs...)
}

// stale picks from abs (step holds, step bookmarks, cursors and
// last-received holds) what ReleaseStale releases. A step hold or step
// bookmark is stale only when the job it belongs to says so:
//   - a job the config does not have: always (no job will resume its
//     step; this is how a renamed job's leftovers go);
//   - an active job whose replication runs now: never;
//   - otherwise (an idle push job, a source whose client may be in the
//     middle of a pull, or any job without a daemon) per filesystem, by
//     what the job's replication cursor says has been replicated: what
//     is older than the cursor protected finished steps; what is newer
//     protects a step still open, which a later run resumes; at the
//     cursor a step hold is still the open step's incremental source,
//     while a step bookmark there duplicates the cursor. Without a
//     cursor (the first step never finished) the newest of the job's
//     step holds and bookmarks belong to the open first step, older ones
//     to an abandoned one.
//
// A last-received hold is stale only when its job is not configured and
// a configured job's last-received hold is on the same filesystem.
func stale(abs []endpoint.Abstraction, c *config.Config, replicating func(job string) bool) []endpoint.Abstraction {
	configured := map[endpoint.JobID]bool{}
	for _, j := range c.Jobs {
		configured[j.ID] = true
	}
	type fsJob struct {
		fs  zfs.DatasetPath
		job endpoint.JobID
	}
	type marks struct {
		cursor, newestStep uint64
		hasCursor          bool
		// openStep: a step hold above the cursor.
		openStep bool
	}
	by := map[fsJob]*marks{}
	get := func(a endpoint.Abstraction) *marks {
		k := fsJob{a.Version.FS, a.Job}
		if by[k] == nil {
			by[k] = &marks{}
		}
		return by[k]
	}
	heldByConfigured := map[zfs.DatasetPath]bool{}
	for _, a := range abs {
		switch a.Kind {
		case endpoint.ReplicationCursorV2:
			m := get(a)
			m.hasCursor = true
			m.cursor = max(m.cursor, a.TXG)
		case endpoint.StepHold, endpoint.StepBookmark:
			m := get(a)
			m.newestStep = max(m.newestStep, a.TXG)
		case endpoint.LastReceivedHold:
			if configured[a.Job] {
				heldByConfigured[a.Version.FS] = true
			}
		}
	}
	for _, a := range abs {
		if m := get(a); a.Kind == endpoint.StepHold && m.hasCursor && a.TXG > m.cursor {
			m.openStep = true
		}
	}
	var out []endpoint.Abstraction
	for _, a := range abs {
		var isStale bool
		switch a.Kind {
		case endpoint.LastReceivedHold:
			isStale = !configured[a.Job] && heldByConfigured[a.Version.FS]
		case endpoint.StepHold, endpoint.StepBookmark:
			m := get(a)
			switch {
			case !configured[a.Job]:
				isStale = true
			case replicating(a.Job.String()):
			case !m.hasCursor:
				isStale = a.TXG < m.newestStep
			case a.TXG == m.cursor:
				isStale = a.Kind == endpoint.StepBookmark || !m.openStep
			default:
				isStale = a.TXG < m.cursor
			}
		}
		if isStale {
			out = append(out, a)
		}
	}
	return out
}

// MigrateCursors destroys zrepl 0.x's v1 replication cursors
// (#zrepl_replication_cursor), but only on filesystems that already have a
// v2 cursor, so no filesystem loses its incremental base.
func (d *Daemon) MigrateCursors(ctx context.Context, dryRun bool) ([]string, error) {
	return MigrateCursors(ctx, d.opts.ZFS, d.opts.Config, dryRun)
}

// MigrateCursors is Daemon.MigrateCursors on any backend.
func MigrateCursors(ctx context.Context, z zfs.ZFS, c *config.Config, dryRun bool) ([]string, error) {
	roots, err := hostRoots(ctx, z, c)
	if err != nil {
		return nil, err
	}
	abs, err := endpoint.ListAbstractions(ctx, z, roots, endpoint.AbstractionFilter{Kinds: []endpoint.AbstractionKind{endpoint.ReplicationCursorV1, endpoint.ReplicationCursorV2}})
	if err != nil {
		return nil, err
	}
	hasV2 := map[zfs.DatasetPath]bool{}
	for _, a := range abs {
		if a.Kind == endpoint.ReplicationCursorV2 {
			hasV2[a.Version.FS] = true
		}
	}
	var out []string
	var errs []error
	for _, a := range abs {
		if a.Kind != endpoint.ReplicationCursorV1 || !hasV2[a.Version.FS] {
			continue
		}
		if !dryRun {
			if err := z.Destroy(ctx, []zfs.VersionRef{a.Version}); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		out = append(out, a.Version.String())
	}
	return out, errors.Join(errs...)
}

// Client talks to a daemon's control socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client of the control socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{http: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// NewClientHandler returns a client that calls h directly (tests).
func NewClientHandler(h http.Handler) *Client {
	return &Client{http: &http.Client{Transport: handlerTransport{h}}}
}

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := &recorder{header: http.Header{}, code: http.StatusOK}
	t.h.ServeHTTP(rec, r)
	return &http.Response{StatusCode: rec.code, Header: rec.header, Body: io.NopCloser(&rec.body), Request: r}, nil
}

type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recorder) WriteHeader(code int)        { r.code = code }

func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://zrepl"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &NotRunningError{err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e errorReply
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("control socket: %s", resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status returns every job's status.
func (c *Client) Status(ctx context.Context) ([]job.Status, error) {
	var out []job.Status
	return out, c.call(ctx, "GET", "/status", nil, &out)
}

// Signal sends a signal to a job.
func (c *Client) Signal(ctx context.Context, req SignalRequest) error {
	var out map[string]string
	return c.call(ctx, "POST", "/signal", req, &out)
}

// Holds lists holds and bookmarks of one job or all ("").
func (c *Client) Holds(ctx context.Context, jobName string) ([]Hold, error) {
	var out []Hold
	return out, c.call(ctx, "GET", "/holds?job="+urlEscape(jobName), nil, &out)
}

// ReleaseStale releases stale step holds and bookmarks.
func (c *Client) ReleaseStale(ctx context.Context, dryRun bool) ([]Hold, error) {
	var out []Hold
	return out, c.call(ctx, "POST", "/holds/release-stale"+dry(dryRun), nil, &out)
}

// MigrateCursors destroys v1 cursors where v2 cursors exist.
func (c *Client) MigrateCursors(ctx context.Context, dryRun bool) ([]string, error) {
	var out []string
	return out, c.call(ctx, "POST", "/migrate/replication-cursor-v1-v2"+dry(dryRun), nil, &out)
}

func dry(b bool) string {
	if b {
		return "?dry_run=1"
	}
	return ""
}

func urlEscape(s string) string { return url.QueryEscape(s) }

// NotRunningError means the control socket did not answer: no daemon runs.
type NotRunningError struct{ Err error }

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("control socket: %v (is the daemon running?)", e.Err)
}

func (e *NotRunningError) Unwrap() error { return e.Err }
