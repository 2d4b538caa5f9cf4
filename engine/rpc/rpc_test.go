package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/grpclog"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

func TestMain(m *testing.M) {
	// Re-executed as ssh plus the forced stdinserver command (ssh_test.go).
	if socket := os.Getenv("ZREPL_TEST_STDINSERVER_SOCKET"); socket != "" {
		if err := transport.StdinServer(context.Background(), socket, os.Getenv("ZREPL_TEST_STDINSERVER_IDENTITY"), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// gRPC logs the GOAWAYs that the keepalive test provokes on purpose.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
	goleak.VerifyTestMain(m)
}

// serve runs srv on an in-memory ("pipe") or loopback TCP ("tcp")
// listener whose clients are identity, until the test ends.
func serve(t testing.TB, srv *Server, kind, identity string) transport.Dialer {
	t.Helper()
	var l transport.Listener
	var dial transport.Dialer
	switch kind {
	case "pipe":
		reg := transport.NewLocal()
		ll, err := reg.Listen("server")
		require.NoError(t, err)
		l, dial = ll, reg.Dialer("server", identity)
	case "tcp":
		nl, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		l, err = transport.Fixed(nl, identity)
		require.NoError(t, err)
		addr := nl.Addr().String()
		dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	default:
		t.Fatalf("unknown listener kind %q", kind)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return dial
}

func newClient(t testing.TB, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func newServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	s, err := NewServer(cfg)
	require.NoError(t, err)
	return s
}

// hosts are a sender and a receiver zfsmodel; the job sends src/data and
// below.
type hosts struct {
	t        *testing.T
	src, dst *zfsmodel.Model
	job      endpoint.JobID
	sender   *endpoint.Sender
}

func newHosts(t *testing.T) *hosts {
	mp, err := modelpair.New(modelpair.Options{})
	require.NoError(t, err)
	h := &hosts{t: t, src: mp.Src, dst: mp.Dst, job: mp.Job, sender: mp.Sender}
	// The sink's root_fs exists; each client's subtree below it is made on
	// first receive.
	require.NoError(t, h.dst.CreateFilesystem(zfs.MustDatasetPath("dst/sinks"), zfsmodel.FSOptions{}))
	return h
}

func (h *hosts) create(fs string) {
	require.NoError(h.t, h.src.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{Parents: true}))
}

func (h *hosts) writeSnap(fs string, seed int64, blocks int, snap string) {
	require.NoError(h.t, h.src.WriteData(zfs.MustDatasetPath(fs), seed, blocks))
	require.NoError(h.t, h.src.Snapshot(context.Background(), zfs.MustDatasetPath(fs), snap))
}

// push: the driver runs beside the local sender and talks to a sink.
func (h *hosts) push(kind, identity string) (replication.Sender, replication.Receiver) {
	srv := newServer(h.t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	c := newClient(h.t, ClientConfig{Dial: serve(h.t, srv, kind, identity)})
	return h.sender, c.Receiver()
}

// pull: the driver runs beside the local receiver and talks to a source.
func (h *hosts) pull(kind string) (replication.Sender, replication.Receiver) {
	srv := newServer(h.t, ServerConfig{Sender: Source(h.sender)})
	c := newClient(h.t, ClientConfig{Dial: serve(h.t, srv, kind, "puller")})
	return c.Sender(), &endpoint.Receiver{ZFS: h.dst, Job: h.job, Root: zfs.MustDatasetPath("dst/pulled")}
}

func noSleep(context.Context, time.Duration) error { return nil }

func run(s replication.Sender, r replication.Receiver) replication.Report {
	return replication.NewRun(s, r, replication.Config{Sleep: noSleep}).Do(context.Background())
}

// assertReplicated compares the snapshots of dstFS with those of srcFS,
// by name, GUID and content.
func (h *hosts) assertReplicated(srcFS, dstFS string, snaps ...string) {
	t := h.t
	t.Helper()
	ctx := context.Background()
	got, err := h.dst.ListVersions(ctx, zfs.MustDatasetPath(dstFS))
	require.NoError(t, err)
	srcVersions, err := h.src.ListVersions(ctx, zfs.MustDatasetPath(srcFS))
	require.NoError(t, err)
	var names []string
	for _, v := range got {
		if v.Kind != zfs.Snapshot {
			continue
		}
		names = append(names, v.Name)
		i := slices.IndexFunc(srcVersions, func(s zfs.FilesystemVersion) bool { return s.Kind == zfs.Snapshot && s.Name == v.Name })
		require.GreaterOrEqual(t, i, 0, "snapshot %s not on the sender", v.Name)
		assert.Equal(t, srcVersions[i].GUID, v.GUID, "GUID of %s", v.Name)
		want, err := h.src.Checksum(srcVersions[i].Ref(zfs.MustDatasetPath(srcFS)))
		require.NoError(t, err)
		have, err := h.dst.Checksum(v.Ref(zfs.MustDatasetPath(dstFS)))
		require.NoError(t, err)
		assert.Equal(t, want, have, "content of %s@%s", dstFS, v.Name)
	}
	assert.Equal(t, snaps, names, "snapshots of %s", dstFS)
}

func requireOK(t *testing.T, rep replication.Report) {
	t.Helper()
	require.NoError(t, rep.Err(), "report: %+v", rep)
}

// The driver replicates over the protocol as it does in-process: full,
// incremental, then up to date; pushing to a sink and pulling from a
// source; over in-memory pipes and loopback TCP.
// direction connects the hosts for a push (to the sink as "alice") or a
// pull over kind, and names where src/data lands.
func (h *hosts) direction(kind, dir string) (replication.Sender, replication.Receiver, string) {
	if dir == "push" {
		s, r := h.push(kind, "alice")
		return s, r, "dst/sinks/alice/src/data"
	}
	s, r := h.pull(kind)
	return s, r, "dst/pulled/src/data"
}

func TestReplicateOverRPC(t *testing.T) {
	for _, kind := range []string{"pipe", "tcp"} {
		for _, dir := range []string{"push", "pull"} {
			t.Run(kind+"/"+dir, func(t *testing.T) {
				h := newHosts(t)
				s, r, dstFS := h.direction(kind, dir)
				h.create("src/data/child")
				h.writeSnap("src/data", 1, 8, "s1")
				h.writeSnap("src/data/child", 11, 8, "s1")
				rep := run(s, r)
				requireOK(t, rep)
				assert.Equal(t, 1, rep.Attempts)
				h.assertReplicated("src/data", dstFS, "s1")
				h.assertReplicated("src/data/child", dstFS+"/child", "s1")

				h.writeSnap("src/data", 2, 4, "s2")
				h.writeSnap("src/data", 3, 4, "s3")
				rep = run(s, r)
				requireOK(t, rep)
				assert.Equal(t, 2, rep.Filesystems[0].StepsDone, "two incremental steps")
				h.assertReplicated("src/data", dstFS, "s1", "s2", "s3")

				rep = run(s, r)
				requireOK(t, rep)
				assert.Equal(t, replication.FSUpToDate, rep.Filesystems[0].State)
			})
		}
	}
}

// A step whose receive committed but whose bookkeeping failed is finished
// by the next attempt, over the wire in both directions: the sender's job
// marks travel in its listing, the receiver's hold moves by its own call.
func TestReconcileOverRPC(t *testing.T) {
	busy := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "hold", Msg: "dataset is busy"}
	for _, dir := range []string{"push", "pull"} {
		t.Run(dir, func(t *testing.T) {
			h := newHosts(t)
			s, r, dstFS := h.direction("pipe", dir)
			h.create("src/data")
			h.writeSnap("src/data", 1, 8, "s1")
			requireOK(t, run(s, r))
			h.writeSnap("src/data", 2, 4, "s2")
			require.NoError(t, h.dst.FailNext("Hold", 1, busy))
			require.NoError(t, h.src.FailNext("Release", 1, busy))
			rep := run(s, r)
			requireOK(t, rep)
			assert.Equal(t, replication.FSUpToDate, rep.Filesystems[0].State)

			abs, err := endpoint.ListAbstractions(context.Background(), h.dst, []zfs.DatasetPath{zfs.MustDatasetPath(dstFS)}, endpoint.AbstractionFilter{})
			require.NoError(t, err)
			require.Len(t, abs, 1)
			assert.Equal(t, endpoint.LastReceivedHold, abs[0].Kind)
			assert.Equal(t, "s2", abs[0].Version.Name)
			abs, err = endpoint.ListAbstractions(context.Background(), h.src, []zfs.DatasetPath{zfs.MustDatasetPath("src/data")}, endpoint.AbstractionFilter{})
			require.NoError(t, err)
			require.Len(t, abs, 1, "%v", abs)
			assert.Equal(t, endpoint.ReplicationCursorV2, abs[0].Kind)
			vs, err := h.src.ListVersions(context.Background(), zfs.MustDatasetPath("src/data"))
			require.NoError(t, err)
			assert.Equal(t, vs[len(vs)-1].GUID, abs[0].GUID, "the cursor marks s2")
		})
	}
}

func fullSize(t *testing.T, h *hosts, fs string) int64 {
	vs, err := h.src.ListVersions(context.Background(), zfs.MustDatasetPath(fs))
	require.NoError(t, err)
	n, err := h.src.SendSize(context.Background(), zfs.SendArgs{FS: zfs.MustDatasetPath(fs), To: vs[len(vs)-1]})
	require.NoError(t, err)
	return n
}

// A send stream that fails at its source half way reaches the receiver as
// a truncated stream; the next attempt resumes it without sending again
// what arrived.
func TestResumeAfterSourceCut(t *testing.T) {
	for _, dir := range []string{"push", "pull"} {
		t.Run(dir, func(t *testing.T) {
			h := newHosts(t)
			s, r, dstFS := h.direction("pipe", dir)
			h.create("src/data")
			h.writeSnap("src/data", 1, 64, "s1")
			full := fullSize(t, h, "src/data")
			cut := full / 2
			require.NoError(t, h.src.CutNextSend(cut))
			run := replication.NewRun(s, r, replication.Config{Sleep: noSleep})
			rep := run.Do(context.Background())
			requireOK(t, rep)
			assert.Equal(t, 2, rep.Attempts, "first attempt cut, second resumed")
			steps := run.Progress().Steps
			require.Len(t, steps, 1)
			assert.Less(t, steps[0].Done, full-cut+full/10, "resumed attempt re-sent received bytes")
			h.assertReplicated("src/data", dstFS, "s1")
		})
	}
}

// cutDialer cuts the data connections it makes after limit bytes: in
// whichever direction the stream flows, the connection closes there.
type cutDialer struct {
	dial  transport.Dialer
	limit int64
	armed atomic.Bool
}

func (d *cutDialer) Dial(ctx context.Context) (net.Conn, error) {
	c, err := d.dial(ctx)
	if err != nil || !d.armed.Load() {
		return c, err
	}
	return &cutConn{Conn: c, left: d.limit + 2*int64(len(mustEncode(ourBanner()))) + labelLen}, nil
}

type cutConn struct {
	net.Conn
	mu   sync.Mutex
	left int64
}

func (c *cutConn) take(n int) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int64(n) >= c.left {
		n = int(max(c.left, 0))
		c.left = 0
		return n, true
	}
	c.left -= int64(n)
	return n, false
}

func (c *cutConn) Write(p []byte) (int, error) {
	n, cut := c.take(len(p))
	k, err := c.Conn.Write(p[:n])
	if cut {
		c.Conn.Close()
		return k, errors.New("cut by the test")
	}
	return k, err
}

func (c *cutConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	n, cut := c.take(k)
	if cut {
		c.Conn.Close()
		if n > 0 {
			return n, nil
		}
		return 0, errors.New("cut by the test")
	}
	return k, err
}

// A data connection cut by the network is seen as a truncated stream on
// the side that reads it, the receive keeps its partial state, and the
// next run resumes.
func TestNetworkCutIsTruncated(t *testing.T) {
	for _, kind := range []string{"pipe", "tcp"} {
		for _, dir := range []string{"push", "pull"} {
			t.Run(kind+"/"+dir, func(t *testing.T) {
				ctx := context.Background()
				h := newHosts(t)
				h.create("src/data")
				h.writeSnap("src/data", 1, 64, "s1")
				full := fullSize(t, h, "src/data")
				var s replication.Sender
				var r replication.Receiver
				var dstRoot string
				cd := &cutDialer{limit: full / 3}
				if dir == "push" {
					srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
					cd.dial = serve(t, srv, kind, "alice")
					s, r = h.sender, newClient(t, ClientConfig{Dial: cd.Dial}).Receiver()
					dstRoot = "dst/sinks/alice"
				} else {
					srv := newServer(t, ServerConfig{Sender: Source(h.sender)})
					cd.dial = serve(t, srv, kind, "puller")
					s = newClient(t, ClientConfig{Dial: cd.Dial}).Sender()
					r = &endpoint.Receiver{ZFS: h.dst, Job: h.job, Root: zfs.MustDatasetPath("dst/pulled")}
					dstRoot = "dst/pulled"
				}
				fss, err := s.ListFilesystems(ctx) // the control connection stays whole
				require.NoError(t, err)
				require.Len(t, fss, 1)
				versions := fss[0].Versions
				req := endpoint.SendRequest{FS: "src/data", To: versions[len(versions)-1]}

				cd.armed.Store(true)
				stream, err := s.Send(ctx, req)
				require.NoError(t, err)
				err = r.Receive(ctx, endpoint.ReceiveRequest{FS: "src/data", To: req.To, Full: true}, stream)
				stream.Close()
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrTruncated, "a cut stream is a truncated stream")
				cd.armed.Store(false)

				// The sink's receive ends on its own time: the client's
				// next listing waits for it.
				_, err = r.ListFilesystems(ctx)
				require.NoError(t, err)
				info, err := h.dst.Info(zfs.MustDatasetPath(dstRoot + "/src/data"))
				require.NoError(t, err, "partial receive state exists")
				assert.NotEmpty(t, info.ReceiveResumeToken)

				rep := run(s, r)
				requireOK(t, rep)
				h.assertReplicated("src/data", dstRoot+"/src/data", "s1")
			})
		}
	}
}

