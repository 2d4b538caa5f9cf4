package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// SenderEndpoint is what a source serves: replication.Sender's methods.
type SenderEndpoint interface {
	ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
	Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error)
	SendSize(ctx context.Context, req endpoint.SendRequest) (int64, error)
	StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error
}

// ReceiverEndpoint is what a sink serves: replication.Receiver's methods.
type ReceiverEndpoint interface {
	ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
	Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error
	AbortPartialReceive(ctx context.Context, fs string) error
	MoveLastReceivedHold(ctx context.Context, fs string, to zfs.FilesystemVersion) error
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
func SinkWith(z zfs.ZFS, job endpoint.JobID, root zfs.DatasetPath, o SinkOptions) func(identity string) (ReceiverEndpoint, error) {
	return func(identity string) (ReceiverEndpoint, error) {
		if err := transport.ValidateIdentity(identity); err != nil {
			return nil, err
		}
		clientRoot, err := root.Child(identity)
		if err != nil {
			return nil, fmt.Errorf("root of client %q: %w", identity, err)
		}
		return SinkReceiver{&endpoint.Receiver{ZFS: z, Job: job, Root: clientRoot, Placeholder: o.Placeholder}}, nil
	}
}

// Source serves the same sender to every client.
func Source(s SenderEndpoint) func(identity string) (SenderEndpoint, error) {
	return func(string) (SenderEndpoint, error) { return s, nil }
}

// ServerConfig configures a server. At least one of Sender and Receiver
// must be set; the other role is then not served.
type ServerConfig struct {
	// Sender returns the endpoint serving a client as a source.
	Sender func(identity string) (SenderEndpoint, error)
	// Receiver returns the endpoint serving a client as a sink.
	Receiver func(identity string) (ReceiverEndpoint, error)
	// Keepalive defaults to DefaultServerKeepalive().
	Keepalive *ServerKeepalive
	// HandshakeTimeout bounds a connection's hello (default 10s).
	HandshakeTimeout time.Duration
	// ClaimTimeout closes a data connection no call claimed (default 1m).
	ClaimTimeout time.Duration
	// DataIdleTimeout fails a send stream that stops moving (default
	// DefaultDataIdleTimeout).
	DataIdleTimeout time.Duration
	// OnConnError learns of connections refused before any call, such
	// as those of clients with another protocol version.
	OnConnError func(identity string, err error)

	// version is ProtocolVersion unless a test speaks another.
	version uint32
}

// Server serves a source and/or a sink over transport listeners.
type Server struct {
	cfg   ServerConfig
	grpc  *grpc.Server
	ctrl  *chanListener
	start sync.Once

	mu         sync.Mutex
	closed     bool
	nextTicket uint64
	pending    map[uint64]*pendingConn
	// lost says why recent tickets' connections went before a call
	// claimed them, so that call's error says so; lostOrder bounds it.
	lost      map[uint64]string
	lostOrder []uint64
	hellos    map[net.Conn]struct{}
	listeners map[transport.Listener]struct{}
	wg        sync.WaitGroup
}

type pendingConn struct {
	conn     net.Conn
	identity string
	timer    *time.Timer
}

// NewServer prepares a server; Serve starts it, Stop ends it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Sender == nil && cfg.Receiver == nil {
		return nil, errors.New("rpc server: neither a sender nor a receiver to serve")
	}
	if cfg.Keepalive == nil {
		k := DefaultServerKeepalive()
		cfg.Keepalive = &k
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.ClaimTimeout <= 0 {
		cfg.ClaimTimeout = time.Minute
	}
	if cfg.DataIdleTimeout <= 0 {
		cfg.DataIdleTimeout = DefaultDataIdleTimeout
	}
	if cfg.version == 0 {
		cfg.version = ProtocolVersion
	}
	s := &Server{
		cfg: cfg, ctrl: newChanListener(), pending: map[uint64]*pendingConn{}, lost: map[uint64]string{},
		hellos: map[net.Conn]struct{}{}, listeners: map[transport.Listener]struct{}{},
	}
	opts := []grpc.ServerOption{
		grpc.Creds(identityCreds{}),
		grpc.KeepaliveParams(cfg.Keepalive.Params),
		grpc.WaitForHandlers(true),
	}
	if cfg.Keepalive.Enforcement != nil {
		opts = append(opts, grpc.KeepaliveEnforcementPolicy(*cfg.Keepalive.Enforcement))
	}
	s.grpc = grpc.NewServer(opts...)
	if cfg.Sender != nil {
		pb.RegisterSenderServer(s.grpc, &senderService{s: s})
	}
	if cfg.Receiver != nil {
		pb.RegisterReceiverServer(s.grpc, &receiverService{s: s})
	}
	return s, nil
}

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
			case <-s.ctrl.done:
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
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerStopped
		}
		s.hellos[c.Conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.hello(c)
		}()
	}
}

