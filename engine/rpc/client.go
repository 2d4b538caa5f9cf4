package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// ClientConfig configures a client.
type ClientConfig struct {
	// Dial opens a connection to the server (required).
	Dial transport.Dialer
	// HandshakeTimeout bounds a connection's banners and label (default
	// 10s).
	HandshakeTimeout time.Duration
	// Log gets a note, once per feature, where the server is a zrepl
	// daemon and the engine does without one of this project's
	// extensions (default: none).
	Log *slog.Logger

	// keepalive is clientKeepalive() unless a test sets another.
	keepalive *clientKeepaliveParams
	// banner is ourBanner() unless a test speaks another version or as a
	// zrepl peer (no extensions).
	banner *banner
}

type clientKeepaliveParams = struct{ Time, Timeout time.Duration }

// Client talks to one server. Sender and Receiver return its two roles
// as replication.Sender and replication.Receiver.
type Client struct {
	cfg  ClientConfig
	cc   *grpc.ClientConn
	repl pb.ReplicationClient
	ext  pb.ZreplDevEndpointClient

	mu       sync.Mutex
	helloErr error    // the last control connection's failed handshake
	ctrl     net.Conn // the last control connection that completed it
	peerExt  *extSet  // the last control connection's extensions
	dials    int
	noted    map[string]bool
}

// NewClient prepares a client; connections are made on first use.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Dial == nil {
		return nil, errors.New("rpc client: no dialer")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.banner == nil {
		b := ourBanner()
		cfg.banner = &b
	}
	ka := clientKeepalive()
	if cfg.keepalive != nil {
		ka.Time, ka.Timeout = cfg.keepalive.Time, cfg.keepalive.Timeout
	}
	c := &Client{cfg: cfg, noted: map[string]bool{}}
	cc, err := grpc.NewClient("passthrough:///zrepl",
		grpc.WithTransportCredentials(identityCreds{}),
		grpc.WithKeepaliveParams(ka),
		grpc.WithContextDialer(c.dialControl),
		// gRPC's default reconnect backoff grows to 2 minutes, during which
		// calls fail at once: longer than the driver's own retries wait.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
			MinConnectTimeout: 20 * time.Second,
		}),
		// Listings of large pools exceed gRPC's default 4 MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessage), grpc.MaxCallSendMsgSize(MaxMessage)),
	)
	if err != nil {
		return nil, fmt.Errorf("rpc client: %w", err)
	}
	c.cc = cc
	c.repl = pb.NewReplicationClient(cc)
	c.ext = pb.NewZreplDevEndpointClient(cc)
	return c, nil
}

// Close closes the control connection; calls in flight fail.
func (c *Client) Close() error { return c.cc.Close() }

// controlDials counts the control connections made (for tests).
func (c *Client) controlDials() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials
}

