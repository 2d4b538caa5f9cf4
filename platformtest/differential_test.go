package platformtest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsreal"
	"zrepl.dev/zrepl/zfsreal/zfsrealtest"
)

// The differential test's budget: .ci/run gives it a few minutes on each
// OpenZFS line, `make fuzz-platform` longer. It is 0 (the test skips,
// saying so) in a plain `make platformtest`, which stays short.
var differentialBudget = flag.Duration("differential.budget", 0,
	"how long TestDifferential runs histories (the last stops within an action of it); 0 skips it")

// TestDifferential applies random histories of ZFS operations to zfsmodel
// (imitating the running OpenZFS line) and to real ZFS at once and compares
// every outcome: error kind, operation, dataset and message; after each step
// the listings of both (names, order, holds, resume tokens, GUIDs mapped one
// to one between the two); at the end the content of every snapshot
// (checksum classes mapped one to one). Where they disagree the model is
// wrong; rapid shrinks the history and prints it with its seed.
func TestDifferential(t *testing.T) {
	if *differentialBudget <= 0 {
		t.Skip("TestDifferential runs only with -differential.budget (.ci/run gives it 2m per line, make fuzz-platform longer)")
	}
	RequireZFS(t)
	version := zfsrealtest.Version()
	release, err := zfsmodel.ParseRelease(zfsrealtest.Release())
	if err != nil {
		t.Fatalf("OpenZFS %s: %v", version, err)
	}
	zv := strings.TrimPrefix(strings.Fields(version + " ?")[0], "zfs-")
	runDifferential(t, "zfs="+zv, release, *differentialBudget, newRealSide)
}

// newOther makes the side the model is compared with, on a pool of the
// given name, and says how to remove it.
type newOther func(t *testing.T, rt *rapid.T, pool string) (side, func())

// runDifferential runs histories for budget (at least one) and prints the
// one line CI's log shows per OpenZFS line.
func runDifferential(t *testing.T, label string, release zfsmodel.Release, budget time.Duration, other newOther) diffStats {
	// One history per rapid.Check; the budget is checked between them and
	// before each action.
	if f := flag.Lookup("rapid.checks"); f != nil && f.Value.String() == f.DefValue {
		_ = f.Value.Set("1")
		defer f.Value.Set(f.DefValue)
	}
	// Longer histories than rapid's default 30 steps: a resume needs a cut
	// transfer before it.
	if f := flag.Lookup("rapid.steps"); f != nil && f.Value.String() == f.DefValue {
		_ = f.Value.Set("50")
		defer f.Value.Set(f.DefValue)
	}
	var st diffStats
	start := time.Now()
	// Deferred: a disagreement ends the test with FailNow.
	defer func() {
		disagreements := 0
		if t.Failed() {
			disagreements = 1
		}
		// One line per run, found by CI's log reader and by people.
		fmt.Printf("PLATFORMTEST-DIFFERENTIAL %s model=%s histories=%d actions=%d %d disagreements time=%.0fs\n",
			label, release, st.histories, st.actions, disagreements, time.Since(start).Seconds())
		t.Logf("compared: %d errors alike, %d transfers (%d cut, %d resumed), %d listings, %d snapshot contents",
			st.errorsAlike, st.transfers, st.cuts, st.resumes, st.listings, st.contents)
	}()
	for first := true; first || time.Since(start) < budget && !t.Failed(); first = false {
		rapid.Check(t, func(rt *rapid.T) {
			d := newDiff(t, rt, release, &st, other)
			defer d.close()
			st.histories++
			actions := map[string]func(*rapid.T){
				"write":       d.write,
				"snapshot":    d.snapshot,
				"bookmark":    d.bookmark,
				"hold":        d.hold,
				"release":     d.release,
				"destroy":     d.destroy,
				"rollback":    d.rollback,
				"transfer":    d.transfer,
				"resume":      d.resume,
				"abort":       d.abort,
				"key":         d.key,
				"estimate":    d.estimate,
				"placeholder": d.placeholder,
			}
			// Once the budget is spent every action is rejected: rapid
			// ends a history whose rejected actions outnumber twice those
			// done, so a long history on real ZFS ends within an action
			// of the budget instead of running its 50 steps. (An action
			// that skips before drawing anything is not rejected but
			// redrawn, hence the draw.)
			for name, act := range actions {
				actions[name] = func(rt *rapid.T) {
					if time.Since(start) >= budget {
						rapid.Just(true).Draw(rt, "budget spent")
						rt.Skip("differential budget spent")
					}
					act(rt)
				}
			}
			actions[""] = d.check
			rt.Repeat(actions)
			d.checkContent()
		})
	}
	if !t.Failed() && (st.transfers == 0 || st.errorsAlike == 0) {
		t.Errorf("the histories compared no transfer or no error: the test exercised too little")
	}
	return st
}

