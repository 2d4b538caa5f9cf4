package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// SenderEndpoint is what a source serves: replication.Sender's methods,
// and pruning by the client under the sender's rules (endpoint.Pruner).
type SenderEndpoint interface {
	ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
	Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error)
	SendSize(ctx context.Context, req endpoint.SendRequest) (int64, error)
	StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error
	endpoint.Pruner
}

// ReceiverEndpoint is what a sink serves: replication.Receiver's methods,
// and pruning by the client under the receiver's rules (endpoint.Pruner).
type ReceiverEndpoint interface {
	ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
	Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error
	AbortPartialReceive(ctx context.Context, fs string) error
	MoveLastReceivedHold(ctx context.Context, fs string, to zfs.FilesystemVersion) error
	endpoint.Pruner
}

// versionLister is implemented by endpoints that list one filesystem's
// versions without listing all (a zrepl client asks per filesystem).
type versionLister interface {
	ListVersions(ctx context.Context, fs string) ([]zfs.FilesystemVersion, error)
}

// cursorReader is implemented by senders that can name their job's newest
// replication cursor (zrepl's pruner asks a source for it).
type cursorReader interface {
	ReplicationCursor(ctx context.Context, fs string) (*zfs.FilesystemVersion, error)
}

// Sink serves, to each client, an endpoint.Receiver confined to
// <root>/<identity>, with the zero SinkOptions.
func Sink(z zfs.ZFS, job endpoint.JobID, root zfs.DatasetPath) func(identity string) (ReceiverEndpoint, error) {
	return SinkWith(z, job, root, SinkOptions{})
}

// SinkOptions are a sink's settings that apply to every client's receiver.
type SinkOptions struct {
	// Placeholder is the sink's recv.placeholder.encryption (the zero
	// value inherits the parent's encryption).
	Placeholder endpoint.PlaceholderEncryption
}

// SinkWith is Sink with options.
//
// A client's receiver lives as long as the sink: it remembers the client's
// last listing for the steps that follow (endpoint.Receiver), which a
// receiver made anew for each call would not.
func SinkWith(z zfs.ZFS, job endpoint.JobID, root zfs.DatasetPath, o SinkOptions) func(identity string) (ReceiverEndpoint, error) {
	var mu sync.Mutex
	clients := map[string]*endpoint.Receiver{}
	return func(identity string) (ReceiverEndpoint, error) {
		if err := transport.ValidateIdentity(identity); err != nil {
			return nil, err
		}
		clientRoot, err := root.Child(identity)
		if err != nil {
			return nil, fmt.Errorf("root of client %q: %w", identity, err)
		}
		mu.Lock()
		defer mu.Unlock()
		r := clients[identity]
		if r == nil {
			r = &endpoint.Receiver{ZFS: z, Job: job, Root: clientRoot, Placeholder: o.Placeholder, ClientRoot: true}
			clients[identity] = r
		}
		return r, nil
	}
}

// Source serves the same sender to every client.
func Source(s SenderEndpoint) func(identity string) (SenderEndpoint, error) {
	return func(string) (SenderEndpoint, error) { return s, nil }
}

// ServerConfig configures a server. Exactly one of Sender and Receiver is
// set: zrepl's protocol has one service for both roles, so a server is a
// source or a sink.
type ServerConfig struct {
	// Sender returns the endpoint serving a client as a source.
	Sender func(identity string) (SenderEndpoint, error)
	// Receiver returns the endpoint serving a client as a sink.
	Receiver func(identity string) (ReceiverEndpoint, error)
	// HandshakeTimeout bounds a connection's banners and label, and a
	// data connection's wait for its request (default 10s).
	HandshakeTimeout time.Duration
	// OnConnError learns of connections refused before any call, such
	// as those of clients with another protocol version.
	OnConnError func(identity string, err error)
	// Log gets notes on peers (default: none).
	Log *slog.Logger

	// keepalive is serverKeepalive() unless a test sets another.
	keepalive *serverKeepaliveParams
	// banner is ourBanner() unless a test speaks another version or as a
	// zrepl peer (no extensions).
	banner *banner
}

// MaxMessage bounds a control message, i.e. a filesystem listing: some
// 100 bytes per version.
const MaxMessage = 256 << 20

