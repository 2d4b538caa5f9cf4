package scenarios

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/snapper"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

var bg = context.Background()

const (
	sinkRoot = "dst/sinks"
	// The host names on the simulated network.
	senderHost = "laptop"
	sinkHost   = "sink"
)

// sinkJob is the sink's job name: its last-received holds carry it.
var sinkJob = endpoint.MustJobID("sink")

// fsNames are the sender's filesystems, parents first.
var fsNames = []string{"src/data", "src/data/a", "src/data/b"}

// privateFS is a sender filesystem outside every job's filter, with one
// snapshot: a forged request may name it, a source must never send it.
const privateFS = "src/private"

// job is a pair of jobs replicating the sender's filesystems: a push job
// on the sender host to the sink on the receiver host, or a pull job on
// the receiver host from a source job on the sender host. Several of them
// send the same filesystems, so a check sees whether one job touches the
// other's cursors and holds.
type job struct {
	// id is the sending side's job (push or source): cursors and step
	// holds carry it. recv is the receiving side's job (sink or pull):
	// last-received holds carry it.
	id, recv endpoint.JobID
	// identity is the client identity the server authenticates.
	identity string
	// dstRoot is where the job's filesystems land on the receiver host.
	dstRoot string
	// pull: the client and the receiving endpoint live on the receiver
	// host, the server serves the source on the sender host.
	pull bool
}

var jobs = []job{
	{id: endpoint.MustJobID("push_a"), recv: sinkJob, identity: "a", dstRoot: sinkRoot + "/a"},
	{id: endpoint.MustJobID("push_b"), recv: sinkJob, identity: "b", dstRoot: sinkRoot + "/b"},
	{id: endpoint.MustJobID("source"), recv: endpoint.MustJobID("pull"), identity: "puller", dstRoot: "dst/pulled", pull: true},
}

func (j job) root() zfs.DatasetPath  { return zfs.MustDatasetPath(j.dstRoot) }
func (j job) dstFS(fs string) string { return j.dstRoot + "/" + fs }

// world is one simulated history: the two hosts, the virtual calendar the
// snapper and pruner see, and what the checks remember.
type world struct {
	mu  sync.Mutex
	now time.Time

	src, dst *zfsmodel.Model
	// srcImg, dstImg are the images persist last loaded each host from.
	srcImg, dstImg []byte

	// sum is the content checksum of every snapshot the sender ever had,
	// by GUID, taken when it was created.
	sum map[uint64]string
	// created lists each filesystem's snapshot GUIDs in creation order.
	created map[string][]uint64
	// dstSeen is every receiver snapshot (dstFS@guid) after the last
	// check; allowGone is what the actions since may have destroyed.
	dstSeen map[string]bool
	// received is every receiver snapshot (dstFS@guid) any check saw.
	received  map[string]bool
	allowGone map[string]bool

	// curNet is the running replicate action's network.
	curNet *netsim.Network
	// overSSH: the next run goes over simulated ssh processes.
	overSSH bool

	// trace is what the runs did, for the replay test (see traceRun).
	trace strings.Builder
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *world) advance(d time.Duration) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = w.now.Add(d)
	return w.now
}

func newWorld(t *rapid.T) *world {
	w := &world{
		now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		sum: map[uint64]string{}, created: map[string][]uint64{},
		dstSeen: map[string]bool{}, received: map[string]bool{}, allowGone: map[string]bool{},
	}
	mp, err := modelpair.New(modelpair.Options{Clock: w.clock})
	must(t, err)
	w.src, w.dst = mp.Src, mp.Dst
	must(t, w.dst.CreateFilesystem(zfs.MustDatasetPath(sinkRoot), zfsmodel.FSOptions{}))
	for _, fs := range fsNames {
		must(t, w.src.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{Parents: true, Encrypted: fs == encFS}))
	}
	must(t, w.dst.CreateFilesystem(jobs[plainJob].root(), zfsmodel.FSOptions{Encrypted: true}))
	private := zfs.MustDatasetPath(privateFS)
	must(t, w.src.CreateFilesystem(private, zfsmodel.FSOptions{}))
	must(t, w.src.WriteData(private, 7, 2))
	must(t, w.src.Snapshot(bg, private, "secret"))
	return w
}

