package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/hooks"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/snapper"
	"zrepl.dev/zrepl/engine/zfs"
)

// noSnapshots is the snapshotter of a snap job with manual snapshotting:
// like zrepl's manual snapshotting it leaves snapshots to the
// administrator, so a wakeup only prunes.
type noSnapshots struct{}

func (noSnapshots) NextDue(context.Context, time.Time) (time.Time, error) { return time.Time{}, nil }

func (noSnapshots) SnapshotNow(context.Context, time.Time) ([]zfs.VersionRef, error) {
	return nil, nil
}

// snapshotter is a job's snapper; it reports each filesystem's snapshot
// and hooks for the job's status.
type snapshotter struct{ *snapper.Snapper }

// newSnapshotter takes a job's snapshots of the filesystems its filter
// matches, named by its snapshotting settings, between its hooks.
func (d *Daemon) newSnapshotter(j *config.Job) (snapshotter, error) {
	s := j.Snapshotting
	hl, err := hooks.New(s.HookSpecs(), hooks.Options{
		Log: d.log.With("job", j.Name), Now: time.Now, Observer: jobHooks{d.metrics, j.Name},
	})
	if err != nil {
		return snapshotter{}, fmt.Errorf("snapshotting: %w", err)
	}
	z := d.zfs(j)
	return snapshotter{snapper.New(z, func(ctx context.Context) ([]zfs.DatasetPath, error) {
		// Each listing counts the rules that name no dataset.
		fss, unmatched, err := matchFilesystems(ctx, z, j.Filesystems)
		if err == nil {
			d.metrics.Unmatched(j.Name, unmatched)
		}
		return fss, err
	}, snapper.Config{Prefix: s.Prefix, Format: s.TimestampFormat, Location: s.TimestampLocation, Interval: s.Interval, Cron: cronOf(s), Hooks: hl})}, nil
}

// cronOf is the snapper's schedule of cron snapshotting, nil otherwise
// (a nil cron.Schedule in the interface would not be nil).
func cronOf(s *config.Snapshotting) snapper.Schedule {
	if s.CronSchedule == nil {
		return nil
	}
	return s.CronSchedule
}

var _ job.SnapshotReporter = snapshotter{}

func (s snapshotter) SnapshotNowReport(ctx context.Context, now time.Time) ([]job.SnapshotFSStatus, error) {
	reps, err := s.Snapshot(ctx, now)
	out := make([]job.SnapshotFSStatus, 0, len(reps))
	for _, r := range reps {
		st := job.SnapshotFSStatus{FS: r.FS.String(), Snapshot: r.Snapshot}
		switch r.State {
		case snapper.Gone:
			continue // not a filesystem of the job any more
		case snapper.Taken:
			st.State = job.SnapDone
		case snapper.Existed:
			st.State, st.Error = job.SnapSkipped, "the snapshot exists already"
		case snapper.Skipped:
			st.State = job.SnapSkipped
		default:
			st.State = job.SnapFailed
		}
		var errs []error
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
		for _, h := range r.Hooks {
			res := job.HookResult{Hook: h.Hook, Phase: string(h.Phase), OK: h.Err == nil, Output: h.Output, DurationSeconds: h.Duration.Seconds()}
			if h.Err != nil {
				res.Error = h.Err.Error()
				errs = append(errs, h.Err)
			}
			st.Hooks = append(st.Hooks, res)
		}
		if err := errors.Join(errs...); err != nil {
			st.Error = err.Error()
		}
		out = append(out, st)
	}
	return out, err
}

// jobHooks counts a job's hook runs in the daemon's metrics.
type jobHooks struct {
	m   *Metrics
	job string
}

func (o jobHooks) HookRan(typ hooks.Type, phase hooks.Phase, err error) {
	o.m.HookRan(o.job, string(typ), string(phase), err)
}
