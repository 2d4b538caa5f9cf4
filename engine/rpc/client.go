package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// ClientConfig configures a client.
type ClientConfig struct {
	// Dial opens a connection to the server (required).
	Dial transport.Dialer
	// Keepalive defaults to ClientKeepalive().
	Keepalive *keepalive.ClientParameters
	// HandshakeTimeout bounds a connection's hello (default 10s).
	HandshakeTimeout time.Duration
	// DataIdleTimeout fails a send stream that stops moving (default
	// DefaultDataIdleTimeout).
	DataIdleTimeout time.Duration

	// version is ProtocolVersion unless a test speaks another.
	version uint32
}

// MaxMessage bounds a control message, i.e. a filesystem listing: some
// 100 bytes per version.
const MaxMessage = 256 << 20

// Client talks to one server. Sender and Receiver return its two roles
// as replication.Sender and replication.Receiver.
type Client struct {
	cfg      ClientConfig
	cc       *grpc.ClientConn
	sender   pb.SenderClient
	receiver pb.ReceiverClient

	mu       sync.Mutex
	helloErr error // the last control connection's failed hello
	dials    int
}

// NewClient prepares a client; connections are made on first use.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Dial == nil {
		return nil, errors.New("rpc client: no dialer")
	}
	if cfg.Keepalive == nil {
		k := ClientKeepalive()
		cfg.Keepalive = &k
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.DataIdleTimeout <= 0 {
		cfg.DataIdleTimeout = DefaultDataIdleTimeout
	}
	if cfg.version == 0 {
		cfg.version = ProtocolVersion
	}
	c := &Client{cfg: cfg}
	cc, err := grpc.NewClient("passthrough:///zrepl",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(*cfg.Keepalive),
		grpc.WithContextDialer(c.dialControl),
		// gRPC's default reconnect backoff grows to 2 minutes, during which
		// calls fail at once: longer than the driver's own retries wait.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
			MinConnectTimeout: 20 * time.Second,
		}),
		// Listings of large pools exceed gRPC's default 4 MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessage)),
	)
	if err != nil {
		return nil, fmt.Errorf("rpc client: %w", err)
	}
	c.cc = cc
	c.sender = pb.NewSenderClient(cc)
	c.receiver = pb.NewReceiverClient(cc)
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
	c.helloErr = nil
	c.mu.Unlock()
	conn, err := c.cfg.Dial(ctx)
	if err != nil {
		return nil, err
	}
	_, err = clientHello(ctx, conn, c.cfg.version, kindControl, c.cfg.HandshakeTimeout)
	c.mu.Lock()
	c.helloErr = err
	c.mu.Unlock()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (c *Client) dialData(ctx context.Context) (net.Conn, uint64, error) {
	conn, err := c.cfg.Dial(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("dial data connection: %w", err)
	}
	ticket, err := clientHello(ctx, conn, c.cfg.version, kindData, c.cfg.HandshakeTimeout)
	if err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("data connection: %w", err)
	}
	return &idleConn{Conn: conn, timeout: c.cfg.DataIdleTimeout}, ticket, nil
}

// err names a failed call. gRPC reports a failed hello of the control
// connection as "unavailable"; the hello's own error says more.
func (c *Client) err(ctx context.Context, call string, err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		c.mu.Lock()
		herr := c.helloErr
		c.mu.Unlock()
		if herr != nil {
			return fmt.Errorf("%s: %w", call, herr)
		}
	}
	return fromStatus(ctx, call, err)
}

// Sender is the server's source role.
func (c *Client) Sender() *RemoteSender { return &RemoteSender{c: c} }

// Receiver is the server's sink role.
func (c *Client) Receiver() *RemoteReceiver { return &RemoteReceiver{c: c} }

// RemoteSender implements replication.Sender over the connection.
type RemoteSender struct{ c *Client }

func (s *RemoteSender) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	reply, err := s.c.sender.ListFilesystems(ctx, &pb.ListFilesystemsRequest{})
	if err != nil {
		return nil, s.c.err(ctx, "list sender filesystems", err)
	}
	return fromPBFilesystems(reply)
}

func (s *RemoteSender) SendSize(ctx context.Context, req endpoint.SendRequest) (int64, error) {
	reply, err := s.c.sender.SendSize(ctx, toPBSendRequest(req))
	if err != nil {
		return 0, s.c.err(ctx, "send size of "+req.FS, err)
	}
	return reply.Size, nil
}

func (s *RemoteSender) StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error {
	_, err := s.c.sender.StepCompleted(ctx, &pb.StepCompletedRequest{Request: toPBSendRequest(req), Last: last})
	return s.c.err(ctx, "step completed "+req.FS, err)
}

