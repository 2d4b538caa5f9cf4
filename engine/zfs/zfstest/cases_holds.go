package zfstest

import (
	"errors"
	"fmt"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("HoldAllReleaseAll", caseHoldAllReleaseAll)
	register("HoldOnMissingFilesystem", caseHoldOnMissingFilesystem)
}

// errorsFor lists the datasets of the *zfs.Errors joined in err, with
// their kinds.
func errorsFor(err error) map[string]zfs.Kind {
	out := map[string]zfs.Kind{}
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	} else if err != nil {
		all = []error{err}
	}
	for _, e := range all {
		var ze *zfs.Error
		if errors.As(e, &ze) {
			out[ze.Dataset] = ze.Kind
		} else {
			out[fmt.Sprintf("(not a *zfs.Error: %v)", e)] = 0
		}
	}
	return out
}

// HoldAll and ReleaseAll take snapshots of several filesystems; each
// snapshot succeeds or fails on its own, and each failure is an error
// naming its snapshot.
func caseHoldAllReleaseAll(e *env) {
	fs, other := e.create("fs", false), e.create("other", false)
	a, b := e.snap(fs, "a").Ref(fs), e.snap(fs, "b").Ref(fs)
	e.write(fs, 1)
	c := e.snap(fs, "c").Ref(fs)
	o := e.snap(other, "o").Ref(other)
	nope := zfs.SnapshotRef(fs, "nope")
	gone := zfs.SnapshotRef(e.path("gone"), "x")
	holdsOf := func(fs zfs.DatasetPath, refs ...zfs.VersionRef) map[string][]string {
		h, err := e.z.Holds(e.ctx, refs)
		e.noErr(err, "holds")
		return h
	}
	e.noErr(e.z.HoldAll(e.ctx, "t", []zfs.VersionRef{a, o}), "hold a and o")
	e.noErr(e.z.HoldAll(e.ctx, "t", nil), "empty hold")

	err := e.z.HoldAll(e.ctx, "t", []zfs.VersionRef{a, b, nope, gone, c})
	want := map[string]zfs.Kind{a.String(): zfs.ErrHoldTagExists, nope.String(): zfs.ErrDatasetNotExist, gone.String(): zfs.ErrDatasetNotExist}
	if got := errorsFor(err); fmt.Sprint(got) != fmt.Sprint(want) {
		e.t.Errorf("HoldAll errors %v (%v), want %v", got, err, want)
	}
	e.wantErr(err, zfs.ErrHoldTagExists, "hold", a.String(), fmt.Sprintf("cannot hold snapshot '%s': tag already exists on this dataset", a))
	h := holdsOf(fs, a, b, c)
	for _, n := range []string{"a", "b", "c"} {
		if !equalStrings(h[n], []string{"t"}) {
			e.t.Errorf("holds of @%s = %v, want [t]", n, h[n])
		}
	}
	if h := holdsOf(other, o); !equalStrings(h["o"], []string{"t"}) {
		e.t.Errorf("holds of %s = %v", o, h)
	}

	err = e.z.ReleaseAll(e.ctx, "t", []zfs.VersionRef{a, o, nope, c})
	want = map[string]zfs.Kind{nope.String(): zfs.ErrDatasetNotExist}
	if got := errorsFor(err); fmt.Sprint(got) != fmt.Sprint(want) {
		e.t.Errorf("ReleaseAll errors %v (%v), want %v", got, err, want)
	}
	err = e.z.ReleaseAll(e.ctx, "t", []zfs.VersionRef{a, b})
	want = map[string]zfs.Kind{a.String(): zfs.ErrHoldTagNotFound}
	if got := errorsFor(err); fmt.Sprint(got) != fmt.Sprint(want) {
		e.t.Errorf("ReleaseAll errors %v (%v), want %v", got, err, want)
	}
	e.wantErr(err, zfs.ErrHoldTagNotFound, "release", a.String(), fmt.Sprintf("cannot release hold from snapshot '%s': no such tag on this dataset", a))
	h = holdsOf(fs, a, b, c)
	for _, n := range []string{"a", "b", "c"} {
		if len(h[n]) != 0 {
			e.t.Errorf("holds of @%s after release = %v", n, h[n])
		}
	}
	// Invalid names fail the call before anything is held.
	err = e.z.HoldAll(e.ctx, "t", []zfs.VersionRef{b, {FS: fs, Kind: zfs.Snapshot, Name: "bad@name"}})
	if !errors.Is(err, zfs.ErrInvalidName) {
		e.t.Errorf("HoldAll with an invalid name: %v", err)
	}
	if h := holdsOf(fs, b); len(h["b"]) != 0 {
		e.t.Errorf("a refused HoldAll held %v", h)
	}
}

// zfs hold and zfs release of a snapshot whose filesystem does not exist
// fail opening the filesystem, also beside a snapshot that exists (which
// is held). Measured on OpenZFS 2.1.11 and 2.3.9 (TestDifferential found
// it on 2.3.9).
func caseHoldOnMissingFilesystem(e *env) {
	fs := e.create("fs", false)
	a := e.snap(fs, "a").Ref(fs)
	nofs := e.path("nofs")
	missing := zfs.SnapshotRef(nofs, "a")
	want := fmt.Sprintf("cannot open '%s': dataset does not exist", nofs)
	e.wantErr(e.z.Hold(e.ctx, missing, "t"), zfs.ErrDatasetNotExist, "hold", missing.String(), want)
	e.wantErr(e.z.Release(e.ctx, missing, "t"), zfs.ErrDatasetNotExist, "release", missing.String(), want)
	err := e.z.HoldAll(e.ctx, "t", []zfs.VersionRef{a, missing})
	e.wantErr(err, zfs.ErrDatasetNotExist, "hold", missing.String(), want)
	if got := errorsFor(err); len(got) != 1 {
		e.t.Errorf("HoldAll errors = %v, want one for %s", got, missing)
	}
	h, err := e.z.Holds(e.ctx, []zfs.VersionRef{a})
	e.noErr(err, "holds")
	if !equalStrings(h["a"], []string{"t"}) {
		e.t.Errorf("holds of %s after HoldAll = %v, want [t]", a, h["a"])
	}
	err = e.z.ReleaseAll(e.ctx, "t", []zfs.VersionRef{a, missing})
	e.wantErr(err, zfs.ErrDatasetNotExist, "release", missing.String(), want)
	h, err = e.z.Holds(e.ctx, []zfs.VersionRef{a})
	e.noErr(err, "holds")
	if len(h["a"]) != 0 {
		e.t.Errorf("holds of %s after ReleaseAll = %v, want none", a, h["a"])
	}
}
