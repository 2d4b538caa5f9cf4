package scenarios

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/pruner"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/zfsmodel"
)

// Faults a replicate action may suffer.
var faultKinds = []string{
	"none", "reset", "partition", "cut", "fail-zfs", "resize",
	"crash-sender", "crash-receiver", "crash-step", "keepalive", "ssh-255",
}

// sshComplaints are what ssh says on stderr when it exits with 255.
var sshComplaints = []string{
	"client_loop: send disconnect: Broken pipe",
	"Connection to sink closed by remote host.",
	"packet_write_wait: Connection to 192.0.2.7 port 22: Broken pipe",
	"Timeout, server 192.0.2.7 not responding.",
}

// stats count, over all histories of a test, what the histories did, so
// the log shows that they exercise replication and not only the rest.
var stats struct {
	runs, faulty, completed atomic.Int64
	// goaways: runs with a keepalive fault whose control connection was
	// killed (and redialled); sshExits: runs with an ssh process that
	// exited with 255 mid-use.
	goaways, sshExits atomic.Int64
	// keyFailures: filesystems a run without faults failed for want of
	// an unloaded key.
	keyFailures atomic.Int64
	// resumes: sends that continued a partial receive.
	resumes atomic.Int64
}

// errNoSpace is an ENOSPC-like failure: temporary, of no known kind.
var errNoSpace = &zfs.Error{Op: "recv", Msg: "cannot receive incremental stream: out of space"}

// interferer watches the bytes a run moves and the steps it completes, and
// acts once (fault injection, crash, resize) when a threshold is reached.
type interferer struct {
	replication.Receiver
	sender replication.Sender

	onBytes int64
	onSteps int
	act     func()
	crash   bool

	bytes atomic.Int64
	steps atomic.Int64
	once  sync.Once
	fired atomic.Bool

	// errs are the errors of every Send, Receive and StepCompleted of
	// the run, of all its attempts.
	mu   sync.Mutex
	errs []error
}

func (x *interferer) record(err error) error {
	if err != nil {
		x.mu.Lock()
		x.errs = append(x.errs, err)
		x.mu.Unlock()
	}
	return err
}

func (x *interferer) recorded() []error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]error(nil), x.errs...)
}

// anyError reports whether a recorded error's text contains s.
func (x *interferer) anyError(s string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, err := range x.errs {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

func (x *interferer) fire() {
	x.once.Do(func() {
		x.fired.Store(true)
		x.act()
	})
}

func (x *interferer) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	return x.record(x.Receiver.Receive(ctx, req, readerFunc(func(p []byte) (int, error) {
		n, err := stream.Read(p)
		if x.act != nil && x.onBytes > 0 && x.bytes.Add(int64(n)) >= x.onBytes {
			x.fire()
		}
		return n, err
	})))
}

// stepSender wraps the run's sender: it records errors, counts resumed
// sends and completed steps (for a crash at a step boundary).
type stepSender struct {
	replication.Sender
	x *interferer
}

func (s stepSender) Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error) {
	if req.ResumeToken != "" {
		stats.resumes.Add(1)
	}
	r, err := s.Sender.Send(ctx, req)
	return r, s.x.record(err)
}

func (s stepSender) StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error {
	// After a crash nothing is confirmed any more: a receive that commits
	// after the crashed receiver's image was taken is lost with it, and
	// its confirmation could never have reached the sender.
	if s.x.crash && s.x.fired.Load() {
		return errors.New("scenarios: a host crashed")
	}
	err := s.x.record(s.Sender.StepCompleted(ctx, req, last))
	if err == nil && s.x.act != nil && s.x.onSteps > 0 && s.x.steps.Add(1) >= int64(s.x.onSteps) {
		s.x.fire()
	}
	return err
}

// replicate is one replication run of a drawn job, with a drawn fault.
func (w *world) replicate(t *rapid.T) {
	j := rapid.SampledFrom(jobs).Draw(t, "job")
	fault := rapid.SampledFrom(faultKinds).Draw(t, "fault")
	if forceFault != "" {
		fault = forceFault
	}
	netSeed, concurrency, attempts := rapid.Int64().Draw(t, "netSeed"), rapid.IntRange(1, 3).Draw(t, "concurrency"), rapid.IntRange(1, 5).Draw(t, "attempts")
	// Some runs go over the ssh transport whatever their fault.
	w.overSSH = rapid.IntRange(0, 3).Draw(t, "overSSH") == 0
	w.run(t, j, fault, netSeed, concurrency, attempts)
	w.overSSH = false
	w.persist(t)
}

