package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/sshproc"
)

// simSSH returns a network with a 5ms link, a listener on sink:22 whose
// connections are handled by serve (nil: no listener) and a dialer of
// simulated ssh processes. Call inside a synctest bubble.
func simSSH(t *testing.T, script func(int) netsim.ProcessScript, serve func(c net.Conn)) (*sshproc.Starter, transport.Dialer) {
	t.Helper()
	n := netsim.New(1)
	require.NoError(t, n.SetDefaultLink(netsim.Link{Latency: 5 * time.Millisecond}))
	require.NoError(t, n.AddHost("sink"))
	if serve != nil {
		l, err := n.Listen("sink", 22)
		require.NoError(t, err)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					serve(c)
				}()
			}
		}()
		t.Cleanup(func() {
			l.Close()
			wg.Wait()
		})
	}
	sp := &sshproc.Starter{N: n, From: "laptop", Addr: "sink:22", Script: script}
	return sp, sp.Dialer()
}

func fixedScript(s netsim.ProcessScript) func(int) netsim.ProcessScript {
	return func(int) netsim.ProcessScript { return s }
}

func requireExit(t *testing.T, err error, status int, stderr string) *transport.ProcessExitError {
	t.Helper()
	var xe *transport.ProcessExitError
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, status, xe.Status)
	assert.Equal(t, stderr, xe.Stderr)
	assert.Equal(t, "ssh", xe.Name)
	return xe
}

// ssh failing before the connection exists (authentication, a refused
// TCP connection): the first Write, and a Read, fail with the exit status
// and ssh's complaint, never a bare broken pipe or EOF.
func TestSSHExitBeforeHandshake(t *testing.T) {
	t.Run("permission denied", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, dial := simSSH(t, fixedScript(netsim.ProcessScript{
				Exit: netsim.ExitBeforeStdout, Status: 255, Stderr: "user@sink: Permission denied (publickey).\n",
			}), func(c net.Conn) { c.Close() })
			c, err := dial(context.Background())
			require.NoError(t, err, "starting ssh succeeds; its failure shows on first use")
			defer c.Close()
			_, err = c.Write([]byte("hello"))
			xe := requireExit(t, err, 255, "user@sink: Permission denied (publickey).")
			assert.Equal(t, "ssh exited with status 255: user@sink: Permission denied (publickey).", err.Error())
			assert.ErrorIs(t, err, syscall.EPIPE, "the broken pipe stays visible")
			var ne *netsim.ExitError
			assert.ErrorAs(t, err, &ne, "so does the process's own exit error")
			assert.Zero(t, xe.StderrDropped)
			_, err = c.Read(make([]byte, 1))
			requireExit(t, err, 255, "user@sink: Permission denied (publickey).")
			assert.ErrorIs(t, err, io.EOF)
		})
	})
	t.Run("connection refused", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, dial := simSSH(t, fixedScript(netsim.ProcessScript{}), nil) // nobody listens on sink:22
			c, err := dial(context.Background())
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Read(make([]byte, 1))
			requireExit(t, err, 255, "ssh: connect to host sink port 22: Connection refused")
			assert.ErrorContains(t, err, "status 255")
			assert.ErrorContains(t, err, "Connection refused")
			_, err = c.Write([]byte("x"))
			requireExit(t, err, 255, "ssh: connect to host sink port 22: Connection refused")
		})
	})
}

// serveDownload writes size bytes to the client, then reads until EOF.
func serveDownload(size int) func(c net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		c.Write(make([]byte, size))
		io.Copy(io.Discard, c)
	}
}

// ssh dying mid-stream: the reader gets exactly what came through, then
// an error with the status and stderr (not io.EOF, which would read as
// a finished stream).
func TestSSHExitMidStream(t *testing.T) {
	for _, msg := range []string{"client_loop: send disconnect: Broken pipe", "Read from remote host sink: Connection reset by peer"} {
		t.Run(msg, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, dial := simSSH(t, fixedScript(netsim.ProcessScript{
					Exit: netsim.ExitAfterStdout, StdoutBytes: 1000, Status: 255, Stderr: msg + "\r\n",
				}), serveDownload(1<<20))
				c, err := dial(context.Background())
				require.NoError(t, err)
				defer c.Close()
				got, err := io.ReadAll(c)
				assert.Len(t, got, 1000)
				requireExit(t, err, 255, msg)
				assert.ErrorContains(t, err, "exited with status 255: "+msg)
				_, err = c.Write([]byte("x"))
				requireExit(t, err, 255, msg)
			})
		})
	}
}