type diffStats struct {
	histories, actions, errorsAlike, transfers, cuts, resumes, listings, contents int
}

// side is one implementation under comparison.
type side struct {
	name     string
	z        zfs.ZFS
	create   func(fs zfs.DatasetPath, encrypted bool) error
	loadKey  func(fs zfs.DatasetPath) error
	unload   func(fs zfs.DatasetPath) error
	write    func(fs zfs.DatasetPath, n int64) error
	checksum func(snap zfs.VersionRef) (string, error)
}

type diff struct {
	rt          *rapid.T
	st          *diffStats
	model, real side
	pool        string
	srcs, dsts  []zfs.DatasetPath
	nextWrite   int64
	nextName    int
	// guids pairs each model GUID with a real one, one to one.
	m2r, r2m map[uint64]uint64
	closers  []func()
}

const diffWriteBlocks = 2 // per write: 256 KiB on both sides

var diffPoolSeq int

func newDiff(t *testing.T, rt *rapid.T, release zfsmodel.Release, st *diffStats, other newOther) *diff {
	diffPoolSeq++
	d := &diff{rt: rt, st: st, pool: fmt.Sprintf("zdiff%d_%d", os.Getpid(), diffPoolSeq),
		m2r: map[uint64]uint64{}, r2m: map[uint64]uint64{}}
	var closeOther func()
	d.real, closeOther = other(t, rt, d.pool)
	d.closers = append(d.closers, closeOther)
	// The model: a pool of the same name, so every name and message is alike.
	d.model = newModelSide(rt, d.pool, release, "modelSeed")
	// src/e is an encryption root (raw sends, keys).
	for _, rel := range []string{"src", "dst", "src/a", "src/b", "src/e"} {
		fs := zfs.MustDatasetPath(d.pool + "/" + rel)
		for _, s := range []side{d.model, d.real} {
			if err := s.create(fs, rel == "src/e"); err != nil {
				rt.Fatalf("%s: create %s: %v", s.name, fs, err)
			}
		}
	}
	for _, n := range []string{"a", "b", "e"} {
		d.srcs = append(d.srcs, zfs.MustDatasetPath(d.pool+"/src/"+n))
		d.dsts = append(d.dsts, zfs.MustDatasetPath(d.pool+"/dst/"+n))
	}
	// Each source starts with data and a snapshot, so that the first
	// actions find versions to pick: rapid ends a history early where
	// skipped actions outnumber twice those done.
	for _, fs := range d.srcs {
		d.nextWrite++
		for _, s := range []side{d.model, d.real} {
			if err := s.write(fs, d.nextWrite); err != nil {
				rt.Fatalf("%s: write %s: %v", s.name, fs, err)
			}
			if err := s.z.Snapshot(bg, fs, "s0"); err != nil {
				rt.Fatalf("%s: snapshot %s@s0: %v", s.name, fs, err)
			}
		}
	}
	return d
}

func newModelSide(rt *rapid.T, pool string, release zfsmodel.Release, seedLabel string) side {
	m := zfsmodel.New(zfsmodel.Options{Seed: rapid.Int64Min(1).Draw(rt, seedLabel), Imitate: release})
	if err := m.CreatePool(pool); err != nil {
		rt.Fatal(err)
	}
	return side{name: "model", z: m,
		create: func(fs zfs.DatasetPath, enc bool) error {
			return m.CreateFilesystem(fs, zfsmodel.FSOptions{Encrypted: enc})
		},
		loadKey:  m.LoadKey,
		unload:   m.UnloadKey,
		write:    func(fs zfs.DatasetPath, n int64) error { return m.WriteData(fs, n, diffWriteBlocks) },
		checksum: m.Checksum,
	}
}

// newRealSide is zfsreal on a pool on a sparse file in a temp directory.
func newRealSide(t *testing.T, rt *rapid.T, pool string) (side, func()) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "zdiff")
	if err != nil {
		rt.Fatal(err)
	}
	vdev := filepath.Join(dir, "vdev")
	if err := os.WriteFile(vdev, nil, 0o600); err != nil {
		rt.Fatal(err)
	}
	if err := os.Truncate(vdev, 512<<20); err != nil {
		rt.Fatal(err)
	}
	if _, stderr, err := RunErr("zpool", "create", "-f", "-R", filepath.Join(dir, "mnt"), pool, vdev); err != nil {
		os.RemoveAll(dir)
		rt.Fatalf("zpool create: %v: %s", err, stderr)
	}
	cleanup := func() {
		if _, stderr, err := RunErr("zpool", "destroy", "-f", pool); err != nil {
			t.Errorf("zpool destroy %s: %v: %s", pool, err, stderr)
		}
		os.RemoveAll(dir)
	}
	cli := zfsreal.New(zfsreal.Options{})
	h := zfsrealtest.NewHarness(t, &zfsrealtest.Pool{Name: pool, Dir: dir}, cli)
	return side{name: "real", z: cli,
		create:  func(fs zfs.DatasetPath, enc bool) error { return h.CreateFilesystem(ctx, fs, enc) },
		loadKey: func(fs zfs.DatasetPath) error { return h.LoadKey(ctx, fs) },
		unload:  func(fs zfs.DatasetPath) error { return h.UnloadKey(ctx, fs) },
		write: func(fs zfs.DatasetPath, n int64) error {
			return h.WriteData(ctx, fs, n, diffWriteBlocks*zfsmodel.BlockSize)
		},
		checksum: func(s zfs.VersionRef) (string, error) { return h.Checksum(ctx, s) },
	}, cleanup
}

