package pruner

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// fakeTarget keeps filesystems in memory; destroy removes the versions it
// is given unless a failure is injected for the filesystem.
type fakeTarget struct {
	fss        []endpoint.Filesystem
	listErr    error
	destroyErr map[string]error
	calls      []destroyCall
	onDestroy  func() // runs during each DestroySnapshots
}

type destroyCall struct {
	FS    string
	Snaps []zfs.FilesystemVersion
}

func (f *fakeTarget) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	return f.fss, nil
}

func (f *fakeTarget) DestroySnapshots(ctx context.Context, fs string, snaps []zfs.FilesystemVersion) error {
	f.calls = append(f.calls, destroyCall{fs, snaps})
	if f.onDestroy != nil {
		f.onDestroy()
	}
	if err := f.destroyErr[fs]; err != nil {
		return err
	}
	for i := range f.fss {
		if f.fss[i].Path != fs {
			continue
		}
		var keep []zfs.FilesystemVersion
		for _, v := range f.fss[i].Versions {
			gone := false
			for _, s := range snaps {
				if s.Kind == v.Kind && s.Name == v.Name && s.GUID == v.GUID {
					gone = true
				}
			}
			if !gone {
				keep = append(keep, v)
			}
		}
		f.fss[i].Versions = keep
	}
	return nil
}

func version(kind zfs.VersionKind, name string, txg uint64, ago time.Duration) zfs.FilesystemVersion {
	return zfs.FilesystemVersion{Kind: kind, Name: name, GUID: txg * 1000, CreateTXG: txg, Creation: t0.Add(-ago)}
}

func hourly(n int) []zfs.FilesystemVersion {
	var vs []zfs.FilesystemVersion
	for i := 0; i < n; i++ {
		vs = append(vs, version(zfs.Snapshot, fmt.Sprintf("zrepl_%02d", i), uint64(i+1), time.Duration(n-1-i)*time.Hour))
	}
	return vs
}

func TestPruneDestroysPlanPerFilesystem(t *testing.T) {
	a := hourly(5)
	a = append(a, version(zfs.Bookmark, "zrepl_CURSOR_G_0000000000000bb8_J_job", 3, 2*time.Hour))
	b := hourly(3)
	b[0].UserRefs = 1
	tg := &fakeTarget{fss: []endpoint.Filesystem{{Path: "pool/a", Versions: a}, {Path: "pool/b", Versions: b}, {Path: "pool/empty"}}}
	cursor := map[string]uint64{"pool/a": 3, "pool/b": 3}
	p := Policy{Prefix: "zrepl_", Rules: []Rule{KeepNotReplicated(), KeepLastN(1, nil)}}

	rep, err := Prune(context.Background(), tg, p, t0, func(fs string) (uint64, bool) {
		txg, ok := cursor[fs]
		return txg, ok
	})
	require.NoError(t, err)
	want := Report{Filesystems: []FSReport{
		// a: 4 and 5 not replicated, 3 the incremental base.
		{FS: "pool/a", Planned: []string{"zrepl_00", "zrepl_01"}, Destroyed: []string{"zrepl_00", "zrepl_01"}, Kept: 3},
		// b: 0 held, 2 newest.
		{FS: "pool/b", Planned: []string{"zrepl_01"}, Destroyed: []string{"zrepl_01"}, Kept: 2},
		{FS: "pool/empty"},
	}}
	if d := cmp.Diff(want, rep); d != "" {
		t.Errorf("report (-want +got):\n%s", d)
	}
	require.Equal(t, 3, rep.Destroyed())
	// The target gets full versions (with GUIDs) and never a bookmark.
	require.Len(t, tg.calls, 2)
	require.Equal(t, []zfs.FilesystemVersion{a[0], a[1]}, tg.calls[0].Snaps)
	require.Equal(t, "pool/b", tg.calls[1].FS)

	// Pruning again changes nothing.
	rep, err = Prune(context.Background(), tg, p, t0, func(fs string) (uint64, bool) { return cursor[fs], true })
	require.NoError(t, err)
	require.Zero(t, rep.Destroyed())
	require.Len(t, tg.calls, 2, "no destroy call when nothing is planned")
}