// Stop closes the listeners and every connection, cancels the calls and
// waits for them to return.
func (s *Server) Stop() {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.hellos {
		c.Close()
	}
	for t, p := range s.pending {
		p.timer.Stop()
		p.conn.Close()
		delete(s.pending, t)
	}
	s.mu.Unlock()
	s.grpc.Stop()
	s.ctrl.Close()
	s.wg.Wait()
}

func (s *Server) connError(identity string, err error) {
	if s.cfg.OnConnError != nil {
		s.cfg.OnConnError(identity, err)
	}
}

// hello runs the server side of a connection's hello and hands the
// connection to gRPC or parks it until a call claims it.
func (s *Server) hello(c *transport.AuthConn) {
	keep := false
	defer func() {
		s.mu.Lock()
		delete(s.hellos, c.Conn)
		s.mu.Unlock()
		if !keep {
			c.Close()
		}
	}()
	version, kind, err := readClientHello(c.Conn, s.cfg.HandshakeTimeout)
	if err != nil {
		s.connError(c.Identity, fmt.Errorf("handshake with %q: %w", c.Identity, err))
		return
	}
	if version != s.cfg.version {
		// Recorded before the client learns of it: a log of refusals is
		// complete once the client saw its error.
		err := &VersionMismatchError{Client: version, Server: s.cfg.version}
		s.connError(c.Identity, fmt.Errorf("refused client %q: %w", c.Identity, err))
		serverHello(c.Conn, s.cfg.version, statusVersion, 0, err.Error())
		return
	}
	if err := transport.ValidateIdentity(c.Identity); err != nil {
		s.connError(c.Identity, fmt.Errorf("refused client: %w", err))
		serverHello(c.Conn, s.cfg.version, statusRefused, 0, err.Error())
		return
	}
	switch kind {
	case kindControl:
		if err := serverHello(c.Conn, s.cfg.version, statusOK, 0, ""); err != nil {
			s.connError(c.Identity, fmt.Errorf("handshake with %q: %w", c.Identity, err))
			return
		}
		keep = s.ctrl.push(&identConn{Conn: c.Conn, identity: c.Identity})
	case kindData:
		ticket, err := s.park(c.Conn, c.Identity)
		if err != nil {
			s.connError(c.Identity, fmt.Errorf("refused client %q: %w", c.Identity, err))
			serverHello(c.Conn, s.cfg.version, statusRefused, 0, err.Error())
			return
		}
		if err := serverHello(c.Conn, s.cfg.version, statusOK, ticket, ""); err != nil {
			s.drop(ticket, fmt.Sprintf("its hello failed: %v", err))
			s.connError(c.Identity, fmt.Errorf("handshake with %q: %w", c.Identity, err))
			return
		}
		keep = true
	default:
		s.connError(c.Identity, fmt.Errorf("refused client %q: %w: unknown connection kind %d", c.Identity, ErrProtocol, kind))
		serverHello(c.Conn, s.cfg.version, statusRefused, 0, fmt.Sprintf("unknown connection kind %d", kind))
	}
}

// maxUnclaimed bounds the data connections a client may open that no call
// claimed yet: each holds a socket until ClaimTimeout.
const maxUnclaimed = 32

