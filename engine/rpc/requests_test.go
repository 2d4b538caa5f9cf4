package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

func snap(name string, guid uint64) zfs.FilesystemVersion {
	return zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: name, GUID: guid, CreateTXG: 1}
}

// sinkFor is a sink on h.dst shared by several clients on one local
// registry.
func sinkFor(t *testing.T, h *hosts) (*transport.Local, *Server) {
	srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	reg := transport.NewLocal()
	l, err := reg.Listen("sink")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return reg, srv
}

func TestBadReceiveRequests(t *testing.T) {
	ctx := context.Background()
	h := newHosts(t)
	reg, _ := sinkFor(t, h)
	r := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")}).Receiver()

	for _, fs := range []string{"a//b", "../bob/src", "/abs", "", "src/data@s1", "src/da\x00ta", "src/data\n"} {
		err := r.AbortPartialReceive(ctx, fs)
		require.Error(t, err, "abort %q", fs)
		assert.ErrorIs(t, err, zfs.ErrInvalidName, "abort %q", fs)
		if fs != "" {
			assert.ErrorContains(t, err, strconv.Quote(fs), "the error names the bad name")
		}

		err = r.Receive(ctx, endpoint.ReceiveRequest{FS: fs, To: snap("s1", 7), Full: true}, io.MultiReader())
		assert.ErrorIs(t, err, zfs.ErrInvalidName, "receive into %q", fs)
	}

	cases := map[string]struct {
		req  endpoint.ReceiveRequest
		kind error
		text string
	}{
		"bad snapshot name": {endpoint.ReceiveRequest{FS: "src/data", To: snap("s/1", 7), Full: true}, zfs.ErrInvalidName, "s/1"},
		"bookmark target": {endpoint.ReceiveRequest{FS: "src/data", To: zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: "b", GUID: 7}, Full: true},
			ErrBadRequest, "target #b is not a snapshot"},
		"no GUID":        {endpoint.ReceiveRequest{FS: "src/data", To: snap("s1", 0), Full: true}, ErrBadRequest, "no GUID"},
		"full with from": {endpoint.ReceiveRequest{FS: "src/data", From: &zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "s0", GUID: 3}, To: snap("s1", 7), Full: true}, ErrBadRequest, "contradicts"},
		"properties":     {endpoint.ReceiveRequest{FS: "src/data", To: snap("s1", 7), Full: true, SetProperties: map[string]string{"mountpoint": "/etc"}}, ErrBadRequest, "properties"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := r.Receive(ctx, c.req, io.MultiReader())
			require.Error(t, err)
			assert.ErrorIs(t, err, c.kind)
			assert.ErrorContains(t, err, c.text)
		})
	}
	// Nothing of that reached the pool.
	infos, err := h.dst.ListFilesystems(ctx, zfs.MustDatasetPath("dst/sinks"))
	require.NoError(t, err)
	assert.Len(t, infos, 1, "only the sink root exists")
}

// Each client sees and touches only <root_fs>/<identity>.
func TestClientsAreConfinedToTheirSubtree(t *testing.T) {
	ctx := context.Background()
	h := newHosts(t)
	h.create("src/data")
	h.writeSnap("src/data", 1, 4, "s1")
	reg, _ := sinkFor(t, h)
	alice := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")}).Receiver()
	bob := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "bob")}).Receiver()

	requireOK(t, run(h.sender, alice))
	h.assertReplicated("src/data", "dst/sinks/alice/src/data", "s1")

	fss, err := alice.ListFilesystems(ctx)
	require.NoError(t, err)
	var paths []string
	for _, f := range fss {
		paths = append(paths, f.Path)
	}
	assert.Equal(t, []string{"src", "src/data"}, paths, "alice's filesystems, named as the sender names them")

	fss, err = bob.ListFilesystems(ctx)
	require.NoError(t, err)
	assert.Empty(t, fss, "bob sees nothing of alice's")
	// Bob's abort of the same name concerns his own (absent) subtree.
	err = bob.AbortPartialReceive(ctx, "src/data")
	assert.ErrorIs(t, err, zfs.ErrDatasetNotExist)
	assert.ErrorContains(t, err, "dst/sinks/bob/src/data")

	// Bob pushes the same names: they land beside alice's.
	requireOK(t, run(h.sender, bob))
	h.assertReplicated("src/data", "dst/sinks/bob/src/data", "s1")
	h.assertReplicated("src/data", "dst/sinks/alice/src/data", "s1")
}

