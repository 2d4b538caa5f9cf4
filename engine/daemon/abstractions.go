package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

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

// zreplTypes are zrepl's names of the abstraction kinds (its
// zfs-abstraction --type values and output).
var zreplTypes = map[endpoint.AbstractionKind]string{
	endpoint.StepHold:            "step-hold",
	endpoint.LastReceivedHold:    "last-received-hold",
	endpoint.ReplicationCursorV1: "replication-cursor-bookmark-v1",
	endpoint.ReplicationCursorV2: "replication-cursor-bookmark-v2",
	endpoint.StepBookmark:        "step-bookmark", // ours; zrepl has none
	endpoint.TentativeCursor:     "tentative-replication-cursor-bookmark-v2",
}

// ZreplType is the kind as zrepl names it.
func (h Hold) ZreplType() string {
	for k, name := range zreplTypes {
		if k.String() == h.Kind {
			return name
		}
	}
	return h.Kind
}

// ZreplString is how zrepl's zfs-abstraction prints it.
func (h Hold) ZreplString() string {
	if h.Tag != "" {
		return fmt.Sprintf("%s %q on %s", h.ZreplType(), h.Tag, h.Version)
	}
	return fmt.Sprintf("%s %s", h.ZreplType(), h.Version)
}

// AbstractionQuery selects holds and bookmarks, as zfs-abstraction's
// flags do (zrepl's syntax).
type AbstractionQuery struct {
	// FS is one filesystem's name, or comma-separated <pattern>:<ok|!>
	// pairs (patterns as in a job's filesystems filter); "" selects all.
	FS string
	// Job selects one job's; "" all.
	Job string
	// Types are zrepl's type names (or ours); none selects all.
	Types []string
	// Concurrency is how many filesystems are listed at once (default 1).
	Concurrency int
}

// Values encodes q for the control socket.
func (q AbstractionQuery) Values() url.Values {
	v := url.Values{}
	if q.FS != "" {
		v.Set("fs", q.FS)
	}
	if q.Job != "" {
		v.Set("job", q.Job)
	}
	if len(q.Types) > 0 {
		v.Set("type", strings.Join(q.Types, ","))
	}
	if q.Concurrency > 1 {
		v.Set("concurrency", strconv.Itoa(q.Concurrency))
	}
	return v
}

// queryFrom decodes what Values encoded.
func queryFrom(v url.Values) (AbstractionQuery, error) {
	q := AbstractionQuery{FS: v.Get("fs"), Job: v.Get("job")}
	if t := v.Get("type"); t != "" {
		q.Types = strings.Split(t, ",")
	}
	if c := v.Get("concurrency"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil {
			return q, fmt.Errorf("concurrency %q: %w", c, err)
		}
		q.Concurrency = n
	}
	return q, nil
}

// selector is a compiled AbstractionQuery.
type selector struct {
	fs          func(zfs.DatasetPath) bool
	filter      endpoint.AbstractionFilter
	concurrency int
}

func (s selector) match(a endpoint.Abstraction) bool {
	if s.fs != nil && !s.fs(a.Version.FS) {
		return false
	}
	if s.filter.Job != nil && a.Job != *s.filter.Job {
		return false
	}
	return len(s.filter.Kinds) == 0 || slices.Contains(s.filter.Kinds, a.Kind)
}

func (q AbstractionQuery) compile() (selector, error) {
	s := selector{concurrency: max(q.Concurrency, 1)}
	if q.Concurrency < 0 {
		return s, fmt.Errorf("concurrency %d: want at least 1", q.Concurrency)
	}
	switch {
	case q.FS == "":
	case !strings.Contains(q.FS, ":") && !strings.Contains(q.FS, ","):
		fs, err := zfs.NewDatasetPath(q.FS)
		if err != nil {
			return s, fmt.Errorf("--fs %q: %w", q.FS, err)
		}
		s.fs = func(p zfs.DatasetPath) bool { return p == fs }
	default:
		m := map[string]bool{}
		for _, pair := range strings.Split(q.FS, ",") {
			pat, verdict, ok := strings.Cut(pair, ":")
			if !ok || (verdict != "ok" && verdict != "!") {
				return s, fmt.Errorf("--fs: expecting comma-separated list of <dataset-pattern>:<ok|!> pairs, got %q", pair)
			}
			if _, dup := m[pat]; dup {
				return s, fmt.Errorf("--fs: pattern %q appears twice", pat)
			}
			m[pat] = verdict == "ok"
		}
		f, err := config.FilterFromMap(m)
		if err != nil {
			return s, fmt.Errorf("--fs %q: %w", q.FS, err)
		}
		s.fs = f.Match
	}
	if q.Job != "" {
		id, err := endpoint.NewJobID(q.Job)
		if err != nil {
			return s, fmt.Errorf("--job: %w", err)
		}
		s.filter.Job = &id
	}
	for _, t := range q.Types {
		k, err := parseType(strings.TrimSpace(t))
		if err != nil {
			return s, err
		}
		s.filter.Kinds = append(s.filter.Kinds, k)
	}
	return s, nil
}

