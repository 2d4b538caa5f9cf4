package snapper

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

var t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

// world is a model whose clock the test sets.
type world struct {
	m   *zfsmodel.Model
	now time.Time
	fss []zfs.DatasetPath
}

func newWorld(t *testing.T, names ...string) *world {
	t.Helper()
	w := &world{now: t0}
	w.m = zfsmodel.New(zfsmodel.Options{Seed: 1, Clock: func() time.Time { return w.now }})
	require.NoError(t, w.m.CreatePool("pool"))
	for i, n := range names {
		fs := zfs.MustDatasetPath(n)
		if n != "pool" {
			require.NoError(t, w.m.CreateFilesystem(fs, zfsmodel.FSOptions{}))
		}
		require.NoError(t, w.m.WriteData(fs, int64(i), 2))
		w.fss = append(w.fss, fs)
	}
	return w
}

func (w *world) list(ctx context.Context) ([]zfs.DatasetPath, error) { return w.fss, nil }

func (w *world) snapshots(t *testing.T, fs zfs.DatasetPath) []string {
	t.Helper()
	vs, err := w.m.ListVersions(context.Background(), fs)
	require.NoError(t, err)
	var out []string
	for _, v := range vs {
		if v.Kind == zfs.Snapshot {
			out = append(out, v.Name)
		}
	}
	return out
}

func stamp(t time.Time) string { return "zrepl_" + t.UTC().Format("20060102_150405") }

func TestSnapshotNowSnapshotsEveryFilesystemOnce(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "pool", "pool/a", "pool/a/b")
	s := New(w.m, w.list, Config{Prefix: "zrepl_", Interval: time.Hour, Name: stamp})

	created, err := s.SnapshotNow(ctx, t0)
	require.NoError(t, err)
	want := []zfs.VersionRef{
		zfs.SnapshotRef(w.fss[0], "zrepl_20260504_100000"),
		zfs.SnapshotRef(w.fss[1], "zrepl_20260504_100000"),
		zfs.SnapshotRef(w.fss[2], "zrepl_20260504_100000"),
	}
	require.Equal(t, want, created)
	for _, fs := range w.fss {
		require.Equal(t, []string{"zrepl_20260504_100000"}, w.snapshots(t, fs))
	}

	// Again at the same time: nothing new, no error.
	created, err = s.SnapshotNow(ctx, t0)
	require.NoError(t, err)
	require.Empty(t, created)
	require.Len(t, w.snapshots(t, w.fss[1]), 1)
}

// The default is zrepl's dense format, whose "_000" is literal (Go reads
// fractional seconds only after a '.' or ','), in UTC.
func TestSnapshotNowDefaultName(t *testing.T) {
	w := newWorld(t, "pool/a")
	s := New(w.m, w.list, Config{Prefix: "auto-"})
	created, err := s.SnapshotNow(context.Background(), time.Date(2026, 5, 4, 12, 30, 15, 250e6, time.FixedZone("X", 3600)))
	require.NoError(t, err)
	require.Equal(t, []zfs.VersionRef{zfs.SnapshotRef(w.fss[0], "auto-20260504_113015_000")}, created)
}

// A failure on one filesystem does not stop the others; a retry creates
// only what is missing.
func TestSnapshotNowPartialFailureThenRetry(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "pool/a", "pool/b", "pool/c")
	s := New(w.m, w.list, Config{Prefix: "zrepl_", Name: stamp})
	busy := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "snapshot", Dataset: "pool/a@zrepl_20260504_100000", Msg: "dataset is busy"}
	require.NoError(t, w.m.FailNext("Snapshot", 1, busy))

	created, err := s.SnapshotNow(ctx, t0)
	require.ErrorIs(t, err, zfs.ErrDatasetBusy)
	require.Contains(t, err.Error(), "pool/a@zrepl_20260504_100000")
	require.Equal(t, []zfs.VersionRef{zfs.SnapshotRef(w.fss[1], "zrepl_20260504_100000"), zfs.SnapshotRef(w.fss[2], "zrepl_20260504_100000")}, created)
	require.Empty(t, w.snapshots(t, w.fss[0]))

	created, err = s.SnapshotNow(ctx, t0)
	require.NoError(t, err)
	require.Equal(t, []zfs.VersionRef{zfs.SnapshotRef(w.fss[0], "zrepl_20260504_100000")}, created)
}

