package rpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// recordingConn keeps what a client writes on one connection.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// clientBytes records what a real client sends on each connection for a
// listing, an abort and a receive: seeds that reach past the banners.
func clientBytes(t testing.TB) [][]byte {
	srv := newServer(t, ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return drainReceiver{}, nil }})
	dial := serve(t, srv, "pipe", "fuzz")
	var mu sync.Mutex
	var conns []*recordingConn
	c := newClient(t, ClientConfig{Dial: func(ctx context.Context) (net.Conn, error) {
		nc, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		rc := &recordingConn{Conn: nc}
		mu.Lock()
		conns = append(conns, rc)
		mu.Unlock()
		return rc, nil
	}})
	ctx := context.Background()
	r := c.Receiver()
	if _, err := r.ListFilesystems(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.AbortPartialReceive(ctx, "pool/fs"); err != nil {
		t.Fatal(err)
	}
	to := zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "s1", GUID: 7, CreateTXG: 1}
	if err := r.Receive(ctx, endpoint.ReceiveRequest{FS: "pool/fs", To: to, Full: true}, strings.NewReader(strings.Repeat("stream", 100))); err != nil {
		t.Fatal(err)
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	var out [][]byte
	for _, rc := range conns {
		rc.mu.Lock()
		out = append(out, bytes.Clone(rc.buf.Bytes()))
		rc.mu.Unlock()
	}
	return out
}

// FuzzServerConn sends arbitrary bytes to a server as an authenticated
// client would (bad banners, bad labels, bad frames, bad requests, bad
// HTTP/2) and requires that the server neither crashes nor keeps the
// connection open once the client's end is closed. Seeds: what a real
// client sends on its control and data connections, cut and flipped.
func FuzzServerConn(f *testing.F) {
	for _, b := range clientBytes(f) {
		f.Add(b)
		f.Add(b[:len(b)/2])
		if len(b) > 80 {
			flipped := bytes.Clone(b)
			flipped[80] ^= 0xff
			f.Add(flipped)
		}
	}
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("0000000056 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n"))
	f.Add([]byte("ZRPL\x00\x02"))
	addr := fuzzServer(f)
	f.Fuzz(func(t *testing.T, in []byte) { sendGarbage(t, addr, in) })
}

// fuzzServer runs a sink server with a short handshake timeout on
// loopback TCP until the test ends and returns its address.
func fuzzServer(t testing.TB) string {
	srv, err := NewServer(ServerConfig{
		Receiver:         func(string) (ReceiverEndpoint, error) { return drainReceiver{}, nil },
		HandshakeTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := transport.Fixed(nl, "fuzz")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return nl.Addr().String()
}

// sendGarbage sends in on a connection of its own, closes its end and
// requires the server to close the connection in time.
func sendGarbage(t *testing.T, addr string, in []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
	}()
	// The data connection's peer timeout (10 s) bounds a request whose
	// stream never ends; an end the server saw ends sooner.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server kept the connection open 30 s after the client's end; input %q", in)
	}
}

// The same without the fuzzing engine, which the server's background
// goroutines (heartbeats, keepalive) confuse: their coverage changes
// under every input, so minimization never settles (run -fuzz with
// -fuzzminimizetime=0). Here: 500 mutations of a real client's bytes
// from a fixed seed (bytes changed, inserted, removed), in every test run.
func TestServerConnMutations(t *testing.T) {
	seeds := clientBytes(t)
	addr := fuzzServer(t)
	r := rand.New(rand.NewPCG(12, 6))
	for range 500 {
		in := bytes.Clone(seeds[r.IntN(len(seeds))])
		for range 1 + r.IntN(4) {
			switch p := r.IntN(len(in) + 1); r.IntN(3) {
			case 0:
				if p < len(in) {
					in[p] = byte(r.Uint32())
				}
			case 1:
				in = slices.Insert(in, p, byte(r.Uint32()))
			case 2:
				if p < len(in) {
					in = slices.Delete(in, p, p+1)
				}
			}
		}
		sendGarbage(t, addr, in)
	}
	// The server still serves a real client.
	c := newClient(t, ClientConfig{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}})
	if _, err := c.Receiver().ListFilesystems(context.Background()); err != nil {
		t.Fatalf("after the garbage: %v", err)
	}
}
