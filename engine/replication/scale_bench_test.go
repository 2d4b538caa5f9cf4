package replication_test

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// Issue 13's targets on the model backend, for `make bench`: a sender of
// 10,000 filesystems x 100 snapshots plans and finishes an up-to-date run
// in under 1 s, and an incremental run with one new snapshot on each
// spends under 1 ms of engine CPU per step beyond the model's own work.
var (
	scaleFS    = flag.Int("scale.fs", 10000, "filesystems of the scale benchmarks")
	scaleSnaps = flag.Int("scale.snaps", 100, "snapshots per filesystem of the scale benchmarks")
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func peakRSSMiB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024 // KiB on Linux
}

type scaleWorld struct {
	src  *zfsmodel.Model
	s    *endpoint.Sender
	r    *endpoint.Receiver
	fss  []zfs.DatasetPath
	next int
}

// newScaleWorld builds the sender's tree and replicates the newest
// snapshot of each filesystem (10,000 full steps, not 1,000,000): the
// up-to-date and incremental runs then list and plan all of the sender's
// snapshots, as with a receiver that has them all.
func newScaleWorld(b *testing.B) *scaleWorld {
	b.Helper()
	ctx := context.Background()
	src := zfsmodel.New(zfsmodel.Options{Seed: 1})
	dst := zfsmodel.New(zfsmodel.Options{Seed: 2})
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(src.CreatePool("src"))
	must(dst.CreatePool("dst"))
	start := time.Now()
	w := &scaleWorld{src: src}
	for i := range *scaleFS {
		fs := zfs.MustDatasetPath(fmt.Sprintf("src/data/fs%05d", i))
		must(src.CreateFilesystem(fs, zfsmodel.FSOptions{Parents: true}))
		must(src.WriteData(fs, int64(i), 1))
		for j := range *scaleSnaps {
			must(src.Snapshot(ctx, fs, fmt.Sprintf("s%03d", j)))
		}
		w.fss = append(w.fss, fs)
	}
	built := time.Since(start)
	job := endpoint.MustJobID("scale")
	w.s = &endpoint.Sender{ZFS: src, Job: job, Roots: []zfs.DatasetPath{zfs.MustDatasetPath("src")},
		Filter: func(fs zfs.DatasetPath) bool { return fs.HasPrefix(zfs.MustDatasetPath("src/data")) }}
	w.r = &endpoint.Receiver{ZFS: dst, Job: job, Root: zfs.MustDatasetPath("dst/client")}
	start = time.Now()
	rep := w.run(planner.MostRecent)
	if err := rep.Err(); err != nil {
		b.Fatal(err)
	}
	b.Logf("setup: %d filesystems x %d snapshots built in %.1fs, newest replicated in %.1fs",
		*scaleFS, *scaleSnaps, built.Seconds(), time.Since(start).Seconds())
	return w
}

func (w *scaleWorld) run(initial planner.InitialReplication) replication.Report {
	return replication.NewRun(w.s, w.r, replication.Config{
		Policy: planner.Policy{InitialReplication: initial},
		Sleep:  noSleep,
	}).Do(context.Background())
}

var scaleOnce struct {
	sync.Once
	w *scaleWorld
}

// world is built once for both benchmarks (it takes a while).
func world(b *testing.B) *scaleWorld {
	scaleOnce.Do(func() { scaleOnce.w = newScaleWorld(b) })
	if scaleOnce.w == nil {
		b.Fatal("scale world not built")
	}
	return scaleOnce.w
}

// BenchmarkScaleUpToDate: an up-to-date run over the whole tree (target:
// under 1 s per run).
func BenchmarkScaleUpToDate(b *testing.B) {
	w := world(b)
	b.ResetTimer()
	var worst time.Duration
	for b.Loop() {
		start := time.Now()
		rep := w.run(planner.AllSnapshots)
		worst = max(worst, time.Since(start))
		if err := rep.Err(); err != nil {
			b.Fatal(err)
		}
		for _, f := range rep.Filesystems {
			if f.StepsDone != 0 {
				b.Fatalf("%s: %d steps in an up-to-date run", f.FS, f.StepsDone)
			}
		}
	}
	b.ReportMetric(worst.Seconds(), "s/run")
	b.ReportMetric(worst.Seconds()/1.0, "ratio_to_1s_target")
	fmt.Printf("BENCH-SCALE uptodate fs=%d snaps=%d seconds=%.3f target=1 peak_rss_mib=%.0f\n", *scaleFS, *scaleSnaps, worst.Seconds(), peakRSSMiB())
}

// BenchmarkScaleIncremental: one new snapshot on each filesystem, then a
// run. Target: under 1 ms of engine CPU per step beyond the model's own
// work. What is measured is the process's whole CPU time per step, the
// model's work included (the model runs in this process, its calls on the
// engine's goroutines, so the two cannot be told apart by the clock): it
// bounds the engine's share from above.
func BenchmarkScaleIncremental(b *testing.B) {
	w := world(b)
	ctx := context.Background()
	b.ResetTimer()
	var total time.Duration
	steps := 0
	for b.Loop() {
		b.StopTimer()
		w.next++
		for _, fs := range w.fss {
			if err := w.src.WriteData(fs, int64(w.next), 1); err != nil {
				b.Fatal(err)
			}
			if err := w.src.Snapshot(ctx, fs, fmt.Sprintf("n%03d", w.next)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		cpu := cpuTime()
		rep := w.run(planner.AllSnapshots)
		used := cpuTime() - cpu
		if err := rep.Err(); err != nil {
			b.Fatal(err)
		}
		for _, f := range rep.Filesystems {
			steps += f.StepsDone
		}
		total += used
	}
	if steps == 0 {
		b.Fatal("no steps")
	}
	per := total / time.Duration(steps)
	b.ReportMetric(float64(per.Microseconds()), "cpu-µs/step")
	b.ReportMetric(per.Seconds()*1000/1.0, "ratio_to_1ms_target")
	fmt.Printf("BENCH-SCALE incremental fs=%d snaps=%d steps=%d cpu_per_step_ms=%.3f target=1 peak_rss_mib=%.0f\n",
		*scaleFS, *scaleSnaps, steps, per.Seconds()*1000, peakRSSMiB())
}
