package netsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

func isReset(err error) bool {
	var op *net.OpError
	return errors.Is(err, syscall.ECONNRESET) && errors.As(err, &op)
}

func TestResetAtByteFromPlan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: 5 * time.Millisecond}))
		require.NoError(t, n.Schedule(FaultPlan{Faults: []Fault{{Kind: FaultReset, Conn: 1, Dir: Up, AtByte: 1000}}}))
		c, s := pair(t, n)
		k, err := c.Write(make([]byte, 5000))
		assert.Equal(t, 1000, k, "the write stops at the reset")
		assert.True(t, isReset(err), "got %v", err)
		assert.Contains(t, err.Error(), "connection reset by peer")

		got, err := io.ReadAll(s)
		assert.Len(t, got, 1000)
		assert.True(t, isReset(err), "got %v", err)

		_, err = c.Read(make([]byte, 1))
		assert.True(t, isReset(err), "the writer's side is reset too: %v", err)
		_, err = s.Write([]byte("x"))
		assert.True(t, isReset(err), "got %v", err)
		assert.Contains(t, n.TraceString(), "conn#1 up: reset at byte 1000")
		require.NoError(t, n.Close())
	})
}

// The reader of the reset direction sees exactly the bytes before the reset
// offset, however writes and reads are chunked and whatever the link.
func TestResetOffsetIsExact(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		at := rapid.Int64Range(0, 20000).Draw(rt, "at")
		dir := Dir(rapid.IntRange(0, 1).Draw(rt, "dir"))
		link := drawLink(rt, 1)
		writes := rapid.SliceOfN(rapid.IntRange(1, 3000), 1, 30).Draw(rt, "writes")
		readSize := rapid.IntRange(1, 5000).Draw(rt, "readSize")
		total := 0
		for _, w := range writes {
			total += w
		}
		var gotN int
		var readErr, writeErr error
		synctest.Test(t, func(t *testing.T) {
			n := New(7)
			require.NoError(t, n.SetDefaultLink(link))
			require.NoError(t, n.Schedule(FaultPlan{Faults: []Fault{{Kind: FaultReset, Conn: 1, Dir: dir, AtByte: at}}}))
			c, s := pair(t, n)
			w, r := c, s
			if dir == Down {
				w, r = s, c
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for _, k := range writes {
					if _, writeErr = w.Write(make([]byte, k)); writeErr != nil {
						break
					}
				}
				_ = w.Close()
			}()
			buf := make([]byte, readSize)
			for {
				k, err := r.Read(buf)
				gotN += k
				if err != nil {
					readErr = err
					break
				}
			}
			<-done
			_ = r.Close()
		})
		if int64(total) < at {
			if readErr != io.EOF || gotN != total {
				rt.Fatalf("no reset expected: got %d bytes and %v, want %d and EOF", gotN, readErr, total)
			}
			return
		}
		if int64(gotN) != at || !isReset(readErr) {
			rt.Fatalf("got %d bytes then %v, want %d then a reset", gotN, readErr, at)
		}
		if !isReset(writeErr) {
			rt.Fatalf("writer got %v, want a reset", writeErr)
		}
	})
}

// drawLink draws a link. Buffers below minBuffer are left out: a stream
// through a buffer of a few bytes costs a wake-up per few bytes.
func drawLink(rt *rapid.T, minBuffer int) Link {
	return Link{
		Latency:   time.Duration(rapid.Int64Range(0, int64(100*time.Millisecond)).Draw(rt, "latency")),
		Jitter:    time.Duration(rapid.Int64Range(0, int64(20*time.Millisecond)).Draw(rt, "jitter")),
		Bandwidth: rapid.SampledFrom([]int64{0, 1000, 100_000, 10_000_000}).Draw(rt, "bandwidth"),
		Buffer:    rapid.OneOf(rapid.Just(0), rapid.IntRange(minBuffer, 70000)).Draw(rt, "buffer"),
	}
}

