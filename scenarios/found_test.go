package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/zfsmodel"
)

// Engine issues this session's simulator found, as short scripted
// histories over the local endpoints. Each pins today's behaviour; when
// one fails, the issue is fixed: turn it into a test of the right
// behaviour and drop the simulator's exception its comment names.

// Found by the simulator (rapid seed 99, history 1315 of 3000; shrunk:
// snapshot, pull with the sender crashing mid full send, snapshot,
// snapshot, pull with a keepalive fault). An initial full receive,
// interrupted while newer snapshots appear, is finished and then
// continued; when the step after it was interrupted as well, later
// attempts called its partial state foreign for good. The planner now
// resumes it, and (as zrepl) continues one snapshot at a time after the
// resumed full receive, so the cut step is s1 -> s2 and s3 follows it.
func TestNewestOnlyStepResumes(t *testing.T) {
	p := newPairT(t)
	once := func() replication.Report {
		noSleep := func(context.Context, time.Duration) error { return nil }
		return replication.NewRun(p.sender, p.receiver, replication.Config{Sleep: noSleep, MaxAttempts: 1}).Do(context.Background())
	}
	p.snap(t, "s1", 1)
	require.NoError(t, p.src.CutNextSend(1000))
	require.Error(t, once().Err(), "the full send of s1 is cut")
	p.snap(t, "s2", 2)
	p.snap(t, "s3", 3)
	require.NoError(t, p.src.CutNextSend(1<<40)) // the resumed full send of s1 goes through
	require.NoError(t, p.src.CutNextSend(1000))  // s1 -> s2 is cut
	rep := once()
	require.Error(t, rep.Err(), "s1 completes, s1 -> s2 is cut")
	require.Equal(t, 1, rep.Filesystems[0].StepsDone)
	rep = p.run()
	require.NoError(t, rep.Err(), "the partial s1 -> s2 resumes")
	require.Equal(t, 2, rep.Filesystems[0].StepsDone, "s1 -> s2 resumed, then s2 -> s3")
	p.requireCompleted(t, "s3")
}