// Draws never depend on the state (lists are indexed with a drawn number
// modulo their length), so that a replay draws the same values even where
// goroutine scheduling made the engine's state differ slightly.

func must(t *rapid.T, err error) {
	if err != nil {
		t.Helper() // only here: it walks the stack (1% of the simulator's time)
		t.Fatal(err)
	}
}

// save is a host's durable state at this instant: what survives a power
// cut (receives in flight are lost, as zfsmodel.Save documents).
func save(t *rapid.T, m *zfsmodel.Model) []byte {
	img, err := saveErr(m)
	must(t, err)
	return img
}

// saveErr is save for goroutines other than the test's.
func saveErr(m *zfsmodel.Model) ([]byte, error) {
	var b bytes.Buffer
	err := m.Save(&b)
	return b.Bytes(), err
}

func (w *world) load(t *rapid.T, img []byte) *zfsmodel.Model {
	m, err := zfsmodel.Load(bytes.NewReader(img), zfsmodel.Options{Clock: w.clock})
	must(t, err)
	return m
}

// persist ends every action: both hosts are saved and restarted from what
// they saved, so an action boundary is always a clean restart, pending
// fault injections are dropped, and Save/Load must lose nothing.
func (w *world) persist(t *rapid.T) {
	w.src = w.restart(t, w.src, &w.srcImg)
	w.dst = w.restart(t, w.dst, &w.dstImg)
}

// restart saves m and starts it again from its image. An image equal to
// the one the last restart loaded was already loaded (and Save of what
// it gave checked against it) once: then m restarts as its Clone, which
// Load(Save(m)) equals by Clone's contract, without decoding the image
// again. Most actions change one host at most.
func (w *world) restart(t *rapid.T, m *zfsmodel.Model, last *[]byte) *zfsmodel.Model {
	img := save(t, m)
	if bytes.Equal(img, *last) {
		return m.Clone(zfsmodel.Options{Clock: w.clock})
	}
	*last = img
	return w.load(t, img)
}

func (w *world) sender(j job) *endpoint.Sender {
	s := modelpair.Sender(w.src, j.id)
	s.Policy = j.sendPolicy()
	return s
}

func versionsOf(t *rapid.T, z zfs.ZFS, fs string) []zfs.FilesystemVersion {
	vs, err := z.ListVersions(bg, zfs.MustDatasetPath(fs))
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		return nil
	}
	must(t, err)
	return vs
}

func snapshots(vs []zfs.FilesystemVersion) []zfs.FilesystemVersion {
	return slices.DeleteFunc(slices.Clone(vs), func(v zfs.FilesystemVersion) bool { return v.Kind != zfs.Snapshot })
}

// cursorOf is the newest replication cursor of job on the sender's fs.
func cursorOf(vs []zfs.FilesystemVersion, j job) *zfs.FilesystemVersion {
	var c *zfs.FilesystemVersion
	for i, v := range vs {
		if p, ok := endpoint.ParseBookmarkName(v.Name); ok && v.Kind == zfs.Bookmark && p.Kind == endpoint.ReplicationCursorV2 && p.Job == j.id {
			if c == nil || v.CreateTXG > c.CreateTXG {
				c = &vs[i]
			}
		}
	}
	return c
}

func resumeToken(t *rapid.T, z *zfsmodel.Model, fs string) string {
	info, err := z.Info(zfs.MustDatasetPath(fs))
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		return ""
	}
	must(t, err)
	return info.ReceiveResumeToken
}

// snapshot writes to a filesystem and takes the job-wide snapshot with the
// snapper, remembering each new snapshot's content.
func (w *world) snapshot(t *rapid.T) {
	if rapid.Bool().Draw(t, "write") {
		fs := rapid.SampledFrom(fsNames).Draw(t, "fs")
		err := w.src.WriteData(zfs.MustDatasetPath(fs), rapid.Int64Range(0, 1000).Draw(t, "seed"), rapid.IntRange(1, 12).Draw(t, "blocks"))
		if !errors.Is(err, zfs.ErrKeyNotLoaded) { // no writes without the key
			must(t, err)
		}
	}
	now := w.advance(time.Duration(rapid.IntRange(1, 180).Draw(t, "minutes")) * time.Minute)
	s := w.sender(jobs[0])
	sn := snapper.New(w.src, func(ctx context.Context) ([]zfs.DatasetPath, error) {
		fss, err := s.ListFilesystems(ctx)
		var out []zfs.DatasetPath
		for _, f := range fss {
			out = append(out, f.Info.Path)
		}
		return out, err
	}, snapper.Config{Prefix: "zrepl_"})
	refs, err := sn.SnapshotNow(bg, now)
	must(t, err)
	cs := &checksummer{w: w, m: w.src}
	for _, ref := range refs {
		for _, v := range versionsOf(t, w.src, ref.FS.String()) {
			if v.Kind == zfs.Snapshot && v.Name == ref.Name {
				w.sum[v.GUID] = cs.sum(t, ref)
				w.created[ref.FS.String()] = append(w.created[ref.FS.String()], v.GUID)
			}
		}
	}
	w.persist(t)
}

