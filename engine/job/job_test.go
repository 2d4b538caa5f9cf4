package job

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// blockingSender blocks its listing until the run is cancelled.
type blockingSender struct{ listed chan struct{} }

func (b blockingSender) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	b.listed <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}
func (blockingSender) Send(context.Context, endpoint.SendRequest) (io.ReadCloser, error) {
	return nil, errors.New("unused")
}
func (blockingSender) SendSize(context.Context, endpoint.SendRequest) (int64, error) { return 0, nil }
func (blockingSender) StepCompleted(context.Context, endpoint.SendRequest, bool) error {
	return nil
}

type emptyReceiver struct{}

func (emptyReceiver) ListFilesystems(context.Context) ([]endpoint.Filesystem, error) { return nil, nil }
func (emptyReceiver) Receive(context.Context, endpoint.ReceiveRequest, io.Reader) error {
	return nil
}
func (emptyReceiver) AbortPartialReceive(context.Context, string) error { return nil }
func (emptyReceiver) MoveLastReceivedHold(context.Context, string, zfs.FilesystemVersion) error {
	return nil
}

type countingSnapshotter struct {
	every time.Duration
	mu    sync.Mutex
	taken []time.Time
}

func (c *countingSnapshotter) times() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.taken...)
}

func (c *countingSnapshotter) SnapshotNow(_ context.Context, now time.Time) ([]zfs.VersionRef, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.taken = append(c.taken, now)
	return []zfs.VersionRef{zfs.SnapshotRef(zfs.MustDatasetPath("p/fs"), "s")}, nil
}

func (c *countingSnapshotter) NextDue(_ context.Context, now time.Time) (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.taken) == 0 {
		return now, nil
	}
	return c.taken[len(c.taken)-1].Add(c.every), nil
}

// A running replication can be resized and reset; reset cancels it, the
// run records the error and the job goes on with its schedule.
func TestResetAndConcurrencyOfARunningReplication(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		listed := make(chan struct{})
		snap := &countingSnapshotter{every: time.Minute}
		var runsDone atomic.Int32
		j, err := NewActive(Config{
			Name: "push", ID: endpoint.MustJobID("push"), Type: "push", Snapshotter: snap,
			Connect: func(context.Context) (Sides, error) {
				return Sides{Sender: blockingSender{listed}, Receiver: emptyReceiver{}}, nil
			},
			AfterRun: func() { runsDone.Add(1) },
		})
		require.NoError(t, err)
		assert.False(t, j.Reset(), "nothing to reset before a run")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- j.Run(ctx) }()

		<-listed
		assert.True(t, j.Replicating())
		st := j.Status()
		assert.Equal(t, StateReplicating, st.State)
		require.NotNil(t, st.Replication)
		assert.False(t, st.Replication.Finished)
		require.NoError(t, j.SetConcurrency(4))
		assert.Equal(t, 4, j.Status().Concurrency)
		assert.Error(t, j.SetConcurrency(0))

		assert.True(t, j.Reset())
		synctest.Wait()
		assert.False(t, j.Replicating())
		st = j.Status()
		assert.Equal(t, StateIdle, st.State)
		assert.Contains(t, st.LastError, "replication")
		assert.EqualValues(t, 1, runsDone.Load())
		taken := snap.times()
		require.Len(t, taken, 1)
		assert.Equal(t, taken[0].Add(time.Minute), st.NextRun)

		// The next period starts the next run (which blocks again).
		time.Sleep(time.Minute)
		<-listed
		assert.Len(t, snap.times(), 2)
		cancel()
		require.NoError(t, <-done)
		assert.Equal(t, StateStopped, j.Status().State)
		assert.EqualValues(t, 2, runsDone.Load())
	})
}

func TestNewActiveRefusesAJobThatDoesNothing(t *testing.T) {
	_, err := NewActive(Config{Name: "x"})
	assert.ErrorContains(t, err, "neither snapshots nor replicates")
	_, err = NewActive(Config{})
	assert.Error(t, err)
	j, err := NewActive(Config{Name: "snap", Type: "snap", Snapshotter: &countingSnapshotter{}})
	require.NoError(t, err)
	assert.ErrorContains(t, j.SetConcurrency(2), "does not replicate")
}

