package replication_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

// pair is a sender host and a receiver host, each a zfsmodel, joined by
// in-process endpoints: the local endpoint pair.
type pair struct {
	t        *testing.T
	src, dst *zfsmodel.Model
	job      endpoint.JobID
	sender   *endpoint.Sender
	receiver *endpoint.Receiver
}

func newPair(t *testing.T, job string) *pair {
	t.Helper()
	mp, err := modelpair.New(modelpair.Options{Job: job})
	require.NoError(t, err)
	p := &pair{t: t, src: mp.Src, dst: mp.Dst}
	p.setJob(job)
	return p
}

func (p *pair) setJob(job string) {
	p.job = endpoint.MustJobID(job)
	p.sender = modelpair.Sender(p.src, p.job)
	p.receiver = &endpoint.Receiver{ZFS: p.dst, Job: p.job, Root: zfs.MustDatasetPath("dst/client")}
}

func (p *pair) fs(name string) zfs.DatasetPath { return zfs.MustDatasetPath(name) }

func (p *pair) create(name string, encrypted bool) {
	p.t.Helper()
	require.NoError(p.t, p.src.CreateFilesystem(p.fs(name), zfsmodel.FSOptions{Parents: true, Encrypted: encrypted}))
}

func (p *pair) write(name string, seed int64, blocks int) {
	p.t.Helper()
	require.NoError(p.t, p.src.WriteData(p.fs(name), seed, blocks))
}

func (p *pair) snap(name, snap string) {
	p.t.Helper()
	require.NoError(p.t, p.src.Snapshot(ctx, p.fs(name), snap))
}

// noSleep keeps retries out of real time.
func noSleep(context.Context, time.Duration) error { return nil }

func (p *pair) run(cfg replication.Config) replication.Report {
	p.t.Helper()
	if cfg.Sleep == nil {
		cfg.Sleep = noSleep
	}
	return replication.NewRun(p.sender, p.receiver, cfg).Do(ctx)
}

func versions(t *testing.T, z zfs.ZFS, fs string) []zfs.FilesystemVersion {
	t.Helper()
	v, err := z.ListVersions(ctx, zfs.MustDatasetPath(fs))
	require.NoError(t, err)
	return v
}

func snapNames(vs []zfs.FilesystemVersion, kind zfs.VersionKind) []string {
	var out []string
	for _, v := range vs {
		if v.Kind == kind {
			out = append(out, v.Name)
		}
	}
	return out
}

// holdsOf lists "snapshot:tag" for every hold on fs.
func holdsOf(t *testing.T, z zfs.ZFS, fs string) []string {
	t.Helper()
	var refs []zfs.VersionRef
	for _, v := range versions(t, z, fs) {
		if v.Kind == zfs.Snapshot {
			refs = append(refs, v.Ref(zfs.MustDatasetPath(fs)))
		}
	}
	if len(refs) == 0 {
		return nil
	}
	holds, err := z.Holds(ctx, refs)
	require.NoError(t, err)
	var out []string
	for snap, tags := range holds {
		for _, tag := range tags {
			out = append(out, snap+":"+tag)
		}
	}
	slices.Sort(out)
	return out
}

