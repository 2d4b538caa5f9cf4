package pruner

import (
	"slices"
	"strings"
	"time"
)

// Policy is one side's rules plus what the job may touch.
type Policy struct {
	Rules []Rule
	// Prefix limits pruning to snapshots whose name starts with it; ""
	// considers all. Other snapshots are neither destroyed nor seen by
	// the rules.
	Prefix string
	// CursorSnapshotMayGo lifts the protection of the newest replicated
	// snapshot, so the rules decide about it too (zrepl's not_replicated
	// rule with keep_snapshot_at_cursor: false): the sender's cursor
	// bookmark stays the incremental base without its snapshot.
	CursorSnapshotMayGo bool
}

// Plan returns the snapshots to destroy: considered snapshots that no rule
// keeps, but never a held one, never the newest replicated snapshot (the
// incremental base; unless CursorSnapshotMayGo) and never the newest snapshot overall (both by
// createtxg, over all snapshots, prefixed or not). The result is ordered
// by createtxg and does not depend on the order of snaps. A policy without
// rules destroys every considered snapshot it may.
//
// Plan is idempotent: planning again after destroying its result, at the
// same now, destroys nothing more, because no rule's decision about a kept
// snapshot depends on a snapshot it did not keep.
func Plan(snaps []Snapshot, p Policy, now time.Time) []Snapshot {
	if len(snaps) == 0 {
		return nil
	}
	protected := map[int]bool{}
	newest, newestRepl := -1, -1
	for i, s := range snaps {
		if newest < 0 || byTXG(s, snaps[newest]) > 0 {
			newest = i
		}
		if s.Replicated && (newestRepl < 0 || byTXG(s, snaps[newestRepl]) > 0) {
			newestRepl = i
		}
	}
	protected[newest] = true
	if newestRepl >= 0 && !p.CursorSnapshotMayGo {
		protected[newestRepl] = true
	}

	var considered []int
	for i, s := range snaps {
		if strings.HasPrefix(s.Name, p.Prefix) {
			considered = append(considered, i)
		}
	}
	// The rules see the considered snapshots in one canonical order, so
	// their decisions cannot depend on the caller's order.
	slices.SortFunc(considered, func(a, b int) int { return byTXG(snaps[a], snaps[b]) })
	view := make([]Snapshot, len(considered))
	for k, i := range considered {
		view[k] = snaps[i]
	}
	kept := make([]bool, len(view))
	for _, r := range p.Rules {
		if r == nil {
			continue
		}
		for k, keep := range r.keep(view, now) {
			kept[k] = kept[k] || keep
		}
	}

	var out []Snapshot
	for k, i := range considered {
		if kept[k] || protected[i] || snaps[i].Held {
			continue
		}
		out = append(out, snaps[i])
	}
	return out
}