// Progress of steps becomes per-filesystem status; a finished run's report
// decides the final states and errors.
func TestReplicationStatus(t *testing.T) {
	p := replication.Progress{
		Attempt: 2, Expected: 300, Done: 150, Rate: 50, ETA: 3 * time.Second,
		Steps: []replication.StepProgress{
			{FS: "a", Step: "full @1", Expected: 100, Done: 100, State: "done"},
			{FS: "a", Step: "@1 => @2", Expected: 100, Done: 50, State: "running"},
			{FS: "b", Step: "full @1", Expected: 100, Done: 0, State: "waiting"},
			{FS: "b", Step: "@1 => @2", Expected: 0, Done: 0, State: "waiting"},
		},
		Previous: &replication.Report{Attempts: 1, Filesystems: []replication.FSReport{
			{FS: "a", State: replication.FSFailed, Err: errors.New("connection reset")}, {FS: "b", State: replication.FSDone},
		}},
	}
	s := replicationStatus(p, nil)
	assert.Equal(t, &ReplicationStatus{
		Attempt: 2, BytesExpected: 300, BytesDone: 150, Rate: 50, ETASeconds: 3,
		Filesystems: []FSStatus{
			{FS: "a", State: "running", BytesExpected: 200, BytesDone: 150, Steps: 2, StepsDone: 1, Step: "@1 => @2", Rate: 50, ETASeconds: 1},
			{FS: "b", State: "waiting", BytesExpected: 100, Steps: 2, Step: "full @1", Unestimated: 1, ETASeconds: 2},
		},
		PreviousAttempt: &AttemptStatus{Attempt: 1, Failed: []FSError{{FS: "a", Error: "connection reset"}}},
	}, s)
	assert.Equal(t, 3*time.Second, s.ETA())

	rep := replication.Report{Filesystems: []replication.FSReport{
		{FS: "a", State: replication.FSDone},
		{FS: "b", State: replication.FSFailed, Err: errors.New("boom")},
		{FS: "c", State: replication.FSUpToDate},
	}}
	s = replicationStatus(p, &rep)
	assert.True(t, s.Finished)
	assert.Nil(t, s.PreviousAttempt, "a finished run's errors are its filesystems'")
	require.Len(t, s.Filesystems, 3)
	assert.Equal(t, "done", s.Filesystems[0].State)
	assert.Equal(t, "failed", s.Filesystems[1].State)
	assert.Equal(t, "boom", s.Filesystems[1].LastError)
	assert.Equal(t, "up to date", s.Filesystems[2].State)
	assert.Zero(t, s.Filesystems[0].ETASeconds, "no ETA after the end")
}

// listing is a PruneTarget with a fixed listing.
type listing []endpoint.Filesystem

func (l listing) ListFilesystems(context.Context) ([]endpoint.Filesystem, error) { return l, nil }
func (listing) DestroySnapshots(context.Context, string, []zfs.FilesystemVersion) error {
	return errors.New("unused")
}

// The replicated mark of the not_replicated rule: the job's own cursor, or
// the cursor a remote source marks as its job's (named after the source).
func TestCursorTXGs(t *testing.T) {
	pull, src, other := endpoint.MustJobID("pull"), endpoint.MustJobID("src"), endpoint.MustJobID("other")
	bm := func(name string, guid, txg uint64) zfs.FilesystemVersion {
		return zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: name, GUID: guid, CreateTXG: txg}
	}
	l := listing{
		{Path: "own", Versions: []zfs.FilesystemVersion{bm(endpoint.CursorBookmarkName(1, pull), 1, 10), bm(endpoint.CursorBookmarkName(2, other), 2, 20)}},
		{Path: "marked", Versions: []zfs.FilesystemVersion{bm(endpoint.CursorBookmarkName(3, src), 3, 30), bm(endpoint.CursorBookmarkName(4, other), 4, 40)}, Marks: endpoint.JobMarks{Cursors: []uint64{3}}},
		{Path: "plain bookmark", Versions: []zfs.FilesystemVersion{bm("manual", 5, 50)}, Marks: endpoint.JobMarks{Cursors: []uint64{5}}},
		{Path: "foreign", Versions: []zfs.FilesystemVersion{bm(endpoint.CursorBookmarkName(6, other), 6, 60)}},
	}
	got, err := cursorTXGs(context.Background(), l, pull)
	require.NoError(t, err)
	assert.Equal(t, map[string]uint64{"own": 10, "marked": 30}, got)
}

// askingListing is a listing whose source also tells its cursors when
// asked, as a zrepl source does.
type askingListing struct {
	listing
	cursors map[string]uint64
	asked   []string
}

func (a *askingListing) ReplicationCursor(_ context.Context, fs string) (uint64, bool, error) {
	a.asked = append(a.asked, fs)
	g, ok := a.cursors[fs]
	return g, ok, nil
}

