// Package snapper takes a job's snapshots: one snapshot name for every
// filesystem the job snapshots, taken now, when the periodic interval is
// due or at the times of a cron schedule, each between the job's snapshot
// hooks (engine/hooks). When the next
// snapshot is due follows from the newest snapshot on disk, so a restarted
// daemon neither snapshots at once nor waits a full interval; the only
// state kept, in memory, is when the last run started, so that a
// filesystem left without a snapshot (a failure, a fatal hook) is tried
// again an interval later, not at once and forever.
package snapper

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/hooks"
	"zrepl.dev/zrepl/engine/zfs"
)

// Config says how a job snapshots.
type Config struct {
	// Prefix starts every snapshot name of the job; NextDue looks only at
	// snapshots with it.
	Prefix string
	// Format and Location write the time after the prefix (see Naming;
	// NewNaming checks them).
	Format   string
	Location *time.Location
	// Interval between periodic snapshots; 0 (and no Cron) means manual
	// (the snapper never decides by itself that a snapshot is due).
	Interval time.Duration
	// Cron, if set, is when snapshots are due instead of Interval: at
	// each time of the schedule, read in CronLocation (nil: time.Local,
	// as zrepl reads cron specs), none at start and none caught up for
	// times the daemon was not running.
	Cron         Schedule
	CronLocation *time.Location
	// Name, if set, builds the snapshot name for time t instead of
	// Prefix, Format and Location.
	Name func(t time.Time) string
	// Hooks run around each filesystem's snapshot; nil for none.
	Hooks *hooks.List
}

// Schedule is a cron schedule: Next is the first time of the schedule
// after t, in t's location (robfig/cron's Schedule is one).
type Schedule interface {
	Next(t time.Time) time.Time
}

// naming is the Naming of Prefix, Format and Location.
func (c Config) naming() Naming {
	return Naming{Prefix: c.Prefix, Format: c.Format, Location: c.Location}
}

// Snapper snapshots the filesystems of one job.
type Snapper struct {
	z           zfs.ZFS
	filesystems func(ctx context.Context) ([]zfs.DatasetPath, error)
	cfg         Config

	mu      sync.Mutex
	lastRun time.Time // of Snapshot; zero before the first
}

// New returns a snapper. filesystems lists what to snapshot at the time of
// each snapshot (the job's filter over the sender).
func New(z zfs.ZFS, filesystems func(ctx context.Context) ([]zfs.DatasetPath, error), cfg Config) *Snapper {
	return &Snapper{z: z, filesystems: filesystems, cfg: cfg}
}

// ErrBadName is matched by the error for a snapshot name that is invalid
// or lacks the prefix.
var ErrBadName = errors.New("bad snapshot name")

func (s *Snapper) name(now time.Time) (string, error) {
	var name string
	if s.cfg.Name != nil {
		name = s.cfg.Name(now)
	} else {
		name = s.cfg.naming().Name(now)
	}
	if err := zfs.ValidateVersionName(zfs.Snapshot, name); err != nil {
		return "", fmt.Errorf("snapshot name %q for %s: %w: %w", name, now.Format(time.RFC3339), ErrBadName, err)
	}
	// Without the prefix NextDue would never see the snapshot and would
	// ask for one again at once, forever.
	if !strings.HasPrefix(name, s.cfg.Prefix) {
		return "", fmt.Errorf("snapshot name %q does not start with the prefix %q: %w", name, s.cfg.Prefix, ErrBadName)
	}
	return name, nil
}

// SnapshotNow snapshots every filesystem with one name, Name(now), as
// Snapshot does, and returns the snapshots it created, in the order of
// filesystems.
func (s *Snapper) SnapshotNow(ctx context.Context, now time.Time) ([]zfs.VersionRef, error) {
	reps, err := s.Snapshot(ctx, now)
	var created []zfs.VersionRef
	for _, r := range reps {
		if r.State == Taken {
			created = append(created, zfs.SnapshotRef(r.FS, r.Snapshot))
		}
	}
	return created, err
}

// State is what one snapshot run did on one filesystem.
type State string

const (
	Taken  State = "taken"
	Failed State = "failed"
	// Skipped: a pre-snapshot hook with err_is_fatal failed.
	Skipped State = "skipped"
	// Existed: the filesystem had the snapshot already.
	Existed State = "existed"
	// Gone: the filesystem was destroyed since it was listed.
	Gone State = "gone"
)

// FSReport is one filesystem's part of a snapshot run.
type FSReport struct {
	FS       zfs.DatasetPath
	Snapshot string
	State    State
	// Err is why the snapshot failed (Failed) or was skipped (Skipped).
	Err error
	// Hooks are the hook edges that ran, in order.
	Hooks []hooks.Result
}

