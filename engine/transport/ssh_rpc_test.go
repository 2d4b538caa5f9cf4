package transport_test

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
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/twohost"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

// A pull over the ssh transport whose ssh process dies half way through
// the data stream (status 255, "Broken pipe" on stderr): the attempt fails
// with a temporary error that names ssh's exit status and complaint, and
// the next attempt resumes the receive instead of starting over.
func TestPullOverSSHWhoseProcessDies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mp, err := modelpair.New(modelpair.Options{})
		require.NoError(t, err)
		src, dst, job, sender := mp.Src, mp.Dst, mp.Job, mp.Sender
		data := modelpair.Data
		require.NoError(t, src.CreateFilesystem(data, zfsmodel.FSOptions{}))
		require.NoError(t, src.WriteData(data, 1, 64))
		require.NoError(t, src.Snapshot(ctx, data, "s1"))
		vs, err := src.ListVersions(ctx, data)
		require.NoError(t, err)
		full, err := src.SendSize(ctx, zfs.SendArgs{FS: data, To: vs[0]})
		require.NoError(t, err)

		w, err := twohost.New(1, netsim.Link{Latency: 10 * time.Millisecond, Bandwidth: 1 << 20}, "source", "laptop", 22)
		require.NoError(t, err)
		l, err := w.Listen("puller")
		require.NoError(t, err)
		srv, err := rpc.NewServer(rpc.ServerConfig{Sender: rpc.Source(sender)})
		require.NoError(t, err)
		defer twohost.Serve(srv, l).Stop()

		const complaint = "client_loop: send disconnect: Broken pipe"
		sp := w.SSH(func(i int) netsim.ProcessScript {
			// Process 0 carries the control connection, 1 the first data
			// connection: it dies when half the stream came down.
			if i == 1 {
				return netsim.ProcessScript{Exit: netsim.ExitAfterStdout, StdoutBytes: full / 2, Status: 255, Stderr: complaint + "\r\n"}
			}
			return netsim.ProcessScript{}
		})
		c, err := rpc.NewClient(rpc.ClientConfig{Dial: sp.Dialer()})
		require.NoError(t, err)
		defer c.Close()

		rec := &recordingReceiver{Receiver: &endpoint.Receiver{ZFS: dst, Job: job, Root: zfs.MustDatasetPath("dst/pulled")}}
		run := replication.NewRun(c.Sender(), rec, replication.Config{Sleep: func(context.Context, time.Duration) error { return nil }})
		rep := run.Do(ctx)
		require.NoError(t, rep.Err(), "report: %+v", rep)
		assert.Equal(t, 2, rep.Attempts, "the attempt whose ssh died and the resumed one")

		errs := rec.errors()
		require.Len(t, errs, 2)
		assert.ErrorContains(t, errs[0], "ssh exited with status 255: "+complaint)
		assert.ErrorIs(t, errs[0], rpc.ErrTruncated, "a cut stream, which the driver retries")
		assert.NoError(t, errs[1])
		t.Logf("the first attempt failed with: %v", errs[0])
		var ne *netsim.ExitError
		require.ErrorAs(t, sp.Proc(1).Wait(), &ne)
		assert.Equal(t, 255, ne.ExitCode())

		steps := run.Progress().Steps
		require.Len(t, steps, 1)
		assert.Less(t, steps[0].Done, full-full/2+full/10, "the second attempt resumed rather than resent")
		got, err := dst.ListVersions(ctx, zfs.MustDatasetPath("dst/pulled/src/data"))
		require.NoError(t, err)
		require.Len(t, got, 1)
		assert.Equal(t, vs[0].GUID, got[0].GUID)
		want, err := src.Checksum(vs[0].Ref(data))
		require.NoError(t, err)
		have, err := dst.Checksum(got[0].Ref(zfs.MustDatasetPath("dst/pulled/src/data")))
		require.NoError(t, err)
		assert.Equal(t, want, have)
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

func (r *recordingReceiver) errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}