// park keeps a data connection until a call claims it by its ticket.
func (s *Server) park(conn net.Conn, identity string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrServerStopped
	}
	n := 0
	for _, p := range s.pending {
		if p.identity == identity {
			n++
		}
	}
	if n >= maxUnclaimed {
		return 0, fmt.Errorf("too many unclaimed data connections (%d)", n)
	}
	s.nextTicket++
	t := s.nextTicket
	s.pending[t] = &pendingConn{conn: conn, identity: identity, timer: time.AfterFunc(s.cfg.ClaimTimeout, func() {
		if c := s.drop(t, fmt.Sprintf("no call claimed it within %s", s.cfg.ClaimTimeout)); c != nil {
			c.Close()
		}
	})}
	return t, nil
}

// maxLost bounds the remembered reasons of lost data connections.
const maxLost = 64

// drop unparks ticket's connection and remembers why it went.
func (s *Server) drop(ticket uint64, why string) net.Conn {
	c := s.unpark(ticket)
	if c == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost[ticket] = why
	s.lostOrder = append(s.lostOrder, ticket)
	if len(s.lostOrder) > maxLost {
		delete(s.lost, s.lostOrder[0])
		s.lostOrder = s.lostOrder[1:]
	}
	return c
}

func (s *Server) unpark(ticket uint64) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pending[ticket]
	if !ok {
		return nil
	}
	delete(s.pending, ticket)
	p.timer.Stop()
	return p.conn
}

// claim takes the data connection of ticket for a call of identity.
func (s *Server) claim(ticket uint64, identity string) (net.Conn, error) {
	s.mu.Lock()
	p, ok := s.pending[ticket]
	why, lost := s.lost[ticket]
	s.mu.Unlock()
	if lost {
		return nil, fmt.Errorf("%w: data connection %d went before the call claimed it (%s)", ErrDataConnLost, ticket, why)
	}
	if !ok {
		return nil, fmt.Errorf("%w: no data connection with ticket %d (unknown or already used)", ErrBadRequest, ticket)
	}
	if p.identity != identity {
		return nil, fmt.Errorf("data connection %d belongs to another client: %w", ticket, endpoint.ErrNotAllowed)
	}
	conn := s.unpark(ticket)
	if conn == nil {
		return nil, fmt.Errorf("%w: data connection %d was just claimed or timed out", ErrBadRequest, ticket)
	}
	return &idleConn{Conn: conn, timeout: s.cfg.DataIdleTimeout}, nil
}

func identityOf(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("rpc: call without peer")
	}
	info, ok := p.AuthInfo.(identityInfo)
	if !ok {
		return "", errors.New("rpc: call without client identity")
	}
	return info.identity, nil
}

type senderService struct {
	pb.UnimplementedSenderServer
	s *Server
}

// endpointFor looks up the endpoint that serves the calling client.
func endpointFor[E any](ctx context.Context, lookup func(identity string) (E, error)) (E, error) {
	id, err := identityOf(ctx)
	if err != nil {
		var zero E
		return zero, err
	}
	return lookup(id)
}

