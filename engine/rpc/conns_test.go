package rpc

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// slowLister's listings wait until release closes, for the first
// block listings; later ones answer at once.
type slowLister struct {
	drainReceiver
	block   int32
	calls   atomic.Int32
	started chan struct{}
	release chan struct{}
}

func (b *slowLister) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	if b.calls.Add(1) <= b.block {
		b.started <- struct{}{}
		select {
		case <-b.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, nil
}

// Issue 12.6: the control-connection cap never cuts a call in progress.
// A client's listing runs on its identity's oldest control connection
// while the same identity opens maxControlConns more: the cap closes idle
// connections, not the one carrying the call, which succeeds.
func TestControlCapSparesCallsInProgress(t *testing.T) {
	br := &slowLister{block: 1, started: make(chan struct{}, 1), release: make(chan struct{})}
	var mu sync.Mutex
	var notes []error
	srv := newServer(t, ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return br, nil }, OnConnError: func(_ string, err error) {
		mu.Lock()
		notes = append(notes, err)
		mu.Unlock()
	}})
	reg := transport.NewLocal()
	l, err := reg.Listen("sink")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	defer func() {
		srv.Stop()
		<-done
	}()
	ctx := context.Background()
	busy := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
	busyErr := make(chan error, 1)
	go func() {
		_, err := busy.Receiver().ListFilesystems(ctx)
		busyErr <- err
	}()
	<-br.started
	for range maxControlConns + 8 {
		c := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
		_, err := c.Receiver().ListFilesystems(ctx)
		require.NoError(t, err)
	}
	close(br.release)
	select {
	case err := <-busyErr:
		assert.NoError(t, err, "the call in progress on the oldest connection was cut by the cap")
	case <-time.After(30 * time.Second):
		t.Fatal("the call in progress did not end")
	}
	assert.Equal(t, 1, busy.controlDials(), "the busy connection stayed")
	mu.Lock()
	defer mu.Unlock()
	assert.NotEmpty(t, notes, "closing idle connections for the cap is noted")
	for _, n := range notes {
		assert.ErrorIs(t, n, ErrTooManyConns)
	}
}

// When every control connection of an identity carries a call, a new one
// beyond the cap is refused, and the calls go on.
func TestControlCapRefusesWhenAllBusy(t *testing.T) {
	br := &slowLister{block: maxControlConns, started: make(chan struct{}, maxControlConns), release: make(chan struct{})}
	srv := newServer(t, ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return br, nil }})
	reg := transport.NewLocal()
	l, err := reg.Listen("sink")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	defer func() {
		srv.Stop()
		<-done
	}()
	ctx := context.Background()
	errs := make(chan error, maxControlConns)
	for range maxControlConns {
		c := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
		go func() {
			_, err := c.Receiver().ListFilesystems(ctx)
			errs <- err
		}()
		<-br.started
	}
	extra := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = extra.Receiver().ListFilesystems(cctx)
	cancel()
	assert.Error(t, err, "a connection beyond the cap while all carry calls")
	close(br.release)
	for range maxControlConns {
		assert.NoError(t, <-errs)
	}
}

// silentConns opens n connections of identity that send nothing.
func silentConns(t *testing.T, reg *transport.Local, identity string, n int) []net.Conn {
	var out []net.Conn
	for range n {
		c, err := reg.Dialer("sink", identity)(context.Background())
		require.NoError(t, err)
		out = append(out, c)
	}
	return out
}

// countClosed says how many of cs the server closed (a read ends at EOF
// within a millisecond).
func countClosed(cs []net.Conn) int {
	n := 0
	for _, c := range cs {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			n++
		}
	}
	return n
}