// Whatever the chunking and link, the bytes arrive complete and in order,
// and never more than the buffer is outstanding.
func TestDataIntegrity(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		link := drawLink(rt, 1)
		maxLen := 100000
		if link.Buffer > 0 && link.Buffer < 1000 {
			maxLen = 5000
		}
		data := rapid.SliceOfN(rapid.Byte(), 0, maxLen).Draw(rt, "data")
		writeSizes := rapid.SliceOfN(rapid.IntRange(1, 20000), 1, 20).Draw(rt, "writeSizes")
		readSizes := rapid.SliceOfN(rapid.IntRange(1, 20000), 1, 20).Draw(rt, "readSizes")
		var got []byte
		var readErr, writeErr error
		var st ConnStats
		var maxOutstanding int64
		synctest.Test(t, func(t *testing.T) {
			n := New(3)
			require.NoError(t, n.SetDefaultLink(link))
			c, s := pair(t, n)
			done := make(chan struct{})
			go func() {
				defer close(done)
				rest := data
				for i := 0; len(rest) > 0; i++ {
					k := min(writeSizes[i%len(writeSizes)], len(rest))
					if _, writeErr = c.Write(rest[:k]); writeErr != nil {
						return
					}
					rest = rest[k:]
				}
				writeErr = c.Close()
			}()
			for i := 0; ; i++ {
				synctest.Wait() // let the writer fill the buffer as far as it can
				cs := c.Stats()
				maxOutstanding = max(maxOutstanding, cs.Up.Written-cs.Up.Read)
				buf := make([]byte, readSizes[i%len(readSizes)])
				k, err := s.Read(buf)
				got = append(got, buf[:k]...)
				if err != nil {
					readErr = err
					break
				}
			}
			<-done
			st = s.Stats()
			_ = s.Close()
		})
		if writeErr != nil || readErr != io.EOF {
			rt.Fatalf("write error %v, read error %v", writeErr, readErr)
		}
		if !bytes.Equal(got, data) {
			rt.Fatalf("got %d bytes, want %d; differ", len(got), len(data))
		}
		if st.Up.Written != int64(len(data)) || st.Up.Read != int64(len(data)) || st.Up.Dropped != 0 {
			rt.Fatalf("stats %+v for %d bytes", st.Up, len(data))
		}
		bound := int64(link.Buffer)
		if bound == 0 {
			bound = DefaultBuffer
		}
		if maxOutstanding > bound {
			rt.Fatalf("%d bytes outstanding, buffer %d", maxOutstanding, bound)
		}
	})
}

func TestStallAfterByte(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: 10 * time.Millisecond}))
		require.NoError(t, n.Schedule(FaultPlan{Faults: []Fault{{Kind: FaultStall, Conn: 1, Dir: Up, AtByte: 100, For: time.Hour}}}))
		c, s := pair(t, n)
		t0 := time.Now()
		_, err := c.Write(make([]byte, 300))
		require.NoError(t, err)
		buf := make([]byte, 1000)
		k, err := s.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, 100, k)
		assert.Equal(t, 10*time.Millisecond, time.Since(t0))
		k, err = s.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, 200, k)
		assert.Equal(t, time.Hour+10*time.Millisecond, time.Since(t0))
		require.NoError(t, n.Close())
	})
}

func TestExplicitStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		c, s := pair(t, n)
		t0 := time.Now()
		c.Stall(time.Minute)
		_, err := s.Write([]byte("down"))
		require.NoError(t, err)
		_, err = c.Write([]byte("up"))
		require.NoError(t, err)
		b := make([]byte, 10)
		k, err := c.Read(b)
		require.NoError(t, err)
		assert.Equal(t, "down", string(b[:k]))
		assert.Equal(t, time.Minute, time.Since(t0))
		k, err = s.Read(b)
		require.NoError(t, err)
		assert.Equal(t, "up", string(b[:k]))
		require.NoError(t, n.Close())
	})
}

func TestHalfOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Buffer: 500}))
		c, s := pair(t, n)
		_, err := s.Write([]byte("before"))
		require.NoError(t, err)
		c.HalfOpen()

		// What arrived before is still there; what comes after vanishes,
		// and so does the peer's close: the client hears nothing.
		_, err = s.Write([]byte("after"))
		require.NoError(t, err)
		require.NoError(t, s.Close())
		b := make([]byte, 100)
		k, err := c.Read(b)
		require.NoError(t, err)
		assert.Equal(t, "before", string(b[:k]))
		require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Hour)))
		_, err = c.Read(b)
		assert.True(t, isTimeout(err), "silence, not EOF: %v", err)

		// The client's writes succeed until the buffer is full, then block.
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(time.Minute)))
		k, err = c.Write(make([]byte, 2000))
		assert.Equal(t, 500, k)
		assert.True(t, isTimeout(err), "got %v", err)
		assert.Equal(t, int64(0), c.Stats().Up.Read)
		require.NoError(t, c.Close())
	})
}

func TestHalfOpenFromPlan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.Schedule(FaultPlan{Faults: []Fault{{Kind: FaultHalfOpen, Conn: 1, Dir: Down, AtByte: 3}}}))
		c, s := pair(t, n)
		_, err := s.Write([]byte("abcdef"))
		require.NoError(t, err)
		got := make([]byte, 10)
		k, err := c.Read(got)
		require.NoError(t, err)
		assert.Equal(t, "abc", string(got[:k]))
		require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Second)))
		_, err = c.Read(got)
		assert.True(t, isTimeout(err))
		assert.Contains(t, n.TraceString(), "conn#1 down: half-open at byte 3")
		require.NoError(t, n.Close())
	})
}

func TestPartitionHeals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: 10 * time.Millisecond}))
		c, s := pair(t, n)
		l, err := n.Listen("b", 81)
		require.NoError(t, err)
		t0 := time.Now()
		require.NoError(t, n.Partition("a", "b", 10*time.Minute))

		_, err = n.Dial(context.Background(), "a", "b:81")
		assert.ErrorIs(t, err, syscall.EHOSTUNREACH)
		assert.Contains(t, err.Error(), "no route to host")

		// Established conns stall and resume when the partition heals.
		_, err = c.Write([]byte("ping"))
		require.NoError(t, err)
		b := make([]byte, 10)
		k, err := s.Read(b)
		require.NoError(t, err)
		assert.Equal(t, "ping", string(b[:k]))
		assert.Equal(t, 10*time.Minute, time.Since(t0))

		c2, err := n.Dial(context.Background(), "a", "b:81")
		require.NoError(t, err, "dials work after the heal")
		require.NoError(t, c2.Close())

		// Heal ends a partition early and wakes waiting readers.
		require.NoError(t, n.Partition("b", "a", time.Hour))
		t1 := time.Now()
		go func() {
			time.Sleep(5 * time.Minute)
			n.Heal("a", "b")
		}()
		_, err = s.Write([]byte("pong"))
		require.NoError(t, err)
		k, err = c.Read(b)
		require.NoError(t, err)
		assert.Equal(t, "pong", string(b[:k]))
		assert.Equal(t, 5*time.Minute, time.Since(t1))
		assert.Contains(t, n.TraceString(), "partition a|b healed")
		require.NoError(t, l.Close())
		require.NoError(t, n.Close())
	})
}

func TestScheduledPartitionAndRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		plan := FaultPlan{Faults: []Fault{
			{Kind: FaultPartition, A: "a", B: "b", At: time.Minute, For: time.Minute},
			{Kind: FaultRefuseDial, Conn: 2},
		}}
		require.NoError(t, n.Schedule(plan))
		l, err := n.Listen("b", 80)
		require.NoError(t, err)
		ctx := context.Background()
		dial := func() error {
			c, err := n.Dial(ctx, "a", "b:80")
			if err == nil {
				_ = c.Close()
			}
			return err
		}
		assert.NoError(t, dial(), "dial#1 at +0")
		assert.ErrorIs(t, dial(), syscall.ECONNREFUSED, "dial#2 is refused by plan")
		time.Sleep(90 * time.Second)
		assert.ErrorIs(t, dial(), syscall.EHOSTUNREACH, "dial#3 during the partition")
		time.Sleep(30 * time.Second)
		assert.NoError(t, dial(), "dial#4 after it")
		require.NoError(t, l.Close())
		require.NoError(t, n.Close())

		// Faults for dials already made are refused, invalid ones too.
		assert.Error(t, n.Schedule(FaultPlan{Faults: []Fault{{Kind: FaultRefuseDial, Conn: 1}}}))
		for _, f := range []Fault{
			{Kind: FaultReset, Conn: 0},
			{Kind: FaultReset, Conn: 9, Dir: 5},
			{Kind: FaultReset, Conn: 9, AtByte: -1},
			{Kind: FaultStall, Conn: 9},
			{Kind: FaultPartition, A: "a", B: "a", For: 1},
			{Kind: FaultPartition, A: "a", B: "b"},
			{Kind: 0},
		} {
			assert.Error(t, n.Schedule(FaultPlan{Faults: []Fault{f}}), "%v", f)
		}
	})
}

