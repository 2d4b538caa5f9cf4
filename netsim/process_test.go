package netsim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// exitCoder is what callers of exec.Cmd look for.
type exitCoder interface{ ExitCode() int }

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ec exitCoder
	require.True(t, errors.As(err, &ec), "%v has no ExitCode", err)
	return ec.ExitCode()
}

// serveOnce accepts one connection on b:22 and runs handle on it.
func serveOnce(t *testing.T, n *Network, handle func(c *Conn)) <-chan struct{} {
	t.Helper()
	l, err := n.Listen("b", 22)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			return
		}
		handle(c.(*Conn))
	}()
	return done
}

func TestProcessExitsWhenRemoteCloses(t *testing.T) {
	for _, status := range []int{0, 3} {
		synctest.Test(t, func(t *testing.T) {
			n := New(1)
			require.NoError(t, n.SetDefaultLink(Link{Latency: 5 * time.Millisecond}))
			done := serveOnce(t, n, func(c *Conn) {
				req, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("re: "), req...))
				_ = c.Close()
			})
			p, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{Status: status, Stderr: "bye\n"})
			require.NoError(t, err)
			_, err = p.Stdin().Write([]byte("hello"))
			require.NoError(t, err)
			require.NoError(t, p.Stdin().Close())
			out, err := io.ReadAll(p.Stdout())
			require.NoError(t, err)
			assert.Equal(t, "re: hello", string(out))
			werr := p.Wait()
			assert.Equal(t, status, exitCode(t, werr))
			if status != 0 {
				assert.Equal(t, "exit status 3", werr.Error())
				assert.Equal(t, "bye\n", string(werr.(*ExitError).Stderr))
			}
			assert.Equal(t, "bye\n", string(p.Stderr()))
			_, err = p.Stdin().Write([]byte("x"))
			assert.Error(t, err)
			<-done
		})
	}
}

func TestProcessExitsBeforeStdout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		l, err := n.Listen("b", 22)
		require.NoError(t, err)
		p, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{
			Exit: ExitBeforeStdout, Status: 255, Stderr: "Permission denied (publickey).\n",
		})
		require.NoError(t, err)
		<-p.Exited()
		out, err := io.ReadAll(p.Stdout())
		require.NoError(t, err)
		assert.Empty(t, out)
		_, err = p.Stdin().Write([]byte("x"))
		assert.ErrorIs(t, err, syscall.EPIPE)
		err = p.Wait()
		assert.Equal(t, 255, exitCode(t, err))
		assert.Equal(t, "Permission denied (publickey).\n", string(p.Stderr()))
		assert.Nil(t, p.Conn())
		assert.Empty(t, n.Stats(), "it never connected")
		require.NoError(t, l.Close())
	})
}

func TestProcessExitsAfterStdoutBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: time.Millisecond}))
		var serverWrote int
		var serverErr, serverReadErr error
		done := serveOnce(t, n, func(c *Conn) {
			serverWrote, serverErr = c.Write(make([]byte, 100))
			_, serverReadErr = io.ReadAll(c)
			_ = c.Close()
		})
		p, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{
			Exit: ExitAfterStdout, StdoutBytes: 10, Status: 1, Stderr: "oops\n",
		})
		require.NoError(t, err)
		out, err := io.ReadAll(p.Stdout())
		require.NoError(t, err)
		assert.Len(t, out, 10, "stdout ends exactly at the scripted byte")
		assert.Equal(t, 1, exitCode(t, p.Wait()))
		assert.Equal(t, "oops\n", string(p.Stderr()))
		<-done
		assert.Equal(t, 10, serverWrote)
		assert.ErrorIs(t, serverErr, syscall.EPIPE, "the remote end's write fails once the process is gone")
		assert.NoError(t, serverReadErr, "the remote end reads EOF")
		_, err = p.Stdin().Write([]byte("late"))
		assert.ErrorIs(t, err, syscall.EPIPE)
	})
}

func TestProcessExitsOnStdinClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: time.Millisecond}))
		var got []byte
		var writeErr error
		done := serveOnce(t, n, func(c *Conn) {
			got, _ = io.ReadAll(c)
			time.Sleep(time.Second)
			_, writeErr = c.Write([]byte("too late"))
			_ = c.Close()
		})
		p, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{Exit: ExitOnStdinClose, Status: 2})
		require.NoError(t, err)
		_, err = p.Stdin().Write([]byte("data"))
		require.NoError(t, err)
		require.NoError(t, p.Stdin().Close())
		assert.ErrorIs(t, p.Stdin().Close(), os.ErrClosed)
		assert.Equal(t, 2, exitCode(t, p.Wait()))
		out, err := io.ReadAll(p.Stdout())
		require.NoError(t, err)
		assert.Empty(t, out)
		<-done
		assert.Equal(t, "data", string(got), "stdin reaches the remote before EOF")
		assert.ErrorIs(t, writeErr, syscall.EPIPE)
	})
}

func TestProcessConnectionReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.Schedule(FaultPlan{Faults: []Fault{{Kind: FaultReset, Conn: 1, Dir: Down, AtByte: 7}}}))
		done := serveOnce(t, n, func(c *Conn) {
			_, _ = c.Write([]byte("0123456789"))
			_ = c.Close()
		})
		p, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{})
		require.NoError(t, err)
		out, err := io.ReadAll(p.Stdout())
		require.NoError(t, err, "a pipe just ends")
		assert.Equal(t, "0123456", string(out))
		assert.Equal(t, 255, exitCode(t, p.Wait()))
		assert.Contains(t, string(p.Stderr()), "Connection reset by peer")
		_, err = p.Stdin().Write([]byte("x"))
		assert.ErrorIs(t, err, syscall.EPIPE)
		<-done
	})
}

func TestProcessConnectRefusedAndKill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.AddHost("b"))
		p, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{})
		require.NoError(t, err)
		assert.Equal(t, 255, exitCode(t, p.Wait()))
		assert.Equal(t, "ssh: connect to host b port 22: Connection refused\n", string(p.Stderr()))

		l, err := n.Listen("b", 22)
		require.NoError(t, err)
		p, err = n.StartProcess(context.Background(), "a", "b:22", ProcessScript{})
		require.NoError(t, err)
		s, err := l.Accept()
		require.NoError(t, err)
		select {
		case <-p.Exited():
			t.Fatal("exited early")
		default:
		}
		p.Kill()
		err = p.Wait()
		assert.Equal(t, -1, exitCode(t, err))
		assert.Equal(t, "signal: killed", err.Error())
		got, err := io.ReadAll(s)
		assert.NoError(t, err)
		assert.Empty(t, got)
		require.NoError(t, s.Close())
		require.NoError(t, l.Close())
		require.NoError(t, p.Stdout().Close())
	})
}

func TestProcessBadScript(t *testing.T) {
	n := New(1)
	for _, s := range []ProcessScript{
		{Exit: 99},
		{Exit: ExitAfterStdout, StdoutBytes: -1},
		{Exit: ExitAfterStdin, StdinBytes: -1},
		{Status: 256},
		{Status: -1},
	} {
		_, err := n.StartProcess(context.Background(), "a", "b:22", s)
		assert.Error(t, err, "%+v", s)
	}
}

func TestProcessResetWhileSendingStdin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: 10 * time.Millisecond}))
		require.NoError(t, n.Schedule(FaultPlan{Faults: []Fault{{Kind: FaultReset, Conn: 1, Dir: Up, AtByte: 4}}}))
		var got []byte
		var readErr error
		done := serveOnce(t, n, func(c *Conn) {
			got, readErr = io.ReadAll(c)
			_ = c.Close()
		})
		p, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{})
		require.NoError(t, err)
		_, err = p.Stdin().Write([]byte("abcdefgh"))
		assert.ErrorIs(t, err, syscall.EPIPE)
		assert.Equal(t, 255, exitCode(t, p.Wait()))
		<-done
		assert.Equal(t, "abcd", string(got))
		assert.ErrorIs(t, readErr, syscall.ECONNRESET, "the remote end sees the reset, not an EOF")
	})
}

