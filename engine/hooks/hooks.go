package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// Type is a hook's type, as snapshotting.hooks[].type names it.
type Type string

const (
	Command            Type = "command"
	PostgresCheckpoint Type = "postgres-checkpoint"
	MySQLLockTables    Type = "mysql-lock-tables"
)

// Types are the hook types, in the order zrepl documents them.
var Types = []Type{Command, PostgresCheckpoint, MySQLLockTables}

// Phase is a hook edge: ZREPL_HOOKTYPE's values.
type Phase string

const (
	PreSnapshot  Phase = "pre_snapshot"
	PostSnapshot Phase = "post_snapshot"
)

// DefaultTimeout bounds each edge of a hook without a timeout.
const DefaultTimeout = 30 * time.Second

// Filter selects filesystems (a *config.Filter is one).
type Filter interface {
	Match(zfs.DatasetPath) bool
}

// Spec is one configured hook.
type Spec struct {
	Type Type
	// Path is a command hook's executable: absolute, run without
	// arguments.
	Path string
	// DSN is how a postgres-checkpoint or mysql-lock-tables hook
	// connects.
	DSN string
	// Timeout bounds each edge; 0 is DefaultTimeout.
	Timeout    time.Duration
	ErrIsFatal bool
	// Filesystems the hook runs for; nil is every filesystem the job
	// snapshots.
	Filesystems Filter
}

// Error kinds. Every error of a hook's run matches ErrHookFailed.
var (
	ErrHookFailed = errors.New("hook failed")
	// ErrTimeout: the edge outlived its timeout (a command hook's
	// process group was killed).
	ErrTimeout = errors.New("hook timed out")
	// ErrBadSpec is matched by New's errors for a hook that cannot run
	// as configured.
	ErrBadSpec = errors.New("bad hook")
)

// specError is an error of New or a Check function: its text is the
// problem alone, and it matches ErrBadSpec.
type specError struct{ error }

func (e specError) Is(target error) bool { return target == ErrBadSpec }
func (e specError) Unwrap() error        { return e.error }

func badSpec(format string, args ...any) error { return specError{fmt.Errorf(format, args...)} }