const (
	// maxControlConns bounds an identity's control connections; a new
	// one beyond closes the identity's oldest that carries no call (a
	// client reconnecting after a cut outlives its half-open old one),
	// and is refused when all carry calls: the cap never cuts a call in
	// progress (issue 12.6). Some 110 KB each (gRPC's buffers).
	maxControlConns = 32
	// maxWaitingData bounds an identity's data connections that have not
	// sent their request yet; a new one beyond closes the oldest of them.
	// Connections whose request arrived are never closed for a cap.
	maxWaitingData = 32
	// maxHandshaking bounds an identity's connections in their banners
	// and label (each due within the handshake timeout); a new one beyond
	// closes the oldest of them: a flood of half-open or slow
	// connections costs at most this many per identity.
	maxHandshaking = 32
)

// ErrTooManyConns matches the notes on connections closed for an
// identity's caps.
var ErrTooManyConns = errors.New("too many connections")

// Server serves a source or a sink over transport listeners.
type Server struct {
	cfg   ServerConfig
	grpc  *grpc.Server
	ctrl  *chanListener
	start sync.Once
	ctx   context.Context
	stop  context.CancelFunc

	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]struct{} // in their handshake or serving data requests
	listeners map[transport.Listener]struct{}
	control   map[string][]*identConn // per identity, oldest first
	waiting   map[string][]*dataConn
	shaking   map[string][]net.Conn // per identity, in their handshake, oldest first
	// pending are, per identity, the connections that may still start a
	// receive: from accept until a data connection registered its
	// receive (or turned out to be no receive). A client asking for the
	// result of a receive whose data connection it lost waits for them:
	// the server may not have read that request yet.
	pending map[string]map[chan struct{}]struct{}
	recvs   map[recvKey]*recvInFlight
	wg      sync.WaitGroup
}

// recvKey names a client's receive of one filesystem.
type recvKey struct{ identity, fs string }

// recvInFlight is a receive the server is running; done closes when it
// returned, orphan when its data connection ended (the client has gone:
// its verdict can no longer reach the client).
type recvInFlight struct {
	done   chan struct{}
	orphan <-chan struct{}
	err    error // valid once done is closed
}

// NewServer prepares a server; Serve starts it, Stop ends it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if (cfg.Sender == nil) == (cfg.Receiver == nil) {
		return nil, errors.New("rpc server: serves exactly one of a sender (source) and a receiver (sink)")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.keepalive == nil {
		k := serverKeepalive()
		cfg.keepalive = &k
	}
	if cfg.banner == nil {
		b := ourBanner()
		cfg.banner = &b
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, ctrl: newChanListener(), ctx: ctx, stop: stop,
		conns: map[net.Conn]struct{}{}, listeners: map[transport.Listener]struct{}{},
		control: map[string][]*identConn{}, waiting: map[string][]*dataConn{}, shaking: map[string][]net.Conn{}, pending: map[string]map[chan struct{}]struct{}{}, recvs: map[recvKey]*recvInFlight{},
	}
	opts := []grpc.ServerOption{
		grpc.Creds(identityCreds{}),
		grpc.KeepaliveParams(cfg.keepalive.params),
		grpc.WaitForHandlers(true),
		grpc.MaxRecvMsgSize(MaxMessage),
		grpc.MaxSendMsgSize(MaxMessage),
		grpc.ChainUnaryInterceptor(countUnary),
		grpc.ChainStreamInterceptor(countStream),
	}
	if cfg.keepalive.enforcement != nil {
		opts = append(opts, grpc.KeepaliveEnforcementPolicy(*cfg.keepalive.enforcement))
	}
	s.grpc = grpc.NewServer(opts...)
	pb.RegisterReplicationServer(s.grpc, &replicationService{s: s})
	if cfg.Receiver != nil && s.speaks().receive {
		pb.RegisterZreplDevEndpointServer(s.grpc, &extService{s: s})
	}
	return s, nil
}

// speaks is the set of extensions the server announces.
func (s *Server) speaks() extSet { return negotiate(s.cfg.banner.extensions, ourExtensions) }

// ErrServerStopped is returned by Serve after Stop.
var ErrServerStopped = errors.New("rpc server stopped")