// assertReplicated checks GUIDs and content of every receiver snapshot
// against the sender, and that exactly the job's cursor and last-received
// hold outlive the run.
func (p *pair) assertReplicated(srcFS string, wantSnaps ...string) {
	t := p.t
	t.Helper()
	dstFS := "dst/client/" + srcFS
	got := versions(t, p.dst, dstFS)
	assert.Equal(t, wantSnaps, snapNames(got, zfs.Snapshot), "receiver snapshots of %s", dstFS)
	srcVersions := versions(t, p.src, srcFS)
	if info, err := p.dst.Info(p.fs(dstFS)); err == nil && info.KeyStatus == zfs.KeyStatusUnavailable {
		require.NoError(t, p.dst.LoadKey(p.fs(info.EncryptionRoot)), "load the key of a raw-received filesystem to compare content")
		defer func() { require.NoError(t, p.dst.UnloadKey(p.fs(info.EncryptionRoot))) }()
	}
	for i, v := range got {
		j := slices.IndexFunc(srcVersions, func(s zfs.FilesystemVersion) bool { return s.GUID == v.GUID })
		if j < 0 {
			// The sender may have destroyed older snapshots since; the
			// newest must always be known (as snapshot or cursor).
			assert.NotEqual(t, len(got)-1, i, "receiver's newest snapshot %s has a GUID the sender does not know", v.Name)
			continue
		}
		if srcVersions[j].Kind == zfs.Snapshot {
			want, err := p.src.Checksum(srcVersions[j].Ref(p.fs(srcFS)))
			require.NoError(t, err)
			have, err := p.dst.Checksum(v.Ref(p.fs(dstFS)))
			require.NoError(t, err)
			assert.Equal(t, want, have, "content of %s@%s", dstFS, v.Name)
		}
	}
	newest := got[len(got)-1]
	assert.Equal(t, []string{newest.Name + ":" + endpoint.LastReceivedHoldTag(p.job)}, holdsOf(t, p.dst, dstFS), "receiver holds")
	var ours []string
	for _, b := range snapNames(versions(t, p.src, srcFS), zfs.Bookmark) {
		if parsed, ok := endpoint.ParseBookmarkName(b); ok && parsed.Job == p.job {
			ours = append(ours, b)
		}
	}
	assert.Equal(t, []string{endpoint.CursorBookmarkName(newest.GUID, p.job)}, ours, "sender bookmarks of job %s", p.job)
	for _, h := range holdsOf(t, p.src, srcFS) {
		assert.NotContains(t, h, endpoint.StepHoldTag(p.job), "step hold outlived the run")
	}
}

func requireOK(t *testing.T, rep replication.Report) {
	t.Helper()
	require.NoError(t, rep.Err(), "report: %+v", rep)
}

func TestFullThenIncremental(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data", false)
	p.write("src/data", 1, 8)
	p.snap("src/data", "s1")
	rep := p.run(replication.Config{})
	requireOK(t, rep)
	assert.Equal(t, 1, rep.Attempts)
	p.assertReplicated("src/data", "s1")

	p.write("src/data", 2, 3)
	p.snap("src/data", "s2")
	p.write("src/data", 3, 3)
	p.snap("src/data", "s3")
	rep = p.run(replication.Config{})
	requireOK(t, rep)
	assert.Equal(t, 2, rep.Filesystems[0].StepsDone, "one incremental step per snapshot")
	p.assertReplicated("src/data", "s1", "s2", "s3")

	rep = p.run(replication.Config{})
	requireOK(t, rep)
	assert.Equal(t, replication.FSUpToDate, rep.Filesystems[0].State)
}

func TestAllSnapshotsInitialPolicy(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data", false)
	for i := 1; i <= 3; i++ {
		p.write("src/data", int64(i), 2)
		p.snap("src/data", fmt.Sprintf("s%d", i))
	}
	requireOK(t, p.run(replication.Config{Policy: planner.Policy{InitialReplication: planner.AllSnapshots}}))
	p.assertReplicated("src/data", "s1", "s2", "s3")
}

// The cursor bookmark keeps incremental replication possible after the
// sender destroyed the snapshot both sides had in common.
func TestIncrementalFromCursorBookmark(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data", false)
	p.write("src/data", 1, 4)
	p.snap("src/data", "s1")
	requireOK(t, p.run(replication.Config{}))

	require.NoError(t, p.src.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(p.fs("src/data"), "s1")}))
	p.write("src/data", 2, 4)
	p.snap("src/data", "s2")
	rep := p.run(replication.Config{})
	requireOK(t, rep)
	p.assertReplicated("src/data", "s1", "s2")
	for _, b := range snapNames(versions(t, p.src, "src/data"), zfs.Bookmark) {
		assert.NotContains(t, b, "zrepl_STEP_", "step bookmark outlived the run")
	}
}

// A stream cut part way leaves a resumable receive; the next attempt
// resumes it and does not send again what was received.
func TestResumeAfterCutStream(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data", false)
	p.write("src/data", 1, 64)
	p.snap("src/data", "s1")
	full, err := p.src.SendSize(ctx, zfs.SendArgs{FS: p.fs("src/data"), To: versions(t, p.src, "src/data")[0]})
	require.NoError(t, err)
	cut := full / 2
	require.NoError(t, p.src.CutNextSend(cut))

	run := replication.NewRun(p.sender, p.receiver, replication.Config{Sleep: noSleep})
	rep := run.Do(ctx)
	requireOK(t, rep)
	assert.Equal(t, 2, rep.Attempts, "first attempt cut, second resumed")
	prog := run.Progress()
	require.Len(t, prog.Steps, 1)
	assert.Less(t, prog.Steps[0].Done, full-cut+full/10, "the resumed attempt re-sent received bytes: %d of %d after a cut at %d", prog.Steps[0].Done, full, cut)
	p.assertReplicated("src/data", "s1")
}