func (d *diff) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

var bg = context.Background()

// numbers hides GUIDs and other long numbers in messages, which differ
// between the two sides by nature.
var (
	numbers = regexp.MustCompile(`\b(0x[0-9a-fA-F]+|[0-9]{8,})\b`)
	// Resume tokens are compared decoded, in the listings.
	tokens = regexp.MustCompile(`zfs send -t \S+`)
	// A forced full receive onto a filesystem with snapshots names one of
	// them, the first in the kernel's hash order of their names (2.3.9,
	// TestDifferential): which one is not the model's to imitate.
	example = regexp.MustCompile(`destination has snapshots \(eg\. \S+@\S+\)`)
)

// outcome renders an error for comparison: each *zfs.Error of a joined
// error as kind, op, dataset and message, sorted; other errors only as
// "error" (harness failures, whose words differ by side).
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var out []string
	for _, e := range errs {
		var ze *zfs.Error
		if !errors.As(e, &ze) {
			out = append(out, "error (not a *zfs.Error)")
			continue
		}
		msg := strings.Join(strings.Fields(ze.Msg), " ")
		msg = numbers.ReplaceAllString(tokens.ReplaceAllString(msg, "zfs send -t TOKEN"), "N")
		msg = example.ReplaceAllString(msg, "destination has snapshots (eg. SNAPSHOT)")
		out = append(out, fmt.Sprintf("%s [%v] %s: %s", ze.Op, ze.Kind, ze.Dataset, msg))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// same fails the history when the two sides' outcomes of one action differ.
func (d *diff) same(what string, mErr, rErr error) {
	d.st.actions++
	mo, ro := outcome(mErr), outcome(rErr)
	if mo != ro {
		d.rt.Fatalf("DISAGREEMENT on %s:\n  model: %s\n  real:  %s", what, mo, ro)
	}
	if mErr != nil {
		d.st.errorsAlike++
	}
}

// sameFailure compares only whether both failed (harness operations).
func (d *diff) sameFailure(what string, mErr, rErr error) {
	d.st.actions++
	if (mErr == nil) != (rErr == nil) {
		d.rt.Fatalf("DISAGREEMENT on %s:\n  model: %v\n  real:  %v", what, mErr, rErr)
	}
}

func (d *diff) pair(what string, mg, rg uint64) {
	if mg == 0 && rg == 0 {
		return
	}
	r, okM := d.m2r[mg]
	m, okR := d.r2m[rg]
	switch {
	case !okM && !okR:
		d.m2r[mg], d.r2m[rg] = rg, mg
	case okM && r == rg && okR && m == mg:
	default:
		d.rt.Fatalf("DISAGREEMENT on GUIDs of %s: model %#x, real %#x, earlier paired model %#x with real %#x, real %#x with model %#x",
			what, mg, rg, mg, r, rg, m)
	}
}

func (d *diff) allFS() []zfs.DatasetPath {
	return append(append([]zfs.DatasetPath{}, d.srcs...), d.dsts...)
}

// pickFS draws an existing filesystem (on the model; the check keeps both
// alike), now and then one that may not exist.
func (d *diff) pickFS(rt *rapid.T) zfs.DatasetPath {
	var exist []zfs.DatasetPath
	for _, fs := range d.allFS() {
		if _, err := d.model.z.ListVersions(bg, fs); err == nil {
			exist = append(exist, fs)
		}
	}
	if rapid.IntRange(0, 9).Draw(rt, "anyFS") == 0 {
		return rapid.SampledFrom(d.allFS()).Draw(rt, "fs")
	}
	return rapid.SampledFrom(exist).Draw(rt, "fs")
}

// versions is the model's listing of fs (the check keeps both alike).
func (d *diff) versions(fs zfs.DatasetPath) []zfs.FilesystemVersion {
	vs, err := d.model.z.ListVersions(bg, fs)
	if err != nil {
		return nil
	}
	return vs
}

// pickVersion draws a version of fs by name, or a name that does not exist.
func (d *diff) pickVersion(fs zfs.DatasetPath, kind zfs.VersionKind, label string) zfs.VersionRef {
	var names []string
	for _, v := range d.versions(fs) {
		if kind == 0 || v.Kind == kind {
			names = append(names, v.RelName())
		}
	}
	// Where there is none, a name that does not exist (not a skip: see
	// newDiff).
	absent := rapid.IntRange(0, 9).Draw(d.rt, label+"Absent") == 0 || len(names) == 0
	if absent {
		k := kind
		if k == 0 {
			k = rapid.SampledFrom([]zfs.VersionKind{zfs.Snapshot, zfs.Bookmark}).Draw(d.rt, label+"Kind")
		}
		return zfs.VersionRef{FS: fs, Kind: k, Name: "nope"}
	}
	rel := rapid.SampledFrom(names).Draw(d.rt, label)
	k := zfs.Snapshot
	if rel[0] == '#' {
		k = zfs.Bookmark
	}
	return zfs.VersionRef{FS: fs, Kind: k, Name: rel[1:]}
}

// resolve looks ref up in one side's listing (each side has its own GUIDs).
func resolve(s side, ref zfs.VersionRef) (zfs.FilesystemVersion, bool) {
	vs, err := s.z.ListVersions(bg, ref.FS)
	if err != nil {
		return zfs.FilesystemVersion{}, false
	}
	for _, v := range vs {
		if v.Kind == ref.Kind && v.Name == ref.Name {
			return v, true
		}
	}
	return zfs.FilesystemVersion{}, false
}

func (d *diff) write(rt *rapid.T) {
	fs := d.pickFS(rt)
	// A placeholder is never mounted (mountpoint none): the real harness
	// cannot write into it, and nothing does in production.
	if fis, err := d.model.z.ListFilesystems(bg, fs); err == nil && len(fis) > 0 && fis[0].Placeholder {
		return
	}
	d.nextWrite++
	d.sameFailure("write "+fs.String(), d.model.write(fs, d.nextWrite), d.real.write(fs, d.nextWrite))
}

func (d *diff) newName(rt *rapid.T, fs zfs.DatasetPath, kind zfs.VersionKind) string {
	if vs := d.versions(fs); len(vs) > 0 && rapid.IntRange(0, 9).Draw(rt, "reuseName") == 0 {
		return rapid.SampledFrom(vs).Draw(rt, "reused").Name
	}
	d.nextName++
	if kind == zfs.Bookmark {
		return fmt.Sprintf("b%d", d.nextName)
	}
	return fmt.Sprintf("s%d", d.nextName)
}

func (d *diff) snapshot(rt *rapid.T) {
	fs := d.pickFS(rt)
	name := d.newName(rt, fs, zfs.Snapshot)
	d.same("snapshot "+fs.String()+"@"+name, d.model.z.Snapshot(bg, fs, name), d.real.z.Snapshot(bg, fs, name))
}

func (d *diff) bookmark(rt *rapid.T) {
	fs := d.pickFS(rt)
	from := d.pickVersion(fs, 0, "from")
	name := d.newName(rt, fs, zfs.Bookmark)
	d.same(fmt.Sprintf("bookmark %s -> #%s", from, name),
		d.model.z.Bookmark(bg, from, name), d.real.z.Bookmark(bg, from, name))
}

var diffTags = []string{"t1", "t2"}

func (d *diff) hold(rt *rapid.T) {
	snap := d.pickVersion(d.pickFS(rt), zfs.Snapshot, "snap")
	tag := rapid.SampledFrom(diffTags).Draw(rt, "tag")
	d.same(fmt.Sprintf("hold %s %s", tag, snap), d.model.z.Hold(bg, snap, tag), d.real.z.Hold(bg, snap, tag))
}

func (d *diff) release(rt *rapid.T) {
	snap := d.pickVersion(d.pickFS(rt), zfs.Snapshot, "snap")
	tag := rapid.SampledFrom(diffTags).Draw(rt, "tag")
	d.same(fmt.Sprintf("release %s %s", tag, snap), d.model.z.Release(bg, snap, tag), d.real.z.Release(bg, snap, tag))
}

func (d *diff) destroy(rt *rapid.T) {
	fs := d.pickFS(rt)
	n := rapid.IntRange(1, 3).Draw(rt, "n")
	var refs []zfs.VersionRef
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		r := d.pickVersion(fs, 0, fmt.Sprintf("v%d", i))
		if !seen[r.String()] {
			seen[r.String()] = true
			refs = append(refs, r)
		}
	}
	d.same(fmt.Sprintf("destroy %v", refs), d.model.z.Destroy(bg, refs), d.real.z.Destroy(bg, refs))
}

