package snapper

import (
	"context"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/require"
)

func zreplCron(t *testing.T, spec string) cron.Schedule {
	t.Helper()
	s, err := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.SecondOptional).Parse(spec)
	require.NoError(t, err)
	return s
}

// TestNextDueCron: with a cron schedule a snapshot is due at the
// schedule's next time, read in CronLocation, whatever snapshots exist (a
// filesystem without one is not due at once, unlike periodic).
func TestNextDueCron(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "pool/a")
	due := func(spec string, loc *time.Location, now time.Time) time.Time {
		t.Helper()
		d, err := New(w.m, w.list, Config{Prefix: "zrepl_", Cron: zreplCron(t, spec), CronLocation: loc}).NextDue(ctx, now)
		require.NoError(t, err)
		return d
	}
	require.Equal(t, t0.Add(5*time.Minute), due("*/5 * * * *", time.UTC, t0), "at a time of the schedule, the next one")
	require.Equal(t, t0.Add(5*time.Minute), due("*/5 * * * *", time.UTC, t0.Add(time.Second)))
	require.Equal(t, t0.Add(30*time.Second), due("30 */5 * * * *", time.UTC, t0), "an optional seconds field")

	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	// 10:00 UTC is 12:00 in Berlin (summer time): 02:00 Berlin is 00:00 UTC.
	got := due("0 2 * * *", berlin, t0)
	require.True(t, got.Equal(time.Date(2026, 5, 5, 0, 0, 0, 0, time.UTC)), "got %v", got)
	got = due("0 2 * * *", time.UTC, t0)
	require.True(t, got.Equal(time.Date(2026, 5, 5, 2, 0, 0, 0, time.UTC)), "got %v", got)

	// A snapshot taken a minute ago changes nothing.
	w.now = t0.Add(-time.Minute)
	require.NoError(t, w.m.Snapshot(ctx, w.fss[0], "zrepl_x"))
	require.Equal(t, t0.Add(5*time.Minute), due("*/5 * * * *", time.UTC, t0))
}
