package zfsmodel

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"testing"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
)

// machine drives a model through random operations and replications and
// checks its invariants after each step against what it recorded.
type machine struct {
	m *Model
	// sums: content checksum of every snapshot ever taken, by GUID.
	sums map[uint64]string
	// bookmarks: fs#name -> GUID and txg at creation.
	bookmarks map[string][2]uint64
	// holds: fs@name -> tags.
	holds   map[string][]string
	nextID  int
	srcs    []zfs.DatasetPath
	dstOf   map[zfs.DatasetPath]zfs.DatasetPath
	fsGUIDs map[uint64]string
}

// actions is the machine's action set for t.Repeat, with check run
// between actions.
func (mc *machine) actions(check func(*rapid.T)) map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"":          check,
		"write":     mc.write,
		"snapshot":  mc.snapshot,
		"bookmark":  mc.bookmark,
		"hold":      mc.hold,
		"destroy":   mc.destroy,
		"rollback":  mc.rollback,
		"replicate": mc.replicate,
	}
}

func newMachine(t *rapid.T) *machine {
	mc := &machine{
		m:         New(Options{Seed: rapid.Int64Min(1).Draw(t, "seed")}), // seeded: replays are deterministic,
		sums:      map[uint64]string{},
		bookmarks: map[string][2]uint64{},
		holds:     map[string][]string{},
		dstOf:     map[zfs.DatasetPath]zfs.DatasetPath{},
	}
	for _, p := range []string{"src", "dst"} {
		if err := mc.m.CreatePool(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a", "b"} {
		src := zfs.MustDatasetPath("src/" + n)
		if err := mc.m.CreateFilesystem(src, FSOptions{}); err != nil {
			t.Fatal(err)
		}
		mc.srcs = append(mc.srcs, src)
		mc.dstOf[src] = zfs.MustDatasetPath("dst/" + n)
	}
	return mc
}

func (mc *machine) versions(t *rapid.T, fs zfs.DatasetPath) []zfs.FilesystemVersion {
	vs, err := mc.m.ListVersions(bg, fs)
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("list %s: %v", fs, err)
	}
	return vs
}

func snapsOf(vs []zfs.FilesystemVersion) []zfs.FilesystemVersion {
	var out []zfs.FilesystemVersion
	for _, v := range vs {
		if v.Kind == zfs.Snapshot {
			out = append(out, v)
		}
	}
	return out
}

func (mc *machine) exists(fs zfs.DatasetPath) bool {
	_, err := mc.m.Info(fs)
	return err == nil
}

func (mc *machine) write(t *rapid.T) {
	fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
	if rapid.Bool().Draw(t, "onReceiver") {
		fs = mc.dstOf[fs]
		if !mc.exists(fs) {
			t.Skip("receiver does not exist")
		}
	}
	if err := mc.m.WriteData(fs, rapid.Int64Range(0, 50).Draw(t, "seed"), rapid.IntRange(1, 3).Draw(t, "blocks")); err != nil {
		t.Fatal(err)
	}
}

func (mc *machine) snapshot(t *rapid.T) {
	fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
	mc.nextID++
	name := fmt.Sprintf("s%d", mc.nextID)
	if err := mc.m.Snapshot(bg, fs, name); err != nil {
		t.Fatal(err)
	}
	sum, err := mc.m.Checksum(zfs.SnapshotRef(fs, name))
	if err != nil {
		t.Fatal(err)
	}
	vs := snapsOf(mc.versions(t, fs))
	mc.sums[vs[len(vs)-1].GUID] = sum
}

func (mc *machine) bookmark(t *rapid.T) {
	fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
	vs := mc.versions(t, fs)
	if len(vs) == 0 {
		t.Skip("no versions")
	}
	from := rapid.SampledFrom(vs).Draw(t, "from")
	mc.nextID++
	name := fmt.Sprintf("b%d", mc.nextID)
	if err := mc.m.Bookmark(bg, from.Ref(fs), name); err != nil {
		t.Fatal(err)
	}
	mc.bookmarks[fs.String()+"#"+name] = [2]uint64{from.GUID, from.CreateTXG}
}