// stdinWrite is what one Write to a process's stdin returned.
type stdinWrite struct {
	n    int
	pipe bool // failed with EPIPE
}

// runStdinExit starts a process scripted to exit after stdinBytes bytes of
// stdin, writes the given writes (write i filled with byte i+1) and
// reports what each returned, what the remote end read (and its error)
// and what its write after the EOF got, and what stdout yielded. If the
// process is still alive after the writes, stdin is closed, which ends it
// through the remote's close. Call inside a synctest bubble.
func runStdinExit(t *testing.T, link Link, stdinBytes int64, writes []int) (got []stdinWrite, remote []byte, remoteErr, lateErr error, out []byte, pr *Process) {
	t.Helper()
	n := New(1)
	require.NoError(t, n.SetDefaultLink(link))
	done := serveOnce(t, n, func(c *Conn) {
		remote, remoteErr = io.ReadAll(c)
		_, lateErr = c.Write([]byte("late"))
		_ = c.Close()
	})
	pr, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{
		Exit: ExitAfterStdin, StdinBytes: stdinBytes, Status: 255, Stderr: "Connection to b closed by remote host.\r\n",
	})
	require.NoError(t, err)
	for i, k := range writes {
		w, err := pr.Stdin().Write(bytes.Repeat([]byte{byte(i + 1)}, k))
		if err != nil {
			require.ErrorIs(t, err, syscall.EPIPE, "write %d", i)
			var pe *os.PathError
			require.ErrorAs(t, err, &pe, "a pipe's error, not a socket's")
		}
		got = append(got, stdinWrite{w, err != nil})
	}
	select {
	case <-pr.Exited():
	default:
		require.NoError(t, pr.Stdin().Close())
	}
	out, err = io.ReadAll(pr.Stdout())
	require.NoError(t, err)
	<-done
	return got, remote, remoteErr, lateErr, out, pr
}

// The process exits at the scripted stdin byte: the Write reaching it
// keeps exactly the bytes up to it, later ones fail with a broken pipe,
// and the remote end reads exactly those bytes and then EOF.
func TestProcessExitsAfterStdinBytes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		at     int64
		writes []int
		want   []stdinWrite
	}{
		{"at byte 0", 0, []int{3, 0}, []stdinWrite{{0, true}, {0, true}}},
		{"mid-buffer", 5, []int{10, 1}, []stdinWrite{{5, true}, {0, true}}},
		{"at a write boundary", 5, []int{5, 1}, []stdinWrite{{5, false}, {0, true}}},
		{"across writes", 5, []int{0, 3, 3, 3}, []stdinWrite{{0, false}, {3, false}, {2, true}, {0, true}}},
		{"beyond the buffer", 100_000, []int{1 << 20}, []stdinWrite{{100_000, true}}},
		{"never reached", 100, []int{10, 20}, []stdinWrite{{10, false}, {20, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				got, remote, remoteErr, lateErr, out, pr := runStdinExit(t, Link{Latency: time.Millisecond}, tc.at, tc.writes)
				assert.Equal(t, tc.want, got)
				var want []byte
				for i, w := range tc.want {
					want = append(want, bytes.Repeat([]byte{byte(i + 1)}, w.n)...)
				}
				assert.Equal(t, string(want), string(remote), "the remote end reads what stdin accepted")
				assert.NoError(t, remoteErr, "then EOF: ssh's end of the session, not a reset")
				assert.Equal(t, 255, exitCode(t, pr.Wait()))
				assert.Equal(t, "Connection to b closed by remote host.\r\n", string(pr.Stderr()))
				st := pr.Conn().Stats()
				assert.Equal(t, int64(len(want)), st.Up.Written)
				assert.Equal(t, int64(len(want)), st.Up.Read)
				assert.Zero(t, st.Up.Dropped)
				if tc.name == "never reached" {
					assert.NoError(t, lateErr, "the process lived until the remote closed")
					assert.Equal(t, "late", string(out))
				} else {
					assert.Empty(t, out)
					assert.ErrorIs(t, lateErr, syscall.EPIPE, "the remote cannot write to a process that is gone")
				}
			})
		})
	}
}

