package transport_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/sshproc"
	"zrepl.dev/zrepl/netsim/twohost"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

// countingSink counts, per Receive, the stream bytes the sink read.
type countingSink struct {
	rpc.ReceiverEndpoint
	mu    sync.Mutex
	reads []int64
}

func (s *countingSink) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	s.mu.Lock()
	i := len(s.reads)
	s.reads = append(s.reads, 0)
	s.mu.Unlock()
	return s.ReceiverEndpoint.Receive(ctx, req, readFunc(func(p []byte) (int, error) {
		n, err := stream.Read(p)
		s.mu.Lock()
		s.reads[i] += int64(n)
		s.mu.Unlock()
		return n, err
	}))
}

func (s *countingSink) read() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.reads...)
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// sshSink is the sink side of the ssh transport on a simulated network:
// host "sink" runs sshd on port 22, whose forced command is stdinserver
// for identity "laptop", and the zrepl daemon behind the stdinserver
// socket (port 1 of "sink", standing in for the unix socket), serving
// zfs below dst/sinks. Call inside a synctest bubble.
func sshSink(t *testing.T, n *netsim.Network, z zfs.ZFS, job endpoint.JobID) *countingSink {
	t.Helper()
	sock, err := n.Listen("sink", 1)
	require.NoError(t, err)
	sink := &countingSink{}
	srv, err := rpc.NewServer(rpc.ServerConfig{Receiver: func(identity string) (rpc.ReceiverEndpoint, error) {
		ep, err := rpc.Sink(z, job, zfs.MustDatasetPath("dst/sinks"))(identity)
		if err != nil {
			return nil, err
		}
		sink.mu.Lock()
		sink.ReceiverEndpoint = ep
		sink.mu.Unlock()
		return sink, nil
	}})
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(transport.StdinServerListenerOn(sock))
	}()
	sshd, err := n.Listen("sink", 22)
	require.NoError(t, err)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := sshd.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				dial := func(ctx context.Context) (net.Conn, error) { return n.Dial(ctx, "sink", "sink:1") }
				// The session's stdin and stdout are the connection.
				_ = transport.StdinServerVia(context.Background(), dial, "laptop", c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		sshd.Close()
		srv.Stop()
		wg.Wait()
	})
	return sink
}

// A push over ssh+stdinserver whose ssh process dies while the stream
// goes into its stdin: the run's error names ssh's exit status and what
// it said on stderr, it is temporary (the driver would retry), and the
// next run resumes the partial receive: it sends exactly the resumed
// stream, not what the sink already has.
func TestPushOverSSHWhoseProcessDies(t *testing.T) {
	var flood strings.Builder
	for i := 0; flood.Len() < 1<<20; i++ {
		fmt.Fprintf(&flood, "debug3: channel 0: rcvd adjust %d\n", i)
	}
	const complaint = "Connection to sink closed by remote host."
	flood.WriteString(complaint + "\r\n")
	for _, tc := range []struct {
		name    string
		status  int
		stderr  string
		wantMsg string // the end of the run's error
	}{
		{"status 255", 255, complaint + "\r\n", "ssh exited with status 255: " + complaint},
		{"status 0", 0, "", "ssh exited with status 0 before the connection was closed"},
		{"stderr flood", 255, flood.String(), "\n" + complaint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				testPushDies(t, tc.status, tc.stderr, tc.wantMsg)
			})
		})
	}
}

// pushEnv is a push from a laptop's src/data (one snapshot, s1) over
// ssh+stdinserver to a sink.
type pushEnv struct {
	src, dst *zfsmodel.Model
	data     zfs.DatasetPath
	vs       []zfs.FilesystemVersion
	full     int64
	sender   *endpoint.Sender
	sink     *countingSink
	sp       *sshproc.Starter
	client   *rpc.Client
}

// dataSSHDies scripts the ssh process of the first data connection (the
// second process; the first carries the control connection) to exit
// when half the stream went into its stdin.
func dataSSHDies(status int, stderr string) func(e *pushEnv, i int) netsim.ProcessScript {
	return func(e *pushEnv, i int) netsim.ProcessScript {
		if i == 1 {
			return netsim.ProcessScript{Exit: netsim.ExitAfterStdin, StdinBytes: e.full / 2, Status: status, Stderr: stderr}
		}
		return netsim.ProcessScript{}
	}
}