// run replicates once and checks what a run owes: resumed steps send only
// what is missing, and a filesystem the run completed is in its final
// state. It returns the report (nil after a crash).
//
// attempts bounds the run's attempts: with few, a fault more often
// outlasts the run, and the next run must resume what it left.
func (w *world) run(t *rapid.T, j job, fault string, netSeed int64, concurrency, attempts int) *replication.Report {
	stats.runs.Add(1)
	if fault != "none" {
		stats.faulty.Add(1)
	}
	var opts linkOpts
	x := &interferer{}
	runCtx, cancel := context.WithTimeout(bg, 4*time.Hour)
	defer cancel()
	var run *replication.Run
	seq := newSequencer()
	defer seq.close()
	var crashImg []byte
	var crashErr error
	crashed := ""
	sshStderr := ""
	switch fault {
	case "reset":
		opts.plan.Faults = append(opts.plan.Faults, netsim.Fault{
			Kind: netsim.FaultReset, Conn: rapid.IntRange(1, 6).Draw(t, "conn"),
			Dir:    rapid.SampledFrom([]netsim.Dir{netsim.Up, netsim.Down}).Draw(t, "dir"),
			AtByte: rapid.Int64Range(0, 1<<20).Draw(t, "atByte"),
		})
	case "cut":
		must(t, w.src.CutNextSend(rapid.Int64Range(0, 1<<20).Draw(t, "cutAt")))
	case "fail-zfs":
		host := rapid.SampledFrom([]string{"src", "dst"}).Draw(t, "host")
		m := map[string]*zfsmodel.Model{"src": w.src, "dst": w.dst}[host]
		methods := map[string][]string{"src": {"Send", "Hold", "Bookmark", "Release", "Destroy", "ListVersions"}, "dst": {"Receive", "Hold", "Release", "ListFilesystems"}}[host]
		method := rapid.SampledFrom(methods).Draw(t, "method")
		var err error = &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "zfs", Msg: "dataset is busy"}
		if rapid.Bool().Draw(t, "nospace") {
			err = errNoSpace
		}
		must(t, m.FailNext(method, rapid.IntRange(1, 3).Draw(t, "times"), err))
	case "partition":
		// The partition starts once the run moved some bytes and heals
		// after d; the run's retries may or may not outlast it.
		x.onBytes = rapid.Int64Range(1, 1<<20).Draw(t, "partitionAt")
		d := time.Duration(rapid.IntRange(1, 180).Draw(t, "partitionSeconds")) * time.Second
		x.act = func() { _ = w.partitionNow(d) }
	case "resize":
		x.onBytes = rapid.Int64Range(1, 1<<20).Draw(t, "resizeAt")
		n := rapid.IntRange(1, 3).Draw(t, "newConcurrency")
		// The resize comes between turns (see sequencer), so that the
		// steps it suspends and starts do not race with the step whose
		// bytes reached it.
		x.act = func() { seq.do(func() { _ = run.SetConcurrency(n) }) }
	case "crash-sender", "crash-receiver":
		x.onBytes = rapid.Int64Range(1, 1<<20).Draw(t, "crashAt")
		victim := map[string]*zfsmodel.Model{"crash-sender": w.src, "crash-receiver": w.dst}[fault]
		x.act = func() {
			crashImg, crashErr = saveErr(victim)
			cancel()
		}
		crashed = fault
		x.crash = true
	case "crash-step":
		x.onSteps = rapid.IntRange(1, 3).Draw(t, "crashAfterSteps")
		host := rapid.SampledFrom([]string{"crash-sender", "crash-receiver"}).Draw(t, "crashHost")
		victim := map[string]*zfsmodel.Model{"crash-sender": w.src, "crash-receiver": w.dst}[host]
		x.act = func() {
			crashImg, crashErr = saveErr(victim)
			cancel()
		}
		crashed = host
		x.crash = true
	case "keepalive":
		// The control connection dies mid-send, as a GOAWAY
		// too_many_pings of a misconfigured keepalive once killed it (the
		// pair's keepalive is zrepl's now, fixed on both ends): a reset of
		// connection 1 (the first listing's). Sends flow on their own data
		// connections and go on; calls on the control connection fail
		// temporarily and gRPC redials. The link is slow, so that sends
		// last minutes. The reset lands within the bytes every history's
		// control connection carries (at most 2000 were always reached;
		// 3000 not in about one history in ten), so that it always fires.
		opts.plan.Faults = append(opts.plan.Faults, netsim.Fault{
			Kind: netsim.FaultReset, Conn: 1,
			Dir:    rapid.SampledFrom([]netsim.Dir{netsim.Up, netsim.Down}).Draw(t, "controlDir"),
			AtByte: rapid.Int64Range(0, 1536).Draw(t, "controlAtByte"),
		})
		opts.bandwidth = int64(rapid.IntRange(1, 8).Draw(t, "kibPerSecond")) << 10
	case "ssh-255":
		// One of the run's ssh processes exits with 255 once a drawn
		// number of bytes went through its stdin or stdout.
		opts.ssh = true
		opts.victim = rapid.IntRange(0, 3).Draw(t, "sshVictim")
		at := rapid.Int64Range(0, 1<<20).Draw(t, "sshExitAt")
		sshStderr = rapid.SampledFrom(sshComplaints).Draw(t, "sshStderr")
		opts.script = netsim.ProcessScript{Exit: netsim.ExitAfterStdout, StdoutBytes: at, Status: 255, Stderr: sshStderr + "\r\n"}
		if rapid.Bool().Draw(t, "sshOnStdin") {
			opts.script = netsim.ProcessScript{Exit: netsim.ExitAfterStdin, StdinBytes: at, Status: 255, Stderr: sshStderr + "\r\n"}
		}
	}
	// Only resize runs have several steps at once (the others keep what
	// they draw comparable with older seeds).
	if fault != "resize" {
		concurrency = 1
	}
	opts.ssh = opts.ssh || w.overSSH
	lk := w.connect(t, j, netSeed, opts)
	w.curNet = lk.n
	snd, rcv := w.endpoints(j, lk)
	x.Receiver = rcv
	x.sender = stepSender{Sender: snd, x: x}
	var keyless map[string]bool
	if fault == "none" {
		keyless = w.keylessFilesystems(t, j)
	}
	run = replication.NewRun(seqSender{inner: x.sender, s: seq}, seqReceiver{inner: x, s: seq}, replication.Config{
		Concurrency: concurrency,
		MaxAttempts: attempts,
		Now:         w.clock,
	})
	rep := run.Do(runCtx)
	sshStatus := -2
	if lk.ssh != nil {
		// Before the link closes: closing it ends the processes too.
		sshStatus = lk.ssh.victimStatus()
	}
	lk.close()
	w.curNet = nil
	must(t, crashErr)
	if x.fired.Load() && crashImg != nil {
		switch crashed {
		case "crash-sender":
			w.src = w.load(t, crashImg)
		case "crash-receiver":
			w.dst = w.load(t, crashImg)
		}
		return nil
	}
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		t.Fatalf("LIVENESS: a run of %s with fault %s did not end within 4 hours of virtual time: %v", j.id, fault, rep.Err())
	}
	switch fault {
	case "none":
		w.checkKeyFailures(t, j, rep, keyless)
	case "keepalive":
		if lk.controlReset() {
			stats.goaways.Add(1)
		}
		// A killed control connection is a temporary failure, and it cuts
		// no send stream.
		for _, f := range rep.Filesystems {
			if f.Err != nil && f.Permanent && !errors.Is(f.Err, zfs.ErrKeyNotLoaded) && strings.Contains(f.Err.Error(), "Unavailable") {
				t.Fatalf("INVARIANT temporary: %s: a killed control connection failed a run of %s for good: %v", f.FS, j.id, f.Err)
			}
		}
	case "ssh-255":
		if sshStatus == 255 {
			stats.sshExits.Add(1)
			// What the process's death failed names ssh's exit status
			// and complaint (a death between calls may fail nothing).
			want := "ssh exited with status 255: " + sshStderr
			for _, err := range x.recorded() {
				// A missing key is the history's doing (toggle-key).
				if !strings.Contains(err.Error(), want) && !errors.Is(err, zfs.ErrKeyNotLoaded) {
					t.Fatalf("INVARIANT ssh-named: a run of %s whose ssh process exited with 255 (%q) failed with an error that does not say so: %v", j.id, sshStderr, err)
				}
			}
			for _, f := range rep.Filesystems {
				// Permanent failures are the history's (a conflict),
				// a child's failure its parent's.
				if f.Err != nil && !f.Permanent && !strings.Contains(f.Err.Error(), want) && !strings.Contains(f.Err.Error(), "was not replicated") {
					t.Fatalf("INVARIANT ssh-named: %s: a run of %s whose ssh process exited with 255 (%q) failed with an error that does not say so: %v", f.FS, j.id, sshStderr, f.Err)
				}
			}
		}
	}
	w.traceRun(j, fault, run, &rep, x.recorded())
	// Resumability: a step sends what the receiver lacks, not again what
	// an interrupted attempt or run delivered.
	for _, s := range run.Progress().Steps {
		// Bytes in flight when a step is cut (network and rpc buffers,
		// the record the receiver had not finished) are counted twice:
		// allow some, not a resend. A step suspended by a resize keeps
		// its progress counter across the suspension, so everything in
		// flight then counts as well: seen up to 4 records (seed
		// 9096100523423863516), allowed up to 8.
		slack := s.Expected/20 + 256<<10
		if fault == "resize" {
			slack = s.Expected/20 + 8*zfsmodel.BlockSize
		}
		if s.State == "done" && s.Expected > 0 && s.Done > s.Expected+slack {
			t.Fatalf("INVARIANT resumable: %s step %s moved %d bytes, %d expected: received data sent again", s.FS, s.Step, s.Done, s.Expected)
		}
	}
	for _, f := range rep.Filesystems {
		if f.Err != nil {
			continue
		}
		switch f.State {
		case replication.FSDone:
			stats.completed.Add(1)
			w.checkCompleted(t, j, f.FS)
		case replication.FSUpToDate:
			w.checkCompleted(t, j, f.FS)
		}
	}
	return &rep
}

