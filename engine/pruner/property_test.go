package pruner

import (
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

var propRegexes = []*regexp.Regexp{nil, regexp.MustCompile("^zrepl_"), regexp.MustCompile("^manual_"), regexp.MustCompile("[02468]$")}

func genSnapshots(t *rapid.T) []Snapshot {
	n := rapid.IntRange(0, 25).Draw(t, "n")
	var out []Snapshot
	for i := 0; i < n; i++ {
		prefix := rapid.SampledFrom([]string{"zrepl_", "manual_", ""}).Draw(t, "prefix")
		out = append(out, Snapshot{
			Name: fmt.Sprintf("%s%d", prefix, i),
			GUID: rapid.Uint64().Draw(t, "guid"),
			// Small ranges so that txgs and creation times tie often.
			CreateTXG:  rapid.Uint64Range(1, 30).Draw(t, "txg"),
			Creation:   t0.Add(-time.Duration(rapid.IntRange(-120, 60*60).Draw(t, "agemin")) * time.Minute),
			Replicated: rapid.Bool().Draw(t, "replicated"),
			Held:       rapid.IntRange(0, 5).Draw(t, "held") == 0,
		})
	}
	return out
}

func genRule(t *rapid.T) Rule {
	re := rapid.SampledFrom(propRegexes).Draw(t, "regex")
	switch rapid.IntRange(0, 3).Draw(t, "kind") {
	case 0:
		return KeepLastN(rapid.IntRange(-1, 6).Draw(t, "count"), re)
	case 1:
		var ivs []GridInterval
		for range rapid.IntRange(0, 4).Draw(t, "intervals") {
			ivs = append(ivs, GridInterval{
				Length: time.Duration(rapid.IntRange(0, 24*60).Draw(t, "lenmin")) * time.Minute,
				Keep:   rapid.IntRange(-1, 3).Draw(t, "keep"),
				Repeat: rapid.IntRange(0, 6).Draw(t, "repeat"),
			})
		}
		return KeepGrid(ivs, re)
	case 2:
		return KeepRegex(re, rapid.Bool().Draw(t, "negate"))
	default:
		return KeepNotReplicated()
	}
}

func genPolicy(t *rapid.T) Policy {
	p := Policy{Prefix: rapid.SampledFrom([]string{"", "zrepl_", "manual_"}).Draw(t, "policyprefix")}
	for range rapid.IntRange(0, 4).Draw(t, "rules") {
		p.Rules = append(p.Rules, genRule(t))
	}
	return p
}

func key(s Snapshot) string { return fmt.Sprintf("%s/%d", s.Name, s.GUID) }

// TestPlanProperties checks, over random snapshots and policies, that Plan
// destroys exactly the considered snapshots that no rule keeps and that are
// neither held nor protected, in createtxg order.
func TestPlanProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		snaps := genSnapshots(t)
		p := genPolicy(t)
		plan := Plan(snaps, p, t0)

		// The oracle: each rule on its own, over the considered snapshots.
		var view []Snapshot
		for _, s := range snaps {
			if len(s.Name) >= len(p.Prefix) && s.Name[:len(p.Prefix)] == p.Prefix {
				view = append(view, s)
			}
		}
		slices.SortFunc(view, byTXG)
		keptBy := map[string]bool{}
		for _, r := range p.Rules {
			for i, k := range r.keep(view, t0) {
				if k {
					keptBy[key(view[i])] = true
				}
			}
		}
		var newest, newestRepl *Snapshot
		for i := range snaps {
			s := &snaps[i]
			if newest == nil || s.CreateTXG > newest.CreateTXG || s.CreateTXG == newest.CreateTXG && byTXG(*s, *newest) > 0 {
				newest = s
			}
			if s.Replicated && (newestRepl == nil || byTXG(*s, *newestRepl) > 0) {
				newestRepl = s
			}
		}
		destroyed := map[string]bool{}
		for _, s := range plan {
			destroyed[key(s)] = true
			switch {
			case s.Held:
				t.Fatalf("destroys held %s", s.Name)
			case keptBy[key(s)]:
				t.Fatalf("destroys %s, which a rule keeps", s.Name)
			case key(s) == key(*newest):
				t.Fatalf("destroys the newest snapshot %s", s.Name)
			case newestRepl != nil && key(s) == key(*newestRepl):
				t.Fatalf("destroys the newest replicated snapshot %s", s.Name)
			}
		}
		for _, s := range view {
			protected := s.Held || keptBy[key(s)] || key(s) == key(*newest) || newestRepl != nil && key(s) == key(*newestRepl)
			if !protected && !destroyed[key(s)] {
				t.Fatalf("keeps %s, which nothing keeps", s.Name)
			}
		}
		for _, s := range snaps {
			if destroyed[key(s)] && !slices.ContainsFunc(view, func(v Snapshot) bool { return key(v) == key(s) }) {
				t.Fatalf("destroys %s outside prefix %q", s.Name, p.Prefix)
			}
		}
		if !slices.IsSortedFunc(plan, byTXG) {
			t.Fatalf("plan not in createtxg order: %v", names(plan))
		}
	})
}

// Destroying what Plan chose and planning again at the same time destroys
// nothing more.
func TestPlanIdempotent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		snaps := genSnapshots(t)
		p := genPolicy(t)
		plan := Plan(snaps, p, t0)
		gone := map[string]bool{}
		for _, s := range plan {
			gone[key(s)] = true
		}
		rest := slices.DeleteFunc(slices.Clone(snaps), func(s Snapshot) bool { return gone[key(s)] })
		if again := Plan(rest, p, t0); len(again) != 0 {
			t.Fatalf("second plan destroys %v after the first destroyed %v", names(again), names(plan))
		}
	})
}

func TestPlanOrderIndependent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		snaps := genSnapshots(t)
		p := genPolicy(t)
		perm := rapid.Permutation(snaps).Draw(t, "perm")
		if d := cmp.Diff(Plan(snaps, p, t0), Plan(perm, p, t0)); d != "" {
			t.Fatalf("plan depends on input order (-first +permuted):\n%s", d)
		}
	})
}