func TestPruneUnknownCursorKeepsEverythingWithNotReplicated(t *testing.T) {
	tg := &fakeTarget{fss: []endpoint.Filesystem{{Path: "pool/a", Versions: hourly(4)}}}
	p := Policy{Rules: []Rule{KeepNotReplicated()}}
	for _, repl := range []func(string) (uint64, bool){nil, func(string) (uint64, bool) { return 100, false }} {
		rep, err := Prune(context.Background(), tg, p, t0, repl)
		require.NoError(t, err)
		require.Zero(t, rep.Destroyed())
		require.Equal(t, 4, rep.Filesystems[0].Kept)
	}
	require.Empty(t, tg.calls)
}

func TestPruneReceiverSideEverythingReplicated(t *testing.T) {
	tg := &fakeTarget{fss: []endpoint.Filesystem{{Path: "a", Versions: hourly(6)}}}
	p := Policy{Rules: []Rule{KeepGrid([]GridInterval{{Length: 2 * time.Hour, Keep: KeepAll}}, regexp.MustCompile("^zrepl_"))}}
	rep, err := Prune(context.Background(), tg, p, t0, func(string) (uint64, bool) { return ^uint64(0), true })
	require.NoError(t, err)
	require.Equal(t, []string{"zrepl_00", "zrepl_01", "zrepl_02", "zrepl_03"}, rep.Filesystems[0].Destroyed)
}

func TestPruneDestroyErrorDoesNotStopOthers(t *testing.T) {
	busy := &zfs.Error{Kind: zfs.ErrDatasetBusy, Op: "destroy", Dataset: "pool/a@zrepl_00", Msg: "dataset is busy"}
	tg := &fakeTarget{
		fss:        []endpoint.Filesystem{{Path: "pool/a", Versions: hourly(3)}, {Path: "pool/b", Versions: hourly(3)}},
		destroyErr: map[string]error{"pool/a": busy},
	}
	rep, err := Prune(context.Background(), tg, Policy{}, t0, nil)
	require.Error(t, err)
	require.ErrorIs(t, err, zfs.ErrDatasetBusy)
	require.Contains(t, err.Error(), "prune pool/a")
	require.Len(t, rep.Filesystems, 2)
	a, b := rep.Filesystems[0], rep.Filesystems[1]
	require.ErrorIs(t, a.Err, zfs.ErrDatasetBusy)
	require.Equal(t, []string{"zrepl_00", "zrepl_01"}, a.Planned)
	require.Empty(t, a.Destroyed, "a failed batch claims nothing destroyed")
	require.NoError(t, b.Err)
	require.Equal(t, []string{"zrepl_00", "zrepl_01"}, b.Destroyed)
}

func TestPruneListError(t *testing.T) {
	tg := &fakeTarget{listErr: &zfs.Error{Kind: zfs.ErrDatasetNotExist, Op: "list", Dataset: "pool"}}
	rep, err := Prune(context.Background(), tg, Policy{}, t0, nil)
	require.ErrorIs(t, err, zfs.ErrDatasetNotExist)
	require.Contains(t, err.Error(), "list filesystems")
	require.Empty(t, rep.Filesystems)
}

func TestPruneStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tg := &fakeTarget{fss: []endpoint.Filesystem{{Path: "a", Versions: hourly(3)}, {Path: "b", Versions: hourly(3)}}}
	tg.onDestroy = cancel
	rep, err := Prune(ctx, tg, Policy{}, t0, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), "before b")
	require.Len(t, tg.calls, 1)
	require.Len(t, rep.Filesystems, 1)
	require.False(t, errors.Is(rep.Filesystems[0].Err, context.Canceled))
}

func TestDryRunDestroysNothing(t *testing.T) {
	tg := &fakeTarget{fss: []endpoint.Filesystem{{Path: "a", Versions: hourly(4)}}}
	rep, err := DryRun(context.Background(), tg, Policy{Rules: []Rule{KeepLastN(2, nil)}}, t0, nil)
	require.NoError(t, err)
	require.Equal(t, []FSReport{{FS: "a", Planned: []string{"zrepl_00", "zrepl_01"}, Kept: 2}}, rep.Filesystems)
	require.Empty(t, tg.calls)
	require.Len(t, tg.fss[0].Versions, 4)
}