func (mc *machine) hold(t *rapid.T) {
	fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
	snaps := snapsOf(mc.versions(t, fs))
	if len(snaps) == 0 {
		t.Skip("no snapshots")
	}
	s := rapid.SampledFrom(snaps).Draw(t, "snap")
	tag := rapid.SampledFrom([]string{"t1", "t2"}).Draw(t, "tag")
	key := fs.String() + "@" + s.Name
	had := contains(mc.holds[key], tag)
	if rapid.Bool().Draw(t, "release") {
		err := mc.m.Release(bg, s.Ref(fs), tag)
		if had != (err == nil) || (!had && !errors.Is(err, zfs.ErrHoldTagNotFound)) {
			t.Fatalf("release %s %s (held: %v): %v", key, tag, had, err)
		}
		mc.holds[key] = remove(mc.holds[key], tag)
		return
	}
	err := mc.m.Hold(bg, s.Ref(fs), tag)
	if had == (err == nil) || (had && !errors.Is(err, zfs.ErrHoldTagExists)) {
		t.Fatalf("hold %s %s (held: %v): %v", key, tag, had, err)
	}
	if !had {
		mc.holds[key] = append(mc.holds[key], tag)
		sort.Strings(mc.holds[key])
	}
}

func (mc *machine) destroy(t *rapid.T) {
	fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
	if rapid.Bool().Draw(t, "onReceiver") {
		fs = mc.dstOf[fs]
	}
	vs := mc.versions(t, fs)
	if len(vs) == 0 {
		t.Skip("no versions")
	}
	v := rapid.SampledFrom(vs).Draw(t, "version")
	key := fs.String() + v.RelName()
	err := mc.m.Destroy(bg, []zfs.VersionRef{v.Ref(fs)})
	if held := len(mc.holds[key]) > 0; held {
		if !errors.Is(err, zfs.ErrDatasetBusy) {
			t.Fatalf("destroy of held %s: %v", key, err)
		}
		stats.destroyBusy++
		return
	}
	if err != nil {
		t.Fatalf("destroy %s: %v", key, err)
	}
	delete(mc.bookmarks, key)
	delete(mc.holds, key)
}

func (mc *machine) rollback(t *rapid.T) {
	fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
	snaps := snapsOf(mc.versions(t, fs))
	if len(snaps) == 0 {
		t.Skip("no snapshots")
	}
	s := rapid.SampledFrom(snaps).Draw(t, "snap")
	var newer []zfs.FilesystemVersion
	heldNewer := false
	for _, v := range mc.versions(t, fs) {
		if v.CreateTXG > s.CreateTXG {
			newer = append(newer, v)
			heldNewer = heldNewer || len(mc.holds[fs.String()+v.RelName()]) > 0
		}
	}
	destroyNewer := rapid.Bool().Draw(t, "destroyNewer")
	err := mc.m.Rollback(bg, s.Ref(fs), destroyNewer)
	switch {
	case len(newer) > 0 && !destroyNewer:
		if !errors.Is(err, zfs.ErrNewerSnapshotsExist) {
			t.Fatalf("rollback without -r over %d newer versions: %v", len(newer), err)
		}
		return
	case heldNewer:
		if !errors.Is(err, zfs.ErrDatasetBusy) {
			t.Fatalf("rollback over a held snapshot: %v", err)
		}
		return
	case err != nil:
		t.Fatalf("rollback: %v", err)
	}
	for _, v := range newer {
		delete(mc.bookmarks, fs.String()+v.RelName())
	}
	if mod, _ := mc.m.Modified(fs); mod {
		t.Fatalf("%s modified right after rollback", fs)
	}
}