func (c *Client) dialControl(ctx context.Context, _ string) (net.Conn, error) {
	c.mu.Lock()
	c.dials++
	c.helloErr, c.ctrl = nil, nil
	c.mu.Unlock()
	conn, err := c.cfg.Dial(ctx)
	if err != nil {
		return nil, err
	}
	theirs, err := handshake(ctx, conn, *c.cfg.banner, labelControl, c.cfg.HandshakeTimeout)
	c.mu.Lock()
	c.helloErr = err
	if err == nil {
		ext := negotiate(theirs.extensions, c.cfg.banner.extensions)
		c.peerExt = &ext
		c.ctrl = conn
	}
	c.mu.Unlock()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// dialData opens a data connection; the banners tell which extensions
// its request may use.
func (c *Client) dialData(ctx context.Context) (*dataConn, extSet, error) {
	conn, err := c.cfg.Dial(ctx)
	if err != nil {
		return nil, extSet{}, fmt.Errorf("dial data connection: %w", err)
	}
	theirs, err := handshake(ctx, conn, *c.cfg.banner, labelData, c.cfg.HandshakeTimeout)
	if err != nil {
		conn.Close()
		return nil, extSet{}, fmt.Errorf("data connection: %w", err)
	}
	ext := negotiate(theirs.extensions, c.cfg.banner.extensions)
	if ext.zrepl() {
		c.note("zrepl-peer", "the server speaks zrepl's protocol without this project's extensions (a zrepl daemon): "+
			"listings without encryption properties, holds and job marks, errors as text only, partial receive state cleared by the next receive")
	}
	return newDataConn(conn), ext, nil
}

// serverExt returns the server's extensions, connecting the control
// connection first if need be.
func (c *Client) serverExt(ctx context.Context) (extSet, error) {
	c.mu.Lock()
	e := c.peerExt
	c.mu.Unlock()
	if e != nil {
		return *e, nil
	}
	if _, err := c.repl.Ping(ctx, &pb.PingReq{Message: "extensions"}); err != nil {
		return extSet{}, c.err(ctx, "ping", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peerExt == nil {
		return extSet{}, fmt.Errorf("ping: %w: no extensions learnt", ErrProtocol)
	}
	return *c.peerExt, nil
}

// note logs msg once per key for this client.
func (c *Client) note(key, msg string) {
	c.mu.Lock()
	first := !c.noted[key]
	c.noted[key] = true
	c.mu.Unlock()
	if first {
		c.cfg.Log.Info(msg)
	}
}

// err names a failed call. gRPC reports a failed handshake of the control
// connection, and the control connection's end, as "unavailable" with text
// only: the handshake's own error says more, and so does the transport
// (transport.Ended: an ssh process's exit status and stderr).
func (c *Client) err(ctx context.Context, call string, err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		c.mu.Lock()
		herr, ctrl := c.helloErr, c.ctrl
		c.mu.Unlock()
		if herr != nil {
			return fmt.Errorf("%s: %w", call, herr)
		}
		if ctrl != nil {
			if why := transport.Ended(ctrl); why != nil {
				return fmt.Errorf("%s: %w", call, why)
			}
		}
	}
	return fromStatus(ctx, call, err)
}

// Sender is the server's source role.
func (c *Client) Sender() *RemoteSender { return &RemoteSender{c: c} }

// Receiver is the server's sink role.
func (c *Client) Receiver() *RemoteReceiver { return &RemoteReceiver{c: c} }

// listFilesystems lists the server's filesystems with their versions: in
// one call where the server has extListing, else as zrepl's client does,
// one ListFilesystemVersions call per filesystem.
func (c *Client) listFilesystems(ctx context.Context, sender bool) ([]endpoint.Filesystem, error) {
	call := "list receiver filesystems"
	if sender {
		call = "list sender filesystems"
	}
	res, err := c.repl.ListFilesystems(ctx, &pb.ListFilesystemReq{ZreplDevFullListing: true})
	if err != nil {
		return nil, c.err(ctx, call, err)
	}
	out := make([]endpoint.Filesystem, 0, len(res.Filesystems))
	for _, f := range res.Filesystems {
		fs, err := fromPBFilesystem(f, sender)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", call, err)
		}
		var versions []*pb.FilesystemVersion
		if res.ZreplDevFullListing {
			versions = f.ZreplDevVersions
		} else {
			vres, err := c.repl.ListFilesystemVersions(ctx, &pb.ListFilesystemVersionsReq{Filesystem: f.Path})
			if err != nil {
				return nil, c.err(ctx, "list versions of "+f.Path, err)
			}
			versions = vres.Versions
		}
		if fs.Versions, err = fromPBVersions(f.Path, versions); err != nil {
			return nil, fmt.Errorf("%s: %w", call, err)
		}
		out = append(out, fs)
	}
	if !res.ZreplDevFullListing {
		c.note("listing", "the server is a zrepl daemon: its listings carry no encryption properties, holds or job marks; "+
			"the planner takes encryption as unknown, and the sender's up-to-date filesystems are confirmed at every run")
	}
	return out, nil
}

// RemoteSender implements replication.Sender over the connection.
type RemoteSender struct{ c *Client }

func (s *RemoteSender) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	return s.c.listFilesystems(ctx, true)
}