// partitionNow cuts the two hosts apart now, for d.
func (w *world) partitionNow(d time.Duration) error {
	if w.curNet == nil {
		return nil
	}
	return w.curNet.Partition(senderHost, sinkHost, d)
}

// converge is the liveness check: with faults over, a job replicates
// everything within three runs, unless a filesystem conflicts for a reason
// the history made (the receiver's newest snapshot is unknown to the
// sender, so no incremental can follow it).
func (w *world) converge(t *rapid.T, j job) {
	var rep *replication.Report
	// No draws here: how many runs it takes depends on the state, and
	// draws must not (see newWorld).
	for i := 0; i < 3; i++ {
		rep = w.run(t, j, "none", int64(i), 1+i%3, 5)
		if rep.Err() == nil {
			return
		}
	}
	made := map[string]bool{} // conflicts the history made
	for _, f := range rep.Filesystems {
		if f.State == replication.FSConflict && (w.diverged(t, j, f.FS) || w.encryptedPlaceholder(t, j, f.FS)) {
			made[f.FS] = true
		}
	}
	for _, f := range rep.Filesystems {
		if f.Err == nil || made[f.FS] {
			continue
		}
		if p, ok := zfs.MustDatasetPath(f.FS).Parent(); ok && made[p.String()] && strings.Contains(f.Err.Error(), "was not replicated") {
			continue
		}
		t.Fatalf("LIVENESS: job %s: %s still fails after 3 runs without faults: %v\n%s", j.id, f.FS, f.Err, w.dump(t))
	}
}

