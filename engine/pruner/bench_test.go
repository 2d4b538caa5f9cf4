package pruner

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"testing"
	"time"
)

// BenchmarkPlan plans a year of 10-minute snapshots (52560) with a
// "forever" grid, and reports the time relative to sorting the same
// snapshots once (the least any plan must do), measured in the same run:
// x-sort should stay a small constant, showing that Plan is O(n log n)
// and that 999999x180d costs nothing to represent.
func BenchmarkPlan(b *testing.B) {
	const n = 6 * 24 * 365
	rng := rand.New(rand.NewPCG(1, 2))
	snaps := make([]Snapshot, n)
	for i := range snaps {
		ago := time.Duration(n-1-i) * 10 * time.Minute
		snaps[i] = Snapshot{Name: fmt.Sprintf("zrepl_%06d", i), GUID: rng.Uint64(), CreateTXG: uint64(i + 1),
			Creation: t0.Add(-ago), Replicated: i < n-3}
	}
	rng.Shuffle(n, func(i, j int) { snaps[i], snaps[j] = snaps[j], snaps[i] })
	p := Policy{Prefix: "zrepl_", Rules: []Rule{
		KeepNotReplicated(),
		KeepLastN(10, regexp.MustCompile("^zrepl_")),
		KeepGrid([]GridInterval{{Length: time.Hour, Keep: KeepAll}, {Length: time.Hour, Repeat: 24}, {Length: 24 * time.Hour, Repeat: 14}, {Length: 180 * 24 * time.Hour, Repeat: 999999}}, regexp.MustCompile("^zrepl_")),
	}}

	var sortNs float64
	{
		const rounds = 5
		start := time.Now()
		for range rounds {
			s := slices.Clone(snaps)
			slices.SortFunc(s, byTXG)
		}
		sortNs = float64(time.Since(start).Nanoseconds()) / rounds
	}

	var plan []Snapshot
	for b.Loop() {
		plan = Plan(snaps, p, t0)
	}
	if len(plan) == 0 {
		b.Fatal("nothing planned")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/sortNs, "x-sort")
}
