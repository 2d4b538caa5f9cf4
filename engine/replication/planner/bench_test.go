package planner

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// benchInput is n filesystems (100 parents, the rest their children),
// each with 100 sender snapshots of which the receiver has the first 90.
// Every filesystem has its own version slices, as real listings do.
func benchInput(n int) Input {
	const snaps, received = 100, 90
	var in Input
	for i := range n {
		path := fmt.Sprintf("p%02d", i)
		if i >= 100 {
			path = fmt.Sprintf("p%02d/f%05d", i%100, i)
		}
		sv := make([]zfs.FilesystemVersion, snaps)
		rv := make([]zfs.FilesystemVersion, received)
		for j := range snaps {
			guid := uint64(i)<<20 | uint64(j+1)
			name := fmt.Sprintf("zrepl_%03d", j)
			sv[j] = snap(name, guid, uint64(10*j+5))
			if j < received {
				rv[j] = snap(name, guid, uint64(7*j+3))
			}
		}
		in.Sender = append(in.Sender, sender(path, sv...))
		in.Receiver = append(in.Receiver, receiver(path, rv...))
	}
	return in
}

// BenchmarkPlan plans 1,000 and 10,000 filesystems in the same run and
// reports both times and their ratio: planning should grow no faster than
// n log n (a ratio of about 13 at most), and 10,000 filesystems should
// take well under a second on one core.
func BenchmarkPlan(b *testing.B) {
	small, large := benchInput(1000), benchInput(10000)
	run := func(in Input) time.Duration {
		start := time.Now()
		res, err := Plan(in)
		d := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		// Check the work was done, so that the timing means something.
		if len(res.Filesystems) != len(in.Sender) || len(res.Filesystems[0].Steps) != 10 {
			b.Fatalf("unexpected plan: %d filesystems, %d steps in the first", len(res.Filesystems), len(res.Filesystems[0].Steps))
		}
		return d
	}
	// One core, as the target says (the collector would otherwise borrow
	// the other), and the best of several plans per size: a single plan
	// of 1k filesystems takes ~20 ms, where one GC cycle or a busy
	// neighbour skews the ratio.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	best := func(in Input, n int) time.Duration {
		d := run(in)
		for range n - 1 {
			d = min(d, run(in))
		}
		return d
	}
	var tSmall, tLarge time.Duration
	for b.Loop() {
		tSmall = best(small, 10)
		tLarge = best(large, 3)
	}
	b.ReportMetric(tSmall.Seconds(), "s/plan-1k")
	b.ReportMetric(tLarge.Seconds(), "s/plan-10k")
	b.ReportMetric(float64(tLarge)/float64(tSmall), "ratio-10k/1k")
	// n log n from 1k to 10k is a factor of 10*log(1e4)/log(1e3) = 13.3.
	b.ReportMetric(13.33, "nlogn-bound")
}