// Was known issue "encrypted placeholder stuck" (simulator: the plain job
// into an encrypted receiver root; seed 482895). A filesystem whose
// children replicate before it has a snapshot gets a placeholder on the
// receiver. Once the sender's filesystem has a snapshot, its full receive
// must replace the placeholder, which ZFS refuses for an encrypted
// filesystem. The receiver now honours recv.placeholder.encryption: off
// creates placeholders unencrypted (OpenZFS 2.1.11 allows that below an
// encrypted parent, and a forced full receive replaces them: platformtest
// conformance case PlaceholderEncryption); inherit keeps the old
// behaviour, whose conflict says how to make room; unspecified refuses to
// create placeholders below an encrypted parent at all.
func TestEncryptedReceiverPlaceholders(t *testing.T) {
	ctx := context.Background()
	child := zfs.MustDatasetPath("src/data/c")
	setup := func(t *testing.T, pe endpoint.PlaceholderEncryption) *pairT {
		p := newPairT(t)
		p.receiver.Placeholder = pe
		require.NoError(t, p.dst.CreateFilesystem(zfs.MustDatasetPath("dst/sink"), zfsmodel.FSOptions{Parents: true, Encrypted: true}))
		require.NoError(t, p.src.CreateFilesystem(child, zfsmodel.FSOptions{}))
		require.NoError(t, p.src.WriteData(child, 1, 2))
		require.NoError(t, p.src.Snapshot(ctx, child, "s1"))
		return p
	}
	info := func(t *testing.T, p *pairT, fs string) zfs.FilesystemInfo {
		t.Helper()
		i, err := p.dst.Info(zfs.MustDatasetPath(fs))
		require.NoError(t, err)
		return i
	}

	t.Run("off", func(t *testing.T) {
		p := setup(t, endpoint.PlaceholderOff)
		require.NoError(t, p.run().Err(), "the child replicates below a placeholder of src/data")
		for _, fs := range []string{"dst/sink/src", "dst/sink/src/data"} {
			i := info(t, p, fs)
			require.True(t, i.Placeholder && !i.Encrypted(), "%s: an unencrypted placeholder: %+v", fs, i)
		}
		// What off costs: a non-raw receive inherits its parent's
		// encryption, so what lands below an unencrypted placeholder is
		// stored unencrypted too.
		require.False(t, info(t, p, "dst/sink/src/data/c").Encrypted(), "the child below the unencrypted placeholder")

		p.snap(t, "s1", 1)
		require.NoError(t, p.src.Snapshot(ctx, child, "s2"))
		rep := p.run()
		require.NoError(t, rep.Err(), "src/data replaces its placeholder")
		require.Equal(t, replication.FSDone, rep.Filesystems[0].State)
		i := info(t, p, "dst/sink/src/data")
		require.False(t, i.Placeholder, "no longer a placeholder")
		require.False(t, i.Encrypted(), "a forced full receive keeps the placeholder's encryption: off")
		require.Equal(t, mustGUID(t, p.src, "src/data", "s1"), mustGUID(t, p.dst, "dst/sink/src/data", "s1"))
		require.Equal(t, []string{
			"last-received-hold dst/sink/src/data/c@s2", // the child goes on
			"last-received-hold dst/sink/src/data@s1",
		}, abstractionsT(t, p.dst, "dst/sink/src/data"))
		p.snap(t, "s2", 2)
		rep = p.run()
		require.NoError(t, rep.Err(), "and src/data replicates incrementally")
		require.Equal(t, 1, rep.Filesystems[0].StepsDone)
		require.Equal(t, mustGUID(t, p.src, "src/data", "s2"), mustGUID(t, p.dst, "dst/sink/src/data", "s2"))
	})

	t.Run("inherit", func(t *testing.T) {
		p := setup(t, endpoint.PlaceholderInherit)
		require.NoError(t, p.run().Err())
		i := info(t, p, "dst/sink/src/data")
		require.True(t, i.Placeholder && i.Encrypted(), "an encrypted placeholder")
		p.snap(t, "s1", 1)
		require.NoError(t, p.src.Snapshot(ctx, child, "s2"))
		var rep replication.Report
		for range 3 {
			rep = p.run()
		}
		require.Equal(t, replication.FSConflict, rep.Filesystems[0].State, "src/data cannot replace its encrypted placeholder")
		require.ErrorContains(t, rep.Filesystems[0].Err, "placeholder is encrypted")
		require.Equal(t, "src/data/c", rep.Filesystems[1].FS)
		require.NoError(t, rep.Filesystems[1].Err, "the child goes on below the placeholder")
	})

	t.Run("unspecified", func(t *testing.T) {
		p := setup(t, endpoint.PlaceholderUnspecified)
		rep := p.run()
		require.Equal(t, 1, rep.Attempts, "a refusal is permanent: no retry")
		var fr *replication.FSReport
		for i := range rep.Filesystems {
			if rep.Filesystems[i].FS == "src/data/c" {
				fr = &rep.Filesystems[i]
			}
		}
		require.NotNil(t, fr, "%+v", rep)
		require.Equal(t, replication.FSFailed, fr.State)
		require.True(t, fr.Permanent)
		require.ErrorIs(t, fr.Err, endpoint.ErrNotAllowed)
		require.ErrorContains(t, fr.Err, "placeholder dst/sink/src: its parent dst/sink is encrypted")
		require.ErrorContains(t, fr.Err, "recv.placeholder.encryption is unspecified")
		_, err := p.dst.Info(zfs.MustDatasetPath("dst/sink/src"))
		require.ErrorIs(t, err, zfs.ErrDatasetNotExist, "nothing was created")
	})
}

// Found by the simulator: the source refuses a send whose resume token
// encodes another step with an error that wraps its kind (then
// zfs.ErrResumeTokenCorrupt, now zfs.ErrResumeTokenMismatch) bare; zfs.KindOf found only a *zfs.Error, so rpc sent the error without
// its kind and the puller could not tell it (errors.Is) from any other
// failure: the driver's fallback for a stale token (send afresh) and its
// classification as permanent did not apply over the wire.
func TestRemoteRefusalKeepsKind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPairT(t)
		p.snap(t, "s1", 1)
		ctx := context.Background()
		vs, err := p.src.ListVersions(ctx, zfs.MustDatasetPath("src/data"))
		require.NoError(t, err)
		tok := resumetoken.Token{Object: 2, ToGUID: vs[0].GUID, ToName: "src/data@s1", RawOK: true, CompressOK: true}
		req := endpoint.SendRequest{FS: "src/data", To: vs[0], ResumeToken: tok.Encode()} // the token is raw, the request not

		_, localErr := p.sender.Send(ctx, req)
		require.ErrorIs(t, localErr, zfs.ErrResumeTokenMismatch, "locally the refusal has its kind")

		reg := transport.NewLocal()
		l, err := reg.Listen("source")
		require.NoError(t, err)
		srv, err := rpc.NewServer(rpc.ServerConfig{Sender: rpc.Source(p.sender)})
		require.NoError(t, err)
		served := make(chan struct{})
		go func() {
			defer close(served)
			_ = srv.Serve(l)
		}()
		defer func() {
			srv.Stop()
			<-served
		}()
		c, err := rpc.NewClient(rpc.ClientConfig{Dial: reg.Dialer("source", "puller")})
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Sender().Send(ctx, req)
		require.ErrorContains(t, err, "raw flag differs")
		require.ErrorIs(t, err, zfs.ErrResumeTokenMismatch, "over rpc the refusal keeps its kind")
	})
}

