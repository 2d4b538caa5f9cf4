package platformtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsreal"
	"zrepl.dev/zrepl/zfsreal/zfsrealtest"
)

// realPair is a sender and a receiver on one real pool: the engine's
// local endpoint pair on zfsreal.
type realPair struct {
	t testing.TB
	h *zfsrealtest.Harness
	// dstH reads content on the receiving side's pool (a harness clones
	// snapshots within its own pool).
	dstH     *zfsrealtest.Harness
	z        *zfsreal.CLI
	src, dst zfs.DatasetPath
	job      endpoint.JobID
	sender   *endpoint.Sender
	receiver *endpoint.Receiver
}

func newRealPair(t *testing.T, poolSize int64) *realPair {
	t.Helper()
	return newRealPairOpts(t, poolSize, zfsreal.Options{})
}

func newRealPairOpts(t *testing.T, poolSize int64, opts zfsreal.Options) *realPair {
	t.Helper()
	RequireZFS(t)
	pool := zfsrealtest.NewPool(t, poolSize)
	z := zfsreal.New(opts)
	h := zfsrealtest.NewHarness(t, pool, z)
	return newRealPairIn(t, h, z, h.NewRoot(t))
}

// newRealPairIn is the pair below root (src and sink).
func newRealPairIn(t testing.TB, h *zfsrealtest.Harness, z *zfsreal.CLI, root zfs.DatasetPath) *realPair {
	t.Helper()
	p := &realPair{t: t, h: h, dstH: h, z: z, job: endpoint.MustJobID("platform")}
	p.src = zfs.MustDatasetPath(root.String() + "/src")
	p.dst = zfs.MustDatasetPath(root.String() + "/sink")
	ctx := context.Background()
	require.NoError(t, h.CreateFilesystem(ctx, p.src, false))
	require.NoError(t, h.CreateFilesystem(ctx, p.dst, false))
	p.sender = &endpoint.Sender{ZFS: z, Job: p.job, Roots: []zfs.DatasetPath{p.src},
		Filter: func(fs zfs.DatasetPath) bool { return fs.HasPrefix(p.src) }}
	p.receiver = &endpoint.Receiver{ZFS: z, Job: p.job, Root: p.dst}
	return p
}

func (p *realPair) target(fs zfs.DatasetPath) zfs.DatasetPath {
	d, err := p.receiver.Target(fs.String())
	require.NoError(p.t, err)
	return d
}

func (p *realPair) versions(fs zfs.DatasetPath) []zfs.FilesystemVersion {
	vs, err := p.z.ListVersions(context.Background(), fs)
	require.NoError(p.t, err)
	return vs
}

// assertReplicated checks GUIDs and content of the receiver's snapshots and
// that the job owns exactly its cursor and its last-received hold.
func (p *realPair) assertReplicated(fs zfs.DatasetPath, want ...string) {
	t := p.t
	t.Helper()
	ctx := context.Background()
	dst := p.target(fs)
	srcGUID := map[string]uint64{}
	for _, v := range p.versions(fs) {
		if v.Kind == zfs.Snapshot {
			srcGUID[v.Name] = v.GUID
		}
	}
	var got []string
	for _, v := range p.versions(dst) {
		if v.Kind != zfs.Snapshot {
			continue
		}
		got = append(got, v.Name)
		guid, ok := srcGUID[v.Name]
		if !ok {
			continue // destroyed on the sender since it was replicated
		}
		assert.Equal(t, guid, v.GUID, "GUID of %s@%s", dst, v.Name)
		a, err := p.h.Checksum(ctx, v.Ref(fs))
		require.NoError(t, err)
		b, err := p.dstH.Checksum(ctx, v.Ref(dst))
		require.NoError(t, err)
		assert.Equal(t, a, b, "content of %s@%s", dst, v.Name)
	}
	assert.Equal(t, want, got)
	abs, err := endpoint.ListAbstractions(ctx, p.z, []zfs.DatasetPath{fs, dst}, endpoint.AbstractionFilter{Job: &p.job})
	require.NoError(t, err)
	var kinds []string
	for _, a := range abs {
		kinds = append(kinds, fmt.Sprintf("%s %s", a.Kind, a.Version))
	}
	newest := want[len(want)-1]
	assert.ElementsMatch(t, []string{
		fmt.Sprintf("%s %s#%s", endpoint.ReplicationCursorV2, fs, endpoint.CursorBookmarkName(srcGUID[newest], p.job)),
		fmt.Sprintf("%s %s@%s", endpoint.LastReceivedHold, dst, newest),
	}, kinds, "what the job owns after a completed run")
}