func parseType(t string) (endpoint.AbstractionKind, error) {
	var names []string
	for k, name := range zreplTypes {
		if t == name || t == k.String() {
			return k, nil
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return 0, fmt.Errorf("--type %q: want a comma-separated list of %s", t, strings.Join(names, "|"))
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

// listAll lists the abstractions on every filesystem of every pool (as
// zrepl's zfs-abstraction does: also where no job of the config looks any
// more), sel.concurrency filesystems at once, ordered by filesystem.
func listAll(ctx context.Context, z zfs.ZFS, sel selector, f endpoint.AbstractionFilter) ([]endpoint.Abstraction, error) {
	pools, err := z.ListPools(ctx)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var fss []zfs.DatasetPath
	for _, p := range pools {
		infos, err := z.ListFilesystems(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("list filesystems below %s: %w", p, err)
		}
		for _, info := range infos {
			if sel.fs == nil || sel.fs(info.Path) {
				fss = append(fss, info.Path)
			}
		}
	}
	found := make([][]endpoint.Abstraction, len(fss))
	errs := make([]error, len(fss))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(sel.concurrency, len(fss)) {
		wg.Go(func() {
			for i := range work {
				found[i], errs[i] = endpoint.ListAbstractionsOf(ctx, z, fss[i], f)
			}
		})
	}
	for i := range fss {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.Concat(found...), nil
}

// ListAbstractions lists the holds and bookmarks q selects, on every pool.
func ListAbstractions(ctx context.Context, z zfs.ZFS, q AbstractionQuery) ([]Hold, error) {
	sel, err := q.compile()
	if err != nil {
		return nil, err
	}
	abs, err := listAll(ctx, z, sel, sel.filter)
	if err != nil {
		return nil, err
	}
	return toHolds(abs), nil
}

// release releases the holds and destroys the bookmarks abs (or, with
// dryRun, only says so); it goes on past failures and returns what it did.
func release(ctx context.Context, z zfs.ZFS, abs []endpoint.Abstraction, dryRun bool) ([]Hold, error) {
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
		default:
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

// ReleaseAll releases every hold and destroys every bookmark q selects,
// cursors included: for removing zrepl from a filesystem, or a removed
// job's leftovers. Without a filter it takes everything zrepl made.
func ReleaseAll(ctx context.Context, z zfs.ZFS, q AbstractionQuery, dryRun bool) ([]Hold, error) {
	sel, err := q.compile()
	if err != nil {
		return nil, err
	}
	abs, err := listAll(ctx, z, sel, sel.filter)
	if err != nil {
		return nil, err
	}
	return release(ctx, z, abs, dryRun)
}

// ReleaseStale releases the stale step holds and destroys the stale step
// bookmarks (stale says which), and the last-received holds of jobs the
// config no longer has (a renamed sink) on a filesystem where a job of
// the config holds what it last received: the filesystem's incremental
// base is then kept by the new hold, and the old one would keep its
// snapshot forever. Cursors stay. q narrows what goes.
func (d *Daemon) ReleaseStale(ctx context.Context, q AbstractionQuery, dryRun bool) ([]Hold, error) {
	return ReleaseStale(ctx, d.opts.ZFS, d.opts.Config, func(job string) bool {
		j, err := d.Job(job)
		return err == nil && j.Replicating()
	}, q, dryRun)
}

// ReleaseStale is Daemon.ReleaseStale on any backend; replicating tells
// which active jobs have a replication running (none, without a daemon).
func ReleaseStale(ctx context.Context, z zfs.ZFS, c *config.Config, replicating func(job string) bool, q AbstractionQuery, dryRun bool) ([]Hold, error) {
	sel, err := q.compile()
	if err != nil {
		return nil, err
	}
	// Staleness needs each job's cursors and the other jobs' holds of a
	// filesystem, whatever q selects: q applies to the result.
	abs, err := listAll(ctx, z, selector{fs: sel.fs, concurrency: sel.concurrency}, endpoint.AbstractionFilter{Kinds: []endpoint.AbstractionKind{
		endpoint.StepHold, endpoint.StepBookmark, endpoint.LastReceivedHold, endpoint.ReplicationCursorV2}})
	if err != nil {
		return nil, err
	}
	abs = slices.DeleteFunc(stale(abs, c, replicating), func(a endpoint.Abstraction) bool { return !sel.match(a) })
	return release(ctx, z, abs, dryRun)
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
