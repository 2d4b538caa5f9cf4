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
	"time"

	"zrepl.dev/zrepl/engine/job"
)

// The control socket speaks HTTP with JSON bodies:
//
//	GET  /status                         []job.Status
//	POST /signal                         SignalRequest
//	GET  /version                        VersionInfo
//	POST /debug/pprof                    PprofRequest      PprofReply
//	GET  /abstractions?QUERY             []Hold            (QUERY: AbstractionQuery.Values)
//	POST /abstractions/release-stale?QUERY&dry_run=1      ReleaseReply
//	POST /abstractions/release-all?QUERY&dry_run=1        ReleaseReply
//	POST /migrate/replication-cursor-v1-v2?dry_run=1      []string (v1 cursors destroyed)
//
// A failed request answers 400 with {"error": "..."}.

// SignalRequest asks a job to wake up, reset or change its concurrency.
type SignalRequest struct {
	Job    string `json:"job"`
	Signal string `json:"signal"` // wakeup, reset, concurrency
	N      int    `json:"n,omitempty"`
}

// ReleaseReply is what a release did, also when some of it failed.
type ReleaseReply struct {
	Done  []Hold `json:"done"`
	Error string `json:"error,omitempty"`
}

// controlHandler serves the control API (on the control socket).
func (d *Daemon) controlHandler() http.Handler {
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
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		reply(w, NewVersionInfo(d.opts.Version), nil)
	})
	mux.HandleFunc("POST /debug/pprof", func(w http.ResponseWriter, r *http.Request) {
		var req PprofRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("bad pprof request: %w", err))
			return
		}
		addr, err := d.pprof.control(req)
		reply(w, PprofReply{Address: addr}, err)
	})
	mux.HandleFunc("GET /abstractions", func(w http.ResponseWriter, r *http.Request) {
		q, err := queryFrom(r.URL.Query())
		if err != nil {
			reply(w, nil, err)
			return
		}
		hs, err := ListAbstractions(r.Context(), d.opts.ZFS, q)
		reply(w, hs, err)
	})
	releaseHandler := func(f func(ctx context.Context, q AbstractionQuery, dryRun bool) ([]Hold, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			q, err := queryFrom(r.URL.Query())
			if err != nil {
				reply(w, nil, err)
				return
			}
			done, err := f(r.Context(), q, r.URL.Query().Get("dry_run") != "")
			rep := ReleaseReply{Done: done}
			if err != nil {
				rep.Error = err.Error()
			}
			reply(w, rep, nil)
		}
	}
	mux.HandleFunc("POST /abstractions/release-stale", releaseHandler(d.ReleaseStale))
	mux.HandleFunc("POST /abstractions/release-all", releaseHandler(func(ctx context.Context, q AbstractionQuery, dryRun bool) ([]Hold, error) {
		return ReleaseAll(ctx, d.opts.ZFS, q, dryRun)
	}))
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

// Holds lists holds and bookmarks of one job or all (""), below the
// config's roots.
func (c *Client) Holds(ctx context.Context, jobName string) ([]Hold, error) {
	return c.Abstractions(ctx, AbstractionQuery{Job: jobName})
}

// Abstractions lists the holds and bookmarks q selects, on every pool.
func (c *Client) Abstractions(ctx context.Context, q AbstractionQuery) ([]Hold, error) {
	var out []Hold
	return out, c.call(ctx, "GET", "/abstractions?"+q.Values().Encode(), nil, &out)
}

// ReleaseStale releases the stale holds and bookmarks q selects.
func (c *Client) ReleaseStale(ctx context.Context, q AbstractionQuery, dryRun bool) ([]Hold, error) {
	return c.release(ctx, "/abstractions/release-stale", q, dryRun)
}

// ReleaseAll releases every hold and bookmark q selects.
func (c *Client) ReleaseAll(ctx context.Context, q AbstractionQuery, dryRun bool) ([]Hold, error) {
	return c.release(ctx, "/abstractions/release-all", q, dryRun)
}

func (c *Client) release(ctx context.Context, path string, q AbstractionQuery, dryRun bool) ([]Hold, error) {
	v := q.Values()
	if dryRun {
		v.Set("dry_run", "1")
	}
	var rep ReleaseReply
	if err := c.call(ctx, "POST", path+"?"+v.Encode(), nil, &rep); err != nil {
		return nil, err
	}
	if rep.Error != "" {
		return rep.Done, errors.New(rep.Error)
	}
	return rep.Done, nil
}

// Version asks the daemon for its version.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var out VersionInfo
	return out, c.call(ctx, "GET", "/version", nil, &out)
}

// Pprof turns the daemon's pprof listener on (at req's address) or off,
// and returns the address it listens on.
func (c *Client) Pprof(ctx context.Context, req PprofRequest) (string, error) {
	var out PprofReply
	return out.Address, c.call(ctx, "POST", "/debug/pprof", req, &out)
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

// NotRunningError means the control socket did not answer: no daemon runs.
type NotRunningError struct{ Err error }

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("control socket: %v (is the daemon running?)", e.Err)
}

func (e *NotRunningError) Unwrap() error { return e.Err }