// A source whose listing marks no cursors (zrepl's) is asked for each
// filesystem without one found in the listing, and the answer's GUID
// is looked up in the listing.
func TestCursorTXGsAsksZreplSource(t *testing.T) {
	pull, zsrc := endpoint.MustJobID("pull"), endpoint.MustJobID("zsrc")
	snap := func(name string, guid, txg uint64) zfs.FilesystemVersion {
		return zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: name, GUID: guid, CreateTXG: txg}
	}
	bm := func(name string, guid, txg uint64) zfs.FilesystemVersion {
		return zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: name, GUID: guid, CreateTXG: txg}
	}
	a := &askingListing{listing: listing{
		{Path: "own", Versions: []zfs.FilesystemVersion{snap("s1", 1, 10), bm(endpoint.CursorBookmarkName(1, pull), 1, 10)}},
		{Path: "zrepl", Versions: []zfs.FilesystemVersion{snap("s1", 6, 60), snap("s2", 7, 70), bm(endpoint.CursorBookmarkName(7, zsrc), 7, 70)}},
		{Path: "never", Versions: []zfs.FilesystemVersion{snap("s1", 8, 80)}},
	}, cursors: map[string]uint64{"zrepl": 7, "own": 99}}
	got, err := cursorTXGs(context.Background(), a, pull)
	require.NoError(t, err)
	assert.Equal(t, map[string]uint64{"own": 10, "zrepl": 70}, got)
	assert.Equal(t, []string{"zrepl", "never"}, a.asked, "asked only where the listing shows no cursor")
}

// reportingSnapshotter reports hook results per filesystem.
type reportingSnapshotter struct{ countingSnapshotter }

func (r *reportingSnapshotter) SnapshotNowReport(ctx context.Context, now time.Time) ([]SnapshotFSStatus, error) {
	r.SnapshotNow(ctx, now)
	return []SnapshotFSStatus{
		{FS: "p/a", Snapshot: "s", State: SnapDone, Hooks: []HookResult{{Hook: "command /bin/true", Phase: "pre_snapshot", OK: true}}},
		{FS: "p/b", Snapshot: "s", State: SnapSkipped, Error: "pre_snapshot hook failed", Hooks: []HookResult{{Hook: "postgres-checkpoint", Phase: "pre_snapshot", Error: "connection refused"}}},
	}, errors.New("p/b: pre_snapshot hook failed")
}

// A run's snapshot shows in the status per filesystem: the snapshots a
// plain Snapshotter created, or a SnapshotReporter's report with its hook
// results (and only the snapshots taken count as taken).
func TestSnapshottingStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tc := range []struct {
			name string
			snap Snapshotter
			want []SnapshotFSStatus
		}{
			{"plain", &countingSnapshotter{every: time.Hour}, []SnapshotFSStatus{{FS: "p/fs", Snapshot: "s", State: SnapDone}}},
			{"reporter", &reportingSnapshotter{countingSnapshotter{every: time.Hour}}, []SnapshotFSStatus{
				{FS: "p/a", Snapshot: "s", State: SnapDone, Hooks: []HookResult{{Hook: "command /bin/true", Phase: "pre_snapshot", OK: true}}},
				{FS: "p/b", Snapshot: "s", State: SnapSkipped, Error: "pre_snapshot hook failed", Hooks: []HookResult{{Hook: "postgres-checkpoint", Phase: "pre_snapshot", Error: "connection refused"}}},
			}},
		} {
			ran := make(chan struct{}, 1)
			j, err := NewActive(Config{Name: "snap", Type: "snap", Snapshotter: tc.snap, AfterRun: func() { ran <- struct{}{} }})
			require.NoError(t, err)
			assert.Nil(t, j.Status().Snapshotting, "none before the first snapshot")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- j.Run(ctx) }()
			<-ran
			st := j.Status()
			require.NotNil(t, st.Snapshotting, tc.name)
			assert.Equal(t, tc.want, st.Snapshotting.Filesystems, tc.name)
			assert.False(t, st.Snapshotting.End.IsZero(), tc.name)
			assert.Empty(t, st.Snapshotting.Error, "%s: the error belongs to a filesystem", tc.name)
			assert.Equal(t, []string{tc.want[0].FS + "@s"}, st.LastSnapshots, tc.name)
			// The status is a copy.
			st.Snapshotting.Filesystems[0].State = "changed"
			if len(st.Snapshotting.Filesystems[0].Hooks) > 0 {
				st.Snapshotting.Filesystems[0].Hooks[0].OK = false
			}
			assert.Equal(t, tc.want, j.Status().Snapshotting.Filesystems, tc.name)
			cancel()
			require.NoError(t, <-done)
		}
	})
}