// Found by the simulator (rapid seed 7, history 2583 of 5000; shrunk:
// snapshot, then a pull whose first data connection's ssh exits with 255
// after 19 bytes of its stdout, i.e. right after the server's hello). The
// server dropped the parked data connection when its hello failed, and
// the call that claimed it failed with "bad request: no data connection
// with ticket 1": the error blamed the request, not ssh's exit, which the
// client's own end of the connection knows. Since the wire protocol is
// zrepl's there are no tickets: the request travels on its own data
// connection, whose handshake fails and names ssh's exit.
func TestDeadDataConnNamesSSH(t *testing.T) {
	scripted(t, func(rt *rapid.T) {
		w := newWorld(rt)
		fs := "src/data"
		must(rt, w.src.WriteData(zfs.MustDatasetPath(fs), 1, 2))
		must(rt, w.src.Snapshot(bg, zfs.MustDatasetPath(fs), "s1"))
		j := jobs[2]
		lk := w.connect(rt, j, 0, linkOpts{ssh: true, victim: 1,
			script: netsim.ProcessScript{Exit: netsim.ExitAfterStdout, StdoutBytes: 19, Status: 255, Stderr: "client_loop: send disconnect: Broken pipe\r\n"}})
		snd, rcv := w.endpoints(j, lk)
		rep := replication.NewRun(snd, rcv, replication.Config{MaxAttempts: 1, Now: w.clock}).Do(bg)
		status := lk.ssh.victimStatus()
		lk.close()
		if status != 255 {
			rt.Fatalf("the data connection's ssh process: status %d, want 255", status)
		}
		err := fsReport(rt, &rep, fs).Err
		if err == nil || errors.Is(err, rpc.ErrBadRequest) ||
			!strings.Contains(err.Error(), "ssh exited with status 255: client_loop: send disconnect: Broken pipe") {
			rt.Fatalf("the error should say the data connection was lost and name ssh's exit: %v", err)
		}
	})
}

// Found by the simulator (testdata/found/end-of-run-batch-hold-leak.fail:
// snapshot, pull, three snapshots, pull whose ssh dies during one
// filesystem's receive), against aad2456, which put a run's last-received
// holds off to its end (endpoint.Batch). A failed receive makes the
// receiver forget its listing; the next step of another filesystem then
// moved its hold at once, and the end of the run put back the hold of
// that filesystem's earlier step, on an older snapshot: two last-received
// holds after a completed run. Here src/data/a's first send is cut after
// src/data's first step; src/data completes and keeps one hold, on s4.
// One step and one size estimate at a time fix the order: src/data's
// first step, then src/data/a's (its estimate was asked while src/data's
// step ran, and src/data's next estimate waits for it), then the rest of
// src/data's. With 4 estimates at once 16 runs in 100 went otherwise.
func TestBatchedHoldAfterForgottenListing(t *testing.T) {
	ctx := context.Background()
	p := newPairT(t)
	child := zfs.MustDatasetPath("src/data/a")
	require.NoError(t, p.src.CreateFilesystem(child, zfsmodel.FSOptions{}))
	snap := func(name string, seed int64) {
		p.snap(t, name, seed)
		require.NoError(t, p.src.WriteData(child, seed, 4))
		require.NoError(t, p.src.Snapshot(ctx, child, name))
	}
	snap("s1", 1)
	require.NoError(t, p.run().Err())
	snap("s2", 2)
	snap("s3", 3)
	snap("s4", 4)
	require.NoError(t, p.src.CutNextSend(1<<40)) // src/data s1 -> s2
	require.NoError(t, p.src.CutNextSend(10))    // src/data/a s1 -> s2
	noSleep := func(context.Context, time.Duration) error { return nil }
	rep := replication.NewRun(p.sender, p.receiver, replication.Config{Sleep: noSleep, MaxAttempts: 1, Concurrency: 1, SizeEstimates: 1}).Do(ctx)
	states := map[string]replication.FSState{}
	for _, f := range rep.Filesystems {
		states[f.FS] = f.State
	}
	require.Equal(t, map[string]replication.FSState{"src/data": replication.FSDone, "src/data/a": replication.FSFailed}, states)
	assert.Equal(t, []string{
		"last-received-hold dst/sink/src/data/a@s1", // the failed filesystem's stays
		"last-received-hold dst/sink/src/data@s4",
	}, abstractionsT(t, p.dst, "dst/sink/src/data"), "receiver")
	var sender []string
	for _, a := range abstractionsT(t, p.src, "src/data") {
		if !strings.Contains(a, "src/data/a") {
			sender = append(sender, a)
		}
	}
	assert.Equal(t, []string{
		fmt.Sprintf("replication-cursor-v2 src/data#%s", endpoint.CursorBookmarkName(mustGUID(t, p.src, "src/data", "s4"), jobs[0].id)),
	}, sender, "sender, src/data")
}
