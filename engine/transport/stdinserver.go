package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
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

// StdinServerListener accepts the connections of stdinserver processes.
type StdinServerListener struct {
	l       net.Listener
	path    string
	timeout time.Duration
}

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
	return &StdinServerListener{l: l, path: path, timeout: 10 * time.Second}
}

// Accept returns the next connection whose greeting named a valid
// identity. Connections that fail to greet are closed and skipped.
func (l *StdinServerListener) Accept() (*AuthConn, error) {
	for {
		c, err := l.l.Accept()
		if err != nil {
			return nil, err
		}
		// Only local stdinserver processes connect: the greeting comes at
		// once, and the deadline bounds a misbehaving one.
		c.SetReadDeadline(time.Now().Add(l.timeout))
		identity, err := readGreeting(c)
		if err != nil {
			c.Close()
			continue
		}
		c.SetReadDeadline(time.Time{})
		return &AuthConn{Conn: c, Identity: identity}, nil
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
				return "", errors.New("stdinserver: bad greeting")
			}
			return s, ValidateIdentity(s)
		}
		line = append(line, b[0])
	}
	return "", errors.New("stdinserver: greeting too long")
}

func (l *StdinServerListener) Close() error   { return l.l.Close() }
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
		return fmt.Errorf("stdinserver: connect to the zrepl daemon: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if _, err := io.WriteString(c, stdinServerGreeting+identity+"\n"); err != nil {
		return fmt.Errorf("stdinserver: %w", err)
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