func TestGeneratePlan(t *testing.T) {
	cfg := PlanConfig{
		Faults: 8, Conns: 5, MaxByte: 1 << 20, MaxStall: time.Minute,
		Hosts: []string{"a", "b", "c"}, Horizon: time.Hour, MaxPartition: 10 * time.Minute,
	}
	p1, err := GeneratePlan(42, cfg)
	require.NoError(t, err)
	p2, err := GeneratePlan(42, cfg)
	require.NoError(t, err)
	assert.Equal(t, p1, p2, "same seed, same plan")
	require.Len(t, p1.Faults, 8)
	for _, f := range p1.Faults {
		require.NoError(t, f.validate(), "%v", f)
	}
	s := p1.String()
	assert.True(t, strings.HasPrefix(s, "fault plan (seed 42, 8 faults)\n  "), s)
	assert.Equal(t, 9, strings.Count(s, "\n")+1, s)

	seen := map[string]int64{}
	for seed := int64(0); seed < 50; seed++ {
		p, err := GeneratePlan(seed, cfg)
		require.NoError(t, err)
		body := strings.SplitN(p.String(), "\n", 2)[1]
		if prev, dup := seen[body]; dup {
			t.Fatalf("seeds %d and %d give the same plan:\n%s", prev, seed, body)
		}
		seen[body] = seed
	}

	only, err := GeneratePlan(1, PlanConfig{Faults: 20, Conns: 3, MaxByte: 10, Kinds: []FaultKind{FaultReset}})
	require.NoError(t, err)
	for _, f := range only.Faults {
		assert.Equal(t, FaultReset, f.Kind)
		assert.LessOrEqual(t, f.AtByte, int64(10))
		assert.True(t, f.Conn >= 1 && f.Conn <= 3)
	}

	_, err = GeneratePlan(1, PlanConfig{Faults: 1, Kinds: []FaultKind{FaultPartition}})
	assert.Error(t, err, "partitions need hosts")
	_, err = GeneratePlan(1, PlanConfig{Faults: 1})
	assert.Error(t, err, "nothing allowed")
	_, err = GeneratePlan(1, PlanConfig{Faults: -1})
	assert.Error(t, err)
	_, err = GeneratePlan(1, PlanConfig{Faults: 1, Conns: 1, MaxByte: math.MaxInt64})
	assert.Error(t, err)
	_, err = GeneratePlan(1, PlanConfig{Faults: 1, Hosts: []string{"a", "a"}, Horizon: 1, MaxPartition: 1})
	assert.Error(t, err, "one distinct host cannot be partitioned")
	_, err = GeneratePlan(1, PlanConfig{Faults: 1, Hosts: []string{"a", "b:1"}, Horizon: 1, MaxPartition: 1})
	assert.Error(t, err)
}