// Serve accepts connections from l until l fails or the server stops.
// Several listeners may be served at once.
func (s *Server) Serve(l transport.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerStopped
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	s.start.Do(func() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.grpc.Serve(s.ctrl)
		}()
	})
	var pause time.Duration
	for {
		c, err := l.Accept()
		if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
			// Running out of file descriptors and the like passes: pause
			// and go on serving rather than give up.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.connError("", fmt.Errorf("accept: %w (retrying in %v)", err, pause))
			select {
			case <-time.After(pause):
				continue
			case <-s.ctx.Done():
				return ErrServerStopped
			}
		}
		pause = 0
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			delete(s.listeners, l)
			s.mu.Unlock()
			if closed {
				return ErrServerStopped
			}
			return err
		}
		if !s.track(c.Conn) {
			c.Close()
			return ErrServerStopped
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

// track registers a connection that Stop must close; false after Stop.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// Stop closes the listeners and every connection, cancels the calls and
// waits for them to return.
func (s *Server) Stop() {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.stop()
	s.grpc.Stop()
	s.ctrl.Close()
	s.wg.Wait()
}

func (s *Server) connError(identity string, err error) {
	if s.cfg.OnConnError != nil {
		s.cfg.OnConnError(identity, err)
	}
}

// handle runs a connection's banners and label, then hands a control
// connection to gRPC or serves a data connection's request.
func (s *Server) handle(c *transport.AuthConn) {
	keep := false
	defer func() {
		if !keep {
			s.untrack(c.Conn)
			c.Close()
		}
	}()
	pend := s.addPending(c.Identity)
	defer pend()
	shaken := s.handshaking(c.Identity, c.Conn)
	theirs, err := handshake(s.ctx, c.Conn, *s.cfg.banner, "", s.cfg.HandshakeTimeout)
	if err != nil {
		shaken()
		s.connError(c.Identity, fmt.Errorf("refused client %q: %w", c.Identity, err))
		return
	}
	label, err := readLabel(c.Conn, s.cfg.HandshakeTimeout)
	if !shaken() {
		// The handshake bound closed it meanwhile (and said so): it
		// must not take a waiting slot, closing another, as well.
		return
	}
	if err != nil {
		s.connError(c.Identity, fmt.Errorf("handshake with %q: %w", c.Identity, err))
		return
	}
	// An identity that cannot name a subtree is refused by each call, so
	// that the client learns why (zrepl's protocol has no refusal at the
	// handshake).
	if err := transport.ValidateIdentity(c.Identity); err != nil {
		s.connError(c.Identity, fmt.Errorf("refused client: %w", err))
	}
	ext := negotiate(theirs.extensions, s.cfg.banner.extensions)
	switch label {
	case labelControl:
		pend()
		s.untrack(c.Conn)
		ic := &identConn{Conn: c.Conn, identity: c.Identity, ext: ext, s: s}
		if !s.addControl(ic) {
			return
		}
		keep = s.ctrl.push(ic)
		if !keep {
			s.removeControl(ic)
		}
	case labelData:
		keep = true
		defer s.untrack(c.Conn)
		s.serveData(newDataConn(c.Conn), c.Identity, ext, pend)
	default:
		s.connError(c.Identity, fmt.Errorf("refused client %q: %w: unknown connection label %q", c.Identity, ErrProtocol, truncateText(label, 64)))
	}
}

// addControl counts ic among its identity's control connections, closing
// the oldest idle one beyond the cap; false when every one carries a call
// (ic is then refused).
func (s *Server) addControl(ic *identConn) bool {
	s.mu.Lock()
	l := s.control[ic.identity]
	var evict *identConn
	if len(l) >= maxControlConns {
		i := slices.IndexFunc(l, func(c *identConn) bool { return c.calls.Load() == 0 })
		if i < 0 {
			s.mu.Unlock()
			s.connError(ic.identity, fmt.Errorf("%w: client %q has %d control connections, each with a call in progress: refused a new one", ErrTooManyConns, ic.identity, len(l)))
			return false
		}
		evict = l[i]
		l = slices.Delete(slices.Clone(l), i, i+1)
	}
	s.control[ic.identity] = append(l, ic)
	s.mu.Unlock()
	if evict != nil {
		s.connError(ic.identity, fmt.Errorf("%w: client %q has more than %d control connections: closed its oldest without a call in progress", ErrTooManyConns, ic.identity, maxControlConns))
		evict.Close()
	}
	return true
}

func (s *Server) removeControl(ic *identConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.control[ic.identity]
	for i, c := range l {
		if c == ic {
			l = append(l[:i:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(s.control, ic.identity)
	} else {
		s.control[ic.identity] = l
	}
}

// handshaking registers c as in its handshake and returns a func that
// unregisters it and reports whether c was still registered. Beyond
// maxHandshaking per identity the oldest is closed (and unregistered).
func (s *Server) handshaking(identity string, c net.Conn) (done func() bool) {
	s.mu.Lock()
	l := append(s.shaking[identity], c)
	var evict net.Conn
	if len(l) > maxHandshaking {
		evict, l = l[0], l[1:]
	}
	s.shaking[identity] = l
	s.mu.Unlock()
	if evict != nil {
		s.connError(identity, fmt.Errorf("%w: client %q has more than %d connections in their handshake: closed its oldest", ErrTooManyConns, identity, maxHandshaking))
		evict.Close()
	}
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		l := s.shaking[identity]
		i := slices.Index(l, c)
		if i >= 0 {
			l = slices.Delete(slices.Clone(l), i, i+1)
		}
		if len(l) == 0 {
			delete(s.shaking, identity)
		} else {
			s.shaking[identity] = l
		}
		return i >= 0
	}
}

// await registers c as waiting for its request and returns a func that
// unregisters it. Beyond maxWaitingData per identity the oldest waiting
// one is aborted.
func (s *Server) await(identity string, c *dataConn) func() {
	s.mu.Lock()
	l := append(s.waiting[identity], c)
	var evict *dataConn
	if len(l) > maxWaitingData {
		evict, l = l[0], l[1:]
	}
	s.waiting[identity] = l
	s.mu.Unlock()
	if evict != nil {
		s.connError(identity, fmt.Errorf("%w: client %q has more than %d data connections without a request: closed its oldest", ErrTooManyConns, identity, maxWaitingData))
		go evict.abort()
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		l := s.waiting[identity]
		for i, w := range l {
			if w == c {
				l = append(l[:i:i], l[i+1:]...)
				break
			}
		}
		if len(l) == 0 {
			delete(s.waiting, identity)
		} else {
			s.waiting[identity] = l
		}
	}
}

// serveData serves the one request of a data connection.
func (s *Server) serveData(c *dataConn, identity string, ext extSet, pend func()) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	ok := false
	defer func() {
		if ok {
			c.Close()
		} else {
			c.abort()
		}
	}()
	done := s.await(identity, c)
	t := time.AfterFunc(s.cfg.HandshakeTimeout, c.abort)
	ep, body, err := c.readRequest()
	t.Stop()
	done()
	if err != nil {
		s.connError(identity, fmt.Errorf("data connection of %q: %w", identity, err))
		return
	}
	if ep != endpointRecv {
		pend()
	}
	switch ep {
	case endpointPing:
		var req pb.PingReq
		if err := proto.Unmarshal(body, &req); err != nil {
			s.connError(identity, fmt.Errorf("data connection of %q: %w: ping request: %w", identity, ErrProtocol, err))
			return
		}
		ok = c.writeResponse(&pb.PingRes{Echo: req.Message}, nil, ext) == nil
	case endpointSend:
		// The peer's end, or its shutdown frame, cancels the send: a
		// client gone aborts the zfs send it asked for. (A receive
		// notices from its stream, which then reads as truncated.)
		go func() {
			select {
			case <-c.peerDone:
				cancel()
			case <-ctx.Done():
			}
		}()
		ok = s.serveSend(ctx, c, identity, ext, body)
	case endpointRecv:
		ok = s.serveRecv(ctx, c, identity, ext, body, pend)
	default:
		ok = c.writeResponse(nil, fmt.Errorf("%w: %q", errUnknownEndpoint, truncateText(ep, 64)), ext) == nil
	}
}

// serveSend opens the send stream, answers, and copies the stream onto
// the connection. A source failure ends the stream with its error as a
// trailer (and its kinds with extErrors).
func (s *Server) serveSend(ctx context.Context, c *dataConn, identity string, ext extSet, body []byte) bool {
	var req pb.SendReq
	if err := proto.Unmarshal(body, &req); err != nil {
		return c.writeResponse(nil, fmt.Errorf("%w: send request: %w", ErrBadRequest, err), ext) == nil
	}
	r, err := fromPBSendReq(&req, false)
	if err == nil && s.cfg.Sender == nil {
		err = errNotServed("a sink", "send")
	}
	if err == nil {
		err = transport.ValidateIdentity(identity)
	}
	var ep SenderEndpoint
	if err == nil {
		ep, err = s.cfg.Sender(identity)
	}
	var stream io.ReadCloser
	if err == nil {
		stream, err = ep.Send(ctx, r)
	}
	if err != nil {
		return c.writeResponse(nil, err, ext) == nil
	}
	defer stream.Close()
	if err := c.writeResponse(&pb.SendRes{UsedResumeToken: r.ResumeToken != ""}, nil, ext); err != nil {
		return false
	}
	_, srcErr, connErr := c.writeStream(frameZFSStream, stream)
	if connErr != nil {
		return false
	}
	if srcErr != nil && ext.errors {
		b, err := proto.Marshal(errorInfo(fmt.Errorf("send stream of %s: %w", r.FS, srcErr)))
		if err != nil || c.writeMessage(frameErrorInfo, b) != nil {
			return false
		}
	}
	return true
}

// serveRecv feeds the stream to the endpoint and answers with its
// verdict. A stream that ends before its end frame fails the receive,
// which keeps its partial state for a resume.
func (s *Server) serveRecv(ctx context.Context, c *dataConn, identity string, ext extSet, body []byte, pend func()) bool {
	var req pb.ReceiveReq
	herr := func() error {
		defer pend()
		if err := proto.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("%w: receive request: %w", ErrBadRequest, err)
		}
		if s.cfg.Receiver == nil {
			return errNotServed("a source", "receive")
		}
		r, err := fromPBReceiveReq(&req)
		if err != nil {
			return err
		}
		ep, err := s.cfg.Receiver(identity)
		if err != nil {
			return err
		}
		end, err := s.beginRecv(ctx, recvKey{identity, r.FS}, c.peerDone)
		pend()
		if err != nil {
			return err
		}
		if req.ClearResumeToken {
			// zrepl clients ask this before every receive that does not
			// resume, also the full one that creates the filesystem:
			// no filesystem yet is nothing to clear.
			if err := ep.AbortPartialReceive(ctx, r.FS); err != nil && !errors.Is(err, zfs.ErrDatasetNotExist) {
				err = fmt.Errorf("receive %s: clear the resume token: %w", r.FS, err)
				end(err)
				return err
			}
		}
		err = ep.Receive(ctx, r, c.streamReader(frameZFSStream))
		end(err)
		return err
	}()
	return c.writeResponse(&pb.ReceiveRes{}, herr, ext) == nil
}

// beginRecv registers a receive of key, after the previous one of key
// (whose client may have gone without waiting for its end) returned: a
// receive that follows a cut one sees the partial state the cut one left.
func (s *Server) beginRecv(ctx context.Context, key recvKey, orphan <-chan struct{}) (end func(error), err error) {
	for {
		s.mu.Lock()
		prev := s.recvs[key]
		if prev == nil {
			r := &recvInFlight{done: make(chan struct{}), orphan: orphan}
			s.recvs[key] = r
			s.mu.Unlock()
			return func(err error) {
				s.mu.Lock()
				delete(s.recvs, key)
				s.mu.Unlock()
				r.err = err
				close(r.done)
			}, nil
		}
		s.mu.Unlock()
		select {
		case <-prev.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("receive %s: waiting for the previous receive of it to end: %w", key.fs, context.Cause(ctx))
		}
	}
}

// addPending registers a connection of identity that may start a
// receive; the func returned (idempotent) unregisters it.
func (s *Server) addPending(identity string) (done func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	if s.pending[identity] == nil {
		s.pending[identity] = map[chan struct{}]struct{}{}
	}
	s.pending[identity][ch] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.pending[identity], ch)
			if len(s.pending[identity]) == 0 {
				delete(s.pending, identity)
			}
			s.mu.Unlock()
			close(ch)
		})
	}
}