// Error is a failed edge of a hook on one filesystem.
type Error struct {
	Hook  string
	Phase Phase
	FS    zfs.DatasetPath
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s hook %s on %s: %v", e.Phase, e.Hook, e.FS, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Is(target error) bool { return target == ErrHookFailed }

// Result is one edge of one hook on one filesystem.
type Result struct {
	// Hook names the hook: its type, and a command hook's path or a
	// database hook's server address.
	Hook  string
	Type  Type
	Phase Phase
	// Err is nil if the edge succeeded; else an *Error.
	Err error
	// Output is the tail of a command hook's stdout and stderr.
	Output   string
	Duration time.Duration
}

// Report is what Run did for one filesystem.
type Report struct {
	// Results are the edges that ran, in the order they ran.
	Results []Result
	// Skipped: a fatal pre edge failed and the snapshot was not taken.
	Skipped bool
	// SnapshotErr is what taking the snapshot returned.
	SnapshotErr error
}

// HookErr joins the errors of the edges that failed.
func (r Report) HookErr() error {
	var errs []error
	for _, res := range r.Results {
		if res.Err != nil {
			errs = append(errs, res.Err)
		}
	}
	return errors.Join(errs...)
}

// Observer learns of every edge that ran (the daemon's metrics).
type Observer interface {
	HookRan(typ Type, phase Phase, err error)
}

// Options are what a List takes from its caller.
type Options struct {
	// Log gets the hooks' runs and command output; nil discards.
	Log *slog.Logger
	// Now measures durations; nil is time.Now.
	Now func() time.Time
	// Observer may be nil.
	Observer Observer
}

// edge is a hook's side of one run: before runs the pre_snapshot edge; if
// it returns a nil error, after (nil: nothing to do) is the post_snapshot
// edge and must run once the snapshot is over.
type edge interface {
	before(ctx context.Context, inv invocation) (after afterFunc, output string, err error)
}

type afterFunc func(ctx context.Context, inv invocation) (output string, err error)

// invocation is what an edge knows of its run.
type invocation struct {
	fs       zfs.DatasetPath
	snapshot string
	phase    Phase
	timeout  time.Duration
	log      *slog.Logger
}

type hook struct {
	spec Spec
	name string
	edge edge
}

// List is a job's hooks in config order.
type List struct {
	hooks []hook
	opts  Options
}

// New checks the specs and prepares them: a command hook's path must be
// an absolute path to an executable file, a database hook's DSN must
// parse. Errors match ErrBadSpec and name the hook by its index (0-based,
// as in snapshotting.hooks[i]).
func New(specs []Spec, opts Options) (*List, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &List{opts: opts}
	var errs []error
	for i, s := range specs {
		h, err := newHook(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("hooks[%d] (%s): %w", i, s.Type, err))
			continue
		}
		l.hooks = append(l.hooks, h)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

func newHook(s Spec) (hook, error) {
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	h := hook{spec: s}
	var err error
	switch s.Type {
	case Command:
		err = CheckExecutable(s.Path)
		h.name, h.edge = string(Command)+" "+s.Path, commandHook{path: s.Path}
	case PostgresCheckpoint:
		var p postgresHook
		p, err = newPostgres(s.DSN)
		h.name, h.edge = string(PostgresCheckpoint)+" "+p.addr, p
	case MySQLLockTables:
		var m mysqlHook
		m, err = newMySQL(s.DSN)
		h.name, h.edge = string(MySQLLockTables)+" "+m.addr, m
	default:
		err = badSpec("unknown hook type %q", s.Type)
	}
	return h, err
}

// Len is the number of hooks.
func (l *List) Len() int {
	if l == nil {
		return 0
	}
	return len(l.hooks)
}

// Matches tells whether any hook runs for fs.
func (l *List) Matches(fs zfs.DatasetPath) bool { return len(l.matching(fs)) > 0 }

// WarnUnmatched logs a warning for each hook that matches none of fss,
// the filesystems a snapshot run takes: its filter is probably wrong.
func (l *List) WarnUnmatched(fss []zfs.DatasetPath) {
	if l == nil || len(fss) == 0 {
		return
	}
	for i, h := range l.hooks {
		if h.spec.Filesystems != nil && !slices.ContainsFunc(fss, h.spec.Filesystems.Match) {
			l.opts.Log.Warn("hook matches none of the filesystems the job snapshots", "hook", h.name, "index", i)
		}
	}
}

func (l *List) matching(fs zfs.DatasetPath) []hook {
	if l == nil {
		return nil
	}
	var out []hook
	for _, h := range l.hooks {
		if h.spec.Filesystems == nil || h.spec.Filesystems.Match(fs) {
			out = append(out, h)
		}
	}
	return out
}

// Run runs the hooks that match fs around take, which takes the snapshot
// called snapshot (see the package doc for the order and what a failure
// does). take is not called if a fatal pre edge failed.
func (l *List) Run(ctx context.Context, fs zfs.DatasetPath, snapshot string, take func(ctx context.Context) error) Report {
	hs := l.matching(fs)
	var rep Report
	type pending struct {
		h     hook
		after afterFunc
	}
	var stack []pending
	for _, h := range hs {
		var after afterFunc
		res := l.runEdge(ctx, h, fs, snapshot, PreSnapshot, func(ctx context.Context, inv invocation) (string, error) {
			a, out, err := h.edge.before(ctx, inv)
			after = a
			return out, err
		})
		rep.Results = append(rep.Results, res)
		if res.Err != nil {
			if h.spec.ErrIsFatal {
				rep.Skipped = true
				break
			}
			continue
		}
		stack = append(stack, pending{h, after})
	}
	if !rep.Skipped {
		rep.SnapshotErr = take(ctx)
	}
	// Post edges must run even when the run is being cancelled: a
	// pre_snapshot edge may have frozen an application.
	postCtx := context.WithoutCancel(ctx)
	for i := len(stack) - 1; i >= 0; i-- {
		p := stack[i]
		if p.after == nil {
			continue
		}
		rep.Results = append(rep.Results, l.runEdge(postCtx, p.h, fs, snapshot, PostSnapshot, p.after))
	}
	return rep
}

// runEdge runs one edge under the hook's timeout and reports it.
func (l *List) runEdge(ctx context.Context, h hook, fs zfs.DatasetPath, snapshot string, phase Phase, run afterFunc) Result {
	log := l.opts.Log.With("hook", h.name, "phase", string(phase), "fs", fs.String(), "snapshot", snapshot)
	ectx, cancel := context.WithTimeoutCause(ctx, h.spec.Timeout, errEdgeTimeout)
	defer cancel()
	inv := invocation{fs: fs, snapshot: snapshot, phase: phase, timeout: h.spec.Timeout, log: log}
	start := l.opts.Now()
	out, err := run(ectx, inv)
	took := l.opts.Now().Sub(start)
	if err != nil && errors.Is(context.Cause(ectx), errEdgeTimeout) && !errors.Is(err, ErrTimeout) {
		err = fmt.Errorf("%w after %s: %w", ErrTimeout, h.spec.Timeout, err)
	}
	res := Result{Hook: h.name, Type: h.spec.Type, Phase: phase, Output: out, Duration: took}
	if err != nil {
		res.Err = &Error{Hook: h.name, Phase: phase, FS: fs, Err: err}
		log.Error("hook failed", "err", err, "took", took, "err_is_fatal", h.spec.ErrIsFatal && phase == PreSnapshot)
	} else {
		log.Info("hook ran", "took", took)
	}
	if l.opts.Observer != nil {
		l.opts.Observer.HookRan(h.spec.Type, phase, res.Err)
	}
	return res
}

// errEdgeTimeout is the cause of an edge's context when its timeout ends
// it (as opposed to the caller cancelling).
var errEdgeTimeout = errors.New("hook timeout")