// destroySender destroys a sender snapshot as an operator would; held
// snapshots refuse, which is what protects replication.
func (w *world) destroySender(t *rapid.T) {
	fs := rapid.SampledFrom(fsNames).Draw(t, "fs")
	pick := rapid.IntRange(0, 1<<10).Draw(t, "pick")
	snaps := snapshots(versionsOf(t, w.src, fs))
	if len(snaps) == 0 {
		return // a no-op, not t.Skip: skips would make rapid draw differently
	}
	v := snaps[pick%len(snaps)]
	err := w.src.Destroy(bg, []zfs.VersionRef{v.Ref(zfs.MustDatasetPath(fs))})
	switch {
	case v.UserRefs > 0 && !errors.Is(err, zfs.ErrDatasetBusy):
		t.Fatalf("destroying held %s@%s: %v, want busy", fs, v.Name, err)
	case v.UserRefs == 0 && err != nil:
		t.Fatalf("destroying %s@%s: %v", fs, v.Name, err)
	}
	w.persist(t)
}

// rollbackReceiver rolls a receiver filesystem back to an older snapshot
// the sender still knows (as snapshot or bookmark), releasing the
// last-received hold first as an operator must. A partial receive may be
// in progress: ZFS refuses a rollback below its base.
func (w *world) rollbackReceiver(t *rapid.T) {
	j := rapid.SampledFrom(jobs).Draw(t, "job")
	fs := rapid.SampledFrom(fsNames).Draw(t, "fs")
	pick := rapid.IntRange(0, 1<<10).Draw(t, "pick")
	dst := j.dstFS(fs)
	snaps := snapshots(versionsOf(t, w.dst, dst))
	srcGUIDs := map[uint64]bool{}
	for _, v := range versionsOf(t, w.src, fs) {
		srcGUIDs[v.GUID] = true
	}
	var candidates []zfs.FilesystemVersion
	for _, v := range snaps[:max(len(snaps)-1, 0)] {
		if srcGUIDs[v.GUID] {
			candidates = append(candidates, v)
		}
	}
	if len(candidates) == 0 {
		return // a no-op, not t.Skip (see destroySender)
	}
	target := candidates[pick%len(candidates)]
	p := zfs.MustDatasetPath(dst)
	tag := endpoint.LastReceivedHoldTag(j.recv)
	var released []zfs.VersionRef
	for _, v := range snaps {
		if v.CreateTXG <= target.CreateTXG {
			continue
		}
		w.allowGone[dst+"@"+fmt.Sprint(v.GUID)] = true
		if v.UserRefs > 0 {
			must(t, w.dst.Release(bg, v.Ref(p), tag))
			released = append(released, v.Ref(p))
		}
	}
	err := w.dst.Rollback(bg, target.Ref(p), true)
	if errors.Is(err, zfs.ErrDatasetBusy) {
		// ZFS refuses to destroy the base of a partial receive (its saved
		// state is a clone of it): the operator gives up and puts the
		// holds back, so the action is a no-op.
		for _, r := range released {
			must(t, w.dst.Hold(bg, r, tag))
		}
		for _, v := range snaps {
			delete(w.allowGone, dst+"@"+fmt.Sprint(v.GUID))
		}
		return
	}
	must(t, err)
	w.persist(t)
}

