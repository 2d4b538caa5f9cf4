package rpc

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHelloAgainstStrangers(t *testing.T) {
	ctx := context.Background()

	// A client that reaches something else than a zrepl server.
	c1, s1 := net.Pipe()
	go func() {
		io.ReadFull(s1, make([]byte, clientHelloLen))
		s1.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
		s1.Close()
	}()
	_, err := clientHello(ctx, c1, ProtocolVersion, kindControl, time.Second)
	assert.ErrorIs(t, err, ErrProtocol)
	assert.ErrorContains(t, err, "no zrepl rpc server")
	c1.Close()

	// A server that hears something else than a zrepl client.
	c2, s2 := net.Pipe()
	go func() {
		c2.Write([]byte("GET / HTTP/1.1\r\n"))
	}()
	_, _, err = readClientHello(s2, time.Second)
	assert.ErrorIs(t, err, ErrProtocol)
	assert.ErrorContains(t, err, "speaks no zrepl rpc")
	c2.Close()
	s2.Close()

	// A silent peer runs into the timeout.
	c, s := net.Pipe()
	start := time.Now()
	_, _, err = readClientHello(s, 50*time.Millisecond)
	assert.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second)
	c.Close()
	s.Close()

	// A cancelled context ends the client's hello.
	c3, s3 := net.Pipe()
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		io.ReadFull(s3, make([]byte, clientHelloLen))
		cancel() // and never answer
	}()
	_, err = clientHello(cctx, c3, ProtocolVersion, kindControl, time.Minute)
	assert.ErrorIs(t, err, context.Canceled)
	c3.Close()
	s3.Close()
}

// The server refuses an unknown connection kind with a reason.
func TestHelloUnknownKind(t *testing.T) {
	var refused []error
	srv := newServer(t, ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return drainReceiver{}, nil }, OnConnError: func(_ string, err error) { refused = append(refused, err) }})
	dial := serve(t, srv, "pipe", "alice")
	conn, err := dial(context.Background())
	require.NoError(t, err)
	defer conn.Close()
	_, err = clientHello(context.Background(), conn, ProtocolVersion, 9, time.Second)
	assert.ErrorContains(t, err, "refused the connection: unknown connection kind 9")
	require.Len(t, refused, 1)
	assert.ErrorIs(t, refused[0], ErrProtocol)
}