// A reset of the connection behind ssh ends ssh with 255 and its
// complaint; the client reads up to the reset and then that error.
func TestSSHConnectionReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		resetAt := make(chan net.Conn, 1)
		_, dial := simSSH(t, fixedScript(netsim.ProcessScript{}), func(c net.Conn) {
			c.(*netsim.Conn).ResetAfter(3000)
			resetAt <- c
			serveDownload(1 << 20)(c)
		})
		c, err := dial(context.Background())
		require.NoError(t, err)
		defer c.Close()
		got, err := io.ReadAll(c)
		assert.Len(t, got, 3000)
		requireExit(t, err, 255, "client_loop: send disconnect: Connection reset by peer")
		<-resetAt
	})
}

// serveEcho answers one request (everything until the client's EOF or
// until "\n") and closes: a protocol that finished.
func serveEcho(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 64)
	var req []byte
	for !strings.HasSuffix(string(req), "\n") {
		n, err := c.Read(buf)
		req = append(req, buf[:n]...)
		if err != nil {
			break
		}
	}
	c.Write(append([]byte("re: "), req...))
}

// ssh exiting 0 after the remote end closed: an ordinary EOF, and Close
// reports nothing.
func TestSSHExitAfterStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp, dial := simSSH(t, fixedScript(netsim.ProcessScript{Stderr: "bye\n"}), serveEcho)
		c, err := dial(context.Background())
		require.NoError(t, err)
		_, err = c.Write([]byte("ping\n"))
		require.NoError(t, err)
		got, err := io.ReadAll(c)
		require.NoError(t, err, "io.EOF: the peer closed")
		assert.Equal(t, "re: ping\n", string(got))
		n, err := c.Read(make([]byte, 1))
		assert.Zero(t, n)
		assert.Equal(t, io.EOF, err, "still a plain EOF")
		require.NoError(t, c.Close())
		assert.NoError(t, sp.Proc(0).Wait())
		_, err = c.Write([]byte("x"))
		assert.Error(t, err, "writing to a closed connection")
		assert.NotErrorAs(t, err, new(*transport.ProcessExitError), "after our own Close the exit is no news")
	})
}

// ssh exiting 0 before the conversation ended (a forced command that is
// not stdinserver, say) is an error, never a silent EOF.
func TestSSHExitZeroEarly(t *testing.T) {
	t.Run("before any output", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, dial := simSSH(t, fixedScript(netsim.ProcessScript{Exit: netsim.ExitBeforeStdout, Status: 0, Stderr: "This account is restricted.\n"}), serveEcho)
			c, err := dial(context.Background())
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Read(make([]byte, 1))
			requireExit(t, err, 0, "This account is restricted.")
			assert.EqualError(t, err, "ssh exited with status 0 before the connection was closed: This account is restricted.")
			_, err = c.Write([]byte("ping\n"))
			requireExit(t, err, 0, "This account is restricted.")
		})
	})
	t.Run("mid-stream", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, dial := simSSH(t, fixedScript(netsim.ProcessScript{Exit: netsim.ExitAfterStdout, StdoutBytes: 10, Status: 0}), serveDownload(100))
			c, err := dial(context.Background())
			require.NoError(t, err)
			defer c.Close()
			// Reading, an exit 0 after some output looks like the remote
			// closing (the protocol above notices the missing rest) ...
			got, err := io.ReadAll(c)
			require.NoError(t, err)
			assert.Len(t, got, 10)
			// ... and the next Write says what happened.
			_, err = c.Write([]byte("more"))
			xe := requireExit(t, err, 0, "")
			assert.Nil(t, xe.Err)
			assert.EqualError(t, err, "ssh exited with status 0 before the connection was closed")
		})
	})
}