// A listener whose identity cannot name a subtree is refused at the hello.
func TestBadIdentityRefused(t *testing.T) {
	h := newHosts(t)
	srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(badIdentity{nl})
	}()
	defer func() {
		srv.Stop()
		<-done
	}()
	c := newClient(t, ClientConfig{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", nl.Addr().String())
	}})
	_, err = c.Receiver().ListFilesystems(context.Background())
	require.Error(t, err)
	assert.ErrorContains(t, err, `invalid client identity "../evil"`)
}

type badIdentity struct{ net.Listener }

func (b badIdentity) Accept() (*transport.AuthConn, error) {
	c, err := b.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &transport.AuthConn{Conn: c, Identity: "../evil"}, nil
}

func TestSenderRefusesFilesystemsOutsideItsFilter(t *testing.T) {
	ctx := context.Background()
	h := newHosts(t)
	h.create("src/data")
	h.create("src/other")
	h.writeSnap("src/other", 1, 2, "s1")
	s, _ := h.pull("pipe")
	req := endpoint.SendRequest{FS: "src/other", To: snap("s1", 7)}
	_, err := s.Send(ctx, req)
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	assert.ErrorContains(t, err, "src/other")
	_, err = s.SendSize(ctx, req)
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	err = s.StepCompleted(ctx, req, true)
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	fss, err := s.ListFilesystems(ctx)
	require.NoError(t, err)
	for _, f := range fss {
		assert.NotEqual(t, "src/other", f.Path)
	}
	_, err = s.Send(ctx, endpoint.SendRequest{FS: "src/data", To: zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: "b"}})
	assert.ErrorIs(t, err, ErrBadRequest)
}

// A server serves only the role it was given: zrepl's one service has
// both roles' calls, and a sink refuses a source's.
func TestUnservedRole(t *testing.T) {
	h := newHosts(t)
	reg, _ := sinkFor(t, h)
	c := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
	req := endpoint.SendRequest{FS: "src/data", To: snap("s1", 7)}
	_, err := c.Sender().Send(context.Background(), req)
	assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
	assert.ErrorContains(t, err, "this server is a sink and does not send")
	_, err = c.Sender().SendSize(context.Background(), req)
	assert.ErrorContains(t, err, "this server is a sink and does not send")
	_, err = NewServer(ServerConfig{})
	assert.Error(t, err)
	_, err = NewServer(ServerConfig{Sender: Source(&fakeSender{}), Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	assert.ErrorContains(t, err, "exactly one")
	_, err = NewClient(ClientConfig{})
	assert.Error(t, err)
}

// fakeSender's stream yields data until its context ends, and records
// how the server ended it.
type fakeSender struct {
	noPrune
	mu       sync.Mutex
	ctxErr   error
	closed   bool
	finished chan struct{}
}

func (f *fakeSender) ListFilesystems(context.Context) ([]endpoint.Filesystem, error) { return nil, nil }
func (f *fakeSender) SendSize(context.Context, endpoint.SendRequest) (int64, error)  { return 0, nil }
func (f *fakeSender) StepCompleted(context.Context, endpoint.SendRequest, bool) error {
	return nil
}

func (f *fakeSender) Send(ctx context.Context, _ endpoint.SendRequest) (io.ReadCloser, error) {
	return &endlessStream{ctx: ctx, f: f}, nil
}

type endlessStream struct {
	ctx context.Context
	f   *fakeSender
}

func (s *endlessStream) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	clear(p)
	return len(p), nil
}

func (s *endlessStream) Close() error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if !s.f.closed {
		s.f.closed = true
		// The call's context ends too, though maybe after the data
		// connection failed: wait for it, boundedly.
		select {
		case <-s.ctx.Done():
		case <-time.After(10 * time.Second):
		}
		s.f.ctxErr = s.ctx.Err()
		close(s.f.finished)
	}
	return nil
}