func (s *RemoteSender) SendSize(ctx context.Context, req endpoint.SendRequest) (int64, error) {
	res, err := s.c.repl.SendDry(ctx, toPBSendReq(req))
	if err != nil {
		return 0, s.c.err(ctx, "send size of "+req.FS, err)
	}
	return int64(min(res.ExpectedSize, 1<<62)), nil
}

func (s *RemoteSender) StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error {
	_, err := s.c.repl.SendCompleted(ctx, &pb.SendCompletedReq{OriginalReq: toPBSendReq(req), ZreplDevLast: &last})
	return s.c.err(ctx, "step completed "+req.FS, err)
}

// Send asks the server for the stream on a data connection. The returned
// stream fails (never ends cleanly) if the data connection is cut;
// closing it or cancelling ctx aborts the send on the server.
func (s *RemoteSender) Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error) {
	c, ext, err := s.c.dialData(ctx)
	if err != nil {
		return nil, fmt.Errorf("send %s: %w", req.FS, err)
	}
	stop := context.AfterFunc(ctx, c.abort)
	fail := func(err error) (io.ReadCloser, error) {
		stop()
		c.abort()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return nil, fmt.Errorf("send %s: %w", req.FS, err)
	}
	if err := c.writeRequest(endpointSend, toPBSendReq(req)); err != nil {
		return fail(fmt.Errorf("data connection: %w", err))
	}
	var res pb.SendRes
	if err := c.readResponse(&res, ext); err != nil {
		return fail(err)
	}
	if req.ResumeToken != "" && !res.UsedResumeToken {
		return fail(fmt.Errorf("%w: the sender did not use the resume token", ErrProtocol))
	}
	return &remoteStream{ctx: ctx, c: c, r: c.streamReader(frameZFSStream), ext: ext, fs: req.FS, stop: stop}, nil
}

type remoteStream struct {
	ctx  context.Context
	c    *dataConn
	r    io.Reader
	ext  extSet
	fs   string
	stop func() bool
	eof  bool
}

func (r *remoteStream) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	switch {
	case err == io.EOF:
		r.eof = true
	case err != nil:
		var se *SourceError
		if errors.As(err, &se) {
			err = r.sourceError(se)
		} else if r.ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(r.ctx))
		}
	}
	return n, err
}

// sourceError is the server's send failure; with extErrors its kinds
// follow the trailer.
func (r *remoteStream) sourceError(se *SourceError) error {
	if r.ext.errors {
		if b, err := r.c.readMessage(frameErrorInfo, maxResponseStruct); err == nil {
			var info pb.ErrorInfo
			if proto.Unmarshal(b, &info) == nil {
				return remoteError(&info)
			}
		}
	}
	return fmt.Errorf("send stream of %s failed on the server: %w", r.fs, se)
}

func (r *remoteStream) Close() error {
	r.stop()
	if r.eof {
		return r.c.Close()
	}
	r.c.abort()
	return nil
}

// RemoteReceiver implements replication.Receiver over the connection.
type RemoteReceiver struct{ c *Client }

func (r *RemoteReceiver) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	return r.c.listFilesystems(ctx, false)
}

// AbortPartialReceive discards fs's partial receive state. A zrepl sink
// has no such call: its next receive request of fs clears the state
// instead (every stream that does not resume asks it to).
func (r *RemoteReceiver) AbortPartialReceive(ctx context.Context, fs string) error {
	ext, err := r.c.serverExt(ctx)
	if err != nil {
		return fmt.Errorf("abort partial receive of %s: %w", fs, err)
	}
	if !ext.receive {
		r.c.note("abort", "the sink is a zrepl daemon: partial receive state is discarded by the next receive request, not at once")
		return nil
	}
	_, err = r.c.ext.AbortPartialReceive(ctx, &pb.AbortPartialReceiveReq{Filesystem: fs})
	return r.c.err(ctx, "abort partial receive of "+fs, err)
}

