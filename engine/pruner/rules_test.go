package pruner

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// at makes a snapshot created ago before t0; txgs grow with creation in
// the tests unless a case says otherwise.
func at(name string, txg uint64, ago time.Duration) Snapshot {
	return Snapshot{Name: name, GUID: txg*7 + 1, CreateTXG: txg, Creation: t0.Add(-ago)}
}

// keptNames runs one rule the way Plan does (canonical order) and returns
// the names it keeps, by createtxg.
func keptNames(r Rule, snaps []Snapshot, now time.Time) []string {
	s := slices.Clone(snaps)
	slices.SortFunc(s, byTXG)
	var out []string
	for i, k := range r.keep(s, now) {
		if k {
			out = append(out, s[i].Name)
		}
	}
	return out
}

func TestKeepLastN(t *testing.T) {
	snaps := []Snapshot{
		at("zrepl_1", 1, 5*time.Hour), at("manual_2", 2, 4*time.Hour), at("zrepl_3", 3, 3*time.Hour),
		at("zrepl_4", 4, 2*time.Hour), at("manual_5", 5, time.Hour),
	}
	cases := []struct {
		name  string
		n     int
		regex string
		want  []string
	}{
		{"two newest of all", 2, "", []string{"zrepl_4", "manual_5"}},
		{"two newest matching", 2, "^zrepl_", []string{"zrepl_3", "zrepl_4"}},
		{"more than there are keeps only matching", 10, "^manual_", []string{"manual_2", "manual_5"}},
		{"zero keeps none", 0, "", nil},
		{"negative keeps none", -3, "", nil},
		{"no match keeps none", 3, "^nothing", nil},
		{"all", 5, "", []string{"zrepl_1", "manual_2", "zrepl_3", "zrepl_4", "manual_5"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var re *regexp.Regexp
			if c.regex != "" {
				re = regexp.MustCompile(c.regex)
			}
			if d := cmp.Diff(c.want, keptNames(KeepLastN(c.n, re), snaps, t0)); d != "" {
				t.Errorf("kept (-want +got):\n%s", d)
			}
		})
	}
}

// Newest means newest by creation time; createtxg only breaks ties (a
// receiver's createtxgs can differ from the sender's order of creation).
func TestKeepLastNOrdersByCreationThenTXG(t *testing.T) {
	snaps := []Snapshot{
		at("a", 10, time.Hour), // high txg but old
		at("b", 2, time.Minute),
		at("c", 3, time.Minute), // same creation as b, newer txg
	}
	if d := cmp.Diff([]string{"c"}, keptNames(KeepLastN(1, nil), snaps, t0)); d != "" {
		t.Errorf("kept (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"b", "c"}, keptNames(KeepLastN(2, nil), snaps, t0)); d != "" {
		t.Errorf("kept (-want +got):\n%s", d)
	}
}

func TestKeepRegex(t *testing.T) {
	snaps := []Snapshot{at("zrepl_1", 1, 3*time.Hour), at("manual_2", 2, 2*time.Hour), at("other", 3, time.Hour)}
	cases := []struct {
		name   string
		regex  *regexp.Regexp
		negate bool
		want   []string
	}{
		{"match", regexp.MustCompile("^(zrepl|manual)_"), false, []string{"zrepl_1", "manual_2"}},
		{"negate", regexp.MustCompile("^zrepl_"), true, []string{"manual_2", "other"}},
		{"unanchored", regexp.MustCompile("_"), false, []string{"zrepl_1", "manual_2"}},
		{"nil matches all", nil, false, []string{"zrepl_1", "manual_2", "other"}},
		{"nil negated keeps none", nil, true, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if d := cmp.Diff(c.want, keptNames(KeepRegex(c.regex, c.negate), snaps, t0)); d != "" {
				t.Errorf("kept (-want +got):\n%s", d)
			}
		})
	}
}

func TestKeepNotReplicated(t *testing.T) {
	snaps := []Snapshot{at("a", 1, 3*time.Hour), at("b", 2, 2*time.Hour), at("c", 3, time.Hour)}
	snaps[0].Replicated = true
	snaps[1].Replicated = true
	if d := cmp.Diff([]string{"c"}, keptNames(KeepNotReplicated(), snaps, t0)); d != "" {
		t.Errorf("kept (-want +got):\n%s", d)
	}
}

