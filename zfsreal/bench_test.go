package zfsreal

import (
	"bytes"
	"io"
	"os/exec"
	"testing"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// The benchmarks compare a stream through this package with the same fake
// zfs run by plain os/exec in the same run: the ratio (1.0 = no overhead)
// is what matters, not the absolute speed of the fake.

const benchBytes = 64 << 20

func BenchmarkSendStream(b *testing.B) {
	f := newFake(b)
	f.onVersions("pool/a/fs@s1 1")
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: benchBytes})
	c := f.cli()
	var ours, base float64
	b.SetBytes(benchBytes)
	for b.Loop() {
		ours += timeIt(b, func() {
			r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, r); err != nil || n != benchBytes {
				b.Fatalf("copied %d: %v", n, err)
			}
			r.Close()
		})
		base += timeIt(b, func() {
			cmd := exec.Command(f.bin, "send", "pool/a/fs@s1")
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, out); err != nil || n != benchBytes {
				b.Fatalf("copied %d: %v", n, err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
		})
	}
	b.ReportMetric(ours/base, "time/os-exec")
}

func BenchmarkReceiveStream(b *testing.B) {
	f := newFake(b)
	f.on("recv -u pool/a/fs", fakeRule{ReadStdin: true})
	c := f.cli()
	data := streamBytes(benchBytes)
	var ours, base float64
	b.SetBytes(benchBytes)
	for b.Loop() {
		ours += timeIt(b, func() {
			if err := c.Receive(ctx, fs, bytes.NewReader(data), zfs.RecvOptions{}); err != nil {
				b.Fatal(err)
			}
		})
		base += timeIt(b, func() {
			cmd := exec.Command(f.bin, "recv", "-u", "pool/a/fs")
			// A plain Reader, as Receive gets: exec copies it in a goroutine.
			cmd.Stdin = struct{ io.Reader }{bytes.NewReader(data)}
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		})
	}
	b.ReportMetric(ours/base, "time/os-exec")
}

func timeIt(b *testing.B, fn func()) float64 {
	b.Helper()
	start := time.Now()
	fn()
	return time.Since(start).Seconds()
}

// BenchmarkSendIntoReceive: a stream of Send handed to Receive, spliced
// past a counting StreamWrapper against copied through a reader that
// hides it, in the same run (the fake's hashing of its stdin is in both).
func BenchmarkSendIntoReceive(b *testing.B) {
	f := newFake(b)
	f.onVersions("pool/a/fs@s1 1")
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: benchBytes})
	f.on("recv -u pool/b/fs", fakeRule{ReadStdin: true})
	c := f.cli()
	one := func(wrap func(io.Reader) io.Reader) {
		r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		if err := c.Receive(ctx, zfs.MustDatasetPath("pool/b/fs"), wrap(r), zfs.RecvOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	var spliced, copied float64
	b.SetBytes(benchBytes)
	for b.Loop() {
		spliced += timeIt(b, func() {
			one(func(r io.Reader) io.Reader { return &benchCounter{r: r} })
		})
		copied += timeIt(b, func() {
			one(func(r io.Reader) io.Reader { return struct{ io.Reader }{r} })
		})
	}
	b.ReportMetric(spliced/copied, "splice/copy")
}

type benchCounter struct {
	r io.Reader
	n int64
}

func (c *benchCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
func (c *benchCounter) Unwrap() io.Reader { return c.r }
func (c *benchCounter) Passed(n int64)    { c.n += n }