// A process flooding stderr: the error keeps the end (where ssh says what
// went wrong), the connection keeps at most StderrLimit bytes of it, and
// the message stays short.
func TestSSHHugeStderr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b strings.Builder
		for i := 0; b.Len() < 1<<20; i++ {
			fmt.Fprintf(&b, "debug1: line %d\n", i)
		}
		b.WriteString("user@sink: Permission denied (publickey).\n")
		stderr := b.String()
		_, dial := simSSH(t, fixedScript(netsim.ProcessScript{Exit: netsim.ExitBeforeStdout, Status: 255, Stderr: stderr}), nil)
		c, err := dial(context.Background())
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write([]byte("x"))
		var xe *transport.ProcessExitError
		require.ErrorAs(t, err, &xe)
		assert.Equal(t, 255, xe.Status)
		assert.LessOrEqual(t, len(xe.Stderr), transport.StderrLimit)
		assert.Greater(t, len(xe.Stderr), transport.StderrLimit-100, "the tail, all of it")
		assert.Equal(t, strings.TrimSpace(stderr[len(stderr)-transport.StderrLimit:]), xe.Stderr)
		assert.Equal(t, int64(len(stderr)-transport.StderrLimit), xe.StderrDropped)
		assert.NotContains(t, xe.Stderr, "debug1: line 0\n", "the head is gone")
		msg := err.Error()
		assert.True(t, strings.HasSuffix(msg, "\nuser@sink: Permission denied (publickey)."), msg)
		assert.LessOrEqual(t, len(msg), transport.StderrInError+100, "the message shows a bounded tail")
		assert.Contains(t, msg, "ssh exited with status 255: [...] debug1: line ")
		// The shown tail starts at a line.
		rest := strings.TrimPrefix(msg, "ssh exited with status 255: [...] ")
		assert.Contains(t, stderr, "\n"+rest)
		assert.LessOrEqual(t, transport.StderrMemory(c), transport.StderrLimit, "bounded memory")
	})
}

// Close of a connection whose process does not end by itself (the remote
// never closes) kills it after CloseGrace; nothing is left behind.
func TestSSHCloseKillsAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		sp, dial := simSSH(t, fixedScript(netsim.ProcessScript{}), func(c net.Conn) {
			<-hold // never reads, never closes
			c.Close()
		})
		defer close(hold)
		c, err := dial(context.Background())
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, c.Close())
		assert.Equal(t, transport.CloseGrace, time.Since(start))
		var ne *netsim.ExitError
		require.ErrorAs(t, sp.Proc(0).Wait(), &ne)
		assert.Equal(t, -1, ne.ExitCode(), "killed")
		assert.NoError(t, c.Close(), "twice is fine")
	})
}

// A process killed mid-use reads as such.
func TestSSHKilled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		sp, dial := simSSH(t, fixedScript(netsim.ProcessScript{}), func(c net.Conn) {
			<-hold
			c.Close()
		})
		defer close(hold)
		c, err := dial(context.Background())
		require.NoError(t, err)
		defer c.Close()
		synctest.Wait()
		sp.Proc(0).Kill()
		_, err = c.Read(make([]byte, 1))
		xe := requireExit(t, err, -1, "")
		assert.NotNil(t, xe.Err)
		assert.EqualError(t, err, "ssh ended: signal: killed")
	})
}

// Deadlines pass through to the process's pipes.
func TestSSHDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		_, dial := simSSH(t, fixedScript(netsim.ProcessScript{}), func(c net.Conn) {
			<-hold
			c.Close()
		})
		c, err := dial(context.Background())
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, c.SetDeadline(start.Add(time.Minute)))
		_, err = c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.Equal(t, time.Minute, time.Since(start))
		close(hold)
		require.NoError(t, c.Close())
	})
}

func TestProcessDialerBadStarter(t *testing.T) {
	dial := transport.ProcessDialer(func(ctx context.Context, stderr io.Writer) (*transport.Process, error) {
		return &transport.Process{Stdin: nopWriteCloser{}}, nil
	})
	_, err := dial(context.Background())
	assert.ErrorContains(t, err, "incomplete process")

	failing := errors.New("no such host")
	dial = transport.ProcessDialer(func(ctx context.Context, stderr io.Writer) (*transport.Process, error) { return nil, failing })
	_, err = dial(context.Background())
	assert.ErrorIs(t, err, failing)

	// Without deadline support in the pipes, setting one says so.
	r, w := io.Pipe()
	exited := make(chan struct{})
	dial = transport.ProcessDialer(func(ctx context.Context, stderr io.Writer) (*transport.Process, error) {
		return &transport.Process{Stdin: w, Stdout: r, Wait: func() error { <-exited; return nil }, Kill: func() {}}, nil
	})
	c, err := dial(context.Background())
	require.NoError(t, err)
	assert.ErrorIs(t, c.SetReadDeadline(time.Now()), os.ErrNoDeadline)
	assert.ErrorIs(t, c.SetDeadline(time.Now()), os.ErrNoDeadline)
	assert.Equal(t, "ssh", c.RemoteAddr().String(), "a nameless process is called ssh")
	close(exited)
	require.NoError(t, c.Close())
}

