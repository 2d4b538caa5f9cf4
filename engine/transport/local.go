package transport

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// Local connects jobs of one process: listeners are registered by name,
// and a dialer names the listener and the identity it claims. Connections
// are net.Pipe pairs. The registry is a value, not a global, so tests and
// daemons each have their own.
type Local struct {
	mu        sync.Mutex
	listeners map[string]*LocalListener
}

// NewLocal returns an empty registry.
func NewLocal() *Local { return &Local{listeners: map[string]*LocalListener{}} }

// Listen registers a listener under name.
func (r *Local) Listen(name string) (*LocalListener, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.listeners[name]; ok {
		return nil, fmt.Errorf("local transport: listener %q already exists", name)
	}
	l := &LocalListener{reg: r, name: name, conns: make(chan *AuthConn), done: make(chan struct{})}
	r.listeners[name] = l
	return l, nil
}

// Dialer returns a dialer to the listener name that claims identity.
func (r *Local) Dialer(name, identity string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		if err := ValidateIdentity(identity); err != nil {
			return nil, err
		}
		r.mu.Lock()
		l, ok := r.listeners[name]
		r.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("local transport: no listener %q", name)
		}
		client, server := net.Pipe()
		select {
		case l.conns <- &AuthConn{Conn: server, Identity: identity}:
			return client, nil
		case <-l.done:
			return nil, fmt.Errorf("local transport: listener %q closed", name)
		case <-ctx.Done():
			return nil, fmt.Errorf("local transport: dial %q: %w", name, context.Cause(ctx))
		}
	}
}

// LocalListener is a listener of a Local registry.
type LocalListener struct {
	reg   *Local
	name  string
	conns chan *AuthConn
	done  chan struct{}
	once  sync.Once
}

func (l *LocalListener) Accept() (*AuthConn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close unregisters the listener.
func (l *LocalListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.reg.mu.Lock()
		delete(l.reg.listeners, l.name)
		l.reg.mu.Unlock()
	})
	return nil
}

func (l *LocalListener) Addr() net.Addr { return localAddr(l.name) }

type localAddr string

func (localAddr) Network() string  { return "local" }
func (a localAddr) String() string { return string(a) }