func (d *diff) rollback(rt *rapid.T) {
	snap := d.pickVersion(d.pickFS(rt), zfs.Snapshot, "snap")
	newer := rapid.Bool().Draw(rt, "destroyNewer")
	d.same(fmt.Sprintf("rollback %s (destroy newer: %v)", snap, newer),
		d.model.z.Rollback(bg, snap, newer), d.real.z.Rollback(bg, snap, newer))
}

// readAll reads a whole send stream; a send error, also one that surfaces
// only at the end (real zfs reports them on exit), is returned.
func readAll(s side, args zfs.SendArgs) ([]byte, error) {
	stream, err := s.z.Send(bg, args)
	if err != nil {
		return nil, err
	}
	b, rerr := io.ReadAll(stream)
	cerr := stream.Close()
	if rerr != nil {
		return b, rerr
	}
	return b, cerr
}

// sendArgs resolves names into one side's versions.
func sendArgs(s side, fs zfs.DatasetPath, from *zfs.VersionRef, to zfs.VersionRef, flags zfs.SendFlags) zfs.SendArgs {
	args := zfs.SendArgs{FS: fs, Flags: flags}
	args.To, _ = resolve(s, to)
	args.To.Kind, args.To.Name = to.Kind, to.Name
	if from != nil {
		f, _ := resolve(s, *from)
		f.Kind, f.Name = from.Kind, from.Name
		args.From = &f
	}
	return args
}

