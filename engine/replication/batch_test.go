package replication_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
)

// cancelAfterConfirm cancels the run once the first step is confirmed.
type cancelAfterConfirm struct {
	*endpoint.Sender
	cancel context.CancelFunc
	once   sync.Once
	first  string
}

func (c *cancelAfterConfirm) StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error {
	err := c.Sender.StepCompleted(ctx, req, last)
	c.once.Do(func() {
		c.first = req.FS
		c.cancel()
	})
	return err
}

func twoReplicated(t *testing.T) *pair {
	p := newPair(t, "push")
	for _, fs := range []string{"src/data/a", "src/data/b"} {
		p.create(fs, false)
		p.write(fs, 1, 4)
		p.snap(fs, "s1")
	}
	requireOK(t, p.run(replication.Config{}))
	for _, fs := range []string{"src/data/a", "src/data/b"} {
		p.write(fs, 2, 4)
		p.snap(fs, "s2")
	}
	return p
}

// failingHolds fails every hold while on.
type failingHolds struct {
	zfs.ZFS
	on atomic.Bool
}

func (f *failingHolds) err() error {
	if f.on.Load() {
		return &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "hold", Msg: "dataset is busy"}
	}
	return nil
}

func (f *failingHolds) Hold(ctx context.Context, s zfs.VersionRef, tag string) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.ZFS.Hold(ctx, s, tag)
}

func (f *failingHolds) HoldAll(ctx context.Context, tag string, s []zfs.VersionRef) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.ZFS.HoldAll(ctx, tag, s)
}

// The receiver of this process puts its last-received hold off to the end
// of the run (endpoint.Batch); a run cancelled after a step completed
// still moves it there, as the step would have itself.
func TestCancelledRunFinishesItsBookkeeping(t *testing.T) {
	p := twoReplicated(t)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &cancelAfterConfirm{Sender: p.sender, cancel: cancel}
	rep := replication.NewRun(s, p.receiver, replication.Config{Sleep: noSleep}).Do(cctx)
	require.Error(t, rep.Err(), "cancelled")
	require.NotEmpty(t, s.first)
	target := "dst/client/" + s.first
	assert.Equal(t, []string{"s1", "s2"}, snapNames(versions(t, p.dst, target), zfs.Snapshot))
	assert.Equal(t, []string{"s2:" + endpoint.LastReceivedHoldTag(p.job)}, holdsOf(t, p.dst, target), "the completed step's hold moved")
	for _, f := range rep.Filesystems {
		if f.FS == s.first {
			assert.NoError(t, f.Err, "the completed step's filesystem")
		}
	}
}

// Bookkeeping that fails at the end of the run is retried with the
// attempts left, then reported; the holds it could not move stay where
// they were, and a later run moves them.
func TestBookkeepingFailureUsesTheAttemptsLeft(t *testing.T) {
	p := twoReplicated(t)
	fh := &failingHolds{ZFS: p.dst}
	fh.on.Store(true)
	p.receiver.ZFS = fh
	rep := p.run(replication.Config{MaxAttempts: 3})
	// The first attempt's steps went through, their holds at the end
	// failed; the next attempts found the filesystems up to date and
	// failed to move the holds.
	assert.Equal(t, 3, rep.Attempts)
	assert.ErrorContains(t, rep.Err(), "dataset is busy")
	last := endpoint.LastReceivedHoldTag(p.job)
	for _, fs := range []string{"dst/client/src/data/a", "dst/client/src/data/b"} {
		assert.Equal(t, []string{"s1:" + last}, holdsOf(t, p.dst, fs), "%s keeps its older hold", fs)
	}
	fh.on.Store(false)
	requireOK(t, p.run(replication.Config{}))
	for _, fs := range []string{"dst/client/src/data/a", "dst/client/src/data/b"} {
		assert.Equal(t, []string{"s2:" + last}, holdsOf(t, p.dst, fs), fs)
	}
}

// Bookkeeping that fails at the end of the run's last attempt fails the
// filesystems it was for: their data arrived, their holds are not where
// a completed run leaves them.
func TestBookkeepingFailureFailsItsFilesystems(t *testing.T) {
	p := twoReplicated(t)
	fh := &failingHolds{ZFS: p.dst}
	fh.on.Store(true)
	p.receiver.ZFS = fh
	rep := p.run(replication.Config{MaxAttempts: 1})
	assert.Equal(t, 1, rep.Attempts)
	require.Len(t, rep.Filesystems, 3, "src/data (skipped) and its two children")
	for _, f := range rep.Filesystems[1:] {
		assert.Equal(t, replication.FSFailed, f.State, f.FS)
		assert.ErrorContains(t, f.Err, "end of run", f.FS)
		assert.Equal(t, 1, f.StepsDone, f.FS)
	}
}

// commitThenFail makes the n-th Receive (counting from 1) fail after zfs
// received the stream, as zfs recv does when it sets a property after the
// snapshot is in.
type commitThenFail struct {
	zfs.ZFS
	n, calls int
}

func (c *commitThenFail) Receive(ctx context.Context, fs zfs.DatasetPath, stream io.Reader, opts zfs.RecvOptions) error {
	c.calls++
	err := c.ZFS.Receive(ctx, fs, stream, opts)
	if err == nil && c.calls == c.n {
		return errors.New("cannot receive mountpoint property (test)")
	}
	return err
}

// The driver's actions go through the run's batch like its steps. Here
// the first attempt receives s2 (its hold put off) and s3, whose receive
// reports failure after the snapshot went in; the second attempt finds
// the filesystem up to date at s3 with the hold still on s1 and moves it.
// Done at once, that move came before the end of the run put the hold on
// s2, which then kept it.
func TestActionsGoThroughTheBatch(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data/a", false)
	p.write("src/data/a", 1, 4)
	p.snap("src/data/a", "s1")
	requireOK(t, p.run(replication.Config{}))
	for i, s := range []string{"s2", "s3"} {
		p.write("src/data/a", int64(i+2), 4)
		p.snap("src/data/a", s)
	}
	p.receiver.ZFS = &commitThenFail{ZFS: p.dst, n: 2}
	rep := p.run(replication.Config{MaxAttempts: 2})
	requireOK(t, rep)
	assert.Equal(t, 2, rep.Attempts)
	assert.Equal(t, []string{"s3:" + endpoint.LastReceivedHoldTag(p.job)}, holdsOf(t, p.dst, "dst/client/src/data/a"))
}