// Half-open and slowloris connections: an identity's connections in their
// banners beyond maxHandshaking close its oldest at once, and its real
// client is served meanwhile; a connection that sends its banner a byte
// a second is cut at the handshake timeout (the deadline bounds the whole
// banner, not each read).
func TestHandshakeFloodAndSlowloris(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t, ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return drainReceiver{}, nil }})
		reg := transport.NewLocal()
		l, err := reg.Listen("sink")
		require.NoError(t, err)
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.Serve(l)
		}()
		defer func() {
			srv.Stop()
			<-done
		}()
		start := time.Now()
		slow, err := reg.Dialer("sink", "carol")(context.Background())
		require.NoError(t, err)
		enc, err := ourBanner().encode()
		require.NoError(t, err)
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range enc {
				if _, err := slow.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
		silent := silentConns(t, reg, "alice", 3*maxHandshaking)
		synctest.Wait()
		assert.Equal(t, 2*maxHandshaking, countClosed(silent), "handshaking connections beyond the bound were closed at once")
		c := newClient(t, ClientConfig{Dial: reg.Dialer("sink", "alice")})
		_, err = c.Receiver().ListFilesystems(context.Background())
		require.NoError(t, err, "alice's real client is served")
		bob := silentConns(t, reg, "bob", 1)
		synctest.Wait()
		assert.Zero(t, countClosed(bob), "the bound is per identity")

		slow.SetReadDeadline(time.Now().Add(DefaultHandshakeTimeout + time.Second))
		_, err = io.Copy(io.Discard, slow)
		assert.NoError(t, err, "the slow banner was cut")
		assert.Equal(t, DefaultHandshakeTimeout, time.Since(start).Truncate(time.Second), "at the handshake timeout")
		slow.Close()
		for _, c := range append(silent, bob...) {
			c.Close()
		}
	})
}

// slowStartListener delays the first read of each accepted connection:
// a loaded server whose goroutines run late.
type slowStartListener struct {
	transport.Listener
	delay time.Duration
}

func (l slowStartListener) Accept() (*transport.AuthConn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &transport.AuthConn{Conn: &slowStartConn{Conn: c.Conn, delay: l.delay}, Identity: c.Identity}, nil
}

type slowStartConn struct {
	net.Conn
	delay time.Duration
	once  sync.Once
}

func (c *slowStartConn) Read(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.Conn.Read(p)
}

// A push whose data connection is cut before the server even read its
// request (the server ran late): the client's next listing must see the
// partial state the server's receive leaves once it ran, not list before
// it (TestNetworkCutIsTruncated/tcp/push failed so under load).
func TestCutBeforeTheServerReadTheRequest(t *testing.T) {
	ctx := context.Background()
	h := newHosts(t)
	h.create("src/data")
	h.writeSnap("src/data", 1, 64, "s1")
	full := fullSize(t, h, "src/data")
	srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	fl, err := transport.Fixed(nl, "alice")
	require.NoError(t, err)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(slowStartListener{Listener: fl, delay: 300 * time.Millisecond})
	}()
	defer func() {
		srv.Stop()
		<-served
	}()
	addr := nl.Addr().String()
	cd := &cutDialer{limit: full / 3, dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	r := newClient(t, ClientConfig{Dial: cd.Dial}).Receiver()
	fss, err := h.sender.ListFilesystems(ctx)
	require.NoError(t, err)
	_, err = r.ListFilesystems(ctx) // the control connection stays whole
	require.NoError(t, err)
	versions := fss[0].Versions
	req := endpoint.SendRequest{FS: "src/data", To: versions[len(versions)-1]}
	stream, err := h.sender.Send(ctx, req)
	require.NoError(t, err)
	cd.armed.Store(true)
	err = r.Receive(ctx, endpoint.ReceiveRequest{FS: "src/data", To: req.To, Full: true}, stream)
	cd.armed.Store(false)
	stream.Close()
	require.Error(t, err)
	_, err = r.ListFilesystems(ctx)
	require.NoError(t, err)
	info, err := h.dst.Info(zfs.MustDatasetPath("dst/sinks/alice/src/data"))
	require.NoError(t, err, "partial receive state exists when the client lists")
	assert.NotEmpty(t, info.ReceiveResumeToken)
}
