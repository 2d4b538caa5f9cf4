package replication_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// interferingReceiver wraps the receiver to interfere with a run while
// data flows: cancel the run after some bytes, or change its concurrency.
type interferingReceiver struct {
	replication.Receiver
	mu        sync.Mutex
	onBytes   int64 // act once this many bytes were received in total
	seen      atomic.Int64
	act       func()
	triggered bool
	// gate, if set, holds every read after the trigger until it is
	// closed, so that no other step makes progress while act runs.
	gate chan struct{}
}

func (r *interferingReceiver) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	return r.Receiver.Receive(ctx, req, readerFunc(func(p []byte) (int, error) {
		n, err := stream.Read(p)
		if r.seen.Add(int64(n)) >= r.onBytes {
			r.mu.Lock()
			fire := !r.triggered && r.act != nil
			r.triggered = true
			r.mu.Unlock()
			if fire {
				r.act()
			} else if r.gate != nil {
				<-r.gate
			}
		}
		return n, err
	}))
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// engineModel is the state machine: a sender with filesystems under
// src/data, a receiver, one job, and what the test remembers of history.
type engineModel struct {
	p        *pair
	fss      []string
	nextSnap int
	// checksums of every snapshot the sender ever had, by GUID.
	sum map[uint64]string
	// created lists sender snapshot GUIDs per filesystem in creation order.
	created map[string][]uint64
}

func (m *engineModel) snapshot(t *rapid.T) {
	fs := rapid.SampledFrom(m.fss).Draw(t, "fs")
	if rapid.Bool().Draw(t, "write") {
		if err := m.p.src.WriteData(zfs.MustDatasetPath(fs), rapid.Int64Range(0, 100).Draw(t, "seed"), rapid.IntRange(1, 6).Draw(t, "blocks")); err != nil {
			t.Fatal(err)
		}
	}
	m.nextSnap++
	name := fmt.Sprintf("s%03d", m.nextSnap)
	if err := m.p.src.Snapshot(ctx, zfs.MustDatasetPath(fs), name); err != nil {
		t.Fatal(err)
	}
	for _, v := range mustVersions(t, m.p.src, fs) {
		if v.Name == name {
			sum, err := m.p.src.Checksum(v.Ref(zfs.MustDatasetPath(fs)))
			if err != nil {
				t.Fatal(err)
			}
			m.sum[v.GUID] = sum
			m.created[fs] = append(m.created[fs], v.GUID)
		}
	}
}

// destroy removes a sender snapshot; held ones stay (dataset is busy),
// which is what protects replication.
func (m *engineModel) destroy(t *rapid.T) {
	fs := rapid.SampledFrom(m.fss).Draw(t, "fs")
	var snaps []string
	for _, v := range mustVersions(t, m.p.src, fs) {
		if v.Kind == zfs.Snapshot {
			snaps = append(snaps, v.Name)
		}
	}
	if len(snaps) == 0 {
		t.Skip("no snapshot")
	}
	name := rapid.SampledFrom(snaps).Draw(t, "snap")
	err := m.p.src.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(zfs.MustDatasetPath(fs), name)})
	if err != nil && !errors.Is(err, zfs.ErrDatasetBusy) {
		t.Fatal(err)
	}
}

func (m *engineModel) replicate(t *rapid.T) {
	cfg := replication.Config{Concurrency: rapid.IntRange(1, 3).Draw(t, "concurrency"), Sleep: noSleep, MaxAttempts: 10}
	recv := &interferingReceiver{Receiver: m.p.receiver}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := replication.NewRun(m.p.sender, recv, cfg)
	interference := rapid.SampledFrom([]string{"none", "cut", "cancel", "resize"}).Draw(t, "interference")
	switch interference {
	case "cut":
		if err := m.p.src.CutNextSend(rapid.Int64Range(0, 4<<20).Draw(t, "cutAt")); err != nil {
			t.Fatal(err)
		}
	case "cancel":
		recv.onBytes = rapid.Int64Range(1, 4<<20).Draw(t, "cancelAt")
		recv.act = cancel
	case "resize":
		recv.onBytes = rapid.Int64Range(1, 1<<20).Draw(t, "resizeAt")
		n := rapid.IntRange(1, 3).Draw(t, "newConcurrency")
		recv.act = func() { _ = run.SetConcurrency(n) }
	}
	rep := run.Do(runCtx)
	m.check(t)
	if interference == "cancel" && recv.triggered {
		return // a cancelled run owes nothing but resumable state, checked next run
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("run with interference %s failed: %v\n%s", interference, err, m.dump(t))
	}
	m.checkCompleted(t)
}

// check holds after every action: every receiver snapshot is a sender
// snapshot (by GUID) with the same content, in the sender's order.
func (m *engineModel) check(t *rapid.T) {
	for _, fs := range m.fss {
		dst := "dst/client/" + fs
		got, err := m.p.dst.ListVersions(ctx, zfs.MustDatasetPath(dst))
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		lastIndex := -1
		for _, v := range got {
			if v.Kind != zfs.Snapshot {
				continue
			}
			i := slices.Index(m.created[fs], v.GUID)
			if i < 0 {
				t.Fatalf("%s@%s has GUID %x the sender never created", dst, v.Name, v.GUID)
			}
			if i <= lastIndex {
				t.Fatalf("%s@%s is out of the sender's order", dst, v.Name)
			}
			lastIndex = i
			sum, err := m.p.dst.Checksum(v.Ref(zfs.MustDatasetPath(dst)))
			if err != nil {
				t.Fatal(err)
			}
			if sum != m.sum[v.GUID] {
				t.Fatalf("%s@%s content differs from what the sender snapshotted", dst, v.Name)
			}
		}
	}
}