// Raw sends of an encrypted filesystem cross the wire as raw (the flag
// travels in the send request): the sink gets the data without the key.
func TestRawSendOverRPC(t *testing.T) {
	for _, dir := range []string{"push", "pull"} {
		t.Run(dir, func(t *testing.T) {
			h := newHosts(t)
			require.NoError(t, h.src.CreateFilesystem(zfs.MustDatasetPath("src/data"), zfsmodel.FSOptions{Parents: true, Encrypted: true}))
			h.writeSnap("src/data", 1, 4, "s1")
			var s replication.Sender
			var r replication.Receiver
			dstFS := "dst/pulled/src/data"
			if dir == "push" {
				s, r = h.push("pipe", "alice")
				dstFS = "dst/sinks/alice/src/data"
			} else {
				s, r = h.pull("pipe")
			}
			// The sender's own policy applies, also to a puller's sends.
			h.sender.Policy = zfs.SendPolicy{Encrypted: true}
			cfg := replication.Config{Sleep: noSleep}
			requireOK(t, replication.NewRun(s, r, cfg).Do(context.Background()))
			info, err := h.dst.Info(zfs.MustDatasetPath(dstFS))
			require.NoError(t, err)
			assert.True(t, info.Encrypted())
			assert.Equal(t, zfs.KeyStatusUnavailable, info.KeyStatus, "a raw receive does not bring the key")
			require.NoError(t, h.dst.LoadKey(zfs.MustDatasetPath(info.EncryptionRoot)))
			h.assertReplicated("src/data", dstFS, "s1")
		})
	}
}

func mustEncode(b banner) []byte {
	enc, err := b.encode()
	if err != nil {
		panic(err)
	}
	return enc
}
