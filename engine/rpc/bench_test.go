package rpc

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// benchBytes per transfer: short transfers, many times, so that the best
// of each variant is one the shared machine did not slow down.
const benchBytes = 256 << 20

// benchChunk is the copy buffer on both sides of every comparison.
const benchChunk = 256 << 10

// repeatSource yields n bytes of a fixed pattern, cheaply.
type repeatSource struct {
	n   int64
	pat []byte
}

func newRepeatSource(n int64) *repeatSource {
	pat := make([]byte, 1<<20)
	for i := range pat {
		pat[i] = byte(i * 31)
	}
	return &repeatSource{n: n, pat: pat}
}

func (r *repeatSource) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n, int64(len(r.pat)))]
	n := copy(p, r.pat)
	r.n -= int64(n)
	return n, nil
}

func (r *repeatSource) Close() error { return nil }

// writerOnly and readerOnly hide ReadFrom and WriteTo so copies use the
// given buffer size on both sides of every comparison (a *net.TCPConn's
// WriteTo would read in 32 KiB chunks).
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

func drain(r io.Reader) (int64, error) {
	return io.CopyBuffer(writerOnly{io.Discard}, readerOnly{r}, make([]byte, benchChunk))
}

// discardReceiver drains streams like a receiver that keeps up.
type discardReceiver struct {
	noPrune
	got chan int64
}

func (discardReceiver) ListFilesystems(context.Context) ([]endpoint.Filesystem, error) {
	return nil, nil
}
func (discardReceiver) AbortPartialReceive(context.Context, string) error { return nil }
func (discardReceiver) MoveLastReceivedHold(context.Context, string, zfs.FilesystemVersion) error {
	return nil
}
func (d discardReceiver) Receive(_ context.Context, _ endpoint.ReceiveRequest, stream io.Reader) error {
	n, err := drain(stream)
	d.got <- n
	return err
}

// repeatSender sends benchBytes for every request.
type repeatSender struct{ fakeSender }

func (*repeatSender) Send(context.Context, endpoint.SendRequest) (io.ReadCloser, error) {
	return newRepeatSource(benchBytes), nil
}

// plainCopy is the baseline: the same bytes through one loopback TCP
// connection with io.Copy and the same buffer sizes.
func plainCopy(b *testing.B) time.Duration {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := drain(c)
		got <- n
	}()
	start := time.Now()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyBuffer(writerOnly{c}, newRepeatSource(benchBytes), make([]byte, benchChunk)); err != nil {
		b.Fatal(err)
	}
	c.Close()
	if n := <-got; n != benchBytes {
		b.Fatalf("baseline moved %d bytes", n)
	}
	return time.Since(start)
}

// BenchmarkStream moves a 256 MiB send stream through the protocol over
// loopback TCP, pushed to a sink (Receive) and pulled from a source
// (Send), and reports each one's throughput as a ratio to a plain io.Copy
// over loopback TCP measured in the same run (target: >= 0.9).
func BenchmarkStream(b *testing.B) {
	got := make(chan int64, 1)
	sink := newServer(b, ServerConfig{Receiver: func(string) (ReceiverEndpoint, error) { return discardReceiver{got: got}, nil }})
	source := newServer(b, ServerConfig{Sender: Source(&repeatSender{})})
	c := newClient(b, ClientConfig{Dial: serve(b, sink, "tcp", "bench")})
	cs := newClient(b, ClientConfig{Dial: serve(b, source, "tcp", "bench")})
	ctx := context.Background()
	if _, err := c.Receiver().ListFilesystems(ctx); err != nil {
		b.Fatal(err)
	}
	// The machine is shared: each iteration measures every variant
	// several times, interleaved, and keeps each one's best wall time;
	// the CPU time (of both ends, this process's) is summed, as a
	// measure the machine's load disturbs less.
	const rounds = 9
	var wall, cpu [3]time.Duration
	variants := [3]func(){
		func() { plainCopy(b) },
		func() {
			err := c.Receiver().Receive(ctx, endpoint.ReceiveRequest{FS: "src/data", To: snap("s1", 7), Full: true}, newRepeatSource(benchBytes))
			if err != nil {
				b.Fatal(err)
			}
			if n := <-got; n != benchBytes {
				b.Fatalf("push moved %d bytes", n)
			}
		},
		func() {
			stream, err := cs.Sender().Send(ctx, endpoint.SendRequest{FS: "src/data", To: snap("s1", 7)})
			if err != nil {
				b.Fatal(err)
			}
			n, err := drain(stream)
			stream.Close()
			if err != nil || n != benchBytes {
				b.Fatalf("pull moved %d bytes: %v", n, err)
			}
		},
	}
	b.ResetTimer()
	for b.Loop() {
		best := [3]time.Duration{1 << 62, 1 << 62, 1 << 62}
		for range rounds {
			for i, v := range variants {
				start, cpu0 := time.Now(), cpuTime(b)
				v()
				best[i] = min(best[i], time.Since(start))
				cpu[i] += cpuTime(b) - cpu0
			}
		}
		for i := range wall {
			wall[i] += best[i]
		}
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * benchBytes / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(wall[0]), "baseline-MB/s")
	b.ReportMetric(mbps(wall[1]), "push-MB/s")
	b.ReportMetric(mbps(wall[2]), "pull-MB/s")
	b.ReportMetric(wall[0].Seconds()/wall[1].Seconds(), "push-ratio")
	b.ReportMetric(wall[0].Seconds()/wall[2].Seconds(), "pull-ratio")
	b.ReportMetric(cpu[0].Seconds()/cpu[1].Seconds(), "push-cpu-ratio")
	b.ReportMetric(cpu[0].Seconds()/cpu[2].Seconds(), "pull-cpu-ratio")
}

// cpuTime is the user and system time this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