// workload runs a fixed sequence of dials and transfers against a network
// seeded with seed and a fault plan from the same seed, and returns the plan
// and the trace.
func workload(t *testing.T, seed int64) (plan, trace string) {
	synctest.Test(t, func(t *testing.T) {
		n := New(seed)
		require.NoError(t, n.SetDefaultLink(Link{Latency: 20 * time.Millisecond, Jitter: 30 * time.Millisecond, Bandwidth: 1 << 20, Buffer: 8 << 10}))
		p, err := GeneratePlan(seed, PlanConfig{
			Faults: 6, Conns: 6, MaxByte: 64 << 10, MaxStall: 30 * time.Second,
			Hosts: []string{"a", "b"}, Horizon: 5 * time.Minute, MaxPartition: time.Minute,
		})
		require.NoError(t, err)
		require.NoError(t, n.Schedule(p))
		plan = p.String()
		l, err := n.Listen("b", 80)
		require.NoError(t, err)
		served := make(chan struct{})
		go func() {
			defer close(served)
			for {
				s, err := l.Accept()
				if err != nil {
					return
				}
				_ = s.SetDeadline(time.Now().Add(2 * time.Minute))
				buf := make([]byte, 32<<10)
				for {
					k, err := s.Read(buf)
					n.record(time.Now(), "server: read %d, %v", k, err)
					if err != nil {
						break
					}
					if _, err := s.Write(buf[:k]); err != nil {
						n.record(time.Now(), "server: write: %v", err)
						break
					}
				}
				_ = s.Close()
			}
		}()
		for i := 0; i < 6; i++ {
			c, err := n.Dial(context.Background(), "a", "b:80")
			if err != nil {
				n.record(time.Now(), "client: dial %d: %v", i, err)
				time.Sleep(time.Minute)
				continue
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
			go func() {
				// The error is left out: when the deadline passes at the
				// instant the main goroutine closes c, either may win.
				k, _ := c.Write(bytes.Repeat([]byte{byte(i)}, 50<<10))
				n.record(time.Now(), "client: wrote %d", k)
				_ = c.(*Conn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			n.record(time.Now(), "client: conn %d echoed %d bytes, %v", i, len(got), err)
			_ = c.Close()
		}
		require.NoError(t, l.Close())
		<-served
		synctest.Wait()
		trace = n.TraceString()
		for _, st := range n.Stats() {
			trace += fmt.Sprintf("%+v\n", st)
		}
	})
	return plan, trace
}

func TestSameSeedSameTrace(t *testing.T) {
	plan1, trace1 := workload(t, 11)
	for i := 0; i < 5; i++ {
		plan2, trace2 := workload(t, 11)
		require.Equal(t, plan1, plan2)
		require.Equal(t, trace1, trace2, "run %d", i)
	}
	plan3, trace3 := workload(t, 12)
	assert.NotEqual(t, plan1, plan3)
	assert.NotEqual(t, trace1, trace3)
	assert.Contains(t, trace1, "established")
	t.Logf("%s\n%s", plan1, trace1)
}

func TestScheduledPartitionStallsEstablishedConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.Schedule(FaultPlan{Faults: []Fault{{Kind: FaultPartition, A: "b", B: "a", At: time.Minute, For: time.Minute}}}))
		c, s := pair(t, n)
		time.Sleep(90 * time.Second)
		_, err := c.Write([]byte("during"))
		require.NoError(t, err)
		b := make([]byte, 10)
		k, err := s.Read(b)
		require.NoError(t, err)
		assert.Equal(t, "during", string(b[:k]))
		assert.Equal(t, 2*time.Minute, time.Since(n.start), "held until the partition ends")
		require.NoError(t, n.Close())
	})
}

func TestExplicitConnFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		require.NoError(t, n.SetDefaultLink(Link{Latency: time.Second}))

		// ResetAfter on the server end: the client reads exactly 3 bytes.
		c, s := pair(t, n)
		s.ResetAfter(3)
		k, err := s.Write([]byte("abcdef"))
		assert.Equal(t, 3, k)
		assert.True(t, isReset(err))
		got, err := io.ReadAll(c)
		assert.Equal(t, "abc", string(got))
		assert.True(t, isReset(err))
		require.NoError(t, c.Close())
		require.NoError(t, s.Close())

		// Reset now: this end fails at once, the peer a latency later,
		// after reading what had arrived before.
		c, s = pair(t, n)
		_, err = c.Write([]byte("xy"))
		require.NoError(t, err)
		time.Sleep(2 * time.Second)
		t0 := time.Now()
		s.Reset()
		got, err = io.ReadAll(s)
		assert.Equal(t, "xy", string(got), "what arrived before stays readable")
		assert.True(t, isReset(err), "the end that reset is reset at once: %v", err)
		assert.Equal(t, time.Duration(0), time.Since(t0))
		_, err = c.Write([]byte("vanishes"))
		assert.NoError(t, err, "the peer does not know yet")
		_, err = c.Read(make([]byte, 1))
		assert.True(t, isReset(err))
		assert.Equal(t, time.Second, time.Since(t0))
		assert.Equal(t, int64(len("vanishes")), c.Stats().Up.Dropped)
		require.NoError(t, c.Close())
		require.NoError(t, s.Close())

		// StallAfter: the first 2 bytes flow, the rest waits a minute.
		c, s = pair(t, n)
		c.StallAfter(2, time.Minute)
		t0 = time.Now()
		_, err = c.Write([]byte("1234"))
		require.NoError(t, err)
		b := make([]byte, 10)
		k, err = s.Read(b)
		require.NoError(t, err)
		assert.Equal(t, "12", string(b[:k]))
		assert.Equal(t, time.Second, time.Since(t0))
		k, err = s.Read(b)
		require.NoError(t, err)
		assert.Equal(t, "34", string(b[:k]))
		assert.Equal(t, time.Minute+time.Second, time.Since(t0))
		require.NoError(t, n.Close())
		assert.Contains(t, n.TraceString(), "stall at byte 2 for 1m0s")
	})
}

