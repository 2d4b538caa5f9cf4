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
	t *testing.T
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
	RequireZFS(t)
	pool := zfsrealtest.NewPool(t, poolSize)
	z := zfsreal.New(zfsreal.Options{})
	h := zfsrealtest.NewHarness(t, pool, z)
	root := h.NewRoot(t)
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

// TestEngineThroughput replicates a few hundred MiB between two real
// pools through the engine and prints its speed next
// to a plain `zfs send | zfs recv` of the same data in the same run.
func TestEngineThroughput(t *testing.T) {
	const size = 256 << 20
	p := newRealPair(t, 1<<30)
	ctx := context.Background()
	require.NoError(t, p.h.WriteData(ctx, p.src, 42, size))
	require.NoError(t, p.z.Snapshot(ctx, p.src, "big"))
	// The receiving side is a second pool, as between two hosts.
	second := zfsrealtest.NewPool(t, 1<<30)
	p.dstH = zfsrealtest.NewHarness(t, second, p.z)
	p.dst = zfs.MustDatasetPath(second.Name + "/sink")
	require.NoError(t, p.dstH.CreateFilesystem(ctx, p.dst, false))
	p.receiver = &endpoint.Receiver{ZFS: p.z, Job: p.job, Root: p.dst}

	// Baseline: the kernel pipes zfs send straight into zfs recv.
	plain := zfs.MustDatasetPath(second.Name + "/plain")
	send := exec.Command("zfs", "send", p.src.String()+"@big")
	recv := exec.Command("zfs", "recv", "-u", plain.String())
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
	plainTime := time.Since(start)

	start = time.Now()
	rep := p.run(replication.Config{Policy: planner.Policy{}}, nil)
	engineTime := time.Since(start)
	require.NoError(t, rep.Err())
	p.assertReplicated(p.src, "big")

	mib := float64(size) / (1 << 20)
	t.Logf("throughput: engine %.1f MiB/s (%.2fs), plain zfs send | zfs recv %.1f MiB/s (%.2fs), engine/plain = %.2f",
		mib/engineTime.Seconds(), engineTime.Seconds(), mib/plainTime.Seconds(), plainTime.Seconds(), plainTime.Seconds()/engineTime.Seconds())
	fmt.Printf("PLATFORMTEST-THROUGHPUT engine=%.1fMiB/s plain=%.1fMiB/s ratio=%.2f\n",
		mib/engineTime.Seconds(), mib/plainTime.Seconds(), plainTime.Seconds()/engineTime.Seconds())
}