func (d *diff) transfer(rt *rapid.T) {
	i := rapid.IntRange(0, len(d.srcs)-1).Draw(rt, "fs")
	src, dst := d.srcs[i], d.dsts[i]
	var to zfs.VersionRef
	var from *zfs.VersionRef
	if base, newer, ok := d.plan(src, dst); ok && rapid.IntRange(0, 2).Draw(rt, "planned") > 0 {
		// What replication does: from the newest common version to a
		// newer snapshot (or a full send where the target is empty).
		to = newer[rapid.IntRange(0, len(newer)-1).Draw(rt, "plannedTo")].Ref(src)
		if base != nil {
			f := base.Ref(src)
			from = &f
		}
	} else {
		to = d.pickVersion(src, zfs.Snapshot, "to")
		if rapid.Bool().Draw(rt, "incremental") {
			f := d.pickVersion(src, 0, "from")
			from = &f
		}
	}
	flags := zfs.SendFlags{
		Raw:          rapid.IntRange(0, 2).Draw(rt, "w") == 0,
		LargeBlocks:  rapid.Bool().Draw(rt, "L"),
		Compressed:   rapid.Bool().Draw(rt, "c"),
		EmbeddedData: rapid.Bool().Draw(rt, "e"),
	}
	opts := zfs.RecvOptions{Resumable: rapid.Bool().Draw(rt, "resumable"), ForceRollback: rapid.Bool().Draw(rt, "force")}
	cut := 0.0
	if rapid.IntRange(0, 2).Draw(rt, "cutIt") == 0 {
		cut = rapid.Float64Range(0.2, 0.8).Draw(rt, "cut")
	}
	what := fmt.Sprintf("send %v -> %s into %s %+v %+v cut %.2f", from, to, dst, flags, opts, cut)
	d.st.transfers++
	d.stream(what, dst, opts, cut, func(s side) zfs.SendArgs { return sendArgs(s, src, from, to, flags) })
}

// plan finds, on the model, the newest version of src whose GUID is dst's
// newest snapshot's (nil where dst does not exist) and the snapshots of src
// newer than it; ok is false where there is nothing to send.
func (d *diff) plan(src, dst zfs.DatasetPath) (base *zfs.FilesystemVersion, newer []zfs.FilesystemVersion, ok bool) {
	svs := d.versions(src)
	dvs, err := d.model.z.ListVersions(bg, dst)
	start := 0
	if err == nil {
		var last *zfs.FilesystemVersion
		for i := range dvs {
			if dvs[i].Kind == zfs.Snapshot {
				last = &dvs[i]
			}
		}
		if last == nil {
			return nil, nil, false
		}
		start = -1
		for i := range svs {
			if svs[i].GUID == last.GUID {
				base, start = &svs[i], i+1
			}
		}
		if start < 0 {
			return nil, nil, false
		}
	}
	for _, v := range svs[start:] {
		if v.Kind == zfs.Snapshot && (base == nil || v.CreateTXG > base.CreateTXG) {
			newer = append(newer, v)
		}
	}
	return base, newer, len(newer) > 0
}

