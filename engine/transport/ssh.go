package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"
)

// SSHDialer runs command (e.g. ssh -i KEY -p PORT -o BatchMode=yes
// user@host) per connection and speaks over its stdin and stdout. The
// server side forces `zrepl stdinserver <identity>` for the key, so the
// command needs no remote command of its own.
func SSHDialer(command []string) (Dialer, error) {
	if len(command) == 0 {
		return nil, errors.New("ssh transport: no command")
	}
	return func(ctx context.Context) (net.Conn, error) {
		return startProcess(ctx, command)
	}, nil
}

// processConn is a connection over a child process's stdin and stdout.
type processConn struct {
	cmd    *exec.Cmd
	stdin  *os.File // our end of the child's stdin
	stdout *os.File // our end of the child's stdout
	stderr *boundedBuffer
	exited chan struct{}
	err    error // the process's exit, valid after exited
	once   sync.Once
}

// stderrLimit bounds what is kept of a process's stderr for errors.
const stderrLimit = 4 << 10

func startProcess(ctx context.Context, command []string) (*processConn, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout = inR, outW
	c := &processConn{cmd: cmd, stdin: inW, stdout: outR, stderr: &boundedBuffer{max: stderrLimit}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	err = cmd.Start()
	inR.Close() // the child's ends
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("ssh transport: start %s: %w", command[0], err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	if ctx.Err() != nil {
		c.Close()
		return nil, context.Cause(ctx)
	}
	return c, nil
}

// exitErr describes how the process ended, once it did (within a moment).
func (c *processConn) exitErr() error {
	select {
	case <-c.exited:
	case <-time.After(time.Second):
		return nil
	}
	if c.err == nil {
		return nil
	}
	msg := bytes.TrimSpace(c.stderr.Bytes())
	if len(msg) == 0 {
		return fmt.Errorf("%s: %w", c.cmd.Path, c.err)
	}
	return fmt.Errorf("%s: %w: %s", c.cmd.Path, c.err, msg)
}

func (c *processConn) Read(p []byte) (int, error) {
	n, err := c.stdout.Read(p)
	if err == io.EOF {
		// The process closed its stdout: say why it ended, if it failed.
		if xerr := c.exitErr(); xerr != nil {
			return n, xerr
		}
	}
	return n, err
}

func (c *processConn) Write(p []byte) (int, error) {
	n, err := c.stdin.Write(p)
	if err != nil {
		if xerr := c.exitErr(); xerr != nil {
			return n, xerr
		}
	}
	return n, err
}

// Close closes stdin (the remote side sees EOF) and stdout and waits for
// the process to exit, killing it if it does not within a few seconds: a
// closed connection leaves no process behind.
func (c *processConn) Close() error {
	c.once.Do(func() {
		c.stdin.Close()
		c.stdout.Close()
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-c.exited
		}
	})
	return nil
}

func (c *processConn) LocalAddr() net.Addr  { return processAddr("local") }
func (c *processConn) RemoteAddr() net.Addr { return processAddr(c.cmd.Path) }

func (c *processConn) SetDeadline(t time.Time) error {
	return errors.Join(c.stdin.SetWriteDeadline(t), c.stdout.SetReadDeadline(t))
}
func (c *processConn) SetReadDeadline(t time.Time) error  { return c.stdout.SetReadDeadline(t) }
func (c *processConn) SetWriteDeadline(t time.Time) error { return c.stdin.SetWriteDeadline(t) }

type processAddr string

func (processAddr) Network() string  { return "process" }
func (a processAddr) String() string { return string(a) }

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *boundedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
