package rpc

import (
	"context"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/twohost"
)

// A push over a simulated WAN (latency, limited bandwidth) whose data
// connection is reset half way: the attempt fails as a truncated stream,
// the next one resumes, and in virtual time the whole run costs about one
// transfer plus the retry's latency, not two transfers.
func TestPushOverSimulatedWANWithReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHosts(t)
		h.create("src/data")
		h.writeSnap("src/data", 1, 64, "s1")
		full := fullSize(t, h, "src/data")

		w, err := twohost.New(1, netsim.Link{Latency: 40 * time.Millisecond, Bandwidth: 1 << 20}, "sink", "laptop", 7000)
		require.NoError(t, err)
		l, err := w.Listen("alice")
		require.NoError(t, err)
		// Dial 1 is the control connection (the first listing), dial 2
		// the first data connection: reset it when half the stream went up.
		require.NoError(t, w.Net.Schedule(netsim.FaultPlan{Faults: []netsim.Fault{
			{Kind: netsim.FaultReset, Conn: 2, Dir: netsim.Up, AtByte: full / 2},
		}}))
		srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
		defer twohost.Serve(srv, l).Stop()
		c := newClient(t, ClientConfig{Dial: w.Dialer()})

		start := time.Now()
		rec := &recordingReceiver{Receiver: c.Receiver()}
		run := replication.NewRun(h.sender, rec, replication.Config{Sleep: noSleep})
		rep := run.Do(context.Background())
		took := time.Since(start)
		requireOK(t, rep)
		assert.Equal(t, 2, rep.Attempts, "the reset attempt and the resumed one")
		require.Len(t, rec.errs, 2)
		assert.ErrorIs(t, rec.errs[0], ErrTruncated, "the reset reads as a truncated stream on the sink")
		assert.NoError(t, rec.errs[1])
		h.assertReplicated("src/data", "dst/sinks/alice/src/data", "s1")
		oneTransfer := time.Duration(float64(full) / float64(1<<20) * float64(time.Second))
		assert.Less(t, took, oneTransfer*13/10, "resumed rather than resent (one transfer takes %v)", oneTransfer)
		assert.Greater(t, took, oneTransfer*9/10, "the bandwidth limit applied")
		t.Logf("full stream %d bytes, one transfer %v, run took %v of virtual time", full, oneTransfer, took)
	})
}

// recordingReceiver records the outcome of each Receive.
type recordingReceiver struct {
	replication.Receiver
	mu   sync.Mutex
	errs []error
}

func (r *recordingReceiver) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	err := r.Receiver.Receive(ctx, req, stream)
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	return err
}

// A data connection that goes half-open (both ends believe it alive,
// nothing arrives) fails after the peer timeout (no frame, not even a
// heartbeat, for 10 s) instead of hanging the step; the receive keeps its
// partial state.
func TestHalfOpenDataConnectionTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHosts(t)
		h.create("src/data")
		h.writeSnap("src/data", 1, 64, "s1")
		full := fullSize(t, h, "src/data")
		w, err := twohost.New(1, netsim.Link{Latency: 10 * time.Millisecond, Bandwidth: 4 << 20}, "sink", "laptop", 7000)
		require.NoError(t, err)
		l, err := w.Listen("alice")
		require.NoError(t, err)
		require.NoError(t, w.Net.Schedule(netsim.FaultPlan{Faults: []netsim.Fault{
			{Kind: netsim.FaultHalfOpen, Conn: 2, Dir: netsim.Up, AtByte: full / 3},
		}}))
		srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
		defer twohost.Serve(srv, l).Stop()
		c := newClient(t, ClientConfig{Dial: w.Dialer()})
		ctx := context.Background()
		r := c.Receiver()
		_, err = r.ListFilesystems(ctx) // dial 1: the control connection
		require.NoError(t, err)
		vs, err := h.src.ListVersions(ctx, zfs.MustDatasetPath("src/data"))
		require.NoError(t, err)
		stream, err := h.sender.Send(ctx, endpoint.SendRequest{FS: "src/data", To: vs[0]})
		require.NoError(t, err)
		defer stream.Close()
		start := time.Now()
		err = r.Receive(ctx, endpoint.ReceiveRequest{FS: "src/data", To: vs[0], Full: true}, stream)
		took := time.Since(start)
		require.Error(t, err)
		assert.ErrorContains(t, err, "for 10s")
		assert.Less(t, took, time.Minute)
		info, err := h.dst.Info(zfs.MustDatasetPath("dst/sinks/alice/src/data"))
		require.NoError(t, err)
		assert.NotEmpty(t, info.ReceiveResumeToken, "partial state kept for a resume")
	})
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

// Lowering the concurrency mid-run suspends running steps: over the wire,
// their receives are cancelled, the sink keeps partial state, and the steps
// resume later without sending again what arrived.
func TestResizeDownOverRPC(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHosts(t)
		fss := []string{"src/data/a", "src/data/b", "src/data/c"}
		for i, fs := range fss {
			h.create(fs)
			h.writeSnap(fs, int64(i), 64, "s1")
		}
		w, err := twohost.New(1, netsim.Link{Latency: 10 * time.Millisecond, Bandwidth: 1 << 20}, "sink", "laptop", 7000)
		require.NoError(t, err)
		l, err := w.Listen("alice")
		require.NoError(t, err)
		srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
		defer twohost.Serve(srv, l).Stop()
		c := newClient(t, ClientConfig{Dial: w.Dialer()})
		counting := &countingReceiver{Receiver: c.Receiver(), calls: map[string]int{}}
		run := replication.NewRun(h.sender, counting, replication.Config{Concurrency: 3, Sleep: noSleep})
		go func() {
			time.Sleep(3 * time.Second) // all three steps are sending by now
			assert.NoError(t, run.SetConcurrency(1))
		}()
		rep := run.Do(context.Background())
		requireOK(t, rep)
		for _, fs := range fss {
			h.assertReplicated(fs, "dst/sinks/alice/"+fs, "s1")
		}
		resumed := 0
		for _, k := range counting.calls {
			if k > 1 {
				resumed++
			}
		}
		assert.Equal(t, 2, resumed, "two steps were suspended and resumed: %v", counting.calls)
		for _, s := range run.Progress().Steps {
			assert.LessOrEqual(t, s.Done, s.Expected+s.Expected/20, "step %s re-sent received data", s.FS)
		}
	})
}
