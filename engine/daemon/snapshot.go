package daemon

import (
	"context"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
)

// manualSnapshotter snapshots only when woken up (snapshotting: manual).
type manualSnapshotter struct{ job.Snapshotter }

func (manualSnapshotter) NextDue(context.Context, time.Time) (time.Time, error) {
	return time.Time{}, nil
}

// newSnapshotter takes a job's periodic snapshots.
func newSnapshotter(z zfs.ZFS, j *config.Job) job.Snapshotter {
	return &interimSnapshotter{z: z, j: j}
}

// interimSnapshotter stands in until engine/snapper lands: it snapshots
// every matched filesystem at once and is due an interval after the
// newest prefixed snapshot.
type interimSnapshotter struct {
	z zfs.ZFS
	j *config.Job
}

func (s *interimSnapshotter) SnapshotNow(ctx context.Context, now time.Time) ([]zfs.VersionRef, error) {
	fss, err := MatchFilesystems(ctx, s.z, s.j.Filesystems)
	if err != nil {
		return nil, err
	}
	name := s.j.Snapshotting.SnapshotName(now)
	var out []zfs.VersionRef
	for _, fs := range fss {
		if err := s.z.Snapshot(ctx, fs, name); err != nil {
			return out, err
		}
		out = append(out, zfs.SnapshotRef(fs, name))
	}
	return out, nil
}

func (s *interimSnapshotter) NextDue(ctx context.Context, now time.Time) (time.Time, error) {
	fss, err := MatchFilesystems(ctx, s.z, s.j.Filesystems)
	if err != nil {
		return time.Time{}, err
	}
	var newest time.Time
	for _, fs := range fss {
		vs, err := s.z.ListVersions(ctx, fs)
		if err != nil {
			return time.Time{}, err
		}
		for _, v := range vs {
			if v.Kind == zfs.Snapshot && strings.HasPrefix(v.Name, s.j.Snapshotting.Prefix) && v.Creation.After(newest) {
				newest = v.Creation
			}
		}
	}
	if newest.IsZero() {
		return now, nil
	}
	return newest.Add(s.j.Snapshotting.Interval), nil
}
