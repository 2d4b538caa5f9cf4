package pruner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// Target is one side of a job as the pruner sees it: its listing, and the
// side's own rules of what may go (endpoint.Pruner), here or over rpc. It
// is the jobs' prune target too (job.PruneTarget).
type Target interface {
	ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
	endpoint.Pruner
}

// Report is what one Prune did, one entry per filesystem listed.
type Report struct {
	Filesystems []FSReport
}

// FSReport is what Prune did on one filesystem.
type FSReport struct {
	FS string
	// Planned are the snapshots Plan chose, by createtxg.
	Planned []string
	// Destroyed are the snapshots destroyed: Planned when DestroySnapshots
	// succeeded, else empty, since a failed batch may have destroyed some
	// and not others (the next Prune plans the rest again).
	Destroyed []string
	// Kept is the number of snapshots not planned (prefixed or not).
	Kept int
	// Err is why destroying failed; nil on success.
	Err error
}

// Destroyed counts the snapshots destroyed over all filesystems.
func (r Report) Destroyed() int {
	n := 0
	for _, f := range r.Filesystems {
		n += len(f.Destroyed)
	}
	return n
}

// Prune plans and destroys on every filesystem of t. replicatedTXG(fs)
// gives the createtxg up to which fs is replicated (the job's cursor on
// the sender; on the receiver every snapshot counts as replicated), with
// ok false when unknown: then nothing counts as replicated, so
// KeepNotReplicated keeps everything. A nil replicatedTXG knows nothing.
//
// A filesystem that fails does not stop the others; the returned error
// joins the failures, each naming its filesystem. Listing failures and a
// cancelled ctx end Prune early.
func Prune(ctx context.Context, t Target, p Policy, now time.Time, replicatedTXG func(fs string) (uint64, bool)) (Report, error) {
	return prune(ctx, t, p, now, replicatedTXG, true)
}

// DryRun is Prune without destroying: the report has Planned and Kept,
// never Destroyed (for `zrepl test`-like commands and logs).
func DryRun(ctx context.Context, t Target, p Policy, now time.Time, replicatedTXG func(fs string) (uint64, bool)) (Report, error) {
	return prune(ctx, t, p, now, replicatedTXG, false)
}

func prune(ctx context.Context, t Target, p Policy, now time.Time, replicatedTXG func(fs string) (uint64, bool), destroy bool) (Report, error) {
	var rep Report
	fss, err := t.ListFilesystems(ctx)
	if err != nil {
		return rep, fmt.Errorf("prune: list filesystems: %w", err)
	}
	var errs []error
	for _, fs := range fss {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("prune: stopped before %s: %w", fs.Path, err))
			break
		}
		var txg uint64
		var known bool
		if replicatedTXG != nil {
			txg, known = replicatedTXG(fs.Path)
		}
		var snaps []Snapshot
		byName := map[string]zfs.FilesystemVersion{}
		for _, v := range fs.Versions {
			if v.Kind != zfs.Snapshot {
				continue
			}
			byName[v.Name] = v
			snaps = append(snaps, Snapshot{
				Name: v.Name, GUID: v.GUID, CreateTXG: v.CreateTXG, Creation: v.Creation,
				Replicated: known && v.CreateTXG <= txg,
				Held:       v.UserRefs > 0,
			})
		}
		plan := Plan(snaps, p, now)
		fr := FSReport{FS: fs.Path, Kept: len(snaps) - len(plan)}
		if len(plan) > 0 {
			fr.Planned = names(plan)
		}
		if len(plan) > 0 && destroy {
			versions := make([]zfs.FilesystemVersion, len(plan))
			for i, s := range plan {
				// The full version carries the GUID, so the target can
				// refuse a snapshot re-created under the same name.
				versions[i] = byName[s.Name]
			}
			if err := t.DestroySnapshots(ctx, fs.Path, versions); err != nil {
				fr.Err = fmt.Errorf("prune %s: %w", fs.Path, err)
				errs = append(errs, fr.Err)
			} else {
				fr.Destroyed = fr.Planned
			}
		}
		rep.Filesystems = append(rep.Filesystems, fr)
	}
	return rep, errors.Join(errs...)
}

func names(snaps []Snapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.Name
	}
	return out
}