// check holds after every action.
func (w *world) check(t *rapid.T) {
	w.checkEncryptedAtRest(t)
	cs := &checksummer{w: w, m: w.dst}
	seen := map[string]bool{}
	// The checks only read: one listing of each sender filesystem serves
	// every job.
	srcListed := map[string][]zfs.FilesystemVersion{}
	for _, fs := range fsNames {
		srcListed[fs] = versionsOf(t, w.src, fs)
	}
	for _, j := range jobs {
		for _, fs := range fsNames {
			dst := j.dstFS(fs)
			dstVersions := versionsOf(t, w.dst, dst)
			srcVersions := srcListed[fs]
			// The receiver's snapshots are sender snapshots, by GUID,
			// in the sender's order and with the sender's content.
			last := -1
			dstGUIDs := map[uint64]bool{}
			for _, v := range snapshots(dstVersions) {
				dstGUIDs[v.GUID] = true
				seen[dst+"@"+fmt.Sprint(v.GUID)] = true
				i := slices.Index(w.created[fs], v.GUID)
				if i < 0 {
					t.Fatalf("INVARIANT receiver-subset: %s@%s has GUID %016x the sender never created\n%s", dst, v.Name, v.GUID, w.dump(t))
				}
				if i <= last {
					t.Fatalf("INVARIANT receiver-subset: %s@%s is out of the sender's order\n%s", dst, v.Name, w.dump(t))
				}
				last = i
				if cs.sum(t, v.Ref(zfs.MustDatasetPath(dst))) != w.sum[v.GUID] {
					t.Fatalf("INVARIANT receiver-content: %s@%s differs from what the sender snapshotted\n%s", dst, v.Name, w.dump(t))
				}
			}
			// The cursor marks a snapshot the receiver has or had (it may
			// have been pruned or rolled back since): the cursor moves only
			// once the receiver confirmed.
			for g := range dstGUIDs {
				w.received[dst+"@"+fmt.Sprint(g)] = true
			}
			if c := cursorOf(srcVersions, j); c != nil && !w.received[dst+"@"+fmt.Sprint(c.GUID)] {
				t.Fatalf("INVARIANT cursor-confirmed: %s cursor %s of job %s marks a snapshot %s lacks\n%s", fs, c.Name, j.id, dst, w.dump(t))
			}
			// Partial receive state can always resume: the sender keeps
			// the step's target (step hold) and its incremental source.
			if tok := resumeToken(t, w.dst, dst); tok != "" {
				w.checkResumable(t, j, fs, tok, srcVersions)
			}
		}
	}
	for k := range w.dstSeen {
		if !seen[k] && !w.allowGone[k] {
			t.Fatalf("INVARIANT receiver-keep: receiver snapshot %s vanished, neither pruned nor rolled back\n%s", k, w.dump(t))
		}
	}
	w.dstSeen, w.allowGone = seen, map[string]bool{}
}

func (w *world) checkResumable(t *rapid.T, j job, fs, tok string, srcVersions []zfs.FilesystemVersion) {
	dec, err := resumetoken.Decode(tok)
	must(t, err)
	var to *zfs.FilesystemVersion
	from := dec.FromGUID == 0
	for i, v := range srcVersions {
		if v.Kind == zfs.Snapshot && v.GUID == dec.ToGUID {
			to = &srcVersions[i]
		}
		if v.GUID == dec.FromGUID {
			from = true
		}
	}
	if to == nil || !from {
		t.Fatalf("INVARIANT step-protected: %s has partial state of %s (from %016x), the sender lost the step's versions\n%s", j.dstFS(fs), dec.ToName, dec.FromGUID, w.dump(t))
	}
	holds, err := w.src.Holds(bg, []zfs.VersionRef{to.Ref(zfs.MustDatasetPath(fs))})
	must(t, err)
	if !slices.Contains(holds[to.Name], endpoint.StepHoldTag(j.id)) {
		t.Fatalf("INVARIANT step-protected: %s has partial state of %s, which lacks job %s's step hold (holds %v)\n%s", j.dstFS(fs), dec.ToName, j.id, holds[to.Name], w.dump(t))
	}
}