// newPushEnv sets up the push; the i-th ssh process (from 0) runs
// script(e, i).
func newPushEnv(t *testing.T, script func(e *pushEnv, i int) netsim.ProcessScript) *pushEnv {
	ctx := context.Background()
	mp, err := modelpair.New(modelpair.Options{})
	require.NoError(t, err)
	src, dst, job, sender := mp.Src, mp.Dst, mp.Job, mp.Sender
	require.NoError(t, dst.CreateFilesystem(zfs.MustDatasetPath("dst/sinks"), zfsmodel.FSOptions{}))
	data := modelpair.Data
	require.NoError(t, src.CreateFilesystem(data, zfsmodel.FSOptions{}))
	require.NoError(t, src.WriteData(data, 1, 64))
	require.NoError(t, src.Snapshot(ctx, data, "s1"))
	vs, err := src.ListVersions(ctx, data)
	require.NoError(t, err)
	full, err := src.SendSize(ctx, zfs.SendArgs{FS: data, To: vs[0]})
	require.NoError(t, err)

	w, err := twohost.New(1, netsim.Link{Latency: 10 * time.Millisecond, Bandwidth: 1 << 20}, "sink", "laptop", 22)
	require.NoError(t, err)
	// The stdinserver's socket is local: fast, but not instant, so that
	// goroutines of one instant leave no trace in the outcome.
	require.NoError(t, w.Net.SetLink("sink", "sink", netsim.Link{Latency: 50 * time.Microsecond}))
	sink := sshSink(t, w.Net, dst, job)

	e := &pushEnv{src: src, dst: dst, data: data, vs: vs, full: full, sender: sender, sink: sink}
	e.sp = w.SSH(func(i int) netsim.ProcessScript { return script(e, i) })
	e.client, err = rpc.NewClient(rpc.ClientConfig{Dial: transport.SSHHandshake(e.sp.Dialer())})
	require.NoError(t, err)
	t.Cleanup(func() { e.client.Close() })
	return e
}

func noSleep(context.Context, time.Duration) error { return nil }

func testPushDies(t *testing.T, status int, stderr, wantMsg string) {
	ctx := context.Background()
	e := newPushEnv(t, dataSSHDies(status, stderr))
	// One attempt only, so the run reports the failure instead of
	// retrying it away.
	rep := replication.NewRun(e.sender, e.client.Receiver(), replication.Config{MaxAttempts: 1, Sleep: noSleep}).Do(ctx)
	var fr replication.FSReport
	for _, f := range rep.Filesystems {
		if f.FS == e.data.String() {
			fr = f
		} else {
			assert.NoError(t, f.Err, f.FS)
		}
	}
	require.Error(t, fr.Err)
	t.Logf("the run failed with: %v", rep.Err())
	assert.False(t, fr.Permanent, "temporary: the driver retries")
	msg := rep.Err().Error()
	// The ssh error ends the message, or the parenthesis that adds it.
	assert.True(t, strings.HasSuffix(strings.TrimSuffix(msg, ")"), wantMsg), "%q does not end in %q", msg, wantMsg)
	assert.LessOrEqual(t, len(msg), transport.StderrInError+1500, "a flood of stderr stays out of the message")
	var xe *transport.ProcessExitError
	require.ErrorAs(t, fr.Err, &xe, "the ssh error stays inspectable")
	assert.Equal(t, status, xe.Status)
	assert.Equal(t, strings.TrimSpace(stderr[max(0, len(stderr)-transport.StderrLimit):]), xe.Stderr)
	assert.Equal(t, int64(max(0, len(stderr)-transport.StderrLimit)), xe.StderrDropped)
	assert.Equal(t, e.full/2, e.sp.Proc(1).Conn().Stats().Up.Written, "ssh took stdin up to the scripted byte")

	token := resumeToken(t, e.dst, pushedFS)
	require.NotEmpty(t, token, "the interrupted receive left resumable state")
	resumed, err := e.src.SendSize(ctx, zfs.SendArgs{FS: e.data, To: e.vs[0], ResumeToken: token})
	require.NoError(t, err)

	rep = replication.NewRun(e.sender, e.client.Receiver(), replication.Config{Sleep: noSleep}).Do(ctx)
	require.NoError(t, rep.Err(), "report: %+v", rep)
	assert.Equal(t, 1, rep.Attempts)

	full := e.full
	reads := e.sink.read()
	require.Len(t, reads, 2)
	t.Logf("full stream %d bytes; the sink read %d, then the resumed stream of %d", full, reads[0], reads[1])
	assert.Less(t, reads[0], full/2, "the first stream was cut")
	assert.Greater(t, reads[0], full/3)
	assert.Equal(t, resumed, reads[1], "the second run sent the resumed stream")
	// The sink keeps a record once the checksum in the next one verified
	// it: the record in flight and the one before it go again, and the
	// resumed stream has a header of its own.
	assert.LessOrEqual(t, reads[0]+reads[1], full+2*zfsmodel.BlockSize+1<<10,
		"nothing else the sink had was sent again")

	e.assertReplicated(t)
}