// A dial whose context ends while the process starts leaves no process.
func TestSSHDialCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp, _ := simSSH(t, fixedScript(netsim.ProcessScript{}), serveEcho)
		ctx, cancel := context.WithCancelCause(context.Background())
		cause := errors.New("job stopped")
		dial := transport.ProcessDialer(func(c context.Context, stderr io.Writer) (*transport.Process, error) {
			p, err := sp.Start(c, stderr)
			cancel(cause)
			return p, err
		})
		_, err := dial(ctx)
		assert.ErrorIs(t, err, cause)
		select {
		case <-sp.Proc(0).Exited():
		default:
			t.Fatal("the process outlived the failed dial")
		}
	})
}

type nopWriteCloser struct{}

func (nopWriteCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriteCloser) Close() error                { return nil }

// serveUpload reads until EOF, sends what it got on got, and closes.
func serveUpload(got chan<- []byte) func(c net.Conn) {
	return func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- b
		c.Close()
	}
}

// ssh dying while the connection writes into its stdin (a push): the
// Write keeps what ssh took and fails with the exit status and stderr,
// whatever the status; the remote end gets exactly those bytes.
func TestSSHExitWhileWriting(t *testing.T) {
	const msg = "Connection to sink closed by remote host."
	for _, tc := range []struct {
		name   string
		at     int64
		status int
		writes []int
		want   []int // bytes each Write kept; the last one fails
	}{
		{"mid-write", 1000, 255, []int{600, 600}, []int{600, 400}},
		{"at byte 0", 0, 255, []int{10}, []int{0}},
		{"at a write boundary", 1000, 255, []int{1000, 1}, []int{1000, 0}},
		{"status 0 mid-write", 1000, 0, []int{5000}, []int{1000}},
		{"beyond the buffers", 300_000, 255, []int{1 << 20}, []int{300_000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				stderr := msg + "\r\n"
				if tc.status == 0 {
					stderr = ""
				}
				got := make(chan []byte, 1)
				sp, dial := simSSH(t, fixedScript(netsim.ProcessScript{
					Exit: netsim.ExitAfterStdin, StdinBytes: tc.at, Status: tc.status, Stderr: stderr,
				}), serveUpload(got))
				c, err := dial(context.Background())
				require.NoError(t, err)
				defer c.Close()
				var sent []byte
				for i, k := range tc.writes {
					p := []byte(strings.Repeat(string(rune('a'+i)), k))
					n, err := c.Write(p)
					assert.Equal(t, tc.want[i], n, "write %d", i)
					sent = append(sent, p[:n]...)
					if i < len(tc.writes)-1 {
						require.NoError(t, err, "write %d", i)
						continue
					}
					xe := requireExit(t, err, tc.status, strings.TrimSpace(stderr))
					assert.ErrorIs(t, err, syscall.EPIPE, "the broken pipe stays visible")
					if tc.status == 0 {
						assert.EqualError(t, err, "ssh exited with status 0 before the connection was closed")
						assert.Nil(t, xe.Err)
					} else {
						assert.EqualError(t, err, "ssh exited with status 255: "+msg)
					}
				}
				assert.Equal(t, string(sent), string(<-got), "the remote end got what the Writes kept")
				assert.Equal(t, tc.at, sp.Proc(0).Conn().Stats().Up.Written)
				_, err = c.Write([]byte("x"))
				requireExit(t, err, tc.status, strings.TrimSpace(stderr))
			})
		})
	}
}

// A Write blocked on a full pipe (the remote does not read) when ssh is
// killed returns what went in and says that ssh was killed.
func TestSSHKilledWhileWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		sp, dial := simSSH(t, fixedScript(netsim.ProcessScript{}), func(c net.Conn) {
			<-hold // never reads
			c.Close()
		})
		defer close(hold)
		c, err := dial(context.Background())
		require.NoError(t, err)
		defer c.Close()
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := c.Write(make([]byte, 1<<20))
			done <- result{n, err}
		}()
		synctest.Wait() // the Write is blocked on the full buffer
		select {
		case r := <-done:
			t.Fatalf("the Write returned %d, %v before the kill", r.n, r.err)
		default:
		}
		sp.Proc(0).Kill()
		r := <-done
		assert.Equal(t, int64(r.n), sp.Proc(0).Conn().Stats().Up.Written, "the Write reports what went in")
		assert.Equal(t, netsim.DefaultBuffer, r.n, "a full buffer")
		requireExit(t, r.err, -1, "")
		assert.EqualError(t, r.err, "ssh ended: signal: killed")
	})
}