// Send opens a data connection and asks the server to send on it. The
// returned stream fails (never ends cleanly) if the data stream is cut;
// closing it or cancelling ctx aborts the send on the server.
func (s *RemoteSender) Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error) {
	conn, ticket, err := s.c.dialData(ctx)
	if err != nil {
		return nil, fmt.Errorf("send %s: %w", req.FS, err)
	}
	callCtx, cancel := context.WithCancel(ctx)
	call, err := s.c.sender.Send(callCtx, &pb.SendStreamRequest{Request: toPBSendRequest(req), DataTicket: ticket})
	if err == nil {
		var ev *pb.SendStreamEvent
		ev, err = call.Recv()
		if err == nil && !ev.Started {
			err = fmt.Errorf("%w: the server's first send event is not \"started\"", ErrProtocol)
		}
	}
	if err != nil {
		cancel()
		err = withDataConnCause(s.c.err(ctx, "send "+req.FS, err), conn)
		conn.Close()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	rs := &remoteStream{ctx: ctx, fr: newFrameReader(conn), conn: conn, cancel: cancel, stop: stop, callDone: make(chan struct{})}
	go func() {
		// The call stays open while the stream flows; if it fails (the
		// control connection died), a cut stream says so.
		defer close(rs.callDone)
		for {
			if _, err := call.Recv(); err != nil {
				if err != io.EOF {
					rs.callErr = s.c.err(ctx, "send "+req.FS, err)
				}
				return
			}
		}
	}()
	return rs, nil
}

// dataConnProbe bounds how long dataConnCause waits on a live connection.
const dataConnProbe = 200 * time.Millisecond

// withDataConnCause adds to a call's error that found its data connection
// lost how our end of that connection failed, where it knows.
func withDataConnCause(err error, conn net.Conn) error {
	if !errors.Is(err, ErrDataConnLost) {
		return err
	}
	if cause := dataConnCause(conn); cause != nil {
		return fmt.Errorf("%w (the data connection failed: %w)", err, cause)
	}
	return err
}

// dataConnCause says why a data connection failed, if it did. A call that
// finds no data connection for its ticket usually means the connection
// died between its hello and the call; our end knows how (an ssh transport
// names the exit status and stderr), the server does not. Only for error
// paths: it may read from conn.
func dataConnCause(conn net.Conn) error {
	if err := conn.SetReadDeadline(time.Now().Add(dataConnProbe)); err != nil {
		return nil
	}
	var b [1]byte
	_, err := conn.Read(b[:])
	if err == nil || err == io.EOF || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

type remoteStream struct {
	ctx    context.Context
	fr     *frameReader
	conn   net.Conn
	cancel context.CancelFunc
	stop   func() bool
	// callDone closes when the Send call ended; callErr is its failure.
	callDone chan struct{}
	callErr  error
}

func (r *remoteStream) Read(p []byte) (int, error) {
	n, err := r.fr.Read(p)
	if err != nil && err != io.EOF {
		if r.ctx.Err() != nil {
			return n, fmt.Errorf("%w (%w)", err, context.Cause(r.ctx))
		}
		// A data stream cut because the control connection died: the
		// call's error says why (e.g. GOAWAY), the cut alone does not.
		t := time.NewTimer(dataConnProbe)
		defer t.Stop()
		select {
		case <-r.callDone:
			if r.callErr != nil {
				err = fmt.Errorf("%w (%w)", err, r.callErr)
			}
		case <-t.C:
		}
	}
	return n, err
}

func (r *remoteStream) Close() error {
	r.stop()
	err := r.conn.Close()
	r.cancel()
	<-r.callDone
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// RemoteReceiver implements replication.Receiver over the connection.
type RemoteReceiver struct{ c *Client }

func (r *RemoteReceiver) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	reply, err := r.c.receiver.ListFilesystems(ctx, &pb.ListFilesystemsRequest{})
	if err != nil {
		return nil, r.c.err(ctx, "list receiver filesystems", err)
	}
	return fromPBFilesystems(reply)
}

func (r *RemoteReceiver) AbortPartialReceive(ctx context.Context, fs string) error {
	_, err := r.c.receiver.AbortPartialReceive(ctx, &pb.AbortPartialReceiveRequest{Fs: fs})
	return r.c.err(ctx, "abort partial receive of "+fs, err)
}

func (r *RemoteReceiver) MoveLastReceivedHold(ctx context.Context, fs string, to zfs.FilesystemVersion) error {
	_, err := r.c.receiver.MoveLastReceivedHold(ctx, &pb.MoveLastReceivedHoldRequest{Fs: fs, To: toPBVersion(&to)})
	return r.c.err(ctx, "move last-received hold of "+fs, err)
}

// Receive streams stream to the server on a data connection while the
// Receive call waits for the server's verdict. If stream fails, the server
// learns why and its receive fails (keeping the partial state); the error
// of the call is the one returned.
func (r *RemoteReceiver) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	if len(req.SetProperties) > 0 || len(req.InheritProperties) > 0 {
		// A remote client does not set properties on the sink: the sink's
		// own configuration does.
		return fmt.Errorf("receive %s: %w: receive properties cannot be set over the network", req.FS, ErrBadRequest)
	}
	conn, ticket, err := r.c.dialData(ctx)
	if err != nil {
		return fmt.Errorf("receive %s: %w", req.FS, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := r.c.receiver.Receive(callCtx, toPBReceiveRequest(req, ticket))
		if err != nil {
			err = withDataConnCause(r.c.err(ctx, "receive "+req.FS, err), conn)
			// The server has stopped reading: unblock the copy.
			conn.Close()
		}
		done <- err
	}()
	_, srcErr, dstErr := copyFrames(conn, stream)
	callErr := <-done
	if callErr != nil {
		if srcErr != nil {
			return fmt.Errorf("%w (the stream failed at its source: %v)", callErr, srcErr)
		}
		if dstErr != nil {
			// The data connection broke on our side: its error says how
			// (an ssh transport names the exit status and stderr), which
			// the sink's view ("connection reset") does not.
			return fmt.Errorf("%w (sending the stream failed: %w)", callErr, dstErr)
		}
		return callErr
	}
	// The server verified the snapshot that arrived: a failure to write
	// the rest (the end marker) does not matter.
	return nil
}
