package zfsmodel

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

const benchBytes = 1 << 30

// BenchmarkSendRecv1GiB sends a full stream of a filesystem holding 1 GiB
// of blocks and receives it through an io.Pipe; the baseline is a plain
// io.Copy of the same stream bytes through an io.Pipe, measured in the same run. The
// reported ratio is model throughput / baseline throughput (target >= 0.5).
func BenchmarkSendRecv1GiB(b *testing.B) {
	ctx := context.Background()
	m := New(Options{Seed: 1})
	for _, p := range []string{"srcp", "dstp"} {
		if err := m.CreatePool(p); err != nil {
			b.Fatal(err)
		}
	}
	src := zfs.MustDatasetPath("srcp/fs")
	if err := m.CreateFilesystem(src, FSOptions{}); err != nil {
		b.Fatal(err)
	}
	if err := m.WriteData(src, 1, benchBytes/BlockSize); err != nil {
		b.Fatal(err)
	}
	if err := m.Snapshot(ctx, src, "s"); err != nil {
		b.Fatal(err)
	}
	to := zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "s"}

	// The baseline copies the very bytes of the model's stream, captured
	// once beforehand, so both sides move the same 1 GiB (a small buffer
	// written again and again would measure cache, not memory, speed).
	stream := func() []byte {
		s, err := m.Send(ctx, zfs.SendArgs{FS: src, To: to})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		all, err := io.ReadAll(s)
		if err != nil {
			b.Fatal(err)
		}
		return all
	}()
	baseline := func() time.Duration {
		pr, pw := io.Pipe()
		start := time.Now()
		go func() {
			_, err := io.Copy(pw, bytes.NewReader(stream))
			pw.CloseWithError(err)
		}()
		if n, err := io.Copy(io.Discard, pr); err != nil || n != int64(len(stream)) {
			b.Fatalf("baseline copied %d of %d bytes: %v", n, len(stream), err)
		}
		return time.Since(start)
	}
	model := func(i int) time.Duration {
		dst := zfs.MustDatasetPath("dstp/fs")
		if i > 0 {
			// Start each iteration from an empty target.
			m.mu.Lock()
			delete(m.st.Datasets, dst.String())
			m.mu.Unlock()
		}
		start := time.Now()
		s, err := m.Send(ctx, zfs.SendArgs{FS: src, To: to})
		if err != nil {
			b.Fatal(err)
		}
		pr, pw := io.Pipe()
		go func() {
			_, err := io.Copy(pw, s)
			pw.CloseWithError(err)
		}()
		if err := m.Receive(ctx, dst, pr, zfs.RecvOptions{}); err != nil {
			b.Fatal(err)
		}
		pr.Close()
		s.Close()
		return time.Since(start)
	}

	var base, mod time.Duration
	b.SetBytes(benchBytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base += baseline()
		mod += model(i)
	}
	b.StopTimer()
	b.ReportMetric(float64(base)/float64(mod), "speed-vs-pipe")
	b.ReportMetric(float64(benchBytes)*float64(b.N)/mod.Seconds()/(1<<20), "model-MiB/s")
	b.ReportMetric(float64(benchBytes)*float64(b.N)/base.Seconds()/(1<<20), "pipe-MiB/s")
}
