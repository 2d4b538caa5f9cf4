package netsim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pair dials a -> b:80 and returns both ends.
func pair(t testing.TB, n *Network) (client, server *Conn) {
	t.Helper()
	l, err := n.Listen("b", 80)
	require.NoError(t, err)
	c, err := n.Dial(context.Background(), "a", "b:80")
	require.NoError(t, err)
	s, err := l.Accept()
	require.NoError(t, err)
	require.NoError(t, l.Close())
	return c.(*Conn), s.(*Conn)
}

func TestEchoAndAddresses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		l, err := n.Listen("b", 80)
		require.NoError(t, err)
		assert.Equal(t, "b:80", l.Addr().String())
		assert.Equal(t, "netsim", l.Addr().Network())
		done := make(chan error, 1)
		go func() {
			s, err := l.Accept()
			if err != nil {
				done <- err
				return
			}
			_, err = io.Copy(s, s)
			done <- errors.Join(err, s.Close())
		}()
		c, err := n.Dial(context.Background(), "a", "b:80")
		require.NoError(t, err)
		assert.Equal(t, "a:49152", c.LocalAddr().String())
		assert.Equal(t, "b:80", c.RemoteAddr().String())
		_, err = c.Write([]byte("hello"))
		require.NoError(t, err)
		require.NoError(t, c.(*Conn).CloseWrite())
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, "hello", string(got))
		require.NoError(t, <-done)
		require.NoError(t, c.Close())
		require.NoError(t, l.Close())

		st := n.Stats()
		require.Len(t, st, 1)
		assert.Equal(t, DirStats{Written: 5, Read: 5}, st[0].Up)
		assert.Equal(t, DirStats{Written: 5, Read: 5}, st[0].Down)
	})
}

func TestLatencyAndDialRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetLink("a", "b", Link{Latency: 50 * time.Millisecond}))
		require.NoError(t, n.SetLink("b", "a", Link{Latency: 70 * time.Millisecond}))
		t0 := time.Now()
		c, s := pair(t, n)
		assert.Equal(t, 120*time.Millisecond, time.Since(t0), "dial takes one round trip")

		t0 = time.Now()
		_, err := c.Write([]byte("x"))
		require.NoError(t, err)
		buf := make([]byte, 8)
		k, err := s.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, 1, k)
		assert.Equal(t, 50*time.Millisecond, time.Since(t0))

		t0 = time.Now()
		_, err = s.Write([]byte("y"))
		require.NoError(t, err)
		_, err = c.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, 70*time.Millisecond, time.Since(t0))
		require.NoError(t, n.Close())
	})
}

func TestBandwidth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetLink("a", "b", Link{Bandwidth: 1000, Buffer: 1 << 20}))
		c, s := pair(t, n)
		t0 := time.Now()
		_, err := c.Write(make([]byte, 20000))
		require.NoError(t, err)
		assert.Equal(t, time.Duration(0), time.Since(t0), "the write fits the buffer and does not wait")
		buf := make([]byte, 20000)
		k, err := s.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, segmentSize, k, "the first segment arrives alone")
		assert.Equal(t, time.Duration(segmentSize)*time.Millisecond, time.Since(t0), "1000 B/s: a ms per byte")
		_, err = io.ReadFull(s, buf[k:])
		require.NoError(t, err)
		assert.Equal(t, 20*time.Second, time.Since(t0), "20000 bytes at 1000 B/s")
		require.NoError(t, n.Close())
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

func TestReadDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		c, s := pair(t, n)
		t0 := time.Now()
		require.NoError(t, s.SetReadDeadline(t0.Add(time.Second)))
		_, err := s.Read(make([]byte, 1))
		assert.True(t, isTimeout(err), "got %v", err)
		assert.Equal(t, time.Second, time.Since(t0))

		// Extending the deadline while a Read waits takes effect.
		t0 = time.Now()
		require.NoError(t, s.SetReadDeadline(t0.Add(time.Second)))
		go func() {
			time.Sleep(500 * time.Millisecond)
			_ = s.SetReadDeadline(t0.Add(3 * time.Second))
		}()
		_, err = s.Read(make([]byte, 1))
		assert.True(t, isTimeout(err), "got %v", err)
		assert.Equal(t, 3*time.Second, time.Since(t0))

		// A deadline in the past fails at once even with data waiting;
		// clearing it makes the data readable.
		_, err = c.Write([]byte("z"))
		require.NoError(t, err)
		require.NoError(t, s.SetReadDeadline(time.Now().Add(-time.Second)))
		_, err = s.Read(make([]byte, 1))
		assert.True(t, isTimeout(err))
		require.NoError(t, s.SetReadDeadline(time.Time{}))
		k, err := s.Read(make([]byte, 1))
		assert.NoError(t, err)
		assert.Equal(t, 1, k)
		require.NoError(t, n.Close())
	})
}

func TestWriteDeadlineUnderBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetLink("a", "b", Link{Buffer: 100}))
		c, _ := pair(t, n)
		t0 := time.Now()
		require.NoError(t, c.SetWriteDeadline(t0.Add(time.Minute)))
		k, err := c.Write(make([]byte, 1000))
		assert.True(t, isTimeout(err), "got %v", err)
		assert.Equal(t, 100, k, "exactly the buffer was accepted")
		assert.Equal(t, time.Minute, time.Since(t0))
		require.NoError(t, n.Close())
	})
}

func TestBackpressureBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetLink("a", "b", Link{Buffer: 1000, Latency: time.Millisecond}))
		c, s := pair(t, n)
		data := bytes.Repeat([]byte("0123456789"), 1000)
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			werr <- errors.Join(err, c.Close())
		}()
		synctest.Wait()
		assert.Equal(t, int64(1000), c.Stats().Up.Written, "the writer stops at the buffer bound")

		buf := make([]byte, 300)
		_, err := io.ReadFull(s, buf)
		require.NoError(t, err)
		synctest.Wait()
		assert.Equal(t, int64(1000), c.Stats().Up.Written, "the writer waits for half the buffer to be free")
		more := make([]byte, 300)
		_, err = io.ReadFull(s, more)
		require.NoError(t, err)
		synctest.Wait()
		assert.Equal(t, int64(1600), c.Stats().Up.Written, "reading 600 frees 600")
		buf = append(buf, more...)

		rest, err := io.ReadAll(s)
		require.NoError(t, err)
		assert.Equal(t, data, append(buf, rest...))
		require.NoError(t, <-werr)
		require.NoError(t, s.Close())
	})
}

func TestCloseSemantics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: 10 * time.Millisecond}))
		c, s := pair(t, n)

		// A Read blocked on an end is released by closing that end.
		rerr := make(chan error, 1)
		go func() {
			_, err := s.Read(make([]byte, 1))
			rerr <- err
		}()
		synctest.Wait()

		_, err := c.Write([]byte("abc"))
		require.NoError(t, err)
		require.NoError(t, c.Close())
		assert.ErrorIs(t, c.Close(), net.ErrClosed, "second Close")
		_, err = c.Write([]byte("x"))
		assert.ErrorIs(t, err, net.ErrClosed)
		_, err = c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, net.ErrClosed)
		assert.ErrorIs(t, c.SetDeadline(time.Now()), net.ErrClosed)

		// The goroutine's Read got the first byte; the rest, then EOF.
		require.NoError(t, <-rerr)
		got, err := io.ReadAll(s)
		require.NoError(t, err)
		assert.Equal(t, "bc", string(got))
		_, err = s.Read(make([]byte, 1))
		assert.Equal(t, io.EOF, err, "EOF again")

		// The peer of a closed end gets a broken pipe on write.
		_, err = s.Write([]byte("late"))
		assert.ErrorIs(t, err, syscall.EPIPE)
		var op *net.OpError
		require.ErrorAs(t, err, &op)
		assert.Equal(t, "write", op.Op)
		assert.Equal(t, "b:80", op.Source.String())
		assert.Equal(t, "a:49152", op.Addr.String())

		blocked := make(chan error, 1)
		go func() {
			_, err := s.Read(make([]byte, 1))
			blocked <- err
		}()
		synctest.Wait()
		require.NoError(t, s.Close())
		assert.Equal(t, io.EOF, <-blocked)
	})
}

func TestCloseReleasesBlockedReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		c, _ := pair(t, n)
		rerr := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			rerr <- err
		}()
		synctest.Wait()
		require.NoError(t, c.Close())
		assert.ErrorIs(t, <-rerr, net.ErrClosed)
		require.NoError(t, n.Close())
	})
}

func TestHalfClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		c, s := pair(t, n)
		_, err := c.Write([]byte("req"))
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		_, err = c.Write([]byte("more"))
		assert.ErrorIs(t, err, syscall.EPIPE)
		req, err := io.ReadAll(s)
		require.NoError(t, err)
		assert.Equal(t, "req", string(req))
		_, err = s.Write([]byte("resp"))
		require.NoError(t, err)
		require.NoError(t, s.Close())
		resp, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, "resp", string(resp))
		require.NoError(t, c.Close())
	})
}

func TestDialErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		ctx := context.Background()
		_, err := n.Dial(ctx, "a", "nowhere:1")
		var dnsErr *net.DNSError
		assert.ErrorAs(t, err, &dnsErr)

		require.NoError(t, n.AddHost("b"))
		_, err = n.Dial(ctx, "a", "b:80")
		assert.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens")

		for _, bad := range []string{"b", "b:", "b:x", "b:0", "b:70000", ":80"} {
			_, err = n.Dial(ctx, "a", bad)
			assert.Error(t, err, bad)
		}
		_, err = n.Dial(ctx, "", "b:80")
		assert.Error(t, err)

		l, err := n.Listen("b", 80)
		require.NoError(t, err)
		_, err = n.Listen("b", 80)
		assert.ErrorIs(t, err, syscall.EADDRINUSE)
		eph, err := n.Listen("b", 0)
		require.NoError(t, err)
		assert.Equal(t, "b:49152", eph.Addr().String(), "port 0 picks an ephemeral port")
		require.NoError(t, eph.Close())
		_, err = n.Listen("b", -1)
		assert.Error(t, err)
		_, err = n.Listen("b:c", 1)
		assert.Error(t, err)

		require.NoError(t, n.RefuseDials("a", "b", 2))
		for i := 0; i < 2; i++ {
			_, err = n.Dial(ctx, "a", "b:80")
			assert.ErrorIs(t, err, syscall.ECONNREFUSED, "scheduled refusal %d", i)
		}
		c, err := n.Dial(ctx, "a", "b:80")
		require.NoError(t, err)

		// Dial honours its context during the handshake.
		require.NoError(t, n.SetLink("a", "b", Link{Latency: time.Hour}))
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = n.Dial(dctx, "a", "b:80")
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)

		// Closing the listener resets the connection nobody accepted.
		require.NoError(t, l.Close())
		_, err = l.Accept()
		assert.ErrorIs(t, err, net.ErrClosed)
		_, err = c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, syscall.ECONNRESET)
		require.NoError(t, c.Close())
		assert.ErrorIs(t, l.Close(), net.ErrClosed)
	})
}

func TestInvalidConfigIsAnError(t *testing.T) {
	n := New(1)
	assert.Error(t, n.SetLink("a", "b", Link{Latency: -1}))
	assert.Error(t, n.SetLink("a", "b", Link{Bandwidth: -1}))
	assert.Error(t, n.SetLink("a", "", Link{}))
	assert.Error(t, n.SetDefaultLink(Link{Buffer: -5}))
	assert.Error(t, n.SetDefaultLink(Link{Jitter: -5}))
	assert.Error(t, n.RefuseDials("a", "b", -1))
	assert.Error(t, n.Partition("a", "a", time.Second))
	assert.Error(t, n.Partition("a", "b", 0))
	assert.Error(t, n.AddHost(""))
}

// An hour of keepalives every 30s over a laggy link runs in virtual time:
// the test finishing at all (instead of hanging for an hour) is the point.
func TestHourOfKeepalivesInVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: 100 * time.Millisecond, Jitter: 50 * time.Millisecond}))
		c, s := pair(t, n)
		start := time.Now()
		const beats = 120
		go func() {
			tick := time.NewTicker(30 * time.Second)
			defer tick.Stop()
			for i := 0; i < beats; i++ {
				<-tick.C
				if _, err := c.Write([]byte{byte(i)}); err != nil {
					return
				}
			}
			_ = c.Close()
		}()
		got := 0
		for {
			// A keepalive timeout twice the interval never fires.
			require.NoError(t, s.SetReadDeadline(time.Now().Add(time.Minute)))
			b := make([]byte, 1)
			_, err := s.Read(b)
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			require.Equal(t, byte(got), b[0])
			got++
		}
		assert.Equal(t, beats, got)
		assert.GreaterOrEqual(t, time.Since(start), time.Hour)
		require.NoError(t, s.Close())
	})
}

func TestHugeBandwidthDoesNotOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Bandwidth: 1<<63 - 1, Latency: time.Millisecond}))
		c, s := pair(t, n)
		t0 := time.Now()
		_, err := c.Write(make([]byte, 5000))
		require.NoError(t, err)
		_, err = io.ReadFull(s, make([]byte, 5000))
		require.NoError(t, err)
		assert.Equal(t, time.Millisecond, time.Since(t0))
		require.NoError(t, n.Close())
	})
}