func TestPlaceholdersAndManyFilesystems(t *testing.T) {
	p := newPair(t, "push")
	p.sender.Filter = func(fs zfs.DatasetPath) bool {
		return fs.HasPrefix(p.fs("src/data")) && fs != p.fs("src/data/skip")
	}
	for _, fs := range []string{"src/data", "src/data/a", "src/data/skip/child", "src/data/a/b"} {
		p.create(fs, false)
		p.write(fs, int64(len(fs)), 2)
	}
	for _, fs := range []string{"src/data", "src/data/a", "src/data/skip/child", "src/data/a/b", "src/data/skip"} {
		p.snap(fs, "s1")
	}
	requireOK(t, p.run(replication.Config{Concurrency: 3}))
	for _, fs := range []string{"src/data", "src/data/a", "src/data/skip/child", "src/data/a/b"} {
		p.assertReplicated(fs, "s1")
	}
	info, err := p.dst.Info(p.fs("dst/client/src/data/skip"))
	require.NoError(t, err)
	assert.True(t, info.Placeholder, "filtered-out parent is a placeholder on the receiver")
	assert.Empty(t, versions(t, p.dst, "dst/client/src/data/skip"))
}

func TestConflictIsPermanentAndNamed(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data", false)
	p.write("src/data", 1, 2)
	p.snap("src/data", "s1")
	requireOK(t, p.run(replication.Config{}))
	// The receiver gets a snapshot of its own: it now has something newer
	// than the common base that the sender never had.
	require.NoError(t, p.dst.Snapshot(ctx, p.fs("dst/client/src/data"), "local"))
	p.write("src/data", 2, 2)
	p.snap("src/data", "s2")
	rep := p.run(replication.Config{MaxAttempts: 5})
	assert.Equal(t, 1, rep.Attempts, "a conflict is not retried")
	require.Len(t, rep.Filesystems, 1)
	f := rep.Filesystems[0]
	assert.Equal(t, replication.FSConflict, f.State)
	assert.True(t, f.Permanent)
	assert.ErrorIs(t, f.Err, planner.ConflictDiverged)
	assert.ErrorContains(t, rep.Err(), "src/data")
}

// Several jobs replicate one filesystem without touching each other's
// cursors and holds.
func TestTwoJobsOneFilesystem(t *testing.T) {
	p := newPair(t, "job_a")
	p.create("src/data", false)
	p.write("src/data", 1, 2)
	p.snap("src/data", "s1")
	requireOK(t, p.run(replication.Config{}))

	q := &pair{t: t, src: p.src, dst: zfsmodel.New(zfsmodel.Options{Seed: 3})}
	require.NoError(t, q.dst.CreatePool("dst"))
	q.setJob("job_b")
	p.write("src/data", 2, 2)
	p.snap("src/data", "s2")
	requireOK(t, q.run(replication.Config{}))
	q.assertReplicated("src/data", "s2") // a new job starts with the most recent snapshot

	cursors := 0
	for _, b := range snapNames(versions(t, p.src, "src/data"), zfs.Bookmark) {
		if parsed, ok := endpoint.ParseBookmarkName(b); ok && parsed.Kind == endpoint.ReplicationCursorV2 {
			cursors++
		}
	}
	assert.Equal(t, 2, cursors, "each job keeps its own cursor")
	p.assertReplicated("src/data", "s1") // job_a's state is untouched
	requireOK(t, p.run(replication.Config{}))
	p.assertReplicated("src/data", "s1", "s2")
}