func (p *realPair) run(cfg replication.Config, s replication.Sender) replication.Report {
	p.t.Helper()
	cfg.Sleep = func(context.Context, time.Duration) error { return nil }
	if s == nil {
		s = p.sender
	}
	return replication.NewRun(s, p.receiver, cfg).Do(context.Background())
}

// cuttingSender cuts the next send stream after n bytes, like a network
// failure in the middle of a step.
type cuttingSender struct {
	replication.Sender
	n atomic.Int64
}

type cutReader struct {
	io.ReadCloser
	left int64
}

func (c *cutReader) Read(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("connection reset (test cut)")
	}
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.ReadCloser.Read(b)
	c.left -= int64(n)
	return n, err
}

func (c *cuttingSender) Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error) {
	r, err := c.Sender.Send(ctx, req)
	if err != nil {
		return nil, err
	}
	if n := c.n.Swap(0); n > 0 {
		return &cutReader{ReadCloser: r, left: n}, nil
	}
	return r, nil
}

// The engine's replication cases on real OpenZFS: full, incremental, from
// the cursor bookmark after the sender destroyed the common snapshot, and
// a step cut part way that the next attempt resumes from the token.
func TestEngineOnRealZFS(t *testing.T) {
	p := newRealPair(t, 1<<30)
	ctx := context.Background()
	fs := p.src
	snap := func(name string, seed int64) {
		require.NoError(t, p.h.WriteData(ctx, fs, seed, 4<<20))
		require.NoError(t, p.z.Snapshot(ctx, fs, name))
	}
	snap("s1", 1)
	rep := p.run(replication.Config{}, nil)
	require.NoError(t, rep.Err())
	p.assertReplicated(fs, "s1")

	snap("s2", 2)
	snap("s3", 3)
	require.NoError(t, p.run(replication.Config{}, nil).Err())
	p.assertReplicated(fs, "s1", "s2", "s3")

	require.NoError(t, p.z.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(fs, "s3")}))
	snap("s4", 4)
	require.NoError(t, p.run(replication.Config{}, nil).Err(), "incremental from the cursor bookmark")
	p.assertReplicated(fs, "s1", "s2", "s3", "s4")

	snap("s5", 5)
	cut := &cuttingSender{Sender: p.sender}
	cut.n.Store(1 << 20)
	rep = p.run(replication.Config{}, cut)
	require.NoError(t, rep.Err())
	assert.Equal(t, 2, rep.Attempts, "the cut attempt left a resumable state the second completed")
	p.assertReplicated(fs, "s1", "s2", "s3", "s4", "s5")
}

// plainPipe runs `zfs send sendArgs... | zfs recv -u dst` with the kernel
// piping one into the other, as a baseline, and returns how long it took.
func plainPipe(t testing.TB, dst string, sendArgs ...string) time.Duration {
	t.Helper()
	send := exec.Command("zfs", append([]string{"send"}, sendArgs...)...)
	recv := exec.Command("zfs", "recv", "-u", dst)
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	send.Stdout, recv.Stdin = pw, pr
	send.Stderr, recv.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	require.NoError(t, recv.Start())
	require.NoError(t, send.Start())
	pw.Close()
	pr.Close()
	require.NoError(t, send.Wait())
	require.NoError(t, recv.Wait())
	return time.Since(start)
}