// encryptedPlaceholder: the receiver holds fs as a placeholder below an
// encrypted root (the plain job's): ZFS cannot replace an encrypted
// filesystem with a full receive, so once the sender's fs has snapshots,
// fs conflicts until an operator makes room. That is what the sink's
// recv.placeholder.encryption inherit (its default here) costs; off would
// store the plain job's copy of the encrypted src/data/b unencrypted
// below an unencrypted placeholder (see TestEncryptedReceiverPlaceholders).
func (w *world) encryptedPlaceholder(t *rapid.T, j job, fs string) bool {
	info, err := w.dst.Info(zfs.MustDatasetPath(j.dstFS(fs)))
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		return false
	}
	must(t, err)
	return info.Placeholder && info.Encrypted()
}

// diverged: the receiver's newest snapshot of fs is on the sender neither
// as snapshot nor as bookmark.
func (w *world) diverged(t *rapid.T, j job, fs string) bool {
	snaps := snapshots(versionsOf(t, w.dst, j.dstFS(fs)))
	if len(snaps) == 0 {
		return false
	}
	newest := snaps[len(snaps)-1].GUID
	return !slices.ContainsFunc(versionsOf(t, w.src, fs), func(v zfs.FilesystemVersion) bool { return v.GUID == newest })
}

// pruneSender applies keep_sender rules (not_replicated + last_n) of a job.
// It must never destroy a held snapshot, the job's incremental base (the
// cursor's snapshot) or a snapshot the job did not replicate yet.
func (w *world) pruneSender(t *rapid.T) {
	j := rapid.SampledFrom(jobs).Draw(t, "job")
	keep := rapid.IntRange(1, 3).Draw(t, "keepLast")
	policy := pruner.Policy{Rules: []pruner.Rule{pruner.KeepNotReplicated(), pruner.KeepLastN(keep, nil)}}
	type protect struct{ fs, why string }
	must_ := map[uint64]protect{}
	cursors := map[string]uint64{}
	for _, fs := range fsNames {
		vs := versionsOf(t, w.src, fs)
		c := cursorOf(vs, j)
		if c != nil {
			cursors[fs] = c.CreateTXG
		}
		for _, v := range snapshots(vs) {
			switch {
			case v.UserRefs > 0:
				must_[v.GUID] = protect{fs, "held"}
			case c != nil && v.GUID == c.GUID:
				must_[v.GUID] = protect{fs, "the cursor's snapshot"}
			case c == nil || v.CreateTXG > c.CreateTXG:
				must_[v.GUID] = protect{fs, "not replicated"}
			}
		}
	}
	// A push job prunes its own sender, a pull job its source over rpc
	// (keep_sender): the same rules (endpoint.Sender.DestroySnapshots).
	// The source refuses to destroy what protects replication (held
	// snapshots, which the wire's listing does not show the pruner): such
	// refusals are its duty, not failures.
	var target pruner.Target = w.sender(j)
	done := func() {}
	if j.pull {
		client, d := w.sourceClient(t, j, int64(keep), j.identity)
		target, done = client.Sender(), d
	}
	_, err := pruner.Prune(bg, target, policy, w.clock(), func(fs string) (uint64, bool) {
		txg, ok := cursors[fs]
		return txg, ok
	})
	done()
	if err != nil && !(j.pull && onlyRefusals(err)) {
		t.Fatalf("pruning the sender for %s: %v", j.id, err)
	}
	for guid, p := range must_ {
		if !slices.ContainsFunc(snapshots(versionsOf(t, w.src, p.fs)), func(v zfs.FilesystemVersion) bool { return v.GUID == guid }) {
			t.Fatalf("INVARIANT sender-prune: pruning %s destroyed %s snapshot %016x of %s\n%s", j.id, p.why, guid, p.fs, w.dump(t))
		}
	}
	w.persist(t)
}

