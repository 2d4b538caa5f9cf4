package daemon

import (
	"context"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/snapper"
	"zrepl.dev/zrepl/engine/zfs"
)

// manualSnapshotter snapshots only when woken up (snapshotting: manual).
type manualSnapshotter struct{ job.Snapshotter }

func (manualSnapshotter) NextDue(context.Context, time.Time) (time.Time, error) {
	return time.Time{}, nil
}

// newSnapshotter takes a job's snapshots of the filesystems its filter
// matches, named by its snapshotting settings.
func newSnapshotter(z zfs.ZFS, j *config.Job) job.Snapshotter {
	s := j.Snapshotting
	return snapper.New(z, func(ctx context.Context) ([]zfs.DatasetPath, error) {
		return MatchFilesystems(ctx, z, j.Filesystems)
	}, snapper.Config{Prefix: s.Prefix, Interval: s.Interval, Name: s.SnapshotName})
}