func TestSnapshotNowSkipsVanishedFilesystem(t *testing.T) {
	w := newWorld(t, "pool/a")
	w.fss = append(w.fss, zfs.MustDatasetPath("pool/gone"))
	s := New(w.m, w.list, Config{Prefix: "zrepl_", Name: stamp})
	created, err := s.SnapshotNow(context.Background(), t0)
	require.NoError(t, err)
	require.Len(t, created, 1)
}

func TestSnapshotNowBadNames(t *testing.T) {
	w := newWorld(t, "pool/a")
	for _, c := range []struct {
		name string
		fn   func(time.Time) string
		msg  string
	}{
		{"invalid character", func(time.Time) string { return "zrepl_a@b" }, `"zrepl_a@b"`},
		{"empty", func(time.Time) string { return "" }, `""`},
		{"without prefix", func(time.Time) string { return "other_1" }, `prefix "zrepl_"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := New(w.m, w.list, Config{Prefix: "zrepl_", Name: c.fn})
			created, err := s.SnapshotNow(context.Background(), t0)
			require.ErrorIs(t, err, ErrBadName)
			require.Contains(t, err.Error(), c.msg)
			require.Empty(t, created)
			require.Empty(t, w.snapshots(t, w.fss[0]))
		})
	}
}

func TestSnapshotNowListError(t *testing.T) {
	w := newWorld(t, "pool/a")
	boom := errors.New("filter failed")
	s := New(w.m, func(context.Context) ([]zfs.DatasetPath, error) { return nil, boom }, Config{Prefix: "zrepl_", Name: stamp})
	_, err := s.SnapshotNow(context.Background(), t0)
	require.ErrorIs(t, err, boom)
	require.Contains(t, err.Error(), "list filesystems")
}

func TestSnapshotNowCancelled(t *testing.T) {
	w := newWorld(t, "pool/a", "pool/b")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := New(w.m, w.list, Config{Prefix: "zrepl_", Name: stamp})
	created, err := s.SnapshotNow(ctx, t0)
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, created)
	require.Empty(t, w.snapshots(t, w.fss[0]))
}

func TestNextDue(t *testing.T) {
	ctx := context.Background()
	h := time.Hour
	w := newWorld(t, "pool/a", "pool/b")
	snap := func(fs zfs.DatasetPath, name string, at time.Time) {
		w.now = at
		require.NoError(t, w.m.Snapshot(ctx, fs, name))
	}
	s := New(w.m, w.list, Config{Prefix: "zrepl_", Interval: h, Name: stamp})

	// No snapshot on a filesystem: due now.
	due, err := s.NextDue(ctx, t0)
	require.NoError(t, err)
	require.Equal(t, t0, due)

	snap(w.fss[0], "zrepl_1", t0.Add(-20*time.Minute))
	due, err = s.NextDue(ctx, t0)
	require.NoError(t, err)
	require.Equal(t, t0, due, "pool/b still has none")

	// The earliest over filesystems; foreign snapshots do not count.
	snap(w.fss[1], "zrepl_1", t0.Add(-50*time.Minute))
	snap(w.fss[1], "manual", t0.Add(-time.Minute))
	due, err = s.NextDue(ctx, t0)
	require.NoError(t, err)
	require.Equal(t, t0.Add(10*time.Minute), due)

	// Overdue is now, not a time in the past.
	due, err = s.NextDue(ctx, t0.Add(3*h))
	require.NoError(t, err)
	require.Equal(t, t0.Add(3*h), due)

	// Newest by creation, not by name or order.
	snap(w.fss[1], "zrepl_0", t0.Add(-5*time.Minute))
	due, err = s.NextDue(ctx, t0)
	require.NoError(t, err)
	require.Equal(t, t0.Add(40*time.Minute), due)

	// A snapshot from the future counts as taken now.
	snap(w.fss[0], "zrepl_2", t0.Add(5*h))
	snap(w.fss[1], "zrepl_2", t0.Add(5*h))
	due, err = s.NextDue(ctx, t0)
	require.NoError(t, err)
	require.Equal(t, t0.Add(h), due)
}

func TestNextDueManualAndEmpty(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "pool/a")
	due, err := New(w.m, w.list, Config{Prefix: "zrepl_"}).NextDue(ctx, t0)
	require.NoError(t, err)
	require.True(t, due.IsZero(), "manual snapshotting has no due time, got %v", due)

	none := func(context.Context) ([]zfs.DatasetPath, error) { return nil, nil }
	due, err = New(w.m, none, Config{Prefix: "zrepl_", Interval: time.Hour}).NextDue(ctx, t0)
	require.NoError(t, err)
	require.Equal(t, t0.Add(time.Hour), due)
}

func TestNextDueListErrors(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "pool/a", "pool/b")
	w.now = t0.Add(-30 * time.Minute)
	require.NoError(t, w.m.Snapshot(ctx, w.fss[1], "zrepl_1"))
	w.fss = append(w.fss, zfs.MustDatasetPath("pool/gone"))
	s := New(w.m, w.list, Config{Prefix: "zrepl_", Interval: time.Hour})

	boom := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "list", Dataset: "pool/a", Msg: "busy"}
	require.NoError(t, w.m.FailNext("ListVersions", 1, boom))
	due, err := s.NextDue(ctx, t0)
	require.ErrorIs(t, err, zfs.ErrDatasetBusy)
	require.Contains(t, err.Error(), "pool/a")
	require.Equal(t, t0.Add(30*time.Minute), due, "the time the listed filesystems give")

	bad := errors.New("filter failed")
	_, err = New(w.m, func(context.Context) ([]zfs.DatasetPath, error) { return nil, bad }, Config{Prefix: "zrepl_", Interval: time.Hour}).NextDue(ctx, t0)
	require.ErrorIs(t, err, bad)
}

// A periodic loop in virtual time: snapshot when due, and a snapper made
// anew (a restarted daemon) picks up the schedule from disk.
func TestPeriodicScheduleSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "pool/a", "pool/b")
	cfg := Config{Prefix: "zrepl_", Interval: 15 * time.Minute, Name: stamp}
	s := New(w.m, w.list, cfg)
	var taken []time.Time
	for range 4 {
		due, err := s.NextDue(ctx, w.now)
		require.NoError(t, err)
		w.now = due
		created, err := s.SnapshotNow(ctx, w.now)
		require.NoError(t, err)
		require.Len(t, created, 2)
		taken = append(taken, w.now)
	}
	require.Equal(t, []time.Time{t0, t0.Add(15 * time.Minute), t0.Add(30 * time.Minute), t0.Add(45 * time.Minute)}, taken)

	// Restart 5 minutes after the last snapshot.
	w.now = w.now.Add(5 * time.Minute)
	due, err := New(w.m, w.list, cfg).NextDue(ctx, w.now)
	require.NoError(t, err)
	require.Equal(t, t0.Add(time.Hour), due)
	require.True(t, strings.HasPrefix(w.snapshots(t, w.fss[1])[3], "zrepl_20260504_1045"))
}

// A filesystem a run left without a snapshot (a failure, a fatal hook)
// does not make the next run due at once, again and again: it waits an
// interval from the last run, as zrepl snapshots every interval. A new
// snapper (a restart) goes by the disk alone.
func TestNextDueAfterARunThatLeftAFilesystemOut(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "pool/a", "pool/b")
	cfg := Config{Prefix: "zrepl_", Interval: time.Hour, Name: stamp}
	s := New(w.m, w.list, cfg)
	busy := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "snapshot", Dataset: "pool/b@zrepl_20260504_100000", Msg: "dataset is busy"}
	require.NoError(t, w.m.FailNext("Snapshot", 2, busy))
	_, err := s.SnapshotNow(ctx, t0)
	require.ErrorIs(t, err, zfs.ErrDatasetBusy)
	require.Empty(t, w.snapshots(t, w.fss[1]))

	w.now = t0.Add(time.Minute)
	due, err := s.NextDue(ctx, w.now)
	require.NoError(t, err)
	require.Equal(t, t0.Add(time.Hour), due, "pool/b waits for the next interval")

	due, err = New(w.m, w.list, cfg).NextDue(ctx, w.now)
	require.NoError(t, err)
	require.Equal(t, w.now, due, "after a restart pool/b is due at once")
}
