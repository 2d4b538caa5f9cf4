package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// The ssh transport: a client runs `ssh` per connection; the server's
// authorized_keys forces the command `zrepl stdinserver <identity>` for the
// client's key, which connects to the daemon's unix socket, introduces the
// identity and then passes bytes between its stdin/stdout and the socket.
// Only processes that may open the socket (its directory is 0700) can claim
// an identity, which sshd's forced command ties to a key.

const stdinServerGreeting = "ZREPL-STDINSERVER "

// ErrGreeting matches connections refused for their greeting.
var ErrGreeting = errors.New("stdinserver greeting")

// truncate cuts b to n bytes for an error message.
func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// StdinServerListener accepts the connections of stdinserver processes.
// Greetings are read concurrently, each within a deadline, so that a
// silent or slow local connection delays no other session (issue 12.11).
type StdinServerListener struct {
	l       net.Listener
	path    string
	timeout time.Duration
	// OnReject, if set, learns of connections refused for their greeting.
	// Set it before the first Accept.
	OnReject func(remote net.Addr, err error)

	start sync.Once
	conns chan *AuthConn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	mu      sync.Mutex
	err     error      // why the inner listener ended
	greeted []net.Conn // connections in their greeting, oldest first
}

// maxGreetings bounds the connections greeting at once: beyond it the
// oldest is closed, so that a real session arriving during a flood is
// served (only the daemon's user can connect; the bound keeps a runaway
// script from exhausting file descriptors).
const maxGreetings = 256

// ListenStdinServer listens on the unix socket path, creating its
// directory (mode 0700) if needed and replacing a stale socket.
func ListenStdinServer(path string) (*StdinServerListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("stdinserver: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("stdinserver: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("stdinserver: directory %s of the socket is accessible to others (mode %v): any local user could claim any identity", dir, fi.Mode().Perm())
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("stdinserver: %s exists and is no socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("stdinserver: remove stale socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("stdinserver: %w", err)
	}
	return newStdinServerListener(l, path), nil
}

// newStdinServerListener accepts stdinserver connections on l (a unix
// socket, or a simulated one in tests).
func newStdinServerListener(l net.Listener, path string) *StdinServerListener {
	return &StdinServerListener{
		l: l, path: path, timeout: 10 * time.Second,
		conns: make(chan *AuthConn), done: make(chan struct{}),
	}
}

// Accept returns the next connection whose greeting named a valid
// identity. Connections that fail to greet in time are closed and
// reported to OnReject.
func (l *StdinServerListener) Accept() (*AuthConn, error) {
	l.start.Do(func() {
		l.wg.Add(1)
		go l.acceptLoop()
	})
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil && !errors.Is(l.err, net.ErrClosed) {
			return nil, fmt.Errorf("stdinserver: %w", l.err)
		}
		return nil, net.ErrClosed
	}
}

func (l *StdinServerListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.l.Accept()
		if err != nil {
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				// Out of file descriptors and the like: pause, go on.
				select {
				case <-time.After(50 * time.Millisecond):
					continue
				case <-l.done:
					return
				}
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.shutdown()
			return
		}
		l.mu.Lock()
		closed := l.isDone()
		var evict net.Conn
		if !closed {
			l.greeted = append(l.greeted, c)
			if len(l.greeted) > maxGreetings {
				evict = l.greeted[0]
				l.greeted = slices.Delete(slices.Clone(l.greeted), 0, 1)
			}
		}
		l.mu.Unlock()
		if closed {
			c.Close()
			return
		}
		if evict != nil {
			evict.Close()
			l.reject(evict, fmt.Errorf("%w: more than %d connections greeting at once: closed the oldest", ErrGreeting, maxGreetings))
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.greet(c)
		}()
	}
}

func (l *StdinServerListener) isDone() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// greet reads c's greeting within the deadline (which bounds the whole
// greeting: a byte now and then does not extend it) and hands c to
// Accept.
func (l *StdinServerListener) greet(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(l.timeout))
	identity, err := readGreeting(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%w: none within %v", ErrGreeting, l.timeout)
	} else if err != nil {
		err = fmt.Errorf("%w: %w", ErrGreeting, err)
	}
	l.mu.Lock()
	i := slices.Index(l.greeted, c)
	if i >= 0 {
		l.greeted = slices.Delete(slices.Clone(l.greeted), i, i+1)
	}
	l.mu.Unlock()
	if err != nil {
		c.Close()
		if i >= 0 { // else the flood bound closed it and said so
			l.reject(c, err)
		}
		return
	}
	if i < 0 {
		return // closed for the flood bound while it greeted
	}
	c.SetReadDeadline(time.Time{})
	select {
	case l.conns <- &AuthConn{Conn: c, Identity: identity}:
	case <-l.done:
		c.Close()
	}
}