// stream sends on both sides (args per side), then receives each side's
// stream into dst, cut at the same fraction of its length when cut > 0
// (only where both streams are long enough that the cut falls in their
// data, not in their headers).
func (d *diff) stream(what string, dst zfs.DatasetPath, opts zfs.RecvOptions, cut float64, args func(side) zfs.SendArgs) {
	mb, mErr := readAll(d.model, args(d.model))
	rb, rErr := readAll(d.real, args(d.real))
	d.same(what+": send", mErr, rErr)
	if mErr != nil {
		return
	}
	const minCut = 64 << 10
	if cut > 0 && (len(mb) < minCut || len(rb) < minCut) {
		cut = 0
		what += " (not cut: a stream under 64 KiB)"
	}
	if cut > 0 {
		d.st.cuts++
		mb, rb = mb[:int(cut*float64(len(mb)))], rb[:int(cut*float64(len(rb)))]
	}
	d.same(what+": recv", d.model.z.Receive(bg, dst, bytes.NewReader(mb), opts),
		d.real.z.Receive(bg, dst, bytes.NewReader(rb), opts))
}

func (d *diff) resume(rt *rapid.T) {
	i := rapid.IntRange(0, len(d.srcs)-1).Draw(rt, "fs")
	src, dst := d.srcs[i], d.dsts[i]
	tokens := map[string]string{}
	for _, s := range []side{d.model, d.real} {
		fis, err := s.z.ListFilesystems(bg, dst)
		if err == nil && len(fis) > 0 {
			tokens[s.name] = fis[0].ReceiveResumeToken
		}
	}
	if tokens[d.model.name] == "" || tokens[d.real.name] == "" {
		// The check compares their presence. A transfer instead of a
		// skip (see newDiff).
		d.transfer(rt)
		return
	}
	cut := 0.0
	if rapid.IntRange(0, 3).Draw(rt, "cutIt") == 0 {
		cut = rapid.Float64Range(0.2, 0.8).Draw(rt, "cut")
	}
	d.st.resumes++
	d.stream(fmt.Sprintf("resume into %s cut %.2f", dst, cut), dst, zfs.RecvOptions{Resumable: true}, cut, func(s side) zfs.SendArgs {
		tok, err := resumetoken.Decode(tokens[s.name])
		if err != nil {
			rt.Fatalf("%s token of %s: %v", s.name, dst, err)
		}
		args := zfs.SendArgs{FS: src, ResumeToken: tokens[s.name]}
		if _, snap, ok := strings.Cut(tok.ToName, "@"); ok {
			args.To, _ = resolve(s, zfs.SnapshotRef(src, snap))
			args.To.Kind, args.To.Name = zfs.Snapshot, snap
		}
		if tok.FromGUID != 0 {
			vs, _ := s.z.ListVersions(bg, src)
			for _, v := range vs {
				if v.GUID == tok.FromGUID {
					args.From = &v
					break
				}
			}
		}
		return args
	})
}

// key loads or unloads the key of a filesystem (an encryption root or
// not: both must refuse alike, in the harness's words, so only whether).
func (d *diff) key(rt *rapid.T) {
	fs := d.pickFS(rt)
	if rapid.Bool().Draw(rt, "load") {
		d.sameFailure("load-key "+fs.String(), d.model.loadKey(fs), d.real.loadKey(fs))
	} else {
		d.sameFailure("unload-key "+fs.String(), d.model.unload(fs), d.real.unload(fs))
	}
}

// estimate compares the outcome of a size estimate (zfs send -nvP): the
// sizes differ by nature, not whether and how it fails.
func (d *diff) estimate(rt *rapid.T) {
	src := rapid.SampledFrom(d.srcs).Draw(rt, "fs")
	to := d.pickVersion(src, zfs.Snapshot, "to")
	var from *zfs.VersionRef
	if rapid.Bool().Draw(rt, "incremental") {
		f := d.pickVersion(src, 0, "from")
		from = &f
	}
	flags := zfs.SendFlags{Raw: rapid.Bool().Draw(rt, "w")}
	mn, mErr := d.model.z.SendSize(bg, sendArgs(d.model, src, from, to, flags))
	rn, rErr := d.real.z.SendSize(bg, sendArgs(d.real, src, from, to, flags))
	d.same(fmt.Sprintf("estimate %v -> %s %+v", from, to, flags), mErr, rErr)
	if mErr == nil && (mn <= 0) != (rn <= 0) {
		rt.Fatalf("DISAGREEMENT on the estimate of %v -> %s: model %d, real %d bytes", from, to, mn, rn)
	}
}