// Snapshot snapshots every filesystem with one name, Name(now), each
// between the hooks that match it. A filesystem that already has that
// snapshot is left as it is, so a retry after a partial failure snapshots
// only what is missing; a filesystem destroyed since it was listed is
// skipped too. Failures do not stop the other filesystems: the error
// joins them, each naming its filesystem (a failed hook is one, also
// where the snapshot was taken). The reports are in the order of
// filesystems.
func (s *Snapper) Snapshot(ctx context.Context, now time.Time) ([]FSReport, error) {
	s.mu.Lock()
	s.lastRun = now
	s.mu.Unlock()
	name, err := s.name(now)
	if err != nil {
		return nil, err
	}
	fss, err := s.filesystems(ctx)
	if err != nil {
		return nil, fmt.Errorf("list filesystems to snapshot: %w", err)
	}
	s.cfg.Hooks.WarnUnmatched(fss)
	var reps []FSReport
	var errs []error
	for _, fs := range fss {
		ref := zfs.SnapshotRef(fs, name)
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("snapshot %s: %w", ref, err))
			break
		}
		hr := s.cfg.Hooks.Run(ctx, fs, name, func(ctx context.Context) error {
			return s.z.Snapshot(ctx, fs, name)
		})
		r := FSReport{FS: fs, Snapshot: name, Hooks: hr.Results}
		switch err := hr.SnapshotErr; {
		case hr.Skipped:
			r.State = Skipped
			r.Err = fmt.Errorf("snapshot %s not taken: a pre_snapshot hook with err_is_fatal failed", ref)
			errs = append(errs, r.Err)
		case err == nil:
			r.State = Taken
		case errors.Is(err, zfs.ErrDatasetExists):
			r.State = Existed
		case errors.Is(err, zfs.ErrDatasetNotExist):
			r.State = Gone
		default:
			r.State = Failed
			r.Err = fmt.Errorf("snapshot %s: %w", ref, err)
			errs = append(errs, r.Err)
		}
		if err := hr.HookErr(); err != nil {
			errs = append(errs, err)
		}
		reps = append(reps, r)
	}
	return reps, errors.Join(errs...)
}

// NextDue is when the next periodic snapshot is due: the earliest, over the
// filesystems, of the newest prefixed snapshot's creation plus Interval, or
// now if a filesystem has no prefixed snapshot. A time already past is
// returned as now. A snapshot dated after now (a clock that went back)
// counts as taken now, so the wait never exceeds one interval. Without
// filesystems the next look is one interval away. It is never earlier
// than an interval after the start of this snapper's last Snapshot (as
// zrepl, which snapshots every interval after its first sync point):
// what that run left unsnapshotted waits for the next. Interval 0
// (manual) returns the zero time. With a Cron schedule it is the
// schedule's next time after now.
//
// A filesystem that cannot be listed is left out and its error returned
// (joined, naming the filesystem) with the time the others give.
func (s *Snapper) NextDue(ctx context.Context, now time.Time) (time.Time, error) {
	if s.cfg.Cron != nil {
		loc := s.cfg.CronLocation
		if loc == nil {
			loc = time.Local
		}
		return s.cfg.Cron.Next(now.In(loc)), nil
	}
	if s.cfg.Interval <= 0 {
		return time.Time{}, nil
	}
	fss, err := s.filesystems(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("list filesystems to snapshot: %w", err)
	}
	due := now.Add(s.cfg.Interval)
	var errs []error
	for _, fs := range fss {
		versions, err := s.z.ListVersions(ctx, fs)
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			continue // destroyed since listed
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list snapshots of %s: %w", fs, err))
			continue
		}
		var newest time.Time
		found := false
		for _, v := range versions {
			if v.Kind == zfs.Snapshot && strings.HasPrefix(v.Name, s.cfg.Prefix) && (!found || v.Creation.After(newest)) {
				newest, found = v.Creation, true
			}
		}
		if !found {
			due = now
			break
		}
		if newest.After(now) {
			newest = now
		}
		if d := newest.Add(s.cfg.Interval); d.Before(due) {
			due = d
		}
	}
	s.mu.Lock()
	if floor := s.lastRun.Add(s.cfg.Interval); !s.lastRun.IsZero() && due.Before(floor) && !s.lastRun.After(now) {
		due = floor
	}
	s.mu.Unlock()
	if due.Before(now) {
		due = now
	}
	return due, errors.Join(errs...)
}