// MoveLastReceivedHold moves the job's last-received hold to fs@to. A
// zrepl sink moves it in each receive and has no call to repair it: then
// this does nothing.
func (r *RemoteReceiver) MoveLastReceivedHold(ctx context.Context, fs string, to zfs.FilesystemVersion) error {
	ext, err := r.c.serverExt(ctx)
	if err != nil {
		return fmt.Errorf("move last-received hold of %s: %w", fs, err)
	}
	if !ext.receive {
		r.c.note("hold", "the sink is a zrepl daemon: it moves its last-received hold in each receive, and a hold left behind is not repaired from here")
		return nil
	}
	_, err = r.c.ext.MoveLastReceivedHold(ctx, &pb.MoveLastReceivedHoldReq{Filesystem: fs, To: toPBVersion(&to)})
	return r.c.err(ctx, "move last-received hold of "+fs, err)
}

// resultAfterCut asks the server how its receive of fs ended after the
// data connection broke before its verdict came: the next attempt then
// plans with what the receive left, and the error adds the server's side
// where it failed for a reason of its own.
func (r *RemoteReceiver) resultAfterCut(ctx context.Context, fs string, cut error) error {
	ctx, cancel := context.WithTimeout(ctx, 3*PeerTimeout)
	defer cancel()
	res, err := r.c.ext.ReceiveResult(ctx, &pb.ReceiveResultReq{Filesystem: fs})
	if err != nil || res.GetError() == nil {
		return cut
	}
	serr := remoteError(res.GetError())
	if errors.Is(serr, ErrTruncated) {
		// The server only saw the cut: our side says why.
		return cut
	}
	return fmt.Errorf("%w (on the server: %w)", cut, serr)
}

// Receive sends stream to the server on a data connection while waiting
// for the server's verdict. If stream fails, the server learns why and
// its receive fails (keeping the partial state); the error of the request
// is the one returned.
func (r *RemoteReceiver) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	if len(req.SetProperties) > 0 || len(req.InheritProperties) > 0 {
		// A remote client does not set properties on the sink: the sink's
		// own configuration does.
		return fmt.Errorf("receive %s: %w: receive properties cannot be set over the network", req.FS, ErrBadRequest)
	}
	c, ext, err := r.c.dialData(ctx)
	if err != nil {
		return fmt.Errorf("receive %s: %w", req.FS, err)
	}
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	if err := c.writeRequest(endpointRecv, toPBReceiveReq(req, ext)); err != nil {
		c.abort()
		return fmt.Errorf("receive %s: data connection: %w", req.FS, err)
	}
	done := make(chan error, 1)
	go func() {
		err := c.readResponse(&pb.ReceiveRes{}, ext)
		if err != nil {
			// The receive failed early: stop sending what nobody
			// receives.
			c.abort()
		}
		done <- err
	}()
	_, srcErr, connErr := c.writeStream(frameZFSStream, stream)
	// If our side of the connection broke, the server's answer says why
	// it ended, where one came before the end.
	resErr := <-done
	var he *HandlerError
	var re *RemoteError
	if resErr != nil && ext.receive && !errors.As(resErr, &he) && !errors.As(resErr, &re) && ctx.Err() == nil {
		resErr = r.resultAfterCut(ctx, req.FS, resErr)
	}
	if resErr != nil {
		err := fmt.Errorf("receive %s: %w", req.FS, resErr)
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		switch {
		case srcErr != nil:
			return fmt.Errorf("%w (the stream failed at its source: %v)", err, srcErr)
		case connErr != nil && strings.Contains(err.Error(), connErr.Error()):
			// Both directions met the connection's one end (an ssh
			// exit): say it once.
			return err
		case connErr != nil:
			// The data connection broke on our side: its error says how
			// (an ssh transport names the exit status and stderr).
			return fmt.Errorf("%w (sending the stream failed: %w)", err, connErr)
		}
		return err
	}
	// The server verified the snapshot that arrived: a failure to write
	// the rest (the end frame) does not matter.
	c.Close()
	return nil
}
