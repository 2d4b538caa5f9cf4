package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// Whatever a caller does through Durable, once the call returned the saved
// state is the live state: a kill at that moment loses nothing. Reads do
// not save.
func TestDurableSavedStateIsLiveState(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		m := zfsmodel.New(zfsmodel.Options{Seed: 5})
		for _, p := range []string{"pool", "backup"} {
			if err := m.CreatePool(p); err != nil {
				t.Fatal(err)
			}
		}
		src := zfs.MustDatasetPath("pool/a")
		dst := zfs.MustDatasetPath("backup/a")
		if err := m.CreateFilesystem(src, zfsmodel.FSOptions{}); err != nil {
			t.Fatal(err)
		}
		var saved []byte
		d := NewDurable(m, func() error {
			var b bytes.Buffer
			if err := m.Save(&b); err != nil {
				return err
			}
			saved = b.Bytes()
			return nil
		})
		live := func() []byte {
			var b bytes.Buffer
			if err := m.Save(&b); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}
		saved = live() // the state as the daemon found it
		snapName := rapid.SampledFrom([]string{"s1", "s2", "s3"})
		fsys := rapid.SampledFrom([]zfs.DatasetPath{src, dst})
		tags := rapid.SampledFrom([]string{"t1", "t2"})
		for i := range rapid.IntRange(1, 25).Draw(t, "ops") {
			before := d.Saves()
			fs := fsys.Draw(t, "fs")
			snap := zfs.SnapshotRef(fs, snapName.Draw(t, "snap"))
			var op string
			wantSaves := int64(1)
			switch k := rapid.IntRange(0, 10).Draw(t, "op"); k {
			case 0:
				op = "write+snapshot"
				_ = m.WriteData(fs, int64(i), 2)
				_ = d.Snapshot(ctx, fs, snap.Name)
			case 1:
				op = "hold"
				_ = d.Hold(ctx, snap, tags.Draw(t, "tag"))
			case 2:
				op = "release"
				_ = d.Release(ctx, snap, tags.Draw(t, "tag"))
			case 3:
				op = "bookmark"
				_ = d.Bookmark(ctx, snap, "b"+snap.Name)
			case 4:
				op = "destroy"
				_ = d.Destroy(ctx, []zfs.VersionRef{snap, zfs.BookmarkRef(fs, "b"+snap.Name)})
			case 5:
				op = "rollback"
				_ = d.Rollback(ctx, snap, rapid.Bool().Draw(t, "destroyNewer"))
			case 6:
				op = "property"
				_ = d.SetUserProperty(ctx, fs, "zrepl:test", rapid.SampledFrom([]string{"", "x"}).Draw(t, "value"))
			case 7, 8:
				// A full or cut receive of the source's snapshot: a cut
				// one leaves partial state, which must be saved too.
				op = "receive"
				stream, err := m.Send(ctx, zfs.SendArgs{FS: src, To: zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: snap.Name, GUID: guidOf(m, zfs.SnapshotRef(src, snap.Name))}})
				if err != nil {
					wantSaves = 0 // nothing to receive
					break
				}
				var r io.Reader = stream
				if k == 8 {
					r = io.LimitReader(stream, int64(rapid.IntRange(0, 1<<20).Draw(t, "cut")))
				}
				_ = d.Receive(ctx, dst, r, zfs.RecvOptions{Resumable: true, ForceRollback: true})
				stream.Close()
			case 9:
				op = "abort receive"
				_ = d.AbortReceive(ctx, dst)
			case 10:
				op = "placeholder"
				_ = d.CreatePlaceholder(ctx, zfs.MustDatasetPath("backup/p"), zfs.PlaceholderOptions{})
			}
			if d.Saves() != before+wantSaves {
				t.Fatalf("%s: %d saves, want %d", op, d.Saves()-before, wantSaves)
			}
			if !bytes.Equal(saved, live()) {
				t.Fatalf("after %s the saved state is not the live state", op)
			}
			before = d.Saves()
			_, _ = d.ListVersions(ctx, fs)
			_, _ = d.ListFilesystems(ctx, zfs.MustDatasetPath("backup"))
			_, _ = d.Holds(ctx, []zfs.VersionRef{snap})
			if d.Saves() != before {
				t.Fatalf("reads saved")
			}
		}
	})
}

func guidOf(m *zfsmodel.Model, ref zfs.VersionRef) uint64 {
	vs, _ := m.ListVersions(context.Background(), ref.FS)
	for _, v := range vs {
		if v.Kind == ref.Kind && v.Name == ref.Name {
			return v.GUID
		}
	}
	return 0
}

