package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// TCPClients maps client addresses to identities: keys are IP addresses
// ("192.0.2.7", "2001:db8::1") or prefixes ("192.0.2.0/24"); the most
// specific match wins. In an identity of a prefix, "*" stands for the
// client's address ("backup-*" for 192.0.2.7 is "backup-192.0.2.7").
type TCPClients map[string]string

type tcpRule struct {
	prefix   netip.Prefix
	identity string
}

func (c TCPClients) rules() ([]tcpRule, error) {
	var rules []tcpRule
	for key, identity := range c {
		var p netip.Prefix
		if strings.Contains(key, "/") {
			pp, err := netip.ParsePrefix(key)
			if err != nil {
				return nil, fmt.Errorf("tcp clients: %q is no IP address or prefix: %w", key, err)
			}
			p = pp.Masked()
		} else {
			a, err := netip.ParseAddr(key)
			if err != nil {
				return nil, fmt.Errorf("tcp clients: %q is no IP address or prefix: %w", key, err)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if strings.Contains(identity, "*") && p.IsSingleIP() {
			return nil, fmt.Errorf("tcp clients: identity %q of the single address %s contains '*'", identity, key)
		}
		// Validate with a stand-in for '*'.
		if err := ValidateIdentity(strings.ReplaceAll(identity, "*", "x")); err != nil {
			return nil, fmt.Errorf("tcp clients: %s: %w", key, err)
		}
		rules = append(rules, tcpRule{prefix: p, identity: identity})
	}
	if len(rules) == 0 {
		return nil, errors.New("tcp clients: the allow-list is empty")
	}
	return rules, nil
}

// identify returns the identity of addr, or false.
func identify(rules []tcpRule, addr netip.Addr) (string, bool) {
	addr = addr.Unmap()
	best := -1
	for i, r := range rules {
		if r.prefix.Contains(addr) && (best < 0 || r.prefix.Bits() > rules[best].prefix.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return "", false
	}
	return strings.ReplaceAll(rules[best].identity, "*", addr.String()), true
}

// TCPListener accepts TCP connections from the addresses of its
// allow-list and closes all others.
type TCPListener struct {
	net.Listener
	rules []tcpRule
	// OnReject, if set, learns of refused connections.
	OnReject func(remote net.Addr, err error)
}

// ListenTCP listens on addr ("host:port") for the given clients.
func ListenTCP(addr string, clients TCPClients) (*TCPListener, error) {
	if _, err := clients.rules(); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return ListenTCPOn(l, clients)
}

// ListenTCPOn serves the given clients on a socket the caller opened (with
// options such as IP_FREEBIND); it takes over l.
func ListenTCPOn(l net.Listener, clients TCPClients) (*TCPListener, error) {
	rules, err := clients.rules()
	if err != nil {
		return nil, err
	}
	return &TCPListener{Listener: l, rules: rules}, nil
}

// ErrNotAllowed is the error of a connection from a client outside the
// allow-list.
var ErrNotAllowed = errors.New("client not allowed")

func (l *TCPListener) Accept() (*AuthConn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		identity, err := l.identify(c.RemoteAddr())
		if err == nil {
			return &AuthConn{Conn: c, Identity: identity}, nil
		}
		c.Close()
		if l.OnReject != nil {
			l.OnReject(c.RemoteAddr(), err)
		}
	}
}

func (l *TCPListener) identify(remote net.Addr) (string, error) {
	ap, err := netip.ParseAddrPort(remote.String())
	if err != nil {
		return "", fmt.Errorf("remote address %s: %w", remote, err)
	}
	identity, ok := identify(l.rules, ap.Addr())
	if !ok {
		return "", fmt.Errorf("%w: %s is not in the allow-list", ErrNotAllowed, ap.Addr())
	}
	if err := ValidateIdentity(identity); err != nil {
		return "", fmt.Errorf("client %s: %w", ap.Addr(), err)
	}
	return identity, nil
}

// DialTCP dials addr.
func DialTCP(addr string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}
