// Package transport carries zrepl's RPC connections and authenticates their
// peers: a listener hands out connections together with the client identity
// it established, and a Dialer opens connections to a server. Transports:
// tcp (identity from an address allow-list), tls (mutual TLS, identity =
// client certificate CN), ssh (a process per connection; the server side's
// forced command `zrepl stdinserver <identity>` reaches a StdinServerListener)
// and local (in-process pipes, identity chosen by the dialer). engine/rpc
// builds its protocol on top and confines each client to the data below
// <root_fs>/<identity>.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// AuthConn is an accepted connection and the identity of its peer.
type AuthConn struct {
	net.Conn
	Identity string
}

// Listener accepts authenticated connections.
type Listener interface {
	// Accept waits for the next connection whose peer was authenticated.
	Accept() (*AuthConn, error)
	Close() error
	Addr() net.Addr
}

// Dialer opens one connection to a server. The RPC client calls it for its
// control connection and once per data stream.
type Dialer func(ctx context.Context) (net.Conn, error)

// ErrBadIdentity matches every invalid client identity.
var ErrBadIdentity = errors.New("invalid client identity")

// ValidateIdentity checks that identity can name a client's subtree: one
// ZFS dataset name component.
func ValidateIdentity(identity string) error {
	if identity == "" {
		return fmt.Errorf("%w: empty", ErrBadIdentity)
	}
	if identity == "." || identity == ".." {
		return fmt.Errorf("%w %q", ErrBadIdentity, identity)
	}
	if len(identity) > 200 {
		return fmt.Errorf("%w %q: longer than 200 bytes", ErrBadIdentity, identity[:32]+"...")
	}
	for i := 0; i < len(identity); i++ {
		c := identity[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:", c) >= 0
		if !ok {
			return fmt.Errorf("%w %q: byte %q at %d is not one of [A-Za-z0-9-_.:]", ErrBadIdentity, identity, c, i)
		}
	}
	return nil
}

// Fixed wraps a net.Listener whose every peer is the same client: for
// in-process and test setups where the connection itself proves nothing.
func Fixed(l net.Listener, identity string) (Listener, error) {
	if err := ValidateIdentity(identity); err != nil {
		return nil, err
	}
	return fixed{l, identity}, nil
}

type fixed struct {
	net.Listener
	identity string
}

func (f fixed) Accept() (*AuthConn, error) {
	c, err := f.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &AuthConn{Conn: c, Identity: f.identity}, nil
}
