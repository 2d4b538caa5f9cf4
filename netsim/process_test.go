package netsim

import (
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