func TestRawSendOfEncryptedFilesystem(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data", true)
	p.write("src/data", 1, 4)
	p.snap("src/data", "s1")
	p.sender.Policy = zfs.SendPolicy{Encrypted: true}
	requireOK(t, p.run(replication.Config{}))
	info, err := p.dst.Info(p.fs("dst/client/src/data"))
	require.NoError(t, err)
	assert.True(t, info.Encrypted())
	assert.Equal(t, zfs.KeyStatusUnavailable, info.KeyStatus, "a raw receive does not bring the key")
	p.write("src/data", 2, 4)
	p.snap("src/data", "s2")
	requireOK(t, p.run(replication.Config{}))
	p.assertReplicated("src/data", "s1", "s2")

	// An unencrypted source is refused where the policy requires encryption.
	p.sender.Filter = func(fs zfs.DatasetPath) bool {
		return fs.HasPrefix(p.fs("src/data")) || fs.HasPrefix(p.fs("src/plain"))
	}
	p.create("src/plain", false)
	p.snap("src/plain", "s1")
	rep := p.run(replication.Config{})
	var plain *replication.FSReport
	for i := range rep.Filesystems {
		if rep.Filesystems[i].FS == "src/plain" {
			plain = &rep.Filesystems[i]
		}
	}
	require.NotNil(t, plain)
	assert.ErrorIs(t, plain.Err, planner.ConflictSenderNotEncrypted)
}

// countingReceiver counts Receive calls per filesystem.
type countingReceiver struct {
	replication.Receiver
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingReceiver) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	c.mu.Lock()
	c.calls[req.FS]++
	c.mu.Unlock()
	return c.Receiver.Receive(ctx, req, stream)
}

// Lowering the concurrency while steps run suspends the youngest ones; they
// resume from their resume token later without sending again what the
// receiver already has, and nothing of the job leaks.
func TestResizeDownMidRunResumesWithoutResending(t *testing.T) {
	p := newPair(t, "push")
	fss := []string{"src/data/a", "src/data/b", "src/data/c"}
	p.sender.Filter = func(fs zfs.DatasetPath) bool { return slices.Contains(fss, fs.String()) }
	for i, fs := range fss {
		p.create(fs, false)
		p.write(fs, int64(i), 64)
		p.snap(fs, "s1")
	}
	counting := &countingReceiver{Receiver: p.receiver, calls: map[string]int{}}
	recv := &interferingReceiver{Receiver: counting, onBytes: 1 << 20, gate: make(chan struct{})}
	run := replication.NewRun(p.sender, recv, replication.Config{Concurrency: 3, Sleep: noSleep})
	recv.act = func() {
		defer close(recv.gate)
		// The steps start as their size estimates come in: wait until all
		// three run.
		waitFor(t, func() bool { return countStates(run, "running") == 3 }, "three steps running")
		require.NoError(t, run.SetConcurrency(1))
		// Hold the data flow until the driver has acted on the change, so
		// that the steps are still running when it does.
		waitFor(t, func() bool { return countStates(run, "suspending", "suspended") == 2 }, "two steps suspended after the limit went from 3 to 1")
	}
	rep := run.Do(ctx)
	requireOK(t, rep)
	for _, fs := range fss {
		p.assertReplicated(fs, "s1")
	}
	resumed := 0
	for _, n := range counting.calls {
		if n > 1 {
			resumed++
		}
	}
	assert.Positive(t, resumed, "some step was suspended and resumed: %v", counting.calls)
	for _, s := range run.Progress().Steps {
		assert.Equal(t, "done", s.State)
		assert.LessOrEqual(t, s.Done, s.Expected+s.Expected/20, "step %s %s sent %d bytes for an estimate of %d: re-sent received data", s.FS, s.Step, s.Done, s.Expected)
	}
}

// countStates counts the run's steps in one of states.
func countStates(run *replication.Run, states ...string) int {
	n := 0
	for _, s := range run.Progress().Steps {
		if slices.Contains(states, s.State) {
			n++
		}
	}
	return n
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Errorf("waited 10 s in vain for %s", what)
}

// After the receiver is rolled back to an older snapshot, the next run
// replicates from there again, as long as the sender still has it.
func TestReceiverRolledBack(t *testing.T) {
	p := newPair(t, "push")
	p.sender.Filter = func(fs zfs.DatasetPath) bool { return fs == p.fs("src/data") }
	p.create("src/data", false)
	for i := 1; i <= 3; i++ {
		p.write("src/data", int64(i), 2)
		p.snap("src/data", fmt.Sprintf("s%d", i))
	}
	requireOK(t, p.run(replication.Config{Policy: planner.Policy{InitialReplication: planner.AllSnapshots}}))
	dst := p.fs("dst/client/src/data")
	// The administrator releases the job's hold and rolls back.
	require.NoError(t, p.dst.Release(ctx, zfs.SnapshotRef(dst, "s3"), endpoint.LastReceivedHoldTag(p.job)))
	require.NoError(t, p.dst.Rollback(ctx, zfs.SnapshotRef(dst, "s1"), true))
	assert.Equal(t, []string{"s1"}, snapNames(versions(t, p.dst, dst.String()), zfs.Snapshot))

	rep := p.run(replication.Config{})
	requireOK(t, rep)
	assert.Equal(t, 2, rep.Filesystems[0].StepsDone)
	p.assertReplicated("src/data", "s1", "s2", "s3")
}