func (l *StdinServerListener) reject(c net.Conn, err error) {
	if l.OnReject != nil && !l.isDone() {
		l.OnReject(c.RemoteAddr(), err)
	}
}

// readGreeting reads the greeting byte by byte, so that nothing after it
// is consumed.
func readGreeting(r io.Reader) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < len(stdinServerGreeting)+256 {
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		if b[0] == '\n' {
			s, ok := strings.CutPrefix(string(line), stdinServerGreeting)
			if !ok {
				return "", fmt.Errorf("not %q: %q", stdinServerGreeting+"<identity>", truncate(line, 64))
			}
			return s, ValidateIdentity(s)
		}
		line = append(line, b[0])
	}
	return "", errors.New("too long")
}

// Close stops listening, ends the greetings in progress and waits for
// them.
func (l *StdinServerListener) Close() error {
	err := l.shutdown()
	l.wg.Wait()
	return err
}

func (l *StdinServerListener) shutdown() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.l.Close()
		l.mu.Lock()
		for _, c := range l.greeted {
			c.Close()
		}
		l.mu.Unlock()
	})
	return err
}

func (l *StdinServerListener) Addr() net.Addr { return l.l.Addr() }

// StdinServer is the forced command's work: connect to the daemon's socket
// as identity and pass bytes between stdin/stdout and it until either side
// ends.
func StdinServer(ctx context.Context, socket, identity string, stdin io.Reader, stdout io.Writer) error {
	return stdinServer(ctx, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}, identity, stdin, stdout)
}

// stdinServer is StdinServer over a connection that dial opens (a unix
// socket, or a simulated one in tests).
func stdinServer(ctx context.Context, dial func(context.Context) (net.Conn, error), identity string, stdin io.Reader, stdout io.Writer) error {
	if err := ValidateIdentity(identity); err != nil {
		return err
	}
	c, err := dial(ctx)
	if err != nil {
		// zrepl's ssh handshake: tell the client, which then reads
		// our stderr from ssh.
		if stdout != nil {
			_, _ = stdout.Write(sshProxyError)
		}
		return fmt.Errorf("stdinserver: connect to the zrepl daemon: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if _, err := io.WriteString(c, stdinServerGreeting+identity+"\n"); err != nil {
		return fmt.Errorf("stdinserver: %w", err)
	}
	// The serving end of zrepl's ssh handshake (see sshHelo), here
	// rather than in the daemon: the bytes on the ssh channel are the
	// same, and the daemon's socket stays ssh-agnostic.
	if _, err := stdout.Write(sshHelo); err != nil {
		return fmt.Errorf("stdinserver: ssh handshake: %w", err)
	}
	begin := make([]byte, sshMsgLen)
	if n, err := io.ReadFull(stdin, begin); err != nil {
		return fmt.Errorf("stdinserver: %w: the client sent %q, then %w", ErrSSHHandshake, truncate(begin[:n], 64), err)
	} else if !bytes.Equal(begin, sshBegin) {
		return fmt.Errorf("stdinserver: %w: the client sent %q instead of SSHCON_BEGIN (is it zrepl's ssh transport?)", ErrSSHHandshake, truncate(bytes.TrimRight(begin, "\x00"), 64))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var upErr error
	go func() {
		defer wg.Done()
		_, upErr = io.Copy(c, bufio.NewReaderSize(stdin, 256<<10))
		// The client closed its end (ssh's stdin): pass the EOF on.
		if hc, ok := c.(interface{ CloseWrite() error }); ok {
			hc.CloseWrite()
		}
	}()
	_, downErr := io.Copy(stdout, c)
	// The daemon closed the connection: end the session, which makes ssh
	// exit and the client see EOF.
	c.Close()
	if cl, ok := stdout.(io.Closer); ok {
		cl.Close()
	}
	// Stop reading stdin where it can be interrupted; where not, the
	// process ends without waiting for it.
	if d, ok := stdin.(interface{ SetReadDeadline(time.Time) error }); !ok || d.SetReadDeadline(time.Unix(1, 0)) != nil {
		return downErr
	}
	wg.Wait()
	if downErr != nil && !errors.Is(downErr, net.ErrClosed) {
		return fmt.Errorf("stdinserver: %w", downErr)
	}
	if upErr != nil && !errors.Is(upErr, net.ErrClosed) {
		return fmt.Errorf("stdinserver: %w", upErr)
	}
	return nil
}
