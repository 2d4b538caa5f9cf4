package pruner

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/snapper"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// modelTarget prunes filesystems of a zfsmodel directly.
type modelTarget struct {
	m   *zfsmodel.Model
	fss []zfs.DatasetPath
}

func (t modelTarget) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	var out []endpoint.Filesystem
	for _, fs := range t.fss {
		vs, err := t.m.ListVersions(ctx, fs)
		if err != nil {
			return nil, err
		}
		out = append(out, endpoint.Filesystem{Path: fs.String(), Versions: vs})
	}
	return out, nil
}

func (t modelTarget) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	p, err := zfs.NewDatasetPath(fs)
	if err != nil {
		return err
	}
	refs := make([]zfs.VersionRef, len(snaps))
	for i, s := range snaps {
		refs[i] = s.Ref(p)
	}
	return t.m.Destroy(ctx, refs)
}

// Three simulated days of 10-minute snapshots, pruned after each one with
// the grid "1x1h(keep=all) | 24x1h | 3x1d", replication lagging one
// snapshot behind: the grid's shape emerges and stays, a held snapshot
// and a manual one survive, and the incremental base is never lost.
func TestSnapperAndPrunerOverThreeDays(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := zfsmodel.New(zfsmodel.Options{Seed: 7, Clock: func() time.Time { return now }})
	require.NoError(t, m.CreatePool("pool"))
	fs := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	require.NoError(t, m.Snapshot(ctx, fs, "manual_before"))
	target := modelTarget{m: m, fss: []zfs.DatasetPath{fs}}

	s := snapper.New(m, func(context.Context) ([]zfs.DatasetPath, error) { return target.fss, nil },
		snapper.Config{Prefix: "zrepl_", Interval: 10 * time.Minute, Name: func(t time.Time) string { return "zrepl_" + t.Format("20060102_1504") }})
	zr := regexp.MustCompile("^zrepl_")
	p := Policy{Rules: []Rule{
		KeepNotReplicated(),
		KeepRegex(zr, true),
		KeepGrid([]GridInterval{{Length: time.Hour, Keep: KeepAll}, {Length: time.Hour, Keep: 1, Repeat: 24}, {Length: 24 * time.Hour, Keep: 1, Repeat: 3}}, zr),
	}}
	// The cursor: the second newest zrepl snapshot's txg.
	cursor := func(string) (uint64, bool) {
		vs, err := m.ListVersions(ctx, fs)
		require.NoError(t, err)
		var txgs []uint64
		for _, v := range vs {
			if zr.MatchString(v.Name) {
				txgs = append(txgs, v.CreateTXG)
			}
		}
		if len(txgs) < 2 {
			return 0, false
		}
		return txgs[len(txgs)-2], true
	}

	steps := 3 * 24 * 6
	for i := 0; i < steps; i++ {
		due, err := s.NextDue(ctx, now)
		require.NoError(t, err)
		now = due
		_, err = s.SnapshotNow(ctx, now)
		require.NoError(t, err)
		if i == 3 {
			require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "zrepl_"+now.Format("20060102_1504")), "keepme"))
		}
		_, err = Prune(ctx, target, p, now, cursor)
		require.NoError(t, err)
	}

	vs, err := m.ListVersions(ctx, fs)
	require.NoError(t, err)
	require.Equal(t, "manual_before", vs[0].Name)
	require.Equal(t, "zrepl_20260101_0030", vs[2].Name, "the held snapshot")
	perBucket := map[string]int{}
	for _, v := range vs[1:] {
		if v.Name == "zrepl_20260101_0030" {
			continue
		}
		age := now.Sub(v.Creation)
		switch {
		case age < time.Hour:
			perBucket["first hour"]++
		case age < 25*time.Hour:
			perBucket[fmt.Sprint("hour ", int(age/time.Hour))]++
		case age < 97*time.Hour:
			perBucket[fmt.Sprint("day ", int((age-25*time.Hour)/(24*time.Hour)))]++
		default:
			t.Errorf("%s of age %v is older than the grid", v.Name, age)
		}
	}
	require.Equal(t, 6, perBucket["first hour"])
	for h := 1; h < 25; h++ {
		require.Equal(t, 1, perBucket[fmt.Sprint("hour ", h)], "hour %d of the grid", h)
	}
	require.Equal(t, 1, perBucket["day 0"])
	// The very first snapshot is the oldest of day bucket 1, which the
	// grid keeps: oldest-kept buckets hand their survivor on.
	require.Equal(t, 1, perBucket["day 1"])
	require.Equal(t, "zrepl_20260101_0000", vs[1].Name)
	require.Len(t, vs, 2+6+24+2)
	require.Equal(t, now, vs[len(vs)-1].Creation, "the newest snapshot stays")
}
