package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/replication"
)

// The banner is zrepl's, byte for byte: a 10-digit length of the rest and a
// space, "ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=NNNN\n", one
// line per extension.
func TestBannerBytes(t *testing.T) {
	b, err := banner{version: 7}.encode()
	require.NoError(t, err)
	assert.Equal(t, "0000000056 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n", string(b))
	b, err = ourBanner().encode()
	require.NoError(t, err)
	assert.Equal(t, "0000000118 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0003\n"+
		"zrepl.dev/listing-v1\nzrepl.dev/errors-v1\nzrepl.dev/receive-v1\n", string(b))

	for _, want := range []banner{{version: 7}, ourBanner(), {version: 12, extensions: []string{"x", "y z"}}} {
		enc, err := want.encode()
		require.NoError(t, err)
		got, err := decodeBanner(enc[:bannerPrefixLen], bytes.NewReader(enc[bannerPrefixLen:]))
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
}

func TestBannerDecodeRefusesGarbage(t *testing.T) {
	for name, wire := range map[string]string{
		"http":         "GET / HTTP/1.1\r\n\r\n",
		"no digits":    "000000005x ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n",
		"too long":     "9999999999 ZREPL",
		"other magic":  "0000000056 XREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n",
		"count wrong":  "0000000058 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0002\na\n",
		"trailing":     "0000000058 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\nab",
		"version zero": "0000000056 ZREPL_ZFS_REPLICATION PROTOVERSION=0000 EXTENSIONS=0000\n",
	} {
		t.Run(name, func(t *testing.T) {
			w := []byte(wire)
			_, err := decodeBanner(w[:bannerPrefixLen], bytes.NewReader(w[bannerPrefixLen:]))
			assert.ErrorIs(t, err, ErrNotZrepl)
			assert.ErrorContains(t, err, "it sent")
		})
	}
}

func TestHandshakeAgainstStrangers(t *testing.T) {
	ctx := context.Background()

	// A client that reaches something else than a zrepl server.
	c1, s1 := net.Pipe()
	go io.Copy(io.Discard, s1)
	go s1.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	_, err := handshake(ctx, c1, ourBanner(), labelControl, time.Second)
	assert.ErrorIs(t, err, ErrNotZrepl)
	assert.ErrorContains(t, err, `it sent "HTTP/1.1 40`)
	c1.Close()
	s1.Close()

	// A server that hears something else than a zrepl client.
	c2, s2 := net.Pipe()
	go c2.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	go io.Copy(io.Discard, c2)
	_, err = handshake(ctx, s2, ourBanner(), "", time.Second)
	assert.ErrorIs(t, err, ErrNotZrepl)
	c2.Close()
	s2.Close()

	// A silent peer runs into the timeout.
	c, s := net.Pipe()
	start := time.Now()
	_, err = handshake(ctx, s, ourBanner(), "", 50*time.Millisecond)
	assert.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second)
	c.Close()
	s.Close()

	// A cancelled context ends the client's handshake.
	c3, s3 := net.Pipe()
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		io.ReadFull(s3, make([]byte, 11))
		cancel() // and never answer
	}()
	_, err = handshake(cctx, c3, ourBanner(), labelControl, time.Minute)
	assert.ErrorIs(t, err, context.Canceled)
	c3.Close()
	s3.Close()
}

// A client of this project's protocol before it spoke zrepl's ("ZRPL",
// version 2) gets a refusal in its own words: its version and ours.
func TestHandshakeOldProjectClient(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	reply := make(chan []byte, 1)
	go func() {
		c.Write([]byte{'Z', 'R', 'P', 'L', 0, 0, 0, 2, 1})
		b := make([]byte, 512)
		n, _ := io.ReadAtLeast(c, b, 19)
		reply <- b[:n]
	}()
	_, err := handshake(context.Background(), s, ourBanner(), "", time.Second)
	assert.ErrorIs(t, err, ErrVersionMismatch)
	assert.ErrorContains(t, err, "the client speaks this project's own earlier protocol version 2")
	r := <-reply
	require.GreaterOrEqual(t, len(r), 19)
	assert.Equal(t, "ZRPL", string(r[:4]))
	assert.Equal(t, []byte{0, 0, 0, 7, 1}, r[4:9], "version 7, status 'version mismatch'")
	assert.Contains(t, string(r[19:]), "zrepl wire protocol version 7")
}

// A peer of another version is refused by both sides, each naming both
// versions and which side to upgrade; the driver does not retry.
func TestVersionMismatch(t *testing.T) {
	for _, c := range []struct {
		client, server             int
		clientAdvice, serverAdvice string
	}{
		{ProtocolVersion + 1, ProtocolVersion, "the server speaks version 7 (upgrade the server)", "the client speaks version 8 (the client is newer: upgrade this host)"},
		{ProtocolVersion, ProtocolVersion + 1, "the server speaks version 8 (the server is newer: upgrade this host)", "the client speaks version 7 (upgrade the client)"},
	} {
		t.Run(fmt.Sprintf("client%d-server%d", c.client, c.server), func(t *testing.T) {
			var refused []error
			errc := make(chan error, 4)
			sb, cb := banner{version: c.server}, banner{version: c.client}
			srv := newServer(t, ServerConfig{Sender: Source(&fakeSender{}), banner: &sb, OnConnError: func(_ string, err error) { errc <- err }})
			cl := newClient(t, ClientConfig{Dial: serve(t, srv, "pipe", "alice"), banner: &cb})
			_, err := cl.Sender().ListFilesystems(context.Background())
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrVersionMismatch)
			assert.ErrorContains(t, err, c.clientAdvice)
			var perm replication.PermanentError
			assert.True(t, errors.As(err, &perm) && perm.Permanent(), "the driver must not retry a version mismatch")
			refused = append(refused, <-errc)
			assert.ErrorIs(t, refused[0], ErrVersionMismatch)
			assert.ErrorContains(t, refused[0], `"alice"`, "the server names the client")
			assert.ErrorContains(t, refused[0], c.serverAdvice)
		})
	}
}
