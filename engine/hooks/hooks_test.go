package hooks

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

// fakeEdge records its edges into a shared log and fails as told.
type fakeEdge struct {
	name              string
	log               *[]string
	failPre, failPost bool
	noPost            bool
	// block makes the pre edge wait for its context.
	block bool
}

func (f fakeEdge) before(ctx context.Context, inv invocation) (afterFunc, string, error) {
	*f.log = append(*f.log, "pre "+f.name)
	if f.block {
		<-ctx.Done()
		return nil, "", ctx.Err()
	}
	if f.failPre {
		return nil, "pre out " + f.name, errors.New("pre of " + f.name + " failed")
	}
	if f.noPost {
		return nil, "", nil
	}
	return func(ctx context.Context, inv invocation) (string, error) {
		*f.log = append(*f.log, fmt.Sprintf("post %s (cancelled %v)", f.name, ctx.Err() != nil))
		if f.failPost {
			return "", errors.New("post of " + f.name + " failed")
		}
		return "", nil
	}, "", nil
}

type onlyFS zfs.DatasetPath

func (o onlyFS) Match(p zfs.DatasetPath) bool { return p == zfs.DatasetPath(o) }

type countObserver map[string]int

func (c countObserver) HookRan(typ Type, phase Phase, err error) {
	c[fmt.Sprintf("%s %s %v", typ, phase, err != nil)]++
}

func fakeList(t *testing.T, edges []fakeEdge, fatal map[string]bool, filters map[string]Filter, obs Observer) *List {
	t.Helper()
	l := &List{opts: Options{Log: discard(), Now: time.Now, Observer: obs}}
	for _, e := range edges {
		l.hooks = append(l.hooks, hook{
			spec: Spec{Type: Command, Timeout: time.Second, ErrIsFatal: fatal[e.name], Filesystems: filters[e.name]},
			name: e.name, edge: e,
		})
	}
	return l
}

var fsA = zfs.MustDatasetPath("pool/a")