// placeholder creates a placeholder where a receive goes (or below the
// encryption root), encrypted as its parent or not.
func (d *diff) placeholder(rt *rapid.T) {
	fs := rapid.SampledFrom(append(append([]zfs.DatasetPath{}, d.dsts...), zfs.MustDatasetPath(d.pool+"/src/e/ph"))).Draw(rt, "fs")
	opts := zfs.PlaceholderOptions{EncryptionOff: rapid.Bool().Draw(rt, "encryptionOff")}
	d.same(fmt.Sprintf("placeholder %s %+v", fs, opts), d.model.z.CreatePlaceholder(bg, fs, opts), d.real.z.CreatePlaceholder(bg, fs, opts))
}

func (d *diff) abort(rt *rapid.T) {
	dst := rapid.SampledFrom(d.dsts).Draw(rt, "fs")
	if fis, err := d.model.z.ListFilesystems(bg, dst); (err != nil || fis[0].ReceiveResumeToken == "") && rapid.IntRange(0, 9).Draw(rt, "anyway") > 0 {
		d.transfer(rt) // not a skip (see newDiff)
		return
	}
	d.same("abort "+dst.String(), d.model.z.AbortReceive(bg, dst), d.real.z.AbortReceive(bg, dst))
}

// check compares the listings of both sides below src and dst.
func (d *diff) check(rt *rapid.T) {
	d.st.listings++
	for _, root := range []string{"src", "dst"} {
		root := zfs.MustDatasetPath(d.pool + "/" + root)
		ml, mErr := d.model.z.ListTree(bg, root)
		rl, rErr := d.real.z.ListTree(bg, root)
		d.same("list "+root.String(), mErr, rErr)
		d.st.actions-- // a listing is not an action of the history
		if len(ml) != len(rl) {
			rt.Fatalf("DISAGREEMENT on the filesystems below %s:\n  model: %v\n  real:  %v", root, fsNames(ml), fsNames(rl))
		}
		for i := range ml {
			d.compareFS(rt, ml[i], rl[i])
		}
	}
}

func fsNames(ls []zfs.Listing) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Info.Path.String())
	}
	return out
}

func (d *diff) compareFS(rt *rapid.T, m, r zfs.Listing) {
	fs := m.Info.Path
	if m.Info.Path != r.Info.Path {
		rt.Fatalf("DISAGREEMENT on a filesystem's name: model %s, real %s", m.Info.Path, r.Info.Path)
	}
	d.pair(fs.String(), m.Info.GUID, r.Info.GUID)
	type attrs struct {
		Enc, Root  string
		Key        zfs.KeyStatus
		Ph, HasTok bool
	}
	ma := attrs{m.Info.Encryption, m.Info.EncryptionRoot, m.Info.KeyStatus, m.Info.Placeholder, m.Info.ReceiveResumeToken != ""}
	ra := attrs{r.Info.Encryption, r.Info.EncryptionRoot, r.Info.KeyStatus, r.Info.Placeholder, r.Info.ReceiveResumeToken != ""}
	if ma != ra {
		rt.Fatalf("DISAGREEMENT on %s: model %+v, real %+v", fs, ma, ra)
	}
	if ma.HasTok {
		d.compareTokens(rt, fs, m.Info.ReceiveResumeToken, r.Info.ReceiveResumeToken)
	}
	mv, rv := relNames(m.Versions), relNames(r.Versions)
	if mv != rv {
		rt.Fatalf("DISAGREEMENT on the versions of %s (in createtxg order):\n  model: %s\n  real:  %s", fs, mv, rv)
	}
	var held []zfs.VersionRef
	for i := range m.Versions {
		a, b := m.Versions[i], r.Versions[i]
		d.pair(fs.String()+a.RelName(), a.GUID, b.GUID)
		// Equal createtxgs (a bookmark and its snapshot) alike on both.
		if i > 0 && (a.CreateTXG == m.Versions[i-1].CreateTXG) != (b.CreateTXG == r.Versions[i-1].CreateTXG) {
			rt.Fatalf("DISAGREEMENT on %s%s: shares its createtxg with the version before it on one side only", fs, a.RelName())
		}
		if a.UserRefs != b.UserRefs {
			rt.Fatalf("DISAGREEMENT on %s%s: userrefs model %d, real %d", fs, a.RelName(), a.UserRefs, b.UserRefs)
		}
		if a.Kind == zfs.Snapshot && a.UserRefs > 0 {
			held = append(held, a.Ref(fs)) // userrefs agree; the tags are compared below
		}
	}
	if len(held) > 0 {
		mh, mErr := d.model.z.Holds(bg, held)
		rh, rErr := d.real.z.Holds(bg, held)
		d.same("holds of "+fs.String(), mErr, rErr)
		d.st.actions--
		if fmt.Sprint(mh) != fmt.Sprint(rh) {
			rt.Fatalf("DISAGREEMENT on the holds of %s: model %v, real %v", fs, mh, rh)
		}
	}
}