func TestKeepGrid(t *testing.T) {
	h := time.Hour
	cases := []struct {
		name  string
		grid  []GridInterval
		regex string
		snaps []Snapshot
		want  []string
	}{
		{
			name: "keep=all first hour, then one per hour, oldest of each hour",
			grid: []GridInterval{{Length: h, Keep: KeepAll}, {Length: h, Keep: 1, Repeat: 3}},
			snaps: []Snapshot{
				at("s0", 9, 0), at("s1", 8, 20*time.Minute), at("s2", 7, 50*time.Minute),
				// second hour [1h, 2h): keep the oldest, s4
				at("s3", 6, 70*time.Minute), at("s4", 5, 110*time.Minute),
				// third hour [2h, 3h): one snapshot
				at("s5", 4, 150*time.Minute),
				// fourth hour [3h, 4h) empty; beyond the grid (4h):
				at("s6", 3, 4*h), at("s7", 2, 30*h),
			},
			want: []string{"s5", "s4", "s2", "s1", "s0"},
		},
		{
			name: "keep=2 keeps the two oldest",
			grid: []GridInterval{{Length: 10 * h, Keep: 2}},
			snaps: []Snapshot{
				at("a", 1, 9*h), at("b", 2, 8*h), at("c", 3, 7*h), at("d", 4, 1*h),
			},
			want: []string{"a", "b"},
		},
		{
			name: "intervals are half open: age = length falls into the next",
			grid: []GridInterval{{Length: h, Keep: KeepAll}, {Length: h, Keep: 1}},
			snaps: []Snapshot{
				at("edge", 1, h), at("later", 2, h+time.Minute),
				at("beyond", 0, 2*h),
			},
			want: []string{"later"},
		},
		{
			name:  "future snapshots (clock went back) are kept",
			grid:  []GridInterval{{Length: h, Keep: 1}},
			snaps: []Snapshot{at("future", 3, -time.Hour), at("now1", 1, time.Minute), at("now2", 2, 0)},
			want:  []string{"now1", "future"},
		},
		{
			name:  "regex restricts what the grid considers",
			grid:  []GridInterval{{Length: 10 * h, Keep: KeepAll}},
			regex: "^zrepl_",
			snaps: []Snapshot{at("zrepl_a", 1, h), at("manual_b", 2, h)},
			want:  []string{"zrepl_a"},
		},
		{
			name:  "repeat lays equal buckets back to back",
			grid:  []GridInterval{{Length: h, Keep: 1, Repeat: 2}, {Length: 24 * h, Keep: 1}},
			snaps: []Snapshot{at("a", 1, 20*h), at("b", 2, 3*h), at("c", 3, 90*time.Minute), at("d", 4, 80*time.Minute), at("e", 5, 10*time.Minute), at("f", 6, 5*time.Minute)},
			// [0,1h): f,e keep e; [1h,2h): d,c keep c; [2h,26h): b,a keep a
			want: []string{"a", "c", "e"},
		},
		{
			name:  "forever grid does not overflow",
			grid:  []GridInterval{{Length: h, Keep: KeepAll}, {Length: 180 * 24 * h, Keep: 1, Repeat: 999999}},
			snaps: []Snapshot{at("ancient", 1, 200*365*24*h), at("old", 2, 100*24*h), at("older", 0, 101*24*h)},
			want:  []string{"older", "ancient"},
		},
		{
			name:  "empty grid keeps nothing",
			grid:  nil,
			snaps: []Snapshot{at("a", 1, 0)},
			want:  nil,
		},
		{
			name:  "zero-length intervals are skipped, keep=0 keeps none",
			grid:  []GridInterval{{Length: 0, Keep: KeepAll}, {Length: h, Keep: 0}, {Length: h, Keep: 1}},
			snaps: []Snapshot{at("a", 1, 10*time.Minute), at("b", 2, 70*time.Minute)},
			want:  []string{"b"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var re *regexp.Regexp
			if c.regex != "" {
				re = regexp.MustCompile(c.regex)
			}
			got := keptNames(KeepGrid(c.grid, re), c.snaps, t0)
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("kept (-want +got):\n%s", d)
			}
		})
	}
}

// KeepGrid copies its intervals: the caller may reuse the slice.
func TestKeepGridCopiesIntervals(t *testing.T) {
	iv := []GridInterval{{Length: time.Hour, Keep: KeepAll}}
	r := KeepGrid(iv, nil)
	iv[0].Keep = 0
	if got := keptNames(r, []Snapshot{at("a", 1, time.Minute), at("b", 2, 0)}, t0); len(got) != 2 {
		t.Errorf("kept %v, want both", got)
	}
}