// onlyRefusals: every failure in err (the pruner joins one per
// filesystem, and a source one per snapshot, a line each) is a source's
// refusal to destroy a snapshot that protects replication.
func onlyRefusals(err error) bool {
	if !errors.Is(err, endpoint.ErrNotAllowed) {
		return false
	}
	for _, l := range strings.Split(err.Error(), "\n") {
		if !strings.Contains(l, "is held") {
			return false
		}
	}
	return true
}

// pruneReceiver applies keep_receiver rules through the sink's own
// endpoint; every snapshot a rule keeps must survive.
func (w *world) pruneReceiver(t *rapid.T) {
	j := rapid.SampledFrom(jobs).Draw(t, "job")
	policy := pruner.Policy{Rules: []pruner.Rule{pruner.KeepLastN(rapid.IntRange(1, 3).Draw(t, "keepLast"), nil)}}
	if rapid.Bool().Draw(t, "keepEven") {
		policy.Rules = append(policy.Rules, pruner.KeepRegex(regexp.MustCompile(`[02468]00_000$`), false))
	}
	target := &endpoint.Receiver{ZFS: w.dst, Job: j.recv, Root: j.root()}
	now := w.clock()
	dry, err := pruner.DryRun(bg, target, policy, now, nil)
	must(t, err)
	planned := map[string]bool{}
	for _, f := range dry.Filesystems {
		for _, s := range f.Planned {
			planned[f.FS+"@"+s] = true
		}
	}
	before := map[string][]zfs.FilesystemVersion{}
	for _, fs := range fsNames {
		before[fs] = snapshots(versionsOf(t, w.dst, j.dstFS(fs)))
		for _, v := range before[fs] {
			if planned[fs+"@"+v.Name] {
				w.allowGone[j.dstFS(fs)+"@"+fmt.Sprint(v.GUID)] = true
			}
		}
	}
	_, err = pruner.Prune(bg, target, policy, now, nil)
	must(t, err)
	for _, fs := range fsNames {
		after := snapshots(versionsOf(t, w.dst, j.dstFS(fs)))
		for _, v := range before[fs] {
			if planned[fs+"@"+v.Name] {
				continue
			}
			if !slices.ContainsFunc(after, func(a zfs.FilesystemVersion) bool { return a.GUID == v.GUID }) {
				t.Fatalf("INVARIANT receiver-prune: %s@%s, kept by the rules (or held, or newest), was destroyed\n%s", j.dstFS(fs), v.Name, w.dump(t))
			}
		}
	}
	w.persist(t)
}
