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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SSHDialer runs command (e.g. ssh -i KEY -p PORT -o BatchMode=yes
// user@host) per connection and speaks over its stdin and stdout. The
// server side forces `zrepl stdinserver <identity>` for the key, so the
// command needs no remote command of its own. Each connection opens with
// zrepl's ssh handshake (see sshHelo) before the dial returns.
func SSHDialer(command []string) (Dialer, error) {
	if len(command) == 0 {
		return nil, errors.New("ssh transport: no command")
	}
	return SSHHandshake(ProcessDialer(ExecProcess(command))), nil
}

// zrepl's ssh transport (go-netssh, in zrepl v0.7.0 as in v0.4) opens each
// connection with fixed messages of sshMsgLen bytes, ASCII padded with
// NULs: the serving end (the forced stdinserver command) sends SSHCON_HELO
// once it reached its daemon, or SSHCON_PROXY_ERROR when it could not
// (then it exits non-zero); the dialling end answers SSHCON_BEGIN. Then
// the connection carries the rpc protocol.
const sshMsgLen = 31

func sshMsg(s string) []byte {
	b := make([]byte, sshMsgLen)
	copy(b, s)
	return b
}

var (
	sshHelo       = sshMsg("SSHCON_HELO")
	sshBegin      = sshMsg("SSHCON_BEGIN")
	sshProxyError = sshMsg("SSHCON_PROXY_ERROR")
)

// ErrSSHHandshake matches the errors of zrepl's ssh handshake: the remote
// command sent something else than its greeting, or said that it could
// not reach its daemon.
var ErrSSHHandshake = errors.New("ssh stdinserver handshake")

// SSHHandshake dials with dial (a process per connection, whose other
// end runs the stdinserver command) and does the dialling end of zrepl's
// ssh handshake on each connection before returning it.
func SSHHandshake(dial Dialer) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		if err := sshOpen(ctx, c); err != nil {
			// Nothing was said yet: no grace for a clean exit.
			if pc, ok := c.(*processConn); ok {
				pc.proc.Kill()
			}
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// sshOpen is the dialling end of the handshake, bounded by ctx.
func sshOpen(ctx context.Context, c net.Conn) error {
	done := make(chan error, 1)
	go func() {
		msg := make([]byte, sshMsgLen)
		n, err := io.ReadFull(c, msg)
		switch {
		case err != nil:
			var xe *ProcessExitError
			if errors.As(err, &xe) {
				done <- err // ssh's own complaint: a refused key, an unknown host
				return
			}
			if n == 0 {
				done <- fmt.Errorf("ssh transport: %w: reading the remote stdinserver's greeting: %w", ErrSSHHandshake, err)
				return
			}
			done <- fmt.Errorf("ssh transport: %w: the remote command sent %q, then %w", ErrSSHHandshake, truncate(msg[:n], 64), err)
		case bytes.Equal(msg, sshHelo):
			_, err := c.Write(sshBegin)
			done <- err
		case bytes.Equal(msg, sshProxyError):
			// The remote exits now; its stderr says why.
			c.SetReadDeadline(time.Now().Add(exitGrace))
			_, rerr := io.Copy(io.Discard, c)
			why := ""
			var xe *ProcessExitError
			if errors.As(rerr, &xe) {
				why = ": " + xe.Error()
			}
			done <- fmt.Errorf("ssh transport: %w: the remote stdinserver could not reach its zrepl daemon (is it running, with serve type stdinserver for this identity?)%s", ErrSSHHandshake, why)
		default:
			done <- fmt.Errorf("ssh transport: %w: the remote command is no zrepl stdinserver: it began with %q instead of SSHCON_HELO", ErrSSHHandshake, truncate(bytes.TrimRight(msg, "\x00"), 64))
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if pc, ok := c.(*processConn); ok {
			pc.proc.Kill()
		}
		c.Close()
		<-done
		return fmt.Errorf("ssh transport: %w: no greeting from the remote stdinserver: %w", ErrSSHHandshake, context.Cause(ctx))
	}
}

// Process is the child process behind one ssh connection: its stdin and
// stdout are the two directions of the connection.
//
// If Stdin has a SetWriteDeadline method and Stdout a SetReadDeadline
// method (as *os.File pipes do), the connection's deadlines use them;
// otherwise setting a deadline fails with os.ErrNoDeadline.
type Process struct {
	Stdin  io.WriteCloser
	Stdout io.ReadCloser
	// Wait waits for the process to exit and returns nil for status 0,
	// otherwise an error with an `ExitCode() int` method (-1 when killed
	// by a signal), as *exec.ExitError has. Called exactly once. When it
	// returns, everything the process wrote to stderr has been written to
	// the stderr the ProcessStarter was given.
	Wait func() error
	// Kill ends the process at once.
	Kill func()
	// Name names the process in errors and addresses ("ssh").
	Name string
}

// ProcessStarter starts the process behind one connection and has it
// write its stderr to stderr. Exec runs real ones (ExecProcess); tests run
// simulated ones.
type ProcessStarter func(ctx context.Context, stderr io.Writer) (*Process, error)

// ExecProcess starts command as a child process per connection.
func ExecProcess(command []string) ProcessStarter {
	command = append([]string(nil), command...)
	return func(ctx context.Context, stderr io.Writer) (*Process, error) {
		if len(command) == 0 {
			return nil, errors.New("ssh transport: no command")
		}
		// Pipes of our own, not cmd.StdinPipe/StdoutPipe: Wait must not
		// close our ends (the connection may still hold unread bytes), and
		// *os.File pipes support deadlines.
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("ssh transport: %w", err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			return nil, fmt.Errorf("ssh transport: %w", err)
		}
		// Not CommandContext: the process outlives the dial's context and
		// ends with the connection.
		cmd := exec.Command(command[0], command[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stderr
		err = cmd.Start()
		inR.Close() // the child's ends
		outW.Close()
		if err != nil {
			inW.Close()
			outR.Close()
			return nil, fmt.Errorf("ssh transport: start %s: %w", command[0], err)
		}
		return &Process{
			Stdin:  inW,
			Stdout: outR,
			Wait:   cmd.Wait,
			Kill:   func() { cmd.Process.Kill() },
			Name:   command[0],
		}, nil
	}
}

// ProcessDialer runs a process from start per connection and speaks over
// its stdin and stdout. When the process ends while the connection is in
// use, Read and Write fail with a *ProcessExitError carrying its exit
// status and the tail of its stderr, instead of a bare EOF or broken pipe.
func ProcessDialer(start ProcessStarter) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		return startProcess(ctx, start)
	}
}

// ProcessExitError says that the process behind an ssh connection exited
// while the connection was in use: with a non-zero status, or with status
// 0 before the connection was closed (the remote command quit early).
type ProcessExitError struct {
	Name   string // the command, e.g. "ssh"
	Status int    // exit status; -1 if killed by a signal
	// Stderr is the tail of what the process wrote to stderr (at most
	// StderrLimit bytes), trimmed of surrounding white space.
	Stderr string
	// StderrDropped counts the bytes of stderr before the tail that were
	// not kept.
	StderrDropped int64
	// Err is what Wait returned (nil for status 0); Cause is the error of
	// the Read or Write that noticed the exit (io.EOF, a broken pipe).
	Err, Cause error
}

// stderrInError bounds the stderr an error message shows: the message ends
// up in logs and status lines, the full tail stays in the Stderr field.
const stderrInError = 2 << 10

func (e *ProcessExitError) Error() string {
	var b bytes.Buffer
	b.WriteString(e.Name)
	switch {
	case e.Status == 0:
		b.WriteString(" exited with status 0 before the connection was closed")
	case e.Status < 0 && e.Err != nil:
		b.WriteString(" ended: ")
		b.WriteString(e.Err.Error())
	default:
		b.WriteString(" exited with status ")
		b.WriteString(strconv.Itoa(e.Status))
	}
	if e.Stderr != "" {
		b.WriteString(": ")
		msg := e.Stderr
		if len(msg) > stderrInError {
			// Keep the end, where ssh says what went wrong last.
			msg = msg[len(msg)-stderrInError:]
			if i := strings.IndexByte(msg, '\n'); i >= 0 && i < len(msg)-1 {
				msg = msg[i+1:]
			}
			b.WriteString("[...] ")
		} else if e.StderrDropped > 0 {
			b.WriteString("[...] ")
		}
		b.WriteString(msg)
	}
	return b.String()
}

// Unwrap gives errors.Is/As both the exit (an *exec.ExitError, say) and
// the IO error that noticed it.
func (e *ProcessExitError) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	return errs
}

// StderrLimit is how much of a process's stderr an ssh connection keeps:
// the last bytes, where ssh's reason for failing is.
const StderrLimit = 64 << 10

// exitGrace is how long a Read or Write that hit the end of the pipe waits
// for the process to exit, to tell why; ssh exits right after its pipes end.
const exitGrace = 2 * time.Second

// closeGrace is how long Close waits for the process to exit on its own
// after its stdin closed, before killing it.
const closeGrace = 5 * time.Second

// processConn is a connection over a child process's stdin and stdout.
type processConn struct {
	proc   *Process
	stderr *tailBuffer
	exited chan struct{}
	err    error       // what Wait returned, valid after exited
	read   atomic.Bool // whether any byte came from stdout
	closed atomic.Bool
	// closing is taken by the first Close; closeDone ends when it is
	// done. Later Closes wait on the channel, not on a sync.Once's mutex:
	// a goroutine blocked on a mutex does not count as durably blocked
	// under testing/synctest, and its virtual clock would stop.
	closing   atomic.Bool
	closeDone chan struct{}
	// exit is the first *ProcessExitError a Read or Write returned: why
	// the connection ended, for Ended.
	exit atomic.Pointer[ProcessExitError]
}

func startProcess(ctx context.Context, start ProcessStarter) (*processConn, error) {
	stderr := newTailBuffer(StderrLimit)
	proc, err := start(ctx, stderr)
	if err != nil {
		return nil, err
	}
	if proc == nil || proc.Stdin == nil || proc.Stdout == nil || proc.Wait == nil || proc.Kill == nil {
		return nil, errors.New("ssh transport: the process starter returned an incomplete process")
	}
	if proc.Name == "" {
		proc.Name = "ssh"
	}
	c := &processConn{proc: proc, stderr: stderr, exited: make(chan struct{}), closeDone: make(chan struct{})}
	go func() {
		c.err = proc.Wait()
		close(c.exited)
	}()
	if ctx.Err() != nil {
		c.Close()
		return nil, context.Cause(ctx)
	}
	return c, nil
}

// exitErr says why the pipes ended, once the process exited (within
// exitGrace): an error for a non-zero status, and for status 0 if
// early0 (the process quit before the connection could have ended well).
// nil means: let the IO error speak for itself.
func (c *processConn) exitErr(cause error, early0 bool) error {
	if c.closed.Load() {
		return nil // our own Close ended the pipes
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		return nil
	}
	status := 0
	if c.err != nil {
		status = -1
		var ec interface{ ExitCode() int }
		if errors.As(c.err, &ec) {
			status = ec.ExitCode()
		}
		if status == 0 { // an error from Wait that is no exit status
			status = -1
		}
	} else if !early0 {
		return nil
	}
	tail, dropped := c.stderr.Tail()
	xe := &ProcessExitError{
		Name:          c.proc.Name,
		Status:        status,
		Stderr:        string(bytes.TrimSpace(tail)),
		StderrDropped: dropped,
		Err:           c.err,
		Cause:         cause,
	}
	c.exit.CompareAndSwap(nil, xe)
	return xe
}

// ended is Ended for an ssh connection.
func (c *processConn) ended() error {
	if xe := c.exit.Load(); xe != nil {
		return xe
	}
	return nil
}

// Read returns what the process wrote to stdout. At the end of stdout it
// returns io.EOF if the process exited with status 0 after writing
// something (the remote end closed the connection: every zrepl server
// answers before it closes), and a *ProcessExitError otherwise. A process
// that exits 0 mid-stream reads like a remote close: the protocol on top
// notices the missing rest, and a Write says what happened.
func (c *processConn) Read(p []byte) (int, error) {
	n, err := c.proc.Stdout.Read(p)
	if n > 0 {
		c.read.Store(true)
	}
	if err == io.EOF {
		if xerr := c.exitErr(err, !c.read.Load()); xerr != nil {
			return n, xerr
		}
	}
	return n, err
}

// Write passes p to the process's stdin. When the process is gone, it
// fails with a *ProcessExitError, whatever the exit status: a Write means
// the connection still had something to say.
func (c *processConn) Write(p []byte) (int, error) {
	n, err := c.proc.Stdin.Write(p)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		if xerr := c.exitErr(err, true); xerr != nil {
			return n, xerr
		}
	}
	return n, err
}

// Close closes stdin (the remote side sees EOF) and stdout and waits for
// the process to exit, killing it if it does not within a few seconds: a
// closed connection leaves no process behind.
func (c *processConn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		<-c.closeDone
		return nil
	}
	defer close(c.closeDone)
	c.closed.Store(true)
	c.proc.Stdin.Close()
	c.proc.Stdout.Close()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		c.proc.Kill()
		<-c.exited
	}
	return nil
}