// replicate sends src to its receiver, full or incremental from the newest
// common version, possibly cut several times and resumed, and checks the
// result.
func (mc *machine) replicate(t *rapid.T) {
	src := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
	dst := mc.dstOf[src]
	svs := mc.versions(t, src)
	srcSnaps := snapsOf(svs)
	if len(srcSnaps) == 0 {
		t.Skip("nothing to send")
	}
	var from *zfs.FilesystemVersion
	var base zfs.FilesystemVersion // the receiver's snapshot from matches
	dsnaps := snapsOf(mc.versions(t, dst))
	for i := len(dsnaps) - 1; i >= 0 && from == nil; i-- {
		for j := len(svs) - 1; j >= 0; j-- {
			if svs[j].GUID == dsnaps[i].GUID {
				v := svs[j]
				from, base = &v, dsnaps[i]
				break
			}
		}
	}
	var candidates []zfs.FilesystemVersion
	for _, s := range srcSnaps {
		if from == nil || s.CreateTXG > from.CreateTXG {
			candidates = append(candidates, s)
		}
	}
	if len(candidates) == 0 {
		t.Skip("receiver is up to date")
	}
	to := rapid.SampledFrom(candidates).Draw(t, "to")
	args := zfs.SendArgs{FS: src, From: from, To: to}
	if from == nil && len(dsnaps) > 0 {
		err := mc.recv(t, args, dst, zfs.RecvOptions{ForceRollback: true}, 0)
		if !errors.Is(err, zfs.ErrDestinationExists) {
			t.Fatalf("full receive into %s with snapshots but no common one: %v", dst, err)
		}
		return
	}
	force := rapid.Bool().Draw(t, "force")
	if from == nil && mc.exists(dst) {
		// A full stream into an existing filesystem (its snapshots all
		// destroyed) needs -F.
		if err := mc.recv(t, args, dst, zfs.RecvOptions{}, 0); !errors.Is(err, zfs.ErrDestinationExists) {
			t.Fatalf("full receive into existing %s without -F: %v", dst, err)
		}
		force = true
	}
	if from != nil && !force {
		mod, _ := mc.m.Modified(dst)
		moved := dsnaps[len(dsnaps)-1].GUID != base.GUID
		err := mc.recv(t, args, dst, zfs.RecvOptions{}, 0)
		if mod || moved {
			if !errors.Is(err, zfs.ErrDestinationModified) {
				// A newer receiver snapshot with unchanged content is no
				// modification, as in ZFS.
				if err != nil || mod {
					t.Fatalf("incremental into modified %s (mod %v moved %v): %v", dst, mod, moved, err)
				}
			} else {
				force = true
			}
		} else if err != nil {
			t.Fatalf("incremental into %s: %v", dst, err)
		}
		if err == nil {
			mc.checkReceived(t, dst, to)
			return
		}
	}
	size, err := mc.m.SendSize(bg, args)
	if err != nil {
		t.Fatal(err)
	}
	opts := zfs.RecvOptions{Resumable: true, ForceRollback: force}
	err = mc.recv(t, args, dst, opts, drawCut(t, size))
	prevToken := ""
	for attempt := 0; err != nil; attempt++ {
		if attempt > 20 {
			t.Fatalf("receive does not complete: %v", err)
		}
		info, ierr := mc.m.Info(dst)
		if ierr != nil || info.ReceiveResumeToken == "" {
			// Cut before the header was complete: nothing saved.
			if errors.Is(err, zfs.ErrPartialReceive) {
				t.Fatalf("partial receive error without a token: %v", err)
			}
			err = mc.recv(t, args, dst, opts, 0)
			continue
		}
		// A resumed stream cut inside its header fails before it begins
		// and leaves the saved state as it was.
		if !errors.Is(err, zfs.ErrPartialReceive) && info.ReceiveResumeToken != prevToken {
			t.Fatalf("interrupted resumable receive: %v", err)
		}
		prevToken = info.ReceiveResumeToken
		if rapid.IntRange(0, 9).Draw(t, "abort") == 0 {
			if err := mc.m.AbortReceive(bg, dst); err != nil {
				t.Fatal(err)
			}
			stats.aborted++
			return
		}
		stats.resumed++
		rargs := args
		rargs.ResumeToken = info.ReceiveResumeToken
		rsize, serr := mc.m.SendSize(bg, rargs)
		if serr != nil {
			t.Fatalf("size of resumed send: %v", serr)
		}
		rcut := int64(0)
		if attempt < 5 {
			rcut = drawCut(t, rsize)
		}
		err = mc.recv(t, rargs, dst, opts, rcut)
	}
	mc.checkReceived(t, dst, to)
}