// Closing a remote send stream early, or cancelling its context, ends the
// send on the server.
func TestSendCancellationPropagates(t *testing.T) {
	for _, how := range []string{"close", "cancel"} {
		t.Run(how, func(t *testing.T) {
			f := &fakeSender{finished: make(chan struct{})}
			srv := newServer(t, ServerConfig{Sender: Source(f)})
			c := newClient(t, ClientConfig{Dial: serve(t, srv, "tcp", "puller")})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream, err := c.Sender().Send(ctx, endpoint.SendRequest{FS: "src/data", To: snap("s1", 7)})
			require.NoError(t, err)
			_, err = io.ReadFull(stream, make([]byte, 1<<20))
			require.NoError(t, err)
			if how == "close" {
				require.NoError(t, stream.Close())
			} else {
				cancel()
				_, err := io.Copy(io.Discard, stream)
				require.Error(t, err)
				assert.ErrorIs(t, err, context.Canceled)
				assert.ErrorIs(t, err, ErrTruncated)
				stream.Close()
			}
			select {
			case <-f.finished:
			case <-time.After(10 * time.Second):
				t.Fatal("the server's send stream was not closed")
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			assert.ErrorIs(t, f.ctxErr, context.Canceled, "the server's send context was cancelled")
		})
	}
}

// blockingReceiver reads its stream until it fails, and records the error
// and its context's.
type blockingReceiver struct {
	noPrune
	readErr error
	done    chan struct{}
}

func (b *blockingReceiver) ListFilesystems(context.Context) ([]endpoint.Filesystem, error) {
	return nil, nil
}
func (b *blockingReceiver) AbortPartialReceive(context.Context, string) error { return nil }
func (b *blockingReceiver) MoveLastReceivedHold(context.Context, string, zfs.FilesystemVersion) error {
	return nil
}
func (b *blockingReceiver) Receive(ctx context.Context, _ endpoint.ReceiveRequest, stream io.Reader) error {
	defer close(b.done)
	_, b.readErr = io.Copy(io.Discard, stream)
	return b.readErr
}

// ctxReader yields data until its context ends.
type ctxReader struct{ ctx context.Context }

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	clear(p)
	return len(p), nil
}

// Cancelling a remote receive ends it on the server, where the stream
// reads as failed, not as complete (the client closes the data
// connection: zrepl's protocol has no cancel message).
func TestReceiveCancellationPropagates(t *testing.T) {
	b := &blockingReceiver{done: make(chan struct{})}
	srv := newServer(t, ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return b, nil }})
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "tcp", "alice")})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- c.Receiver().Receive(ctx, endpoint.ReceiveRequest{FS: "src/data", To: snap("s1", 7), Full: true}, ctxReader{ctx})
	}()
	time.Sleep(50 * time.Millisecond) // let data flow; the outcome does not depend on it
	cancel()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Receive did not return after cancel")
	}
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server's receive did not end")
	}
	assert.Error(t, b.readErr, "the server read the cancelled stream as complete")
	assert.NotErrorIs(t, b.readErr, io.EOF)
	// Either way the stream failed: the data connection closed (truncated),
	// or the client's stream failed first and the client said so in a
	// trailer (its reader's "context canceled").
	var src *SourceError
	assert.True(t, errors.Is(b.readErr, ErrTruncated) || errors.As(b.readErr, &src),
		"the server's stream ends as truncated or with the client's error, not: %v (%T)", b.readErr, b.readErr)
}

// rawData opens a data connection of c's and completes its banners and
// label, but sends no request: what a client parking connections does.
func rawData(t *testing.T, c *Client) net.Conn {
	t.Helper()
	conn, err := c.cfg.Dial(context.Background())
	require.NoError(t, err)
	_, err = handshake(context.Background(), conn, ourBanner(), labelData, time.Second)
	require.NoError(t, err)
	return conn
}

// Issue 12.6, by construction: a request travels on its own data
// connection (no tickets to claim, guess or leak), a data connection that
// sends no request is closed after the handshake timeout, and an identity's
// parked connections beyond a bound close its oldest, never a request in
// progress. Parking connections cannot block the identity's replication.
func TestParkedDataConnectionsCannotBlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHosts(t)
		h.create("src/data")
		h.writeSnap("src/data", 1, 2, "s1")
		var mu sync.Mutex
		var refused []error
		srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks")), OnConnError: func(_ string, err error) {
			mu.Lock()
			refused = append(refused, err)
			mu.Unlock()
		}})
		reg := transport.NewLocal()
		l, err := reg.Listen("sink")
		require.NoError(t, err)
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(l)
		}()
		defer func() {
			srv.Stop()
			<-served
		}()
		alice := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
		var conns []net.Conn
		for range 3 * maxWaitingData {
			conns = append(conns, rawData(t, alice))
		}
		synctest.Wait()
		// The oldest beyond the bound are closed at once (which ones
		// exactly depends on the order the server saw them in). A client
		// sees its handshake done before the server does, so in a burst
		// the handshake bound may close some instead; either way exactly
		// all but maxWaitingData are closed: one the handshake bound
		// closed takes no waiting slot (which would close one more).
		closed := 0
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := io.Copy(io.Discard, c); err == nil {
				closed++ // io.Copy ended at EOF
			}
		}
		assert.Equal(t, 2*maxWaitingData, closed, "parked connections beyond the bound were closed")
		// alice's own replication goes on meanwhile.
		requireOK(t, run(h.sender, alice.Receiver()))
		h.assertReplicated("src/data", "dst/sinks/alice/src/data", "s1")
		// The rest are closed once the handshake timeout passes.
		time.Sleep(DefaultHandshakeTimeout + time.Second)
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			_, err := io.Copy(io.Discard, c)
			assert.NoError(t, err, "a silent data connection outlived the handshake timeout")
			c.Close()
		}
		mu.Lock()
		defer mu.Unlock()
		assert.NotEmpty(t, refused)
	})
}

