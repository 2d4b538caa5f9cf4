package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/transport"
)

// The daemon turns each connect and serve section into a spec when it is
// built (New): a value of its own that holds everything the transport will
// use, certificates and keys already read. So a missing or broken file is
// reported at start (and by configcheck) with its key and line, not at the
// first run, and what a config builds can be inspected (configcheck --what
// jobs; cmd/zrepl's key walk).

// dialSpec is how an active job reaches its peer over tcp, tls or
// ssh+stdinserver.
type dialSpec struct {
	transport string
	address   string        // tcp, tls
	timeout   time.Duration // connect.dial_timeout; 0: none
	tls       *tls.Config   // tls: client certificate; the server is checked against roots and serverCN
	roots     *x509.CertPool
	serverCN  string
	ssh       []string // ssh+stdinserver: the ssh command line
}

func newDialSpec(c *config.Connect, skipCerts bool) (*dialSpec, error) {
	s := &dialSpec{transport: c.Type, address: c.Address, timeout: c.DialTimeout}
	switch c.Type {
	case config.TransportTCP:
	case config.TransportTLS:
		if skipCerts {
			break
		}
		cfg, roots, err := loadTLS(c.Pos, c.CA, c.Cert, c.Key)
		if err != nil {
			return nil, err
		}
		s.tls, s.roots, s.serverCN = cfg, roots, c.ServerCN
	case config.TransportSSH:
		s.ssh = []string{"ssh", "-o", "BatchMode=yes", "-i", c.IdentityFile, "-p", strconv.Itoa(c.Port)}
		for _, o := range c.Options {
			s.ssh = append(s.ssh, "-o", o)
		}
		s.ssh = append(s.ssh, c.User+"@"+c.Host)
	default:
		return nil, fmt.Errorf("transport %q cannot be dialed", c.Type)
	}
	return s, nil
}

// dialer is the transport's dialer, bounded by the dial timeout.
func (s *dialSpec) dialer() (transport.Dialer, error) {
	var d transport.Dialer
	switch s.transport {
	case config.TransportTCP:
		d = transport.DialTCP(s.address)
	case config.TransportTLS:
		cfg := s.tls.Clone()
		// zrepl names the server by its certificate's common name, not
		// by a host name in its SANs: verify the chain against the CA,
		// then the CN, instead of Go's host name check.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyServerCN(raw, s.roots, s.serverCN)
		}
		d = transport.DialTLS(s.address, cfg)
	case config.TransportSSH:
		var err error
		if d, err = transport.SSHDialer(s.ssh); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("transport %q cannot be dialed", s.transport)
	}
	if s.timeout <= 0 {
		return d, nil
	}
	return func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		return d(ctx)
	}, nil
}

// serveSpec is how a passive job listens: a tcp or tls socket, one
// stdinserver socket per client identity, or a local listener name.
type serveSpec struct {
	transport string
	listen    string // tcp, tls
	freebind  bool
	clients   transport.TCPClients // tcp
	tls       *tls.Config          // tls: server certificate and client CAs
	clientCNs []string
	// handshakeTimeout bounds a TLS handshake (serve.tls.handshake_timeout).
	handshakeTimeout time.Duration
	sockets          map[string]string // stdinserver: identity -> socket path
	listener         string            // local
}

func newServeSpec(g *config.Global, s *config.Serve, skipCerts bool) (*serveSpec, error) {
	spec := &serveSpec{transport: s.Type, listen: s.Listen, freebind: s.ListenFreebind}
	switch s.Type {
	case config.TransportTCP:
		spec.clients = transport.TCPClients{}
		for _, c := range s.Clients {
			key := c.Prefix.String()
			if c.Prefix.IsSingleIP() {
				key = c.Prefix.Addr().String()
			}
			spec.clients[key] = c.Identity
		}
	case config.TransportTLS:
		spec.clientCNs, spec.handshakeTimeout = s.ClientCNs, s.HandshakeTimeout
		if skipCerts {
			break
		}
		cfg, roots, err := loadTLS(s.Pos, s.CA, s.Cert, s.Key)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = roots
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		spec.tls = cfg
	case config.TransportStdinserver:
		spec.sockets = map[string]string{}
		for _, id := range s.ClientIdentities {
			spec.sockets[id] = StdinserverSocket(g, id)
		}
	case config.TransportLocal:
		spec.listener = s.ListenerName
	default:
		return nil, fmt.Errorf("transport %q cannot be served", s.Type)
	}
	return spec, nil
}

// open opens the spec's listeners (none for local: those jobs are reached
// inside the daemon); they report refused connections to r.
func (s *serveSpec) open(r *refusals) ([]transport.Listener, error) {
	switch s.transport {
	case config.TransportTCP:
		sock, err := listenSocket(s.listen, s.freebind)
		if err != nil {
			return nil, err
		}
		l, err := transport.ListenTCPOn(sock, s.clients)
		if err != nil {
			sock.Close()
			return nil, err
		}
		l.OnReject = r.onReject
		return []transport.Listener{l}, nil
	case config.TransportTLS:
		sock, err := listenSocket(s.listen, s.freebind)
		if err != nil {
			return nil, err
		}
		l, err := transport.ListenTLSOn(sock, transport.TLSConfig{TLS: s.tls, ClientCNs: s.clientCNs, HandshakeTimeout: s.handshakeTimeout, OnReject: r.onReject})
		if err != nil {
			sock.Close()
			return nil, err
		}
		return []transport.Listener{l}, nil
	case config.TransportStdinserver:
		var out []transport.Listener
		for id, path := range s.sockets {
			l, err := transport.ListenStdinServer(path)
			if err != nil {
				for _, o := range out {
					o.Close()
				}
				return nil, err
			}
			l.OnReject = r.onReject
			out = append(out, onlyIdentity{l, id, r})
		}
		return out, nil
	case config.TransportLocal:
		return nil, nil
	}
	return nil, fmt.Errorf("transport %q cannot be served", s.transport)
}

// listenSocket opens a TCP socket on addr; with freebind (IP_FREEBIND) the
// address need not exist yet on this host.
func listenSocket(addr string, freebind bool) (net.Listener, error) {
	var lc net.ListenConfig
	if freebind {
		lc.Control = setFreebind
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// loadTLS reads a certificate, its key and a CA file, each error naming
// the key and line of the file at fault.
func loadTLS(pos config.Pos, ca, cert, key string) (*tls.Config, *x509.CertPool, error) {
	read := func(k, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pos.Of(k), err)
		}
		return b, nil
	}
	certPEM, err := read("cert", cert)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := read("key", key)
	if err != nil {
		return nil, nil, err
	}
	caPEM, err := read("ca", ca)
	if err != nil {
		return nil, nil, err
	}
	if _, err := tlsLeaf(certPEM); err != nil {
		return nil, nil, fmt.Errorf("%s: %s: %w", pos.Of("cert"), cert, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s does not hold the private key of %s: %w", pos.Of("key"), key, cert, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("%s: %s holds no PEM certificate", pos.Of("ca"), ca)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, roots, nil
}

// tlsLeaf parses the first certificate of a PEM file.
func tlsLeaf(certPEM []byte) (*x509.Certificate, error) {
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("holds no PEM certificate")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}