// pushedFS is where src/data lands on the sink.
var pushedFS = zfs.MustDatasetPath("dst/sinks/laptop/src/data")

// assertReplicated checks that the sink has s1 of src/data, all of it.
func (e *pushEnv) assertReplicated(t *testing.T) {
	t.Helper()
	got, err := e.dst.ListVersions(context.Background(), pushedFS)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, e.vs[0].GUID, got[0].GUID)
	want, err := e.src.Checksum(e.vs[0].Ref(e.data))
	require.NoError(t, err)
	have, err := e.dst.Checksum(got[0].Ref(pushedFS))
	require.NoError(t, err)
	assert.Equal(t, want, have)
}

// resumeToken returns fs's receive resume token, "" if it has none.
func resumeToken(t *testing.T, z zfs.ZFS, fs zfs.DatasetPath) string {
	t.Helper()
	infos, err := z.ListFilesystems(context.Background(), fs)
	require.NoError(t, err)
	for _, fi := range infos {
		if fi.Path == fs {
			return fi.ReceiveResumeToken
		}
	}
	t.Fatalf("no filesystem %s", fs)
	return ""
}

// Within one run, the driver retries the attempt whose ssh died, and the
// retry resumes.
func TestPushOverSSHWhoseProcessDiesRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPushEnv(t, dataSSHDies(255, "Connection to sink closed by remote host.\r\n"))
		rep := replication.NewRun(e.sender, e.client.Receiver(), replication.Config{Sleep: noSleep}).Do(context.Background())
		require.NoError(t, rep.Err(), "report: %+v", rep)
		assert.Equal(t, 2, rep.Attempts, "the attempt whose ssh died and the resumed one")
		reads := e.sink.read()
		require.Len(t, reads, 2)
		assert.Less(t, reads[1], e.full-e.full/3, "the retry resumed rather than resent")
		e.assertReplicated(t)
	})
}

// ssh refused at every connection (a key the sink does not accept): the
// run fails with ssh's complaint, not a bare "unavailable", and sends
// nothing.
func TestPushOverSSHAuthFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const denied = "laptop@sink: Permission denied (publickey)."
		e := newPushEnv(t, func(*pushEnv, int) netsim.ProcessScript {
			return netsim.ProcessScript{Exit: netsim.ExitBeforeStdout, Status: 255, Stderr: denied + "\r\n"}
		})
		rep := replication.NewRun(e.sender, e.client.Receiver(), replication.Config{MaxAttempts: 2, Sleep: noSleep}).Do(context.Background())
		err := rep.Err()
		require.Error(t, err)
		t.Logf("the run failed with: %v", err)
		assert.ErrorContains(t, err, "ssh exited with status 255: "+denied)
		assert.Empty(t, e.sink.read(), "no receive began")
	})
}

// The control connection's ssh ending between two runs (the laptop slept,
// the NAT forgot the connection): the next run dials a new one and
// replicates.
func TestPushOverSSHControlConnectionEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		e := newPushEnv(t, func(*pushEnv, int) netsim.ProcessScript { return netsim.ProcessScript{} })
		rep := replication.NewRun(e.sender, e.client.Receiver(), replication.Config{Sleep: noSleep}).Do(ctx)
		require.NoError(t, rep.Err())
		e.assertReplicated(t)

		control := e.sp.Proc(0)
		control.Conn().Reset()
		<-control.Exited()
		require.NoError(t, e.src.WriteData(e.data, 2, 4))
		require.NoError(t, e.src.Snapshot(ctx, e.data, "s2"))
		rep = replication.NewRun(e.sender, e.client.Receiver(), replication.Config{Sleep: noSleep}).Do(ctx)
		require.NoError(t, rep.Err(), "report: %+v", rep)
		t.Logf("the second run took %d attempt(s)", rep.Attempts)
		got, err := e.dst.ListVersions(ctx, pushedFS)
		require.NoError(t, err)
		require.Len(t, got, 2)
		assert.Equal(t, "s2", got[1].Name)
		procs := e.sp.Started()
		assert.GreaterOrEqual(t, procs, 4, "a new control connection and a data connection after the first two")
	})
}