// checkCompleted holds after a run that completed: the receiver has the
// sender's newest snapshot, and the job owns exactly its cursor and its
// last-received hold, so the next incremental is possible.
func (m *engineModel) checkCompleted(t *rapid.T) {
	for _, fs := range m.fss {
		srcVersions := mustVersions(t, m.p.src, fs)
		// The receiver must have the sender's newest snapshot, unless the
		// sender destroyed it after replicating it: then the job's cursor
		// still marks it and is the newest version.
		var newest *zfs.FilesystemVersion
		for i, v := range srcVersions {
			if p, ok := endpoint.ParseBookmarkName(v.Name); v.Kind == zfs.Snapshot || ok && v.Kind == zfs.Bookmark && p.Kind == endpoint.ReplicationCursorV2 && p.Job == m.p.job {
				if newest == nil || v.CreateTXG >= newest.CreateTXG {
					newest = &srcVersions[i]
				}
			}
		}
		dst := "dst/client/" + fs
		dstVersions, err := m.p.dst.ListVersions(ctx, zfs.MustDatasetPath(dst))
		if newest == nil {
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", dst, err)
		}
		var dstNewest *zfs.FilesystemVersion
		for i, v := range dstVersions {
			if v.Kind == zfs.Snapshot {
				dstNewest = &dstVersions[i]
			}
		}
		if dstNewest == nil || dstNewest.GUID != newest.GUID {
			t.Fatalf("%s: receiver's newest is %v, sender's is %s\n%s", fs, dstNewest, newest.RelName(), m.dump(t))
		}
		var ours []string
		for _, v := range srcVersions {
			if v.Kind == zfs.Bookmark {
				if p, ok := endpoint.ParseBookmarkName(v.Name); ok && p.Job == m.p.job {
					ours = append(ours, v.Name)
				}
			}
		}
		if want := []string{endpoint.CursorBookmarkName(newest.GUID, m.p.job)}; !slices.Equal(ours, want) {
			t.Fatalf("%s: job bookmarks %v, want only %v", fs, ours, want)
		}
		for _, h := range holdsOfT(t, m.p.src, fs) {
			t.Fatalf("%s: sender hold %s outlived a completed run", fs, h)
		}
		if h, want := holdsOfT(t, m.p.dst, dst), []string{dstNewest.Name + ":" + endpoint.LastReceivedHoldTag(m.p.job)}; !slices.Equal(h, want) {
			t.Fatalf("%s: receiver holds %v, want %v", dst, h, want)
		}
	}
}

func mustVersions(t interface{ Fatal(...any) }, z zfs.ZFS, fs string) []zfs.FilesystemVersion {
	v, err := z.ListVersions(ctx, zfs.MustDatasetPath(fs))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func holdsOfT(t *rapid.T, z zfs.ZFS, fs string) []string {
	var refs []zfs.VersionRef
	for _, v := range mustVersions(t, z, fs) {
		if v.Kind == zfs.Snapshot && v.UserRefs > 0 {
			refs = append(refs, v.Ref(zfs.MustDatasetPath(fs)))
		}
	}
	if len(refs) == 0 {
		return nil
	}
	holds, err := z.Holds(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for snap, tags := range holds {
		for _, tag := range tags {
			out = append(out, snap+":"+tag)
		}
	}
	slices.Sort(out)
	return out
}

func TestReplicationStateMachine(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		src := zfsmodel.New(zfsmodel.Options{Seed: 11})
		dst := zfsmodel.New(zfsmodel.Options{Seed: 12})
		if err := errors.Join(src.CreatePool("src"), dst.CreatePool("dst")); err != nil {
			t.Fatal(err)
		}
		p := &pair{src: src, dst: dst}
		p.setJob("prop")
		m := &engineModel{p: p, sum: map[uint64]string{}, created: map[string][]uint64{}}
		for _, fs := range []string{"src/data", "src/data/a", "src/data/b"} {
			if err := src.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{Parents: true}); err != nil {
				t.Fatal(err)
			}
			m.fss = append(m.fss, fs)
		}
		t.Repeat(map[string]func(*rapid.T){
			"snapshot":  m.snapshot,
			"destroy":   m.destroy,
			"replicate": m.replicate,
			"":          m.check,
		})
	})
}

// dump describes both sides for a failure message.
func (m *engineModel) dump(t *rapid.T) string {
	var b strings.Builder
	for _, fs := range m.fss {
		for _, side := range []struct {
			z  zfs.ZFS
			fs string
		}{{m.p.src, fs}, {m.p.dst, "dst/client/" + fs}} {
			vs, err := side.z.ListVersions(ctx, zfs.MustDatasetPath(side.fs))
			fmt.Fprintf(&b, "%s: err=%v\n", side.fs, err)
			for _, v := range vs {
				fmt.Fprintf(&b, "  %-45s guid=%016x txg=%d userrefs=%d\n", v.RelName(), v.GUID, v.CreateTXG, v.UserRefs)
			}
			if infos, err := side.z.ListFilesystems(ctx, zfs.MustDatasetPath(side.fs)); err == nil && infos[0].ReceiveResumeToken != "" {
				fmt.Fprintf(&b, "  resume token present\n")
			}
		}
	}
	return b.String()
}