// A filesystem replicated by zrepl before cursor v2 has only the shared v1
// cursor bookmark on the sender; it is still a valid incremental source.
func TestV1CursorIsReadForCompatibility(t *testing.T) {
	p := newPair(t, "push")
	p.sender.Filter = func(fs zfs.DatasetPath) bool { return fs == p.fs("src/data") }
	p.create("src/data", false)
	p.write("src/data", 1, 2)
	p.snap("src/data", "s1")
	requireOK(t, p.run(replication.Config{}))
	// Rewrite history as the old zrepl left it: no v2 cursor, a v1 cursor
	// on s1, and s1 itself pruned on the sender.
	src := p.fs("src/data")
	s1 := versions(t, p.src, "src/data")[0]
	require.NoError(t, p.src.Bookmark(ctx, zfs.SnapshotRef(src, "s1"), endpoint.CursorV1BookmarkName))
	require.NoError(t, p.src.Destroy(ctx, []zfs.VersionRef{
		zfs.BookmarkRef(src, endpoint.CursorBookmarkName(s1.GUID, p.job)), zfs.SnapshotRef(src, "s1"),
	}))
	p.write("src/data", 2, 2)
	p.snap("src/data", "s2")

	rep := p.run(replication.Config{})
	requireOK(t, rep)
	assert.Equal(t, 1, rep.Filesystems[0].StepsDone, "one incremental from the v1 cursor, no full send")
	got := versions(t, p.dst, "dst/client/src/data")
	assert.Equal(t, []string{"s1", "s2"}, snapNames(got, zfs.Snapshot))
	assert.Contains(t, snapNames(versions(t, p.src, "src/data"), zfs.Bookmark), endpoint.CursorV1BookmarkName,
		"the v1 cursor is left for `zrepl migrate replication-cursor:v1-v2` to remove")
}

// slowSizes makes every size estimate take a second and records how many
// ran at once.
type slowSizes struct {
	replication.Sender
	mu          sync.Mutex
	now, most   int
	estimations int
}

func (s *slowSizes) SendSize(ctx context.Context, req endpoint.SendRequest) (int64, error) {
	s.mu.Lock()
	s.now++
	s.estimations++
	s.most = max(s.most, s.now)
	s.mu.Unlock()
	time.Sleep(time.Second)
	s.mu.Lock()
	s.now--
	s.mu.Unlock()
	return s.Sender.SendSize(ctx, req)
}

// replication.concurrency.size_estimates: that many size estimates run at
// once, whatever the step concurrency.
func TestSizeEstimatesRunAtOnce(t *testing.T) {
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newPair(t, "push")
				for i := range 6 {
					fs := fmt.Sprintf("src/data/f%d", i)
					p.create(fs, false)
					p.write(fs, int64(i), 1)
					p.snap(fs, "s1")
					p.snap(fs, "s2")
				}
				s := &slowSizes{Sender: p.sender}
				rep := replication.NewRun(s, p.receiver, replication.Config{
					SizeEstimates: n, Concurrency: 1, Sleep: noSleep,
					Policy: planner.Policy{InitialReplication: planner.AllSnapshots},
				}).Do(ctx)
				requireOK(t, rep)
				assert.Equal(t, 12, s.estimations, "one estimate per step")
				assert.Equal(t, n, s.most, "estimates at once")
			})
		})
	}
}

// failingLister fails every listing.
type failingLister struct{ replication.Sender }

func (failingLister) ListFilesystems(context.Context) ([]endpoint.Filesystem, error) {
	return nil, fmt.Errorf("sender unreachable")
}

// A run cancelled while it waits to retry ends at once and leaves no
// goroutine behind (the backoff timer's goroutine must not wait to be
// heard by a loop that ended).
func TestCancelDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, "push")
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		rep := replication.NewRun(failingLister{p.sender}, p.receiver, replication.Config{}).Do(cctx)
		assert.Equal(t, 1, rep.Attempts)
		assert.ErrorContains(t, rep.Err(), "sender unreachable")
		synctest.Wait()
	})
}
