package netsim

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

const benchBytes = 4 << 20

// transfer pushes benchBytes from w to r in 32 KiB writes and returns how
// long the reader took to get all of it.
func transfer(b *testing.B, w io.WriteCloser, r io.Reader) time.Duration {
	chunk := make([]byte, 32<<10)
	start := time.Now()
	go func() {
		for sent := 0; sent < benchBytes; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		_ = w.Close()
	}()
	n, err := io.CopyBuffer(io.Discard, r, make([]byte, 32<<10))
	if err != nil || n != benchBytes {
		b.Fatalf("got %d bytes, %v", n, err)
	}
	return time.Since(start)
}

// BenchmarkThroughput measures a netsim connection (zero latency, unlimited
// bandwidth, default buffer) against an io.Pipe in the same run and reports
// the ratio of their times; the absolute numbers vary by machine, the ratio
// much less.
func BenchmarkThroughput(b *testing.B) {
	n := New(1)
	l, err := n.Listen("b", 80)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var pipeTime, simTime time.Duration
	b.SetBytes(benchBytes)
	for i := 0; i < b.N; i++ {
		pr, pw := io.Pipe()
		pipeTime += transfer(b, pw, pr)

		c, err := n.Dial(context.Background(), "a", "b:80")
		if err != nil {
			b.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			b.Fatal(err)
		}
		simTime += transfer(b, c, s)
		_ = s.Close()
		_ = c.(net.Conn).Close()
	}
	b.ReportMetric(float64(simTime)/float64(pipeTime), "netsim/pipe")
	b.ReportMetric(float64(benchBytes)*float64(b.N)/simTime.Seconds()/1e6, "netsim-MB/s")
	b.ReportMetric(float64(benchBytes)*float64(b.N)/pipeTime.Seconds()/1e6, "pipe-MB/s")
}