// TestEngineThroughput replicates a few hundred MiB between two real
// pools through the engine and prints its speed next to a plain
// `zfs send | zfs recv` of the same data in the same run.
//
// A run's time is a fixed part (every zfs invocation of listing, holds,
// bookmarks, the size estimate: each a process start, slow under
// emulation) plus the stream. To tell them apart the test logs every zfs
// invocation of each engine run with its duration, times a run with
// nothing to send and one with a tiny incremental, and reports the
// engine's stream net of the fixed cost. The stream alone is also timed
// four ways (plain pipe; zfsreal Send into Receive copied through this
// process with the system's 64 KiB pipes as before, and with 1 MiB pipes
// as the engine's path is now; spliced past a counting StreamWrapper),
// alternated over rounds so that a host busy with other work slows all
// alike; the best of each counts.
func TestEngineThroughput(t *testing.T) {
	const size = 256 << 20
	calls := &invocationLog{}
	p := newRealPairOpts(t, 1<<30, zfsreal.Options{Observe: calls.add})
	ctx := context.Background()
	require.NoError(t, p.h.WriteData(ctx, p.src, 42, size))
	require.NoError(t, p.z.Snapshot(ctx, p.src, "big"))
	big := p.versions(p.src)[0]
	// The receiving side is a second pool, as between two hosts. It holds
	// three copies at a time (the plain pipe's, the engine's, one stream
	// variant's), and a pool keeps some room to itself.
	second := zfsrealtest.NewPool(t, 3<<29)
	p.dstH = zfsrealtest.NewHarness(t, second, p.z)
	p.dst = zfs.MustDatasetPath(second.Name + "/sink")
	require.NoError(t, p.dstH.CreateFilesystem(ctx, p.dst, false))
	p.receiver = &endpoint.Receiver{ZFS: p.z, Job: p.job, Root: p.dst}

	direct := func(z *zfsreal.CLI, wrap func(io.Reader) io.Reader) func(dst string) time.Duration {
		return func(dst string) time.Duration {
			start := time.Now()
			r, err := z.Send(ctx, zfs.SendArgs{FS: p.src, To: big})
			require.NoError(t, err)
			defer r.Close()
			require.NoError(t, z.Receive(ctx, zfs.MustDatasetPath(dst), wrap(r), zfs.RecvOptions{Resumable: true}))
			require.NoError(t, r.Close())
			d := time.Since(start)
			got, err := z.ListVersions(ctx, zfs.MustDatasetPath(dst))
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.Equal(t, big.GUID, got[0].GUID, "GUID of %s@%s", dst, got[0].Name)
			return d
		}
	}
	hide := func(r io.Reader) io.Reader { return struct{ io.Reader }{r} }
	var counted atomic.Int64
	count := func(r io.Reader) io.Reader { counted.Store(0); return &progressWrapper{r: r, n: &counted} }
	variants := []struct {
		name string
		run  func(dst string) time.Duration
	}{
		// Baseline: the kernel pipes zfs send straight into zfs recv.
		{"plain zfs send | zfs recv", func(dst string) time.Duration { return plainPipe(t, dst, p.src.String()+"@big") }},
		{"zfsreal copied through Go, 64 KiB pipes (before)", direct(zfsreal.New(zfsreal.Options{PipeSize: -1}), hide)},
		{"zfsreal copied through Go, 1 MiB pipes (the engine's path)", direct(p.z, hide)},
		{"zfsreal spliced past a counting StreamWrapper", direct(p.z, count)},
	}
	plain := second.Name + "/plain"
	best := make([]time.Duration, len(variants))
	const rounds = 2
	for round := range rounds {
		for i, v := range variants {
			dst := fmt.Sprintf("%s/stream-%d", second.Name, i)
			last := round == rounds-1 && i == 0
			if last {
				dst = plain // kept: the tiny incremental's base
			}
			d := v.run(dst)
			if !last {
				Run(t, "zfs", "destroy", "-r", dst)
			}
			if round == 0 || d < best[i] {
				best[i] = d
			}
			t.Logf("stream round %d: %s %.2fs", round, v.name, d.Seconds())
		}
	}
	require.Positive(t, counted.Load(), "the counting wrapper was told what passed")
	plainFull := best[0]

	timed := func(what string) (time.Duration, []zfsreal.Invocation) {
		calls.take()
		start := time.Now()
		rep := p.run(replication.Config{Policy: planner.Policy{}}, nil)
		d := time.Since(start)
		require.NoError(t, rep.Err(), what)
		inv := calls.take()
		t.Logf("engine run, %s: %.2fs, %d zfs invocations:\n%s", what, d.Seconds(), len(inv), formatInvocations(inv))
		return d, inv
	}
	engineFull, invFull := timed("full send of 256 MiB")
	p.assertReplicated(p.src, "big")
	engineNoop, invNoop := timed("up to date")

	require.NoError(t, p.h.WriteData(ctx, p.src, 43, 64<<10))
	require.NoError(t, p.z.Snapshot(ctx, p.src, "tiny"))
	plainTiny := plainPipe(t, plain, "-i", p.src.String()+"@big", p.src.String()+"@tiny")
	engineTiny, invTiny := timed("tiny incremental")
	p.assertReplicated(p.src, "big", "tiny")

	mib := float64(size) / (1 << 20)
	rate := func(d time.Duration) float64 { return mib / d.Seconds() }
	for i, v := range variants {
		t.Logf("stream alone, best of %d: %s %.1f MiB/s (%.2fs), plain/this = %.2f",
			rounds, v.name, rate(best[i]), best[i].Seconds(), plainFull.Seconds()/best[i].Seconds())
	}
	// Net of the fixed cost: the full run less its one-shot invocations
	// (they run one after the other; those between the send's start and
	// the receive's overlap the send, so this errs towards the stream).
	fixedFull := nonStream(invFull)
	engineNet := engineFull - fixedFull
	var recvLife time.Duration
	for _, inv := range invFull {
		if isStream(inv) && inv.Args[0] == "recv" {
			recvLife = inv.Duration
		}
	}
	t.Logf("whole run: engine %.1f MiB/s (%.2fs), plain zfs send | zfs recv %.1f MiB/s (%.2fs), engine/plain = %.2f",
		rate(engineFull), engineFull.Seconds(), rate(plainFull), plainFull.Seconds(), plainFull.Seconds()/engineFull.Seconds())
	t.Logf("fixed per-run cost: up to date %.2fs (%d zfs calls), tiny incremental %.2fs (%d zfs calls; plain pipe %.2fs); "+
		"the full run's %d one-shot zfs calls took %.2fs",
		engineNoop.Seconds(), len(invNoop), engineTiny.Seconds(), len(invTiny), plainTiny.Seconds(),
		len(invFull)-2, fixedFull.Seconds())
	t.Logf("engine stream net of fixed cost (full run - its one-shot calls): %.1f MiB/s (%.2fs), plain %.1f MiB/s, engine/plain = %.2f; "+
		"zfs recv's lifetime in the full run %.2fs",
		rate(engineNet), engineNet.Seconds(), rate(plainFull), plainFull.Seconds()/engineNet.Seconds(), recvLife.Seconds())
	fmt.Printf("PLATFORMTEST-THROUGHPUT whole-run: engine=%.1fMiB/s plain=%.1fMiB/s ratio=%.2f; "+
		"engine-stream-net-of-fixed-cost: %.1fMiB/s ratio=%.2f; fixed: noop=%.2fs tiny=%.2fs calls=%d; "+
		"stream-alone MiB/s: plain=%.1f copy64K=%.1f copy1M=%.1f splice=%.1f\n",
		rate(engineFull), rate(plainFull), plainFull.Seconds()/engineFull.Seconds(),
		rate(engineNet), plainFull.Seconds()/engineNet.Seconds(),
		engineNoop.Seconds(), engineTiny.Seconds(), len(invTiny),
		rate(best[0]), rate(best[1]), rate(best[2]), rate(best[3]))
}

// progressWrapper counts what passes like the engine's progress counter,
// and lets zfsreal splice past it (zfsreal.StreamWrapper).
type progressWrapper struct {
	r io.Reader
	n *atomic.Int64
}

var _ zfsreal.StreamWrapper = (*progressWrapper)(nil)

func (w *progressWrapper) Read(b []byte) (int, error) {
	n, err := w.r.Read(b)
	w.n.Add(int64(n))
	return n, err
}
func (w *progressWrapper) Unwrap() io.Reader { return w.r }
func (w *progressWrapper) Passed(n int64)    { w.n.Add(n) }