// listFilesystems serves ListFilesystems for either role.
func listFilesystems[E interface {
	ListFilesystems(context.Context) ([]endpoint.Filesystem, error)
}](ctx context.Context, lookup func(identity string) (E, error)) (*pb.ListFilesystemsReply, error) {
	ep, err := endpointFor(ctx, lookup)
	if err != nil {
		return nil, toStatus(err)
	}
	fss, err := ep.ListFilesystems(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return toPBFilesystems(fss), nil
}

func (h *senderService) endpoint(ctx context.Context) (SenderEndpoint, error) {
	return endpointFor(ctx, h.s.cfg.Sender)
}

func (h *senderService) ListFilesystems(ctx context.Context, _ *pb.ListFilesystemsRequest) (*pb.ListFilesystemsReply, error) {
	return listFilesystems(ctx, h.s.cfg.Sender)
}

func (h *senderService) SendSize(ctx context.Context, req *pb.SendRequest) (*pb.SendSizeReply, error) {
	ep, err := h.endpoint(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	r, err := fromPBSendRequest(req, false)
	if err != nil {
		return nil, toStatus(err)
	}
	n, err := ep.SendSize(ctx, r)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.SendSizeReply{Size: n}, nil
}

func (h *senderService) StepCompleted(ctx context.Context, req *pb.StepCompletedRequest) (*pb.Empty, error) {
	ep, err := h.endpoint(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	r, err := fromPBSendRequest(req.GetRequest(), true)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(ep.StepCompleted(ctx, r, req.GetLast()))
}

// Send opens the send stream, says "started", copies the stream onto the
// data connection and ends the call when the stream ended. Cancelling the
// call closes both.
func (h *senderService) Send(req *pb.SendStreamRequest, call pb.Sender_SendServer) error {
	ctx := call.Context()
	id, err := identityOf(ctx)
	if err != nil {
		return toStatus(err)
	}
	conn, err := h.s.claim(req.GetDataTicket(), id)
	if err != nil {
		return toStatus(err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, err := fromPBSendRequest(req.GetRequest(), false)
	if err != nil {
		return toStatus(err)
	}
	ep, err := h.s.cfg.Sender(id)
	if err != nil {
		return toStatus(err)
	}
	stream, err := ep.Send(ctx, r)
	if err != nil {
		return toStatus(err)
	}
	defer stream.Close()
	if err := call.Send(&pb.SendStreamEvent{Started: true}); err != nil {
		return err
	}
	n, srcErr, dstErr := copyFrames(conn, stream)
	if srcErr != nil {
		return toStatus(fmt.Errorf("send stream of %s: %w", r.FS, srcErr))
	}
	if dstErr != nil {
		if ctx.Err() != nil {
			return toStatus(context.Cause(ctx))
		}
		return toStatus(fmt.Errorf("send stream of %s: data connection: %w", r.FS, dstErr))
	}
	return call.Send(&pb.SendStreamEvent{Bytes: n})
}

type receiverService struct {
	pb.UnimplementedReceiverServer
	s *Server
}

func (h *receiverService) endpoint(ctx context.Context) (ReceiverEndpoint, error) {
	return endpointFor(ctx, h.s.cfg.Receiver)
}

func (h *receiverService) ListFilesystems(ctx context.Context, _ *pb.ListFilesystemsRequest) (*pb.ListFilesystemsReply, error) {
	return listFilesystems(ctx, h.s.cfg.Receiver)
}

func (h *receiverService) AbortPartialReceive(ctx context.Context, req *pb.AbortPartialReceiveRequest) (*pb.Empty, error) {
	ep, err := h.endpoint(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkFS(req.GetFs()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(ep.AbortPartialReceive(ctx, req.GetFs()))
}

func (h *receiverService) MoveLastReceivedHold(ctx context.Context, req *pb.MoveLastReceivedHoldRequest) (*pb.Empty, error) {
	ep, err := h.endpoint(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkFS(req.GetFs()); err != nil {
		return nil, toStatus(err)
	}
	to, err := fromPBVersion("last-received", req.GetTo())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(ep.MoveLastReceivedHold(ctx, req.GetFs(), to))
}

// Receive feeds the claimed data connection to the endpoint. A stream that
// ends before its end marker fails the receive, which keeps its partial
// state for a resume.
func (h *receiverService) Receive(ctx context.Context, req *pb.ReceiveRequest) (*pb.Empty, error) {
	id, err := identityOf(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	conn, err := h.s.claim(req.GetDataTicket(), id)
	if err != nil {
		return nil, toStatus(err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, err := fromPBReceiveRequest(req)
	if err != nil {
		return nil, toStatus(err)
	}
	ep, err := h.s.cfg.Receiver(id)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := ep.Receive(ctx, r, newFrameReader(conn)); err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, nil
}

// chanListener hands connections that passed the hello to gRPC.
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

// identConn carries the transport's identity to identityCreds.
type identConn struct {
	net.Conn
	identity string
}

type identityInfo struct {
	credentials.CommonAuthInfo
	identity string
}

func (identityInfo) AuthType() string { return "zrepl-identity" }

// identityCreds authenticates nothing itself: the transport did, and the
// hello passed its identity along in the connection.
type identityCreds struct{}

func (identityCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, identityInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (identityCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ic, ok := c.(*identConn)
	if !ok {
		return nil, nil, fmt.Errorf("rpc: connection %T did not pass the hello", c)
	}
	return c, identityInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, identity: ic.identity}, nil
}

func (identityCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "zrepl-identity"}
}

func (identityCreds) Clone() credentials.TransportCredentials { return identityCreds{} }

func (identityCreds) OverrideServerName(string) error { return nil }