// Changes made while a save runs wait for one more save, which they
// share: concurrent steps pay one save, not one each.
func TestDurableGroupCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := zfsmodel.New(zfsmodel.Options{Seed: 1})
		require.NoError(t, m.CreatePool("pool"))
		gate := make(chan struct{})
		d := NewDurable(m, func() error { <-gate; return nil })

		first := make(chan error)
		go func() { first <- d.Snapshot(ctx, zfs.MustDatasetPath("pool"), "first") }()
		synctest.Wait() // the first save runs and blocks
		var wg sync.WaitGroup
		errs := make([]error, 5)
		for i := range errs {
			wg.Go(func() { errs[i] = d.Snapshot(ctx, zfs.MustDatasetPath("pool"), fmt.Sprint("s", i)) })
		}
		synctest.Wait()
		gate <- struct{}{} // the first save ends
		require.NoError(t, <-first)
		synctest.Wait()
		gate <- struct{}{} // one save for the five
		wg.Wait()
		for _, err := range errs {
			assert.NoError(t, err)
		}
		assert.EqualValues(t, 2, d.Saves())
	})
}

// A failed save is the caller's error (the change is made, so it says
// so), and the next change saves again.
func TestDurableSaveError(t *testing.T) {
	ctx := context.Background()
	m := zfsmodel.New(zfsmodel.Options{Seed: 1})
	require.NoError(t, m.CreatePool("pool"))
	fail := errors.New("disk full")
	var next error
	d := NewDurable(m, func() error { return next })
	next = fail
	err := d.Snapshot(ctx, zfs.MustDatasetPath("pool"), "a")
	require.ErrorIs(t, err, fail)
	assert.Contains(t, err.Error(), "snapshot pool@a: the change is made but saving the backend state failed")
	next = nil
	require.NoError(t, d.Hold(ctx, zfs.SnapshotRef(zfs.MustDatasetPath("pool"), "a"), "t"))
	// The call's own error stays visible beside a save error.
	next = fail
	err = d.Snapshot(ctx, zfs.MustDatasetPath("pool"), "a")
	assert.ErrorIs(t, err, zfs.ErrDatasetExists)
	assert.ErrorIs(t, err, fail)
	assert.EqualValues(t, 3, d.Saves())
}

// A receive that checkpoints through Durable.Checkpoint while other calls
// change the state at the same time: each checkpoint returns with its
// partial state and token saved, nothing deadlocks, and once all returned
// the saved state is the live state.
func TestDurableCheckpointDuringReceive(t *testing.T) {
	ctx := context.Background()
	var d *Durable
	var ckErrs []error
	var tokens []string
	var mu sync.Mutex // guards saved
	var saved []byte
	target := zfs.MustDatasetPath("backup/a")
	savedToken := func() string {
		mu.Lock()
		b := saved
		mu.Unlock()
		sm, err := zfsmodel.Load(bytes.NewReader(b), zfsmodel.Options{})
		require.NoError(t, err)
		info, err := sm.Info(target)
		if err != nil {
			return ""
		}
		return info.ReceiveResumeToken
	}
	var m *zfsmodel.Model
	m = zfsmodel.New(zfsmodel.Options{Seed: 3, CheckpointEvery: 2 * zfsmodel.BlockSize, OnCheckpoint: func() {
		ckErrs = append(ckErrs, d.Checkpoint())
		live, err := m.Info(target)
		require.NoError(t, err)
		require.NotEmpty(t, live.ReceiveResumeToken)
		assert.Equal(t, live.ReceiveResumeToken, savedToken(), "a checkpoint returns saved")
		tokens = append(tokens, live.ReceiveResumeToken)
	}})
	for _, p := range []string{"pool", "backup"} {
		require.NoError(t, m.CreatePool(p))
	}
	src := zfs.MustDatasetPath("pool/a")
	require.NoError(t, m.CreateFilesystem(src, zfsmodel.FSOptions{}))
	require.NoError(t, m.WriteData(src, 1, 20))
	require.NoError(t, m.Snapshot(ctx, src, "s"))
	d = NewDurable(m, func() error {
		var b bytes.Buffer
		if err := m.Save(&b); err != nil {
			return err
		}
		mu.Lock()
		saved = b.Bytes()
		mu.Unlock()
		return nil
	})

	stream, err := m.Send(ctx, zfs.SendArgs{FS: src, To: zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "s", GUID: guidOf(m, zfs.SnapshotRef(src, "s"))}})
	require.NoError(t, err)
	defer stream.Close()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	others := make([]error, 3)
	for i := range others {
		// Created before the receive: created by a goroutine that runs
		// only after the receive's last save (seen under load), it
		// would be in the live state and not in the saved one.
		fs := zfs.MustDatasetPath(fmt.Sprintf("pool/o%d", i))
		require.NoError(t, d.CreatePlaceholder(ctx, fs, zfs.PlaceholderOptions{}))
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := d.Snapshot(ctx, fs, fmt.Sprint("s", n)); err != nil {
					others[i] = err
					return
				}
			}
		})
	}
	rerr := d.Receive(ctx, target, stream, zfs.RecvOptions{Resumable: true})
	close(stop)
	wg.Wait()
	require.NoError(t, rerr)
	for _, err := range append(ckErrs, others...) {
		require.NoError(t, err)
	}
	// 20 records, a checkpoint every second one up to the 19th's end.
	assert.Len(t, tokens, 9)
	var live bytes.Buffer
	require.NoError(t, m.Save(&live))
	mu.Lock()
	assert.Equal(t, live.String(), string(saved))
	mu.Unlock()
	assert.Empty(t, savedToken(), "the completed receive is saved without partial state")
}