// waitPending waits until the connections of identity pending now have
// registered their receive or turned out to be none (each is bounded by
// the handshake timeouts). Connections that arrive meanwhile are not
// waited for.
func (s *Server) waitPending(ctx context.Context, identity string) error {
	s.mu.Lock()
	var wait []chan struct{}
	for ch := range s.pending[identity] {
		wait = append(wait, ch)
	}
	s.mu.Unlock()
	for _, ch := range wait {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the client's connections to start: %w", context.Cause(ctx))
		}
	}
	return nil
}

// recvResult waits for the running receive of key, if any, to end; a
// receive whose request the server has not read yet counts.
func (s *Server) recvResult(ctx context.Context, key recvKey) (running bool, err error) {
	if err := s.waitPending(ctx, key.identity); err != nil {
		return false, err
	}
	s.mu.Lock()
	r := s.recvs[key]
	s.mu.Unlock()
	if r == nil {
		return false, nil
	}
	select {
	case <-r.done:
		return true, r.err
	case <-ctx.Done():
		return true, fmt.Errorf("waiting for the receive of %s to end: %w", key.fs, context.Cause(ctx))
	}
}

// settleOrphans waits for the receives of identity whose data connection
// ended: their client learnt of no verdict and may be listing to plan its
// next attempt, which must see what they left (partial state).
func (s *Server) settleOrphans(ctx context.Context, identity string) error {
	s.mu.Lock()
	var wait []*recvInFlight
	for k, r := range s.recvs {
		if k.identity != identity {
			continue
		}
		select {
		case <-r.orphan:
			wait = append(wait, r)
		default:
		}
	}
	s.mu.Unlock()
	for _, r := range wait {
		select {
		case <-r.done:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

func errNotServed(server, what string) error {
	return fmt.Errorf("this server is %s and does not %s: %w", server, what, endpoint.ErrNotAllowed)
}

// chanListener hands connections that passed the handshake to gRPC.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "zrepl-rpc" }
func (chanAddr) String() string  { return "zrepl-rpc" }

// identConn carries the transport's identity and the negotiated
// extensions to identityCreds; closing it leaves the identity's count.
type identConn struct {
	net.Conn
	identity string
	ext      extSet
	s        *Server
	once     sync.Once
	// calls counts the calls running on the connection.
	calls atomic.Int32
}

func (c *identConn) Close() error {
	c.once.Do(func() { c.s.removeControl(c) })
	return c.Conn.Close()
}

type identityInfo struct {
	credentials.CommonAuthInfo
	identity string
	ext      extSet
	conn     *identConn
}

func (identityInfo) AuthType() string { return "zrepl-identity" }

// identityCreds authenticates nothing itself: the transport did, and the
// handshake passed its identity along in the connection.
type identityCreds struct{}

func (identityCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, identityInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (identityCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ic, ok := c.(*identConn)
	if !ok {
		return nil, nil, fmt.Errorf("rpc: connection %T did not pass the handshake", c)
	}
	return c, identityInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, identity: ic.identity, ext: ic.ext, conn: ic}, nil
}

func (identityCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "zrepl-identity"}
}

func (identityCreds) Clone() credentials.TransportCredentials { return identityCreds{} }

func (identityCreds) OverrideServerName(string) error { return nil }

// countUnary and countStream count each call on its control connection
// while it runs, so that the cap spares connections with calls.
func countUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	defer countCall(ctx)()
	return h(ctx, req)
}

func countStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	defer countCall(ss.Context())()
	return h(srv, ss)
}

func countCall(ctx context.Context) (done func()) {
	info, err := callerOf(ctx)
	if err != nil || info.conn == nil {
		return func() {}
	}
	info.conn.calls.Add(1)
	return func() { info.conn.calls.Add(-1) }
}

func callerOf(ctx context.Context) (identityInfo, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return identityInfo{}, errors.New("rpc: call without peer")
	}
	info, ok := p.AuthInfo.(identityInfo)
	if !ok {
		return identityInfo{}, errors.New("rpc: call without client identity")
	}
	return info, nil
}