// An identity's control connections beyond maxControlConns close its
// oldest; other identities are not affected.
func TestControlConnectionsPerIdentity(t *testing.T) {
	h := newHosts(t)
	reg, _ := sinkFor(t, h)
	ctx := context.Background()
	var clients []*Client
	for range maxControlConns + 4 {
		c := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
		_, err := c.Receiver().ListFilesystems(ctx)
		require.NoError(t, err)
		clients = append(clients, c)
	}
	bob := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "bob")})
	_, err := bob.Receiver().ListFilesystems(ctx)
	require.NoError(t, err, "the bound is per identity")
	// The newest still work on their first connection; the oldest were
	// closed and reconnect.
	last := clients[len(clients)-1]
	_, err = last.Receiver().ListFilesystems(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, last.controlDials())
	require.Eventually(t, func() bool {
		_, err := clients[0].Receiver().ListFilesystems(ctx)
		return err == nil && clients[0].controlDials() > 1
	}, 30*time.Second, 100*time.Millisecond, "the oldest connection was closed and its client redialled")
}

// bigSender lists many filesystems.
type bigSender struct {
	fakeSender
	n int
}

func (b *bigSender) ListFilesystems(context.Context) ([]endpoint.Filesystem, error) {
	out := make([]endpoint.Filesystem, b.n)
	for i := range out {
		p := zfs.MustDatasetPath(fmt.Sprintf("pool/some/rather/long/prefix/of/a/dataset/name/number-%06d", i))
		out[i] = endpoint.Filesystem{Path: p.String(), Info: zfs.FilesystemInfo{Path: p, GUID: uint64(i) + 1, KeyStatus: zfs.KeyStatusNone}}
		for j := range 3 {
			out[i].Versions = append(out[i].Versions, zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: fmt.Sprintf("zrepl_20260101_%06d", j), GUID: uint64(i*10 + j + 1), CreateTXG: uint64(j + 1)})
		}
	}
	return out, nil
}

// A listing larger than gRPC's default message limit (4 MiB) arrives.
func TestLargeListing(t *testing.T) {
	srv := newServer(t, ServerConfig{Sender: Source(&bigSender{n: 30000})})
	c := newClient(t, ClientConfig{Dial: serve(t, srv, "pipe", "puller")})
	fss, err := c.Sender().ListFilesystems(context.Background())
	require.NoError(t, err)
	require.Len(t, fss, 30000)
	assert.Equal(t, "pool/some/rather/long/prefix/of/a/dataset/name/number-029999", fss[29999].Path)
	assert.Len(t, fss[29999].Versions, 3)
	res := &pb.ListFilesystemRes{ZreplDevFullListing: true}
	for _, f := range fss {
		res.Filesystems = append(res.Filesystems, toPBFilesystem(f, true, true))
	}
	assert.Greater(t, proto.Size(res), 4<<20, "the listing exceeds 4 MiB")
}

// flakyListener fails its first Accepts with a temporary error.
type flakyListener struct {
	transport.Listener
	fails int
}

type temporaryErr struct{}

func (temporaryErr) Error() string   { return "too many open files" }
func (temporaryErr) Temporary() bool { return true }

func (f *flakyListener) Accept() (*transport.AuthConn, error) {
	if f.fails > 0 {
		f.fails--
		return nil, temporaryErr{}
	}
	return f.Listener.Accept()
}

// A temporary accept error does not end serving.
func TestServeSurvivesTemporaryAcceptErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var errs []error
		var mu sync.Mutex
		srv := newServer(t, ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return drainReceiver{}, nil }, OnConnError: func(_ string, err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}})
		reg := transport.NewLocal()
		l, err := reg.Listen("sink")
		require.NoError(t, err)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(&flakyListener{Listener: l, fails: 3}) }()
		c := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
		_, err = c.Receiver().ListFilesystems(context.Background())
		assert.NoError(t, err)
		srv.Stop()
		assert.ErrorIs(t, <-served, ErrServerStopped)
		mu.Lock()
		defer mu.Unlock()
		assert.Len(t, errs, 3)
		for _, e := range errs {
			assert.ErrorContains(t, e, "too many open files")
		}
	})
}