// checkCompleted holds for a filesystem a run of j completed (by steps or
// as up to date): nothing is left to send (the sender knows the
// receiver's newest snapshot, as snapshot or bookmark, and has no snapshot
// after it), no partial receive state is left, and the job owns exactly
// its cursor on the sender, at that snapshot, and its last-received hold
// on the receiver, on that snapshot.
func (w *world) checkCompleted(t *rapid.T, j job, fs string) {
	srcVersions := versionsOf(t, w.src, fs)
	dst := j.dstFS(fs)
	dstSnaps := snapshots(versionsOf(t, w.dst, dst))
	if len(dstSnaps) == 0 {
		t.Fatalf("INVARIANT completed: %s: after a completed run of %s the receiver has no snapshot\n%s", fs, j.id, w.dump(t))
	}
	dstNewest := dstSnaps[len(dstSnaps)-1]
	var common *zfs.FilesystemVersion
	for i, v := range srcVersions {
		if v.GUID == dstNewest.GUID {
			common = &srcVersions[i]
		}
	}
	if common == nil {
		t.Fatalf("INVARIANT completed: %s: after a completed run of %s the sender does not know the receiver's newest %s\n%s", fs, j.id, dstNewest.RelName(), w.dump(t))
	}
	for _, v := range snapshots(srcVersions) {
		if v.CreateTXG > common.CreateTXG {
			t.Fatalf("INVARIANT completed: %s: after a completed run of %s the sender's %s is newer than the receiver's newest %s\n%s", fs, j.id, v.RelName(), dstNewest.RelName(), w.dump(t))
		}
	}
	if tok := resumeToken(t, w.dst, dst); tok != "" {
		t.Fatalf("INVARIANT completed: %s keeps partial receive state after a completed run\n%s", dst, w.dump(t))
	}
	var got []string
	id := j.id
	abs, err := endpoint.ListAbstractions(bg, w.src, []zfs.DatasetPath{zfs.MustDatasetPath(fs)}, endpoint.AbstractionFilter{Job: &id})
	must(t, err)
	for _, a := range abs {
		if a.Version.FS.String() == fs {
			got = append(got, fmt.Sprintf("%s@%016x", a.Kind, a.GUID))
		}
	}
	rj := j.recv
	dabs, err := endpoint.ListAbstractions(bg, w.dst, []zfs.DatasetPath{zfs.MustDatasetPath(dst)}, endpoint.AbstractionFilter{Job: &rj})
	must(t, err)
	for _, a := range dabs {
		if a.Version.FS.String() == dst {
			got = append(got, fmt.Sprintf("%s@%016x", a.Kind, a.GUID))
		}
	}
	want := []string{
		fmt.Sprintf("%s@%016x", endpoint.ReplicationCursorV2, dstNewest.GUID),
		fmt.Sprintf("%s@%016x", endpoint.LastReceivedHold, dstNewest.GUID),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("INVARIANT completed: %s: after a completed run of %s its abstractions are %v, want %v\n%s", fs, j.id, got, want, w.dump(t))
	}
}

// dump describes both hosts for a failure message.
func (w *world) dump(t *rapid.T) string {
	var b strings.Builder
	show := func(z *zfsmodel.Model, fs string) {
		vs := versionsOf(t, z, fs)
		fmt.Fprintf(&b, "%s:\n", fs)
		var refs []zfs.VersionRef
		for _, v := range vs {
			if v.Kind == zfs.Snapshot && v.UserRefs > 0 {
				refs = append(refs, v.Ref(zfs.MustDatasetPath(fs)))
			}
		}
		holds := map[string][]string{}
		if len(refs) > 0 {
			holds, _ = z.Holds(bg, refs)
		}
		for _, v := range vs {
			h := holds[v.Name]
			sort.Strings(h)
			fmt.Fprintf(&b, "  %-50s guid=%016x txg=%d %v\n", v.RelName(), v.GUID, v.CreateTXG, h)
		}
		if tok := resumeToken(t, z, fs); tok != "" {
			if d, err := resumetoken.Decode(tok); err == nil {
				fmt.Fprintf(&b, "  partial receive of %s guid=%016x from=%016x\n", d.ToName, d.ToGUID, d.FromGUID)
			}
		}
	}
	for _, fs := range fsNames {
		show(w.src, fs)
		for _, j := range jobs {
			show(w.dst, j.dstFS(fs))
		}
	}
	return b.String()
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

var _ io.Reader = readerFunc(nil)

// GoString names the job pair in rapid's log of draws.
func (j job) GoString() string {
	if j.pull {
		return fmt.Sprintf("%s<-%s", j.recv, j.id)
	}
	return fmt.Sprintf("%s->%s", j.id, j.recv)
}
