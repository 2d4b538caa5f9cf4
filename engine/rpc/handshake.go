package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ProtocolVersion is the version of the wire protocol: the hello, the
// control RPCs and the data framing. Peers of different versions refuse
// each other.
//
// Version 2: listings carry the sender job's marks; MoveLastReceivedHold.
const ProtocolVersion uint32 = 2

// Every connection starts with a hello in each direction, before gRPC or
// data frames:
//
//	client: magic "ZRPL" | version (4 bytes) | kind (1 byte)
//	server: magic "ZRPL" | version (4 bytes) | status (1 byte) | ticket (8 bytes) | msglen (2 bytes) | msg
//
// Magic and version keep these offsets in every future version, so a peer
// can always name the other's version when it refuses it.
const (
	helloMagic = "ZRPL"

	kindControl byte = 1
	kindData    byte = 2

	statusOK      byte = 0
	statusVersion byte = 1
	statusRefused byte = 2

	clientHelloLen = 4 + 4 + 1
	serverHelloLen = 4 + 4 + 1 + 8 + 2

	// DefaultHandshakeTimeout bounds the hello exchange.
	DefaultHandshakeTimeout = 10 * time.Second
)

// ErrVersionMismatch matches a refused connection whose peer speaks another
// protocol version.
var ErrVersionMismatch = errors.New("protocol version mismatch")

// VersionMismatchError names both versions.
type VersionMismatchError struct {
	Client, Server uint32
}

func (e *VersionMismatchError) Error() string {
	return fmt.Sprintf("protocol version mismatch: client speaks zrepl rpc version %d, server speaks version %d", e.Client, e.Server)
}

func (e *VersionMismatchError) Is(target error) bool { return target == ErrVersionMismatch }

// Permanent tells the replication driver not to retry: only an upgrade of
// one side resolves a version mismatch.
func (e *VersionMismatchError) Permanent() bool { return true }

func deadline(ctx context.Context, timeout time.Duration) time.Time {
	d := time.Now().Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}

// clientHello runs the client's side of the hello. version is a parameter
// so tests can speak another one.
func clientHello(ctx context.Context, conn net.Conn, version uint32, kind byte, timeout time.Duration) (ticket uint64, err error) {
	if err := conn.SetDeadline(deadline(ctx, timeout)); err != nil {
		return 0, fmt.Errorf("handshake: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			err = fmt.Errorf("handshake: %w", context.Cause(ctx))
		}
	}()
	var b [serverHelloLen]byte
	copy(b[:], helloMagic)
	binary.BigEndian.PutUint32(b[4:], version)
	b[8] = kind
	if _, err := conn.Write(b[:clientHelloLen]); err != nil {
		return 0, fmt.Errorf("handshake: send hello: %w", err)
	}
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return 0, fmt.Errorf("handshake: read the server's hello: %w", err)
	}
	if string(b[:4]) != helloMagic {
		return 0, fmt.Errorf("handshake: %w: the server is no zrepl rpc server (hello %q)", ErrProtocol, b[:4])
	}
	serverVersion := binary.BigEndian.Uint32(b[4:])
	st := b[8]
	ticket = binary.BigEndian.Uint64(b[9:])
	msg := make([]byte, binary.BigEndian.Uint16(b[17:]))
	if _, err := io.ReadFull(conn, msg); err != nil {
		return 0, fmt.Errorf("handshake: read the server's hello: %w", err)
	}
	if serverVersion != version || st == statusVersion {
		return 0, &VersionMismatchError{Client: version, Server: serverVersion}
	}
	if st != statusOK {
		return 0, fmt.Errorf("handshake: the server refused the connection: %s", msg)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return 0, fmt.Errorf("handshake: %w", err)
	}
	return ticket, nil
}

// readClientHello reads the client's hello; the server answers with
// serverHello.
func readClientHello(conn net.Conn, timeout time.Duration) (version uint32, kind byte, err error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, 0, err
	}
	var b [clientHelloLen]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return 0, 0, fmt.Errorf("read the client's hello: %w", err)
	}
	if string(b[:4]) != helloMagic {
		return 0, 0, fmt.Errorf("%w: the client speaks no zrepl rpc (hello %q)", ErrProtocol, b[:4])
	}
	return binary.BigEndian.Uint32(b[4:]), b[8], nil
}

func serverHello(conn net.Conn, version uint32, st byte, ticket uint64, msg string) error {
	msg = truncateText(msg, 1000)
	b := make([]byte, serverHelloLen+len(msg))
	copy(b, helloMagic)
	binary.BigEndian.PutUint32(b[4:], version)
	b[8] = st
	binary.BigEndian.PutUint64(b[9:], ticket)
	binary.BigEndian.PutUint16(b[17:], uint16(len(msg)))
	copy(b[serverHelloLen:], msg)
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	if st != statusOK {
		return nil
	}
	return conn.SetDeadline(time.Time{})
}
