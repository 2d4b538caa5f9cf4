package snapper

import (
	"context"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// Whatever snapshots exist (prefixed or not, from the past or the future),
// NextDue is within one interval from now, and right after a successful
// SnapshotNow it is exactly one interval away.
func TestNextDueProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		now := t0
		m := zfsmodel.New(zfsmodel.Options{Seed: 3, Clock: func() time.Time { return now }})
		if err := m.CreatePool("pool"); err != nil {
			rt.Fatal(err)
		}
		var fss []zfs.DatasetPath
		for i := range rapid.IntRange(0, 4).Draw(rt, "filesystems") {
			fs := zfs.MustDatasetPath(fmt.Sprintf("pool/fs%d", i))
			if err := m.CreateFilesystem(fs, zfsmodel.FSOptions{}); err != nil {
				rt.Fatal(err)
			}
			fss = append(fss, fs)
			for j := range rapid.IntRange(0, 4).Draw(rt, "snapshots") {
				prefix := rapid.SampledFrom([]string{"zrepl_", "other_"}).Draw(rt, "prefix")
				now = t0.Add(time.Duration(rapid.IntRange(-300, 30).Draw(rt, "minutes")) * time.Minute)
				if err := m.Snapshot(ctx, fs, fmt.Sprintf("%sold%d", prefix, j)); err != nil {
					rt.Fatal(err)
				}
			}
		}
		now = t0
		interval := time.Duration(rapid.IntRange(1, 180).Draw(rt, "interval")) * time.Minute
		s := New(m, func(context.Context) ([]zfs.DatasetPath, error) { return fss, nil },
			Config{Prefix: "zrepl_", Interval: interval})

		due, err := s.NextDue(ctx, now)
		if err != nil {
			rt.Fatal(err)
		}
		if due.Before(now) || due.After(now.Add(interval)) {
			rt.Fatalf("due %v is not within [%v, %v]", due, now, now.Add(interval))
		}
		if _, err := s.SnapshotNow(ctx, now); err != nil {
			rt.Fatal(err)
		}
		due, err = s.NextDue(ctx, now)
		if err != nil {
			rt.Fatal(err)
		}
		if !due.Equal(now.Add(interval)) {
			rt.Fatalf("right after snapshotting, due %v, want %v", due, now.Add(interval))
		}
	})
}