func (c *processConn) LocalAddr() net.Addr  { return processAddr("local") }
func (c *processConn) RemoteAddr() net.Addr { return processAddr(c.proc.Name) }

type readDeadliner interface{ SetReadDeadline(time.Time) error }
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

func (c *processConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetWriteDeadline(t), c.SetReadDeadline(t))
}

func (c *processConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.proc.Stdout.(readDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return os.ErrNoDeadline
}

func (c *processConn) SetWriteDeadline(t time.Time) error {
	if d, ok := c.proc.Stdin.(writeDeadliner); ok {
		return d.SetWriteDeadline(t)
	}
	return os.ErrNoDeadline
}

type processAddr string

func (processAddr) Network() string  { return "process" }
func (a processAddr) String() string { return string(a) }

// tailBuffer keeps the last max bytes written to it in a ring, so a
// process that floods stderr costs at most max bytes.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte // grows up to max, then wraps
	next    int    // where the next byte goes once buf is full
	written int64
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	b.written += int64(n)
	if b.max <= 0 {
		return n, nil
	}
	if len(p) > b.max {
		p = p[len(p)-b.max:]
	}
	if room := b.max - len(b.buf); room > 0 {
		// Still filling up: grow by what arrives (never beyond max), so a
		// quiet process costs little.
		k := min(room, len(p))
		if cap(b.buf) < b.max && len(b.buf)+k > cap(b.buf) {
			nb := make([]byte, len(b.buf), min(b.max, max(2*cap(b.buf), len(b.buf)+k)))
			copy(nb, b.buf)
			b.buf = nb
		}
		b.buf = append(b.buf, p[:k]...)
		p = p[k:]
	}
	for len(p) > 0 {
		k := copy(b.buf[b.next:], p)
		p = p[k:]
		b.next = (b.next + k) % b.max
	}
	return n, nil
}

// Tail returns the kept bytes in order and how many earlier ones were
// dropped.
func (b *tailBuffer) Tail() (tail []byte, dropped int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]byte, 0, len(b.buf))
	out = append(out, b.buf[b.next:]...)
	out = append(out, b.buf[:b.next]...)
	return out, b.written - int64(len(out))
}