// drawCut returns 0 (no cut) or a cut point, mostly past the header.
func drawCut(t *rapid.T, size int64) int64 {
	switch rapid.IntRange(0, 3).Draw(t, "cutKind") {
	case 0:
		return 0
	case 1:
		return rapid.Int64Range(1, size-1).Draw(t, "cutAnywhere")
	}
	return rapid.Int64Range(size/4, size-1).Draw(t, "cut")
}

// recv sends args into dst; a cut in (0, size) ends the stream early,
// through the model's own hook or by a reader, at random.
func (mc *machine) recv(t *rapid.T, args zfs.SendArgs, dst zfs.DatasetPath, opts zfs.RecvOptions, cut int64) error {
	useHook := cut > 0 && rapid.Bool().Draw(t, "cutHook")
	if useHook {
		if err := mc.m.CutNextSend(cut); err != nil {
			t.Fatal(err)
		}
	}
	s, err := mc.m.Send(bg, args)
	if err != nil {
		t.Fatalf("send %+v: %v", args, err)
	}
	defer s.Close()
	var r io.Reader = s
	if cut > 0 && !useHook {
		r = io.LimitReader(s, cut)
	}
	return mc.m.Receive(bg, dst, r, opts)
}

func (mc *machine) checkReceived(t *rapid.T, dst zfs.DatasetPath, to zfs.FilesystemVersion) {
	stats.replicated++
	if len(snapsOf(mc.versions(t, dst))) == 1 {
		stats.fullRecv++
	}
	snaps := snapsOf(mc.versions(t, dst))
	if len(snaps) == 0 || snaps[len(snaps)-1].GUID != to.GUID || snaps[len(snaps)-1].Name != to.Name {
		t.Fatalf("%s after receiving %s: %v", dst, to.Name, snaps)
	}
	sum, err := mc.m.Checksum(zfs.SnapshotRef(dst, to.Name))
	if err != nil {
		t.Fatal(err)
	}
	if sum != mc.sums[to.GUID] {
		t.Fatalf("received %s@%s has content %s, sent %s", dst, to.Name, sum, mc.sums[to.GUID])
	}
}

func (mc *machine) check(t *rapid.T) {
	seenFS := map[uint64]string{}
	for _, pool := range []string{"src", "dst"} {
		infos, err := mc.m.ListFilesystems(bg, zfs.MustDatasetPath(pool))
		if err != nil {
			t.Fatal(err)
		}
		for _, fi := range infos {
			if other, dup := seenFS[fi.GUID]; dup || fi.GUID == 0 {
				t.Fatalf("filesystem GUID %x of %s repeated (%s) or zero", fi.GUID, fi.Path, other)
			}
			seenFS[fi.GUID] = fi.Path.String()
			if fi.ReceiveResumeToken != "" {
				t.Fatalf("%s has resume state after a completed step", fi.Path)
			}
			mc.checkVersions(t, fi.Path)
		}
	}
	for key, gt := range mc.bookmarks {
		fs, name, _ := cut(key, "#")
		v, ok := findVersion(mc.versions(t, zfs.MustDatasetPath(fs)), zfs.Bookmark, name)
		if !ok || v.GUID != gt[0] || v.CreateTXG != gt[1] {
			t.Fatalf("bookmark %s: listed %v %+v, want guid %x txg %d", key, ok, v, gt[0], gt[1])
		}
	}
}