// Under any generated fault plan, each reader sees a prefix of what its
// peer wrote (never a corrupted or reordered byte), and every transfer ends
// in EOF, a reset or a timeout rather than hanging.
func TestRandomFaultsKeepStreamsPrefixes(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		seed := rapid.Int64().Draw(rt, "seed")
		link := drawLink(rt, 1000)
		size := rapid.IntRange(0, 60000).Draw(rt, "size")
		plan, err := GeneratePlan(seed, PlanConfig{
			Faults: rapid.IntRange(0, 4).Draw(rt, "faults"), Conns: 3, MaxByte: int64(size) + 1,
			MaxStall: time.Minute, Hosts: []string{"a", "b"}, Horizon: time.Minute, MaxPartition: time.Minute,
		})
		if err != nil {
			rt.Fatal(err)
		}
		var failure string
		synctest.Test(t, func(t *testing.T) {
			n := New(seed)
			require.NoError(t, n.SetDefaultLink(link))
			require.NoError(t, n.Schedule(plan))
			l, err := n.Listen("b", 80)
			require.NoError(t, err)
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i * 7)
			}
			for i := 0; i < 3; i++ {
				c, err := n.Dial(context.Background(), "a", "b:80")
				if err != nil {
					continue
				}
				s, err := l.Accept()
				require.NoError(t, err)
				deadline := time.Now().Add(10 * time.Minute)
				require.NoError(t, c.SetDeadline(deadline))
				require.NoError(t, s.SetDeadline(deadline))
				up, down := make(chan []byte, 1), make(chan []byte, 1)
				copyOut := func(w net.Conn, r net.Conn, out chan<- []byte) {
					go func() {
						_, _ = w.Write(data)
						_ = w.(*Conn).CloseWrite()
					}()
					got, err := io.ReadAll(r)
					if err != nil && !isReset(err) && !isTimeout(err) {
						failure = fmt.Sprintf("unexpected read error %v", err)
					}
					out <- got
				}
				go copyOut(c, s, up)
				go copyOut(s, c, down)
				for _, got := range [][]byte{<-up, <-down} {
					if !bytes.Equal(got, data[:len(got)]) {
						failure = fmt.Sprintf("conn %d: %d bytes received are not a prefix of the data", i, len(got))
					}
				}
				_ = c.Close()
				_ = s.Close()
			}
			require.NoError(t, l.Close())
		})
		if failure != "" {
			rt.Fatalf("%s\n%s", failure, plan)
		}
	})
}

func TestConnByID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		c, s := pair(t, n)
		cc, ss, ok := n.Conn(c.ID())
		require.True(t, ok)
		assert.Equal(t, c.LocalAddr(), cc.LocalAddr())
		assert.Equal(t, s.LocalAddr(), ss.LocalAddr())
		ss.Reset()
		_, err := c.Read(make([]byte, 1))
		assert.True(t, isReset(err))
		_, _, ok = n.Conn(99)
		assert.False(t, ok)
		require.NoError(t, n.Close())
	})
}
