package daemon

import (
	"context"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/pruner"
)

// rules maps a side's keep rules to the pruner's.
func rules(keep []config.KeepRule) []pruner.Rule {
	var out []pruner.Rule
	for _, r := range keep {
		switch r.Type {
		case config.KeepLastN:
			out = append(out, pruner.KeepLastN(r.Count, r.Regex))
		case config.KeepRegex:
			out = append(out, pruner.KeepRegex(r.Regex, r.Negate))
		case config.KeepNotReplicated:
			out = append(out, pruner.KeepNotReplicated())
		case config.KeepGrid:
			ivs := make([]pruner.GridInterval, len(r.Grid.Intervals))
			for i, iv := range r.Grid.Intervals {
				ivs[i] = pruner.GridInterval{Length: iv.Length, Keep: iv.Keep, Repeat: iv.Repeat}
			}
			out = append(out, pruner.KeepGrid(ivs, r.Regex))
		}
	}
	return out
}

// pruneRules applies one side's keep rules as zrepl does: every snapshot
// of the side is considered, and what no rule keeps goes (the pruner never
// destroys held snapshots, the newest one or the newest replicated one).
type pruneRules struct {
	policy pruner.Policy
	// notReplicated: a not_replicated rule is among them.
	notReplicated bool
}

func (p *pruneRules) keepsNotReplicated() bool { return p.notReplicated }

// newPrune returns nil for a side without rules: it is not pruned.
func newPrune(keep []config.KeepRule) *pruneRules {
	if len(keep) == 0 {
		return nil
	}
	r := &pruneRules{policy: pruner.Policy{Rules: rules(keep)}}
	for _, k := range keep {
		if k.Type == config.KeepNotReplicated {
			r.notReplicated = true
			// As zrepl: one rule with false is enough.
			r.policy.CursorSnapshotMayGo = r.policy.CursorSnapshotMayGo || !k.KeepSnapshotAtCursor
		}
	}
	return r
}

func (p *pruneRules) prune(ctx context.Context, t job.PruneTarget, now time.Time, replicatedTXG func(string) (uint64, bool)) ([]job.PruneFSStatus, error) {
	rep, err := pruner.Prune(ctx, t, p.policy, now, replicatedTXG)
	out := make([]job.PruneFSStatus, len(rep.Filesystems))
	for i, f := range rep.Filesystems {
		fs := job.PruneFSStatus{FS: f.FS, Snapshots: f.Kept + len(f.Planned), Destroy: f.Planned, Destroyed: len(f.Destroyed)}
		if f.Err != nil {
			fs.Error = f.Err.Error()
		}
		if known := replicatedTXG != nil && knownTXG(replicatedTXG, f.FS); !known && p.keepsNotReplicated() && len(f.Planned) == 0 && f.Kept > 0 {
			fs.SkipReason = "no replication cursor: nothing is known to be replicated, so not_replicated keeps every snapshot"
		}
		out[i] = fs
	}
	return out, err
}

// fn is the job's PruneFunc (nil without rules).
func (p *pruneRules) fn() job.PruneFunc {
	if p == nil {
		return nil
	}
	return p.prune
}

func knownTXG(replicatedTXG func(string) (uint64, bool), fs string) bool {
	_, ok := replicatedTXG(fs)
	return ok
}