func (mc *machine) checkVersions(t *rapid.T, fs zfs.DatasetPath) {
	vs := mc.versions(t, fs)
	guids := map[uint64]bool{}
	var prev *zfs.FilesystemVersion
	for i, v := range vs {
		if v.CreateTXG == 0 || (prev != nil && v.CreateTXG < prev.CreateTXG) {
			t.Fatalf("%s: versions out of createtxg order: %+v", fs, vs)
		}
		if v.Kind == zfs.Bookmark {
			if _, ok := mc.bookmarks[fs.String()+v.RelName()]; !ok {
				t.Fatalf("%s: unexpected bookmark %s", fs, v.Name)
			}
			continue
		}
		if prev != nil && prev.Kind == zfs.Snapshot && v.CreateTXG == prev.CreateTXG {
			t.Fatalf("%s: two snapshots in txg %d", fs, v.CreateTXG)
		}
		if guids[v.GUID] {
			t.Fatalf("%s: snapshot GUID %x repeated", fs, v.GUID)
		}
		guids[v.GUID] = true
		want := mc.holds[fs.String()+v.RelName()]
		if v.UserRefs != uint64(len(want)) {
			t.Fatalf("%s@%s: userrefs %d, want %d", fs, v.Name, v.UserRefs, len(want))
		}
		if len(want) > 0 {
			h, err := mc.m.Holds(bg, []zfs.VersionRef{v.Ref(fs)})
			if err != nil || fmt.Sprint(h[v.Name]) != fmt.Sprint(want) {
				t.Fatalf("%s@%s: holds %v (%v), want %v", fs, v.Name, h, err, want)
			}
		}
		sum, err := mc.m.Checksum(v.Ref(fs))
		if err != nil || sum != mc.sums[v.GUID] {
			t.Fatalf("%s@%s: content %s (%v), recorded %s", fs, v.Name, sum, err, mc.sums[v.GUID])
		}
		prev = &vs[i]
	}
}

// stats counts what the state machine exercised, so a run that only
// skipped is noticed.
var stats struct{ replicated, resumed, aborted, fullRecv, destroyBusy int }

func TestModelStateMachine(t *testing.T) {
	// More steps per case than rapid's default 30, unless set explicitly.
	if f := flag.Lookup("rapid.steps"); f != nil && f.Value.String() == f.DefValue {
		_ = f.Value.Set("120")
		defer f.Value.Set(f.DefValue)
	}
	stats.replicated, stats.resumed, stats.aborted, stats.fullRecv, stats.destroyBusy = 0, 0, 0, 0, 0
	unexercised := func() bool {
		return stats.replicated == 0 || stats.resumed == 0 || stats.aborted == 0 || stats.destroyBusy == 0
	}
	// Each path shows up in almost every round of 100 histories; a rare
	// round misses one (an abort, say), so up to five rounds run before a
	// path that never shows up fails the test.
	for round := 0; round < 5 && !t.Failed() && (round == 0 || unexercised()); round++ {
		rapid.Check(t, func(t *rapid.T) {
			mc := newMachine(t)
			t.Repeat(mc.actions(mc.check))
		})
	}
	t.Logf("replicated %d (full %d), resumed %d, aborted %d, held destroys refused %d",
		stats.replicated, stats.fullRecv, stats.resumed, stats.aborted, stats.destroyBusy)
	if !t.Failed() && unexercised() {
		t.Errorf("the state machine did not exercise every path")
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func remove(xs []string, x string) []string {
	var out []string
	for _, y := range xs {
		if y != x {
			out = append(out, y)
		}
	}
	return out
}

func cut(s, sep string) (string, string, bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

func findVersion(vs []zfs.FilesystemVersion, kind zfs.VersionKind, name string) (zfs.FilesystemVersion, bool) {
	for _, v := range vs {
		if v.Kind == kind && v.Name == name {
			return v, true
		}
	}
	return zfs.FilesystemVersion{}, false
}
