package twohost_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/twohost"
)

// greeter answers each connection with its peer's identity, then closes.
type greeter struct {
	mu      sync.Mutex
	l       transport.Listener
	stopped bool
}

func (g *greeter) Serve(l transport.Listener) error {
	g.mu.Lock()
	g.l = l
	g.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.stopped {
				return errStopped
			}
			return err
		}
		io.WriteString(c, c.Identity)
		c.Close()
	}
}

func (g *greeter) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	if g.l != nil {
		g.l.Close()
	}
}

var errStopped = errors.New("stopped")

func greeting(t *testing.T, dial transport.Dialer) string {
	t.Helper()
	c, err := dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The client host reaches the server at Addr, directly and through a
// simulated ssh process, over the links New set; the server knows every
// peer as the identity Listen was given; Stop returns what Serve did,
// after it returned.
func TestServeDialSSHStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, err := twohost.New(3, netsim.Link{Latency: 50 * time.Millisecond}, "sink", "laptop", 7000)
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr() != "sink:7000" {
			t.Fatalf("Addr %q", h.Addr())
		}
		l, err := h.Listen("alice")
		if err != nil {
			t.Fatal(err)
		}
		g := &greeter{}
		s := twohost.Serve(g, l)
		start := time.Now()
		if got := greeting(t, h.Dialer()); got != "alice" {
			t.Fatalf("direct: the server saw %q, want alice", got)
		}
		if took := time.Since(start); took < 100*time.Millisecond {
			t.Errorf("a dial and an answer took %v: the link's latency did not apply", took)
		}
		sp := h.SSH(nil)
		if got := greeting(t, sp.Dialer()); got != "alice" {
			t.Fatalf("ssh: the server saw %q, want alice", got)
		}
		if sp.Started() != 1 {
			t.Errorf("%d ssh processes started, want 1", sp.Started())
		}
		if err := s.Stop(); !errors.Is(err, errStopped) {
			t.Fatalf("Stop returned %v, want what Serve returned", err)
		}
		if _, err := h.Dialer()(context.Background()); err == nil {
			t.Fatal("dialled a stopped server")
		}
	})
}

// A listener's identity must be one: Listen refuses others and leaves the
// address free.
func TestListenRefusesABadIdentity(t *testing.T) {
	h, err := twohost.New(1, netsim.Link{}, "sink", "laptop", 7000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Listen("a/b"); !errors.Is(err, transport.ErrBadIdentity) {
		t.Fatalf("Listen(a/b): %v", err)
	}
	l, err := h.Listen("alice")
	if err != nil {
		t.Fatalf("the address stayed taken: %v", err)
	}
	l.Close()
}