// The order and the failure rules of zrepl's docs: pre edges in config
// order, the snapshot, post edges reversed; a failed pre edge's post does
// not run; a fatal one cuts the rest and the snapshot; a failed snapshot
// or post edge stops nothing.
func TestRunOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		edges     func(log *[]string) []fakeEdge
		fatal     map[string]bool
		takeErr   error
		want      []string
		skipped   bool
		failed    []string // Results with an error, in order
		phaseRuns int
	}{
		{
			name: "all succeed",
			edges: func(l *[]string) []fakeEdge {
				return []fakeEdge{{name: "a", log: l}, {name: "b", log: l}, {name: "c", log: l}}
			},
			want: []string{"pre a", "pre b", "pre c", "snapshot", "post c (cancelled false)", "post b (cancelled false)", "post a (cancelled false)"},
		},
		{
			name: "a non-fatal pre failure skips only its own post",
			edges: func(l *[]string) []fakeEdge {
				return []fakeEdge{{name: "a", log: l}, {name: "b", log: l, failPre: true}, {name: "c", log: l}}
			},
			want:   []string{"pre a", "pre b", "pre c", "snapshot", "post c (cancelled false)", "post a (cancelled false)"},
			failed: []string{"b pre_snapshot"},
		},
		{
			name: "a fatal pre failure cuts later hooks and the snapshot",
			edges: func(l *[]string) []fakeEdge {
				return []fakeEdge{{name: "a", log: l}, {name: "b", log: l, failPre: true}, {name: "c", log: l}}
			},
			fatal:   map[string]bool{"b": true},
			want:    []string{"pre a", "pre b", "post a (cancelled false)"},
			skipped: true,
			failed:  []string{"b pre_snapshot"},
		},
		{
			name: "err_is_fatal of a hook that succeeds changes nothing",
			edges: func(l *[]string) []fakeEdge {
				return []fakeEdge{{name: "a", log: l}, {name: "b", log: l}}
			},
			fatal: map[string]bool{"a": true, "b": true},
			want:  []string{"pre a", "pre b", "snapshot", "post b (cancelled false)", "post a (cancelled false)"},
		},
		{
			name: "a failed snapshot still runs every post edge",
			edges: func(l *[]string) []fakeEdge {
				return []fakeEdge{{name: "a", log: l}, {name: "b", log: l}}
			},
			takeErr: errors.New("out of space"),
			want:    []string{"pre a", "pre b", "snapshot", "post b (cancelled false)", "post a (cancelled false)"},
		},
		{
			name: "a failed post edge does not stop the others",
			edges: func(l *[]string) []fakeEdge {
				return []fakeEdge{{name: "a", log: l}, {name: "b", log: l, failPost: true}}
			},
			want:   []string{"pre a", "pre b", "snapshot", "post b (cancelled false)", "post a (cancelled false)"},
			failed: []string{"b post_snapshot"},
		},
		{
			name: "a hook without a post edge reports only its pre",
			edges: func(l *[]string) []fakeEdge {
				return []fakeEdge{{name: "a", log: l, noPost: true}, {name: "b", log: l}}
			},
			want: []string{"pre a", "pre b", "snapshot", "post b (cancelled false)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log []string
			obs := countObserver{}
			l := fakeList(t, tc.edges(&log), tc.fatal, nil, obs)
			rep := l.Run(context.Background(), fsA, "s1", func(ctx context.Context) error {
				log = append(log, "snapshot")
				return tc.takeErr
			})
			assert.Equal(t, tc.want, log)
			assert.Equal(t, tc.skipped, rep.Skipped)
			assert.Equal(t, tc.takeErr, rep.SnapshotErr)
			var failed []string
			runs := 0
			for _, r := range rep.Results {
				runs++
				if r.Err != nil {
					failed = append(failed, r.Hook+" "+string(r.Phase))
					assert.ErrorIs(t, r.Err, ErrHookFailed)
					assert.Contains(t, r.Err.Error(), "pool/a", "the error names the filesystem")
					assert.Contains(t, r.Err.Error(), string(r.Phase))
				}
			}
			assert.Equal(t, tc.failed, failed)
			// Every line of the log but the snapshot is a Result, and
			// the observer saw each.
			assert.Equal(t, len(tc.want)-btoi(!tc.skipped), runs)
			total := 0
			for _, n := range obs {
				total += n
			}
			assert.Equal(t, runs, total)
			if len(tc.failed) > 0 {
				assert.Error(t, rep.HookErr())
			} else {
				assert.NoError(t, rep.HookErr())
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Post edges run although the caller's context is cancelled (the daemon
// stopping after a pre edge froze something), with its values.
func TestRunPostEdgesOutliveCancellation(t *testing.T) {
	var log []string
	l := fakeList(t, []fakeEdge{{name: "a", log: &log}, {name: "b", log: &log}}, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	rep := l.Run(ctx, fsA, "s1", func(ctx context.Context) error {
		cancel()
		log = append(log, "snapshot")
		return ctx.Err()
	})
	assert.Equal(t, []string{"pre a", "pre b", "snapshot", "post b (cancelled false)", "post a (cancelled false)"}, log)
	assert.ErrorIs(t, rep.SnapshotErr, context.Canceled)
}

// Hooks run only for the filesystems their filter matches; a hook
// without a filter runs for every one.
func TestRunFilter(t *testing.T) {
	var log []string
	b := zfs.MustDatasetPath("pool/b")
	l := fakeList(t, []fakeEdge{{name: "all", log: &log}, {name: "only-b", log: &log}}, nil, map[string]Filter{"only-b": onlyFS(b)}, nil)
	assert.True(t, l.Matches(fsA))
	l.Run(context.Background(), fsA, "s", func(context.Context) error { return nil })
	assert.Equal(t, []string{"pre all", "post all (cancelled false)"}, log)
	log = nil
	l.Run(context.Background(), b, "s", func(context.Context) error { return nil })
	assert.Equal(t, []string{"pre all", "pre only-b", "post only-b (cancelled false)", "post all (cancelled false)"}, log)

	only := fakeList(t, []fakeEdge{{name: "only-b", log: &log}}, nil, map[string]Filter{"only-b": onlyFS(b)}, nil)
	assert.False(t, only.Matches(fsA))
	var none *List
	assert.Equal(t, 0, none.Len())
	rep := none.Run(context.Background(), fsA, "s", func(context.Context) error { return errors.New("x") })
	assert.EqualError(t, rep.SnapshotErr, "x", "no hooks: the snapshot is still taken")
}

// An edge that outlives its timeout fails with ErrTimeout; with
// err_is_fatal the snapshot is skipped.
func TestRunTimeout(t *testing.T) {
	var log []string
	l := fakeList(t, []fakeEdge{{name: "slow", log: &log, block: true}}, map[string]bool{"slow": true}, nil, nil)
	l.hooks[0].spec.Timeout = 50 * time.Millisecond
	took := false
	rep := l.Run(context.Background(), fsA, "s", func(context.Context) error { took = true; return nil })
	require.Len(t, rep.Results, 1)
	assert.ErrorIs(t, rep.Results[0].Err, ErrTimeout)
	assert.Contains(t, rep.Results[0].Err.Error(), "50ms")
	assert.True(t, rep.Skipped)
	assert.False(t, took)
}

// New refuses what cannot run, naming the hook; an unknown type too.
func TestNewRefusesBadSpecs(t *testing.T) {
	_, err := New([]Spec{
		{Type: Command, Path: "relative.sh"},
		{Type: PostgresCheckpoint, DSN: "host=x port=notaport password=s3cret"},
		{Type: MySQLLockTables, DSN: "garbage"},
		{Type: "bogus"},
		{Type: Command, Path: "/bin/sh"},
	}, Options{})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrBadSpec)
	for _, want := range []string{"hooks[0] (command)", "not absolute", "hooks[1] (postgres-checkpoint)", "invalid dsn", "hooks[2] (mysql-lock-tables)", "hooks[3] (bogus)", "unknown hook type"} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotContains(t, err.Error(), "hooks[4]")
	assert.NotContains(t, err.Error(), "s3cret", "a DSN's password never shows")

	l, err := New([]Spec{
		{Type: Command, Path: "/bin/sh"},
		{Type: PostgresCheckpoint, DSN: "host=db.example port=5433 user=u password=s3cret"},
		{Type: MySQLLockTables, DSN: "u:s3cret@tcp(db.example)/"},
	}, Options{})
	require.NoError(t, err)
	var names []string
	for _, h := range l.hooks {
		names = append(names, h.name)
		assert.Equal(t, DefaultTimeout, h.spec.Timeout)
	}
	assert.Equal(t, []string{"command /bin/sh", "postgres-checkpoint db.example:5433", "mysql-lock-tables tcp(db.example:3306)"}, names)
}
