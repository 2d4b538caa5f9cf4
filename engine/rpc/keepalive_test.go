package rpc

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/keepalive"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

type countingConn struct {
	net.Conn
	written atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// drainReceiver reads each stream to its end.
type drainReceiver struct{ noPrune }

func (drainReceiver) ListFilesystems(context.Context) ([]endpoint.Filesystem, error) { return nil, nil }
func (drainReceiver) AbortPartialReceive(context.Context, string) error              { return nil }
func (drainReceiver) MoveLastReceivedHold(context.Context, string, zfs.FilesystemVersion) error {
	return nil
}
func (drainReceiver) Receive(_ context.Context, _ endpoint.ReceiveRequest, stream io.Reader) error {
	_, err := io.Copy(io.Discard, stream)
	return err
}

// slowSource yields a chunk per minute: a long send during which the
// control connection carries nothing but keepalive pings.
type slowSource struct{ chunks int }

func (s *slowSource) Read(p []byte) (int, error) {
	if s.chunks == 0 {
		return 0, io.EOF
	}
	s.chunks--
	time.Sleep(time.Minute)
	return copy(p, "some bytes"), nil
}

// oldServerKeepalive is the broken server side this project once had:
// gRPC's default enforcement (a ping at most every 5 minutes, none without
// a call), which punishes a client that pings more often.
func oldServerKeepalive() serverKeepaliveParams {
	return serverKeepaliveParams{params: keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}}
}

// The keepalive settings of client and server (zrepl's) fit together:
// over 25 minutes during which the control connection carries no call
// (while a 20-minute receive flows on its own data connection) it holds,
// pinged all along. A server with gRPC's default enforcement answers the
// same pings with GOAWAY too_many_pings and closes the control connection;
// the client redials, and the receive on its data connection goes on
// (a GOAWAY no longer kills a transfer, as it did when sends travelled on
// the control connection). Runs in virtual time.
func TestKeepalive(t *testing.T) {
	ours := clientKeepaliveParams{Time: keepaliveTime, Timeout: keepaliveTimeout}
	cases := []struct {
		name   string
		client clientKeepaliveParams
		server serverKeepaliveParams
		broken bool
	}{
		{"zrepl's", ours, serverKeepalive(), false},
		{"old server policy", clientKeepaliveParams{Time: 10 * time.Second, Timeout: 10 * time.Second}, oldServerKeepalive(), true},
		// Half of the fix is no fix: the server must permit the pings.
		{"ours without server policy", ours, oldServerKeepalive(), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				reg := transport.NewLocal()
				l, err := reg.Listen("sink")
				if err != nil {
					t.Fatal(err)
				}
				srv, err := NewServer(ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return drainReceiver{}, nil }, keepalive: &c.server})
				if err != nil {
					t.Fatal(err)
				}
				served := make(chan struct{})
				go func() {
					defer close(served)
					srv.Serve(l)
				}()
				defer func() {
					srv.Stop()
					<-served
				}()
				var control countingConn
				dial := reg.Dialer("sink", "alice")
				cl, err := NewClient(ClientConfig{Dial: func(ctx context.Context) (net.Conn, error) {
					conn, err := dial(ctx)
					if err == nil && control.Conn == nil {
						control.Conn = conn // the first call's
						return &control, nil
					}
					return conn, err
				}, keepalive: &c.client})
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				ctx := context.Background()
				// The first call dials the control connection; the
				// receive goes on a data connection of its own.
				_, err = cl.Receiver().ListFilesystems(ctx)
				assert.NoError(t, err)
				recv := make(chan error, 1)
				go func() {
					recv <- cl.Receiver().Receive(ctx, endpoint.ReceiveRequest{FS: "src/data", To: snap("s1", 7), Full: true}, &slowSource{chunks: 20})
				}()
				before := control.written.Load()
				// gRPC's channel goes idle after 30 minutes without a call.
				time.Sleep(25 * time.Minute)
				if !c.broken {
					// An HTTP/2 PING frame is 17 bytes: one every 10 s.
					assert.GreaterOrEqual(t, control.written.Load()-before, int64(140*17), "the client kept pinging while idle")
				}
				assert.NoError(t, <-recv, "the receive on its data connection is not affected")
				_, err = cl.Receiver().ListFilesystems(ctx)
				assert.NoError(t, err, "a new call works either way")
				if c.broken {
					assert.Greater(t, cl.controlDials(), 1, "GOAWAY closed the control connection, which was redialled")
				} else {
					assert.Equal(t, 1, cl.controlDials(), "one control connection throughout")
				}
			})
		})
	}
}

// After the server restarts, the client's calls fail only until its
// reconnect backoff (at most 10s) lets it dial again.
func TestReconnectAfterServerRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := transport.NewLocal()
		start := func() func() {
			l, err := reg.Listen("sink")
			if err != nil {
				t.Fatal(err)
			}
			srv, err := NewServer(ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return drainReceiver{}, nil }})
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan struct{})
			go func() {
				defer close(served)
				srv.Serve(l)
			}()
			return func() {
				srv.Stop()
				<-served
			}
		}
		stop := start()
		cl, err := NewClient(ClientConfig{Dial: reg.Dialer("sink", "alice")})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx := context.Background()
		_, err = cl.Receiver().ListFilesystems(ctx)
		assert.NoError(t, err)

		stop()
		// Calls during the outage fail; the client's backoff grows.
		for range 36 {
			_, err = cl.Receiver().ListFilesystems(ctx)
			assert.Error(t, err, "no server")
			time.Sleep(5 * time.Second)
		}

		stop = start()
		defer stop()
		restarted := time.Now()
		for {
			if _, err = cl.Receiver().ListFilesystems(ctx); err == nil {
				break
			}
			if time.Since(restarted) > time.Minute {
				t.Fatalf("no reconnect within a minute: %v", err)
			}
			time.Sleep(time.Second)
		}
		assert.LessOrEqual(t, time.Since(restarted), 13*time.Second, "reconnected within the backoff cap (10s + jitter)")
	})
}