func relNames(vs []zfs.FilesystemVersion) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString(v.RelName() + " ")
	}
	return b.String()
}

func (d *diff) compareTokens(rt *rapid.T, fs zfs.DatasetPath, ms, rs string) {
	mt, mErr := resumetoken.Decode(ms)
	rtok, rErr := resumetoken.Decode(rs)
	if mErr != nil || rErr != nil {
		rt.Fatalf("DISAGREEMENT on the resume token of %s: model %v, real %v", fs, mErr, rErr)
	}
	d.pair("token toguid of "+fs.String(), mt.ToGUID, rtok.ToGUID)
	d.pair("token fromguid of "+fs.String(), mt.FromGUID, rtok.FromGUID)
	type fields struct {
		ToName                                          string
		Incremental                                     bool
		EmbedOK, LargeBlockOK, CompressOK, RawOK, Saved bool
	}
	mf := fields{mt.ToName, mt.Incremental(), mt.EmbedOK, mt.LargeBlockOK, mt.CompressOK, mt.RawOK, mt.SavedOK}
	rf := fields{rtok.ToName, rtok.Incremental(), rtok.EmbedOK, rtok.LargeBlockOK, rtok.CompressOK, rtok.RawOK, rtok.SavedOK}
	if mf != rf {
		rt.Fatalf("DISAGREEMENT on the resume token of %s: model %+v, real %+v", fs, mf, rf)
	}
}

// checkContent compares the content of every snapshot at the end of a
// history: equal checksums on one side exactly where they are equal on the
// other (each write makes content no other write makes, on both).
func (d *diff) checkContent() {
	m2r, r2m := map[string]string{}, map[string]string{}
	for _, fs := range d.allFS() {
		for _, v := range d.versions(fs) {
			if v.Kind != zfs.Snapshot {
				continue
			}
			ref := v.Ref(fs)
			ms, mErr := d.model.checksum(ref)
			rs, rErr := d.real.checksum(ref)
			if mErr != nil && rErr != nil {
				continue // both unreadable (a key not loaded): alike
			}
			if mErr != nil || rErr != nil {
				d.rt.Fatalf("DISAGREEMENT on reading %s: model %v, real %v", ref, mErr, rErr)
			}
			d.st.contents++
			if r, ok := m2r[ms]; ok && r != rs {
				d.rt.Fatalf("DISAGREEMENT on the content of %s: alike another snapshot's on the model only", ref)
			}
			if m, ok := r2m[rs]; ok && m != ms {
				d.rt.Fatalf("DISAGREEMENT on the content of %s: alike another snapshot's on real ZFS only", ref)
			}
			m2r[ms], r2m[rs] = rs, ms
		}
	}
}

// modelOther is a second model in the place of real ZFS, seeded apart
// (other GUIDs) and imitating release.
func modelOther(release zfsmodel.Release) newOther {
	return func(t *testing.T, rt *rapid.T, pool string) (side, func()) {
		s := newModelSide(rt, pool, release, "otherSeed")
		s.name = "model " + string(release)
		return s, func() {}
	}
}

// The differential machinery itself, without ZFS: two models of one line
// agree on every history (GUIDs differ, the pairing maps them).
func TestDifferentialModelAgainstModel(t *testing.T) {
	st := runDifferential(t, "zfs=model", zfsmodel.Newest, 3*time.Second, modelOther(zfsmodel.Newest))
	if st.histories < 2 {
		t.Errorf("only %d histories in the budget", st.histories)
	}
}

const mutantEnv = "ZREPL_DIFFERENTIAL_MUTANT"

// TestDifferentialMutantChild compares the newest line's model with 2.1's;
// TestDifferentialFindsReleaseDifference runs it in a child process.
func TestDifferentialMutantChild(t *testing.T) {
	if os.Getenv(mutantEnv) == "" {
		t.Skip("only run as a child of TestDifferentialFindsReleaseDifference")
	}
	runDifferential(t, "zfs=model", zfsmodel.Newest, 20*time.Second, modelOther(zfsmodel.OpenZFS21))
}

// A model imitating another line disagrees (on the destroy of a held
// snapshot, 2.1 says busy, 2.3 names the holds; or on a snapshot of a
// missing filesystem): the test can fail, and says where.
func TestDifferentialFindsReleaseDifference(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDifferentialMutantChild$", "-test.count=1", "-rapid.nofailfile")
	cmd.Env = append(os.Environ(), mutantEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("2.1's model agreed with 2.3's for the whole budget:\n%s", out)
	}
	// Which difference a history meets first is chance (held destroy,
	// snapshot of a missing filesystem).
	for _, want := range []string{"DISAGREEMENT on ", "model=2.3", "1 disagreements"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child output lacks %q:\n%s", want, out)
		}
	}
}
