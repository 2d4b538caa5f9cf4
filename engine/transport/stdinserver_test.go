package transport

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipeListener hands out the server ends of net.Pipe pairs, which
// testing/synctest can see blocked (a unix socket it cannot).
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	select {
	case l.conns <- server:
	case <-l.done:
		t.Fatal("listener closed")
	}
	return client
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return localAddr("pipe") }

// closedWithin says whether the server closed c (a read ends with EOF)
// before d passed.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF
}

// Issue 12.11: silent and slow local connections delay nobody. Three
// connections that never greet, and one that greets a byte per second
// (slowloris), do not hold up a real session's greeting; each of them is
// closed once the greeting deadline passes, which bounds the whole
// greeting, not each read.
func TestStdinServerAcceptsConcurrently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pl := newPipeListener()
		var mu sync.Mutex
		var refused []error
		l := newStdinServerListener(pl, "pipe")
		l.OnReject = func(_ net.Addr, err error) {
			mu.Lock()
			refused = append(refused, err)
			mu.Unlock()
		}
		defer l.Close()
		accepted := make(chan *AuthConn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				accepted <- c
			}
			close(accepted)
		}()
		start := time.Now()
		var silent []net.Conn
		for range 3 {
			silent = append(silent, pl.dial(t))
		}
		slow := pl.dial(t)
		var slowDone sync.WaitGroup
		defer slowDone.Wait()
		slowDone.Add(1)
		go func() {
			defer slowDone.Done()
			for _, b := range []byte(stdinServerGreeting + "mallory\n") {
				if _, err := slow.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
		real := pl.dial(t)
		defer real.Close()
		_, err := real.Write([]byte(stdinServerGreeting + "alice\n"))
		require.NoError(t, err)
		s := <-accepted
		require.NotNil(t, s, "the real session was accepted")
		defer s.Close()
		assert.Equal(t, "alice", s.Identity)
		assert.Less(t, time.Since(start), time.Second, "the real session waited for the silent ones")

		for i, c := range append(silent, slow) {
			assert.True(t, closedWithin(c, l.timeout+time.Second), "connection %d outlived the greeting deadline", i)
			c.Close()
		}
		assert.Equal(t, l.timeout, time.Since(start).Truncate(time.Second), "closed at the deadline, not later")
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		assert.Len(t, refused, 4, "each refusal is reported")
		for _, err := range refused {
			assert.ErrorIs(t, err, ErrGreeting)
			assert.ErrorContains(t, err, "none within 10s")
		}
	})
}

// Close ends the greetings in progress and Accept.
func TestStdinServerCloseEndsGreetings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pl := newPipeListener()
		l := newStdinServerListener(pl, "pipe")
		acceptErr := make(chan error, 1)
		go func() {
			_, err := l.Accept()
			acceptErr <- err
		}()
		c := pl.dial(t)
		synctest.Wait()
		require.NoError(t, l.Close())
		assert.ErrorIs(t, <-acceptErr, net.ErrClosed)
		assert.True(t, closedWithin(c, time.Millisecond), "a greeting in progress was ended by Close")
	})
}

// FuzzReadGreeting: whatever a local process sends, the greeting either
// names a valid identity and consumed exactly its line, or is refused;
// it never reads past its line, nor more than its bound.
func FuzzReadGreeting(f *testing.F) {
	f.Add([]byte(stdinServerGreeting + "alice\nrest"))
	f.Add([]byte(stdinServerGreeting + "../etc\n"))
	f.Add([]byte(stdinServerGreeting + "\n"))
	f.Add([]byte("HELLO\n"))
	f.Add([]byte(stdinServerGreeting + string(make([]byte, 300))))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		id, err := readGreeting(r)
		consumed := len(in) - r.Len()
		if consumed > len(stdinServerGreeting)+256+1 {
			t.Fatalf("read %d bytes of a greeting", consumed)
		}
		if err != nil {
			return
		}
		if ValidateIdentity(id) != nil {
			t.Fatalf("accepted invalid identity %q", id)
		}
		if string(in[:consumed]) != stdinServerGreeting+id+"\n" {
			t.Fatalf("consumed %q for identity %q", in[:consumed], id)
		}
	})
}

// A flood of silent local connections beyond maxGreetings closes the
// oldest of them, not the newest: a real session arriving during the
// flood is served at once.
func TestStdinServerFloodClosesOldest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pl := newPipeListener()
		l := newStdinServerListener(pl, "pipe")
		defer l.Close()
		accepted := make(chan *AuthConn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				accepted <- c
			}
			close(accepted)
		}()
		var silent []net.Conn
		for range maxGreetings + 50 {
			silent = append(silent, pl.dial(t))
		}
		real := pl.dial(t)
		defer real.Close()
		_, err := real.Write([]byte(stdinServerGreeting + "alice\n"))
		require.NoError(t, err)
		s := <-accepted
		require.NotNil(t, s, "the real session was refused")
		defer s.Close()
		synctest.Wait()
		closed := 0
		for i, c := range silent {
			if closedWithin(c, time.Millisecond) {
				closed++
				assert.Less(t, i, 51, "a newer connection was closed before an older one")
			}
		}
		assert.Equal(t, 51, closed, "the oldest beyond the bound (the real session took one place)")
		for _, c := range silent {
			c.Close()
		}
	})
}
