package pruner

import (
	"math"
	"regexp"
	"slices"
	"time"
)

// Snapshot is a snapshot as the rules see it.
type Snapshot struct {
	Name      string // without fs@
	GUID      uint64
	CreateTXG uint64
	Creation  time.Time
	// Replicated: the job's cursor (or the receiver) has it, i.e. its
	// createtxg is at most the cursor's.
	Replicated bool
	// Held: it has a user hold; never destroyed here.
	Held bool
}

// Rule is one keep rule. The interface is sealed: rules come from the
// constructors of this package. keep gets the considered snapshots in
// createtxg order (see byTXG) and says for each whether the rule keeps it;
// a rule that orders by time sorts for itself (see older).
type Rule interface {
	keep(snaps []Snapshot, now time.Time) []bool
}

// older orders snapshots by creation time, then createtxg, name and GUID,
// so that time-based rules are deterministic even when creation times tie
// (ZFS records them with one-second resolution).
func older(a, b Snapshot) int {
	if c := a.Creation.Compare(b.Creation); c != 0 {
		return c
	}
	return byTXG(a, b)
}

// byTXG is the order of the pool's history: createtxg, then creation,
// name and GUID as tie-breakers.
func byTXG(a, b Snapshot) int {
	switch {
	case a.CreateTXG < b.CreateTXG:
		return -1
	case a.CreateTXG > b.CreateTXG:
		return 1
	}
	if c := a.Creation.Compare(b.Creation); c != 0 {
		return c
	}
	if a.Name != b.Name {
		if a.Name < b.Name {
			return -1
		}
		return 1
	}
	switch {
	case a.GUID < b.GUID:
		return -1
	case a.GUID > b.GUID:
		return 1
	}
	return 0
}

func matches(re *regexp.Regexp, name string) bool { return re == nil || re.MatchString(name) }

// lastN keeps the n newest snapshots whose name matches regex.
type lastN struct {
	n     int
	regex *regexp.Regexp
}

// KeepLastN keeps the n newest snapshots (by creation time) whose name
// matches regex; nil regex matches all. Snapshots that do not match are
// not kept by this rule, however few match.
func KeepLastN(n int, regex *regexp.Regexp) Rule { return lastN{n: n, regex: regex} }

func (r lastN) keep(snaps []Snapshot, _ time.Time) []bool {
	out := make([]bool, len(snaps))
	idx := candidates(snaps, r.regex)
	slices.SortFunc(idx, func(a, b int) int { return older(snaps[b], snaps[a]) }) // newest first
	for i, j := range idx {
		if i >= r.n {
			break
		}
		out[j] = true
	}
	return out
}

func candidates(snaps []Snapshot, re *regexp.Regexp) []int {
	var idx []int
	for i, s := range snaps {
		if matches(re, s.Name) {
			idx = append(idx, i)
		}
	}
	return idx
}

// GridInterval is one interval of a retention grid, or Repeat adjacent
// intervals of the same Length.
type GridInterval struct {
	Length time.Duration
	// Keep is how many of the oldest snapshots in the interval are kept;
	// < 0 keeps all.
	Keep int
	// Repeat is the number of adjacent intervals this entry stands for;
	// 0 means 1. It lets "999999x180d" cost nothing to represent.
	Repeat int
}

// KeepAll as GridInterval.Keep keeps every snapshot of the interval.
const KeepAll = -1

type grid struct {
	intervals []GridInterval
	regex     *regexp.Regexp
}

// KeepGrid keeps snapshots by a retention grid: the intervals are laid
// back to back from now into the past, the first one youngest; each
// interval [now-end, now-start) keeps its Keep oldest snapshots. Snapshots
// older than the whole grid are not kept by this rule; snapshots created
// after now (a clock that went back) are kept. Only snapshots whose name
// matches regex (nil matches all) are considered.
//
// zrepl anchors the grid at the youngest matching snapshot instead of
// now; anchoring at now makes a plan idempotent (destroying what it
// planned never changes what it keeps), and Plan never destroys the
// newest snapshot, so a stalled snapshotter still leaves a snapshot.
func KeepGrid(intervals []GridInterval, regex *regexp.Regexp) Rule {
	return grid{intervals: slices.Clone(intervals), regex: regex}
}

type bucket struct{ interval, n int64 }

func (r grid) keep(snaps []Snapshot, now time.Time) []bool {
	out := make([]bool, len(snaps))
	buckets := map[bucket][]int{}
	for _, i := range candidates(snaps, r.regex) {
		age := now.Sub(snaps[i].Creation) // saturates
		if age < 0 {
			out[i] = true
			continue
		}
		if b, ok := r.bucketOf(age); ok {
			buckets[b] = append(buckets[b], i)
		}
	}
	for b, idx := range buckets {
		keep := r.intervals[b.interval].Keep
		slices.SortFunc(idx, func(x, y int) int { return older(snaps[x], snaps[y]) })
		for k, i := range idx {
			if keep >= 0 && k >= keep {
				break
			}
			out[i] = true
		}
	}
	return out
}

// bucketOf finds the interval an age falls into; ok is false beyond the
// grid. Spans saturate so that "forever" grids do not overflow.
func (r grid) bucketOf(age time.Duration) (bucket, bool) {
	var start time.Duration
	for i, iv := range r.intervals {
		if iv.Length <= 0 {
			continue
		}
		rep := int64(iv.Repeat)
		if rep <= 0 {
			rep = 1
		}
		span := time.Duration(math.MaxInt64)
		if int64(iv.Length) <= math.MaxInt64/rep {
			span = iv.Length * time.Duration(rep)
		}
		if age-start < span {
			return bucket{interval: int64(i), n: int64((age - start) / iv.Length)}, true
		}
		if span > math.MaxInt64-start {
			return bucket{}, false
		}
		start += span
	}
	return bucket{}, false
}

type regexRule struct {
	regex  *regexp.Regexp
	negate bool
}

// KeepRegex keeps the snapshots whose name matches regex, or with negate
// those whose name does not. A nil regex matches every name.
func KeepRegex(regex *regexp.Regexp, negate bool) Rule {
	return regexRule{regex: regex, negate: negate}
}

func (r regexRule) keep(snaps []Snapshot, _ time.Time) []bool {
	out := make([]bool, len(snaps))
	for i, s := range snaps {
		out[i] = matches(r.regex, s.Name) != r.negate
	}
	return out
}

type notReplicated struct{}

// KeepNotReplicated keeps the snapshots that are not replicated yet.
func KeepNotReplicated() Rule { return notReplicated{} }

func (notReplicated) keep(snaps []Snapshot, _ time.Time) []bool {
	out := make([]bool, len(snaps))
	for i, s := range snaps {
		out[i] = !s.Replicated
	}
	return out
}