// An exit at stdin byte 0 happens as the process connects, before a Write
// or the remote end can do anything.
func TestProcessExitsAtStdinByteZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: time.Millisecond}))
		var writeErr error
		done := serveOnce(t, n, func(c *Conn) {
			_, writeErr = c.Write([]byte("banner\n"))
			_ = c.Close()
		})
		pr, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{Exit: ExitAfterStdin, Status: 1})
		require.NoError(t, err)
		select {
		case <-pr.Exited():
		default:
			t.Fatal("the process is still running")
		}
		require.NotNil(t, pr.Conn(), "it did connect")
		<-done
		assert.ErrorIs(t, writeErr, syscall.EPIPE)
		out, err := io.ReadAll(pr.Stdout())
		assert.NoError(t, err)
		assert.Empty(t, out)
		assert.Equal(t, 1, exitCode(t, pr.Wait()))
	})
}

// What the remote end wrote before the exit stays readable on stdout.
func TestProcessStdinExitKeepsStdout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: time.Millisecond}))
		var got []byte
		done := serveOnce(t, n, func(c *Conn) {
			_, _ = c.Write([]byte("banner\n"))
			got, _ = io.ReadAll(c)
			_ = c.Close()
		})
		pr, err := n.StartProcess(context.Background(), "a", "b:22", ProcessScript{Exit: ExitAfterStdin, StdinBytes: 4, Status: 255})
		require.NoError(t, err)
		time.Sleep(time.Second) // the banner arrives, unread
		k, err := pr.Stdin().Write([]byte("0123456789"))
		assert.Equal(t, 4, k)
		assert.ErrorIs(t, err, syscall.EPIPE)
		out, err := io.ReadAll(pr.Stdout())
		assert.NoError(t, err)
		assert.Equal(t, "banner\n", string(out))
		<-done
		assert.Equal(t, "0123", string(got))
	})
}

// Whatever the writes and the link, stdin accepts exactly the first
// StdinBytes bytes, the Write crossing that byte is the first to fail,
// and the remote end reads exactly the accepted bytes.
func TestProcessStdinExitIsExact(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		at := rapid.Int64Range(0, 20000).Draw(rt, "at")
		link := drawLink(rt, 1)
		writes := rapid.SliceOfN(rapid.IntRange(0, 6000), 1, 12).Draw(rt, "writes")
		// The model: accepted bytes so far, and whether the process exited.
		var want []stdinWrite
		acc, exited := int64(0), at == 0
		for _, k := range writes {
			switch {
			case exited:
				want = append(want, stdinWrite{0, true})
			case acc+int64(k) < at:
				want = append(want, stdinWrite{k, false})
				acc += int64(k)
			case acc+int64(k) == at:
				want = append(want, stdinWrite{k, false})
				acc, exited = at, true
			default:
				want = append(want, stdinWrite{int(at - acc), true})
				acc, exited = at, true
			}
		}
		synctest.Test(t, func(t *testing.T) {
			got, remote, remoteErr, _, _, pr := runStdinExit(t, link, at, writes)
			if !assert.Equal(t, want, got) {
				rt.Fatalf("writes returned %v, want %v", got, want)
			}
			if int64(len(remote)) != acc || remoteErr != nil {
				rt.Fatalf("remote read %d bytes and %v, want %d and EOF", len(remote), remoteErr, acc)
			}
			var sent []byte
			for i, w := range want {
				sent = append(sent, bytes.Repeat([]byte{byte(i + 1)}, w.n)...)
			}
			if !bytes.Equal(remote, sent) {
				rt.Fatalf("remote read other bytes than the accepted ones")
			}
			if code := exitCode(t, pr.Wait()); code != 255 {
				rt.Fatalf("exit status %d, want 255", code)
			}
		})
	})
}
