package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

var (
	// ErrTLSHandshake matches connections refused in their TLS
	// handshake (no or a bad client certificate, a timeout).
	ErrTLSHandshake = errors.New("tls handshake")
	// ErrCNNotAllowed matches (and ErrNotAllowed) connections whose
	// valid certificate names a client not allowed.
	ErrCNNotAllowed = fmt.Errorf("%w: certificate CN", ErrNotAllowed)
)

// TLSConfig configures mutual TLS. The identity of a client is the common
// name of its certificate, which must be one of ClientCNs.
type TLSConfig struct {
	// TLS holds the server's certificate and the CAs of client
	// certificates (ClientCAs); client authentication is always required.
	TLS       *tls.Config
	ClientCNs []string
	// HandshakeTimeout bounds a TLS handshake (default 10s).
	HandshakeTimeout time.Duration
	// OnReject, if set, learns of refused connections.
	OnReject func(remote net.Addr, err error)
}

// TLSListener accepts connections whose TLS handshake proved an allowed
// client certificate. Handshakes run concurrently, so a slow or silent
// client delays nobody.
type TLSListener struct {
	inner net.Listener
	cfg   TLSConfig
	tls   *tls.Config
	conns chan *AuthConn
	done  chan struct{}
	// ctx ends with the listener: it aborts running handshakes.
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	wg     sync.WaitGroup

	mu  sync.Mutex
	err error
}

// ListenTLS listens on addr with mutual TLS.
func ListenTLS(addr string, cfg TLSConfig) (*TLSListener, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	inner, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return ListenTLSOn(inner, cfg)
}

// ListenTLSOn serves mutual TLS on a socket the caller opened (with
// options such as IP_FREEBIND); it takes over inner.
func ListenTLSOn(inner net.Listener, cfg TLSConfig) (*TLSListener, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	tc := cfg.TLS.Clone()
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	l := &TLSListener{inner: inner, cfg: cfg, tls: tc, conns: make(chan *AuthConn), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (cfg TLSConfig) check() error {
	if cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil {
		return errors.New("tls transport: no server certificate")
	}
	if cfg.TLS.ClientCAs == nil {
		return errors.New("tls transport: no CA for client certificates")
	}
	if len(cfg.ClientCNs) == 0 {
		return errors.New("tls transport: no client CNs allowed")
	}
	for _, cn := range cfg.ClientCNs {
		if err := ValidateIdentity(cn); err != nil {
			return fmt.Errorf("tls transport: client CN: %w", err)
		}
	}
	return nil
}

func (l *TLSListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.inner.Accept()
		if err != nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.shutdown()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			ac, err := l.handshake(c)
			if err != nil {
				c.Close()
				if l.cfg.OnReject != nil {
					l.cfg.OnReject(c.RemoteAddr(), err)
				}
				return
			}
			select {
			case l.conns <- ac:
			case <-l.done:
				ac.Close()
			}
		}()
	}
}

func (l *TLSListener) handshake(c net.Conn) (*AuthConn, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
	defer cancel()
	tc := tls.Server(c, l.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTLSHandshake, err)
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("tls: no client certificate")
	}
	cn := certs[0].Subject.CommonName
	if !slices.Contains(l.cfg.ClientCNs, cn) {
		return nil, fmt.Errorf("%w %q is not among the allowed clients", ErrCNNotAllowed, cn)
	}
	return &AuthConn{Conn: tc, Identity: cn}, nil
}

func (l *TLSListener) Accept() (*AuthConn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil && !errors.Is(l.err, net.ErrClosed) {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops listening, aborts running handshakes and waits for them.
func (l *TLSListener) Close() error {
	err := l.shutdown()
	l.wg.Wait()
	return err
}

func (l *TLSListener) shutdown() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		l.cancel()
		err = l.inner.Close()
	})
	return err
}

func (l *TLSListener) Addr() net.Addr { return l.inner.Addr() }

// DialTLS dials addr with cfg, which holds the client's certificate and
// the CA of the server's.
func DialTLS(addr string, cfg *tls.Config) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, "tcp", addr)
	}
}
