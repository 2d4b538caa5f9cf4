package zfstest

import (
	"errors"
	"fmt"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("SnapshotGUIDTXGOrder", caseSnapshotGUIDTXGOrder)
	register("SnapshotExists", caseSnapshotExists)
	register("BookmarkKeepsGUIDAndTXG", caseBookmarkKeepsGUIDAndTXG)
	register("BookmarkSurvivesSnapshotDestroy", caseBookmarkSurvivesSnapshotDestroy)
	register("HoldBlocksDestroy", caseHoldBlocksDestroy)
	register("SnapshotOfMissingFilesystem", caseSnapshotOfMissingFilesystem)
	register("HoldTwice", caseHoldTwice)
	register("ReleaseAbsentTag", caseReleaseAbsentTag)
	register("BatchedDestroy", caseBatchedDestroy)
	register("BatchedDestroyOfAbsentSnapshots", caseBatchedDestroyOfAbsent)
	register("DestroyOnMissingFilesystem", caseDestroyOnMissingFilesystem)
	register("Rollback", caseRollback)
	register("Placeholder", casePlaceholder)
	register("InvalidNames", caseInvalidNames)
	register("MissingDataset", caseMissingDataset)
}

func caseSnapshotGUIDTXGOrder(e *env) {
	fs := e.create("fs", false)
	for i, n := range []string{"a", "b", "c"} {
		e.write(fs, int64(i+1))
		e.snap(fs, n)
	}
	vs := e.versions(fs)
	if got := e.relNames(fs); !equalStrings(got, []string{"@a", "@b", "@c"}) {
		e.t.Fatalf("versions = %v, want [@a @b @c]", got)
	}
	seen := map[uint64]bool{}
	for i, v := range vs {
		if v.GUID == 0 || seen[v.GUID] {
			e.t.Errorf("%s: GUID %d is zero or repeated", v.Name, v.GUID)
		}
		seen[v.GUID] = true
		if v.Creation.IsZero() {
			e.t.Errorf("%s: zero creation time", v.Name)
		}
		if i > 0 {
			if v.CreateTXG <= vs[i-1].CreateTXG {
				e.t.Errorf("createtxg of %s (%d) not after %s (%d)", v.Name, v.CreateTXG, vs[i-1].Name, vs[i-1].CreateTXG)
			}
			if v.Creation.Before(vs[i-1].Creation) {
				e.t.Errorf("creation of %s before %s", v.Name, vs[i-1].Name)
			}
		}
		if v.UserRefs != 0 {
			e.t.Errorf("%s: userrefs %d, want 0", v.Name, v.UserRefs)
		}
	}
	// The filesystem has a GUID of its own.
	if fi := e.mustInfo(fs); fi.GUID == 0 || seen[fi.GUID] {
		e.t.Errorf("filesystem GUID %d is zero or equals a snapshot's", fi.GUID)
	}
}

func caseSnapshotExists(e *env) {
	fs := e.create("fs", false)
	e.snap(fs, "a1")
	err := e.z.Snapshot(e.ctx, fs, "a1")
	e.wantErr(err, zfs.ErrDatasetExists, "snapshot", fs.String()+"@a1",
		fmt.Sprintf("cannot create snapshot '%s@a1': dataset already exists", fs))
}

func caseBookmarkKeepsGUIDAndTXG(e *env) {
	fs := e.create("fs", false)
	e.write(fs, 1)
	s := e.snap(fs, "s")
	e.write(fs, 2)
	e.snap(fs, "later")
	b1 := e.bookmark(s.Ref(fs), "b1")
	b2 := e.bookmark(b1.Ref(fs), "b0") // from a bookmark
	for _, b := range []zfs.FilesystemVersion{b1, b2} {
		if b.GUID != s.GUID || b.CreateTXG != s.CreateTXG {
			e.t.Errorf("bookmark %s: guid %d txg %d, want the snapshot's %d %d", b.Name, b.GUID, b.CreateTXG, s.GUID, s.CreateTXG)
		}
		if b.UserRefs != 0 {
			e.t.Errorf("bookmark %s: userrefs %d", b.Name, b.UserRefs)
		}
	}
	// Listing order is by createtxg, snapshots before bookmarks of one txg;
	// the order among bookmarks of one txg is not part of the contract.
	got := e.relNames(fs)
	if len(got) != 4 || got[0] != "@s" || got[3] != "@later" ||
		!(got[1] == "#b0" && got[2] == "#b1" || got[1] == "#b1" && got[2] == "#b0") {
		e.t.Errorf("versions = %v, want [@s #b0 #b1 @later] (bookmarks in any order)", got)
	}
	err := e.z.Bookmark(e.ctx, s.Ref(fs), "b1")
	e.wantErr(err, zfs.ErrDatasetExists, "bookmark", "",
		fmt.Sprintf("cannot create bookmark '%s#b1': bookmark exists", fs))
}

func caseBookmarkSurvivesSnapshotDestroy(e *env) {
	fs := e.create("fs", false)
	e.write(fs, 1)
	s := e.snap(fs, "s")
	b := e.bookmark(s.Ref(fs), "s")
	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{s.Ref(fs)}), "destroy %s@s", fs)
	vs := e.versions(fs)
	if len(vs) != 1 || vs[0].Kind != zfs.Bookmark || vs[0].GUID != b.GUID || vs[0].CreateTXG != b.CreateTXG {
		e.t.Errorf("after destroying the snapshot: %+v, want only #s with guid %d", vs, b.GUID)
	}
}

func caseHoldBlocksDestroy(e *env) {
	fs := e.create("fs", false)
	s := e.snap(fs, "s1")
	ref := s.Ref(fs)
	e.noErr(e.z.Hold(e.ctx, ref, "zrepl_keep"), "hold")
	holds, err := e.z.Holds(e.ctx, []zfs.VersionRef{ref})
	e.noErr(err, "holds")
	if got := holds["s1"]; !equalStrings(got, []string{"zrepl_keep"}) {
		e.t.Errorf("holds = %v, want [zrepl_keep]", holds)
	}
	if v := e.version(fs, zfs.Snapshot, "s1"); v.UserRefs != 1 {
		e.t.Errorf("userrefs = %d, want 1", v.UserRefs)
	}
	err = e.z.Destroy(e.ctx, []zfs.VersionRef{ref})
	e.wantErr(err, zfs.ErrDatasetBusy, "destroy", ref.String(), e.heldDestroyMsg(ref))
	e.version(fs, zfs.Snapshot, "s1") // still there
	e.noErr(e.z.Release(e.ctx, ref, "zrepl_keep"), "release")
	holds, err = e.z.Holds(e.ctx, []zfs.VersionRef{ref})
	e.noErr(err, "holds")
	if got, ok := holds["s1"]; !ok || len(got) != 0 {
		e.t.Errorf("holds after release = %v, want s1 with no tags", holds)
	}
	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{ref}), "destroy released snapshot")
	if vs := e.versions(fs); len(vs) != 0 {
		e.t.Errorf("versions after destroy: %v", vs)
	}
}

func caseHoldTwice(e *env) {
	fs := e.create("fs", false)
	ref := e.snap(fs, "s1").Ref(fs)
	e.noErr(e.z.Hold(e.ctx, ref, "t"), "hold")
	err := e.z.Hold(e.ctx, ref, "t")
	e.wantErr(err, zfs.ErrHoldTagExists, "hold", ref.String(),
		fmt.Sprintf("cannot hold snapshot '%s': tag already exists on this dataset", ref))
	e.noErr(e.z.Hold(e.ctx, ref, "u"), "second tag")
	holds, err := e.z.Holds(e.ctx, []zfs.VersionRef{ref})
	e.noErr(err, "holds")
	if !equalStrings(holds["s1"], []string{"t", "u"}) {
		e.t.Errorf("holds = %v, want [t u]", holds["s1"])
	}
}

func caseReleaseAbsentTag(e *env) {
	fs := e.create("fs", false)
	ref := e.snap(fs, "s1").Ref(fs)
	err := e.z.Release(e.ctx, ref, "nope")
	e.wantErr(err, zfs.ErrHoldTagNotFound, "release", ref.String(),
		fmt.Sprintf("cannot release hold from snapshot '%s': no such tag on this dataset", ref))
}

func caseBatchedDestroy(e *env) {
	fs := e.create("fs", false)
	a := e.snap(fs, "a").Ref(fs)
	e.write(fs, 1)
	b := e.snap(fs, "b").Ref(fs)
	e.write(fs, 2)
	c := e.snap(fs, "c").Ref(fs)
	bm := e.bookmark(b, "bm").Ref(fs)
	e.noErr(e.z.Hold(e.ctx, b, "keep"), "hold")
	nope := zfs.BookmarkRef(fs, "bm_nope")
	err := e.z.Destroy(e.ctx, []zfs.VersionRef{a, b, bm, nope, c})
	if !errors.Is(err, zfs.ErrDatasetBusy) || !errors.Is(err, zfs.ErrDatasetNotExist) {
		e.t.Fatalf("destroy: want busy and not-exist errors joined, got %v", err)
	}
	e.wantErr(err, zfs.ErrDatasetBusy, "destroy", b.String(), e.heldDestroyMsg(b))
	e.wantErr(err, zfs.ErrDatasetNotExist, "destroy", nope.String(), fmt.Sprintf("bookmark '%s' does not exist.", nope))
	if got := e.relNames(fs); !equalStrings(got, []string{"@b"}) {
		e.t.Errorf("after batched destroy: %v, want [@b]", got)
	}
	// An empty batch is a no-op.
	e.noErr(e.z.Destroy(e.ctx, nil), "empty destroy")
}

// zfs destroy p/fs@a,nope destroys a and says nothing of nope: an absent
// snapshot is an error only where the batch fails (nothing in it exists,
// or a snapshot in it cannot be destroyed, after which each is destroyed on
// its own). Measured on OpenZFS 2.1.11 and 2.3.9 (TestDifferential found
// it on 2.1.11).
func caseBatchedDestroyOfAbsent(e *env) {
	fs := e.create("fs", false)
	a, b, c := e.snap(fs, "a").Ref(fs), e.snap(fs, "b").Ref(fs), e.snap(fs, "c").Ref(fs)
	nope, nope2 := zfs.SnapshotRef(fs, "nope"), zfs.SnapshotRef(fs, "nope2")
	absent := "could not find any snapshots to destroy; check snapshot names."
	e.noErr(e.z.Destroy(e.ctx, []zfs.VersionRef{a, nope}), "destroy of @a and an absent snapshot")
	e.wantErr(e.z.Destroy(e.ctx, []zfs.VersionRef{nope}), zfs.ErrDatasetNotExist, "destroy", nope.String(), absent)
	err := e.z.Destroy(e.ctx, []zfs.VersionRef{nope, nope2})
	if got := errorsFor(err); len(got) != 2 || got[nope.String()] != zfs.ErrDatasetNotExist || got[nope2.String()] != zfs.ErrDatasetNotExist {
		e.t.Errorf("destroy of two absent snapshots: %v, want not-exist for each", got)
	}
	e.noErr(e.z.Hold(e.ctx, b, "keep"), "hold")
	err = e.z.Destroy(e.ctx, []zfs.VersionRef{b, nope, c})
	if got := errorsFor(err); len(got) != 2 || got[b.String()] != zfs.ErrDatasetBusy || got[nope.String()] != zfs.ErrDatasetNotExist {
		e.t.Errorf("destroy of a held, an absent and a free snapshot: %v, want busy and not-exist", got)
	}
	if got := e.relNames(fs); !equalStrings(got, []string{"@b"}) {
		e.t.Errorf("after the destroys: %v, want [@b]", got)
	}
}

// zfs destroy of versions of a filesystem that does not exist: each
// snapshot fails opening the filesystem (the batch fails, then each is
// destroyed on its own), each bookmark says it does not exist; every error
// names its version. Measured on OpenZFS 2.1.11 and 2.3.9 (TestDifferential
// found it on both).
func caseDestroyOnMissingFilesystem(e *env) {
	nofs := e.path("nofs")
	a, b, c := zfs.SnapshotRef(nofs, "a"), zfs.SnapshotRef(nofs, "b"), zfs.BookmarkRef(nofs, "c")
	noFS := fmt.Sprintf("cannot open '%s': dataset does not exist", nofs)
	e.wantErr(e.z.Destroy(e.ctx, []zfs.VersionRef{a}), zfs.ErrDatasetNotExist, "destroy", a.String(), noFS)
	e.wantErr(e.z.Destroy(e.ctx, []zfs.VersionRef{c}), zfs.ErrDatasetNotExist, "destroy", c.String(),
		fmt.Sprintf("bookmark '%s' does not exist.", c))
	err := e.z.Destroy(e.ctx, []zfs.VersionRef{c, a, b, a})
	want := map[string]string{a.String(): noFS, b.String(): noFS, c.String(): fmt.Sprintf("bookmark '%s' does not exist.", c)}
	got := map[string]string{}
	for _, sub := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ze *zfs.Error
		if errors.As(sub, &ze) && ze.Kind == zfs.ErrDatasetNotExist {
			got[ze.Dataset] = ze.Msg
		} else {
			got[fmt.Sprint(sub)] = "(not a not-exist *zfs.Error)"
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		e.t.Errorf("destroy of %s, %s, %s, %s: %v, want %v", c, a, b, a, got, want)
	}
}

func caseRollback(e *env) {
	fs := e.create("fs", false)
	e.write(fs, 1)
	a := e.snap(fs, "a")
	e.write(fs, 2)
	e.snap(fs, "b")
	e.bookmark(zfs.SnapshotRef(fs, "b"), "bb")
	e.write(fs, 3)
	err := e.z.Rollback(e.ctx, a.Ref(fs), false)
	e.wantErr(err, zfs.ErrNewerSnapshotsExist, "rollback", "",
		fmt.Sprintf("cannot rollback to '%s@a': more recent snapshots or bookmarks exist…", fs))
	if got := e.relNames(fs); !equalStrings(got, []string{"@a", "@b", "#bb"}) {
		e.t.Errorf("refused rollback changed versions: %v", got)
	}
	// Rolling back to the most recent snapshot needs no -r.
	e.noErr(e.z.Rollback(e.ctx, zfs.SnapshotRef(fs, "b"), false), "rollback to latest")
	e.noErr(e.z.Rollback(e.ctx, a.Ref(fs), true), "rollback -r")
	if got := e.relNames(fs); !equalStrings(got, []string{"@a"}) {
		e.t.Errorf("after rollback -r: %v, want [@a]", got)
	}
	e.snap(fs, "again")
	e.sameContent(a.Ref(fs), zfs.SnapshotRef(fs, "again"))
}

func casePlaceholder(e *env) {
	ph := e.path("ph")
	e.noErr(e.z.CreatePlaceholder(e.ctx, ph, zfs.PlaceholderOptions{}), "create placeholder")
	if fi := e.mustInfo(ph); !fi.Placeholder {
		e.t.Errorf("%s: Placeholder = false", ph)
	}
	child := e.path("ph/child")
	e.noErr(e.z.CreatePlaceholder(e.ctx, child, zfs.PlaceholderOptions{}), "placeholder below a placeholder")
	err := e.z.CreatePlaceholder(e.ctx, e.path("missing/child"), zfs.PlaceholderOptions{})
	if !errors.Is(err, zfs.ErrDatasetNotExist) {
		e.t.Errorf("placeholder without parent: %v, want ErrDatasetNotExist", err)
	}
	e.noErr(e.z.SetUserProperty(e.ctx, ph, zfs.PlaceholderProperty, ""), "inherit placeholder property")
	if fi := e.mustInfo(ph); fi.Placeholder {
		e.t.Errorf("%s: still a placeholder after inheriting the property", ph)
	}
	fs := e.create("fs", false)
	if fi := e.mustInfo(fs); fi.Placeholder {
		e.t.Errorf("ordinary filesystem listed as placeholder")
	}
	e.noErr(e.z.SetUserProperty(e.ctx, fs, zfs.PlaceholderProperty, "on"), "set property")
	if fi := e.mustInfo(fs); !fi.Placeholder {
		e.t.Errorf("%s with %s=on is not a placeholder", fs, zfs.PlaceholderProperty)
	}
}

func caseInvalidNames(e *env) {
	fs := e.create("fs", false)
	s := e.snap(fs, "s")
	check := func(what string, err error) {
		e.t.Helper()
		if !errors.Is(err, zfs.ErrInvalidName) || zfs.KindOf(err) != zfs.ErrInvalidName {
			e.t.Errorf("%s: got %v, want ErrInvalidName", what, err)
		}
	}
	check("snapshot name with @", e.z.Snapshot(e.ctx, fs, "bad@name"))
	check("empty snapshot name", e.z.Snapshot(e.ctx, fs, ""))
	check("bookmark name with /", e.z.Bookmark(e.ctx, s.Ref(fs), "x/y"))
	check("empty hold tag", e.z.Hold(e.ctx, s.Ref(fs), ""))
	check("destroy of an empty name", e.z.Destroy(e.ctx, []zfs.VersionRef{zfs.SnapshotRef(fs, "")}))
	_, err := e.z.ListVersions(e.ctx, zfs.DatasetPath{})
	check("zero dataset path", err)
	_, err = e.z.Send(e.ctx, zfs.SendArgs{FS: fs, To: zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "sp ce\t"}})
	check("send of a bad snapshot name", err)
	if got := e.relNames(fs); !equalStrings(got, []string{"@s"}) {
		e.t.Errorf("invalid calls changed versions: %v", got)
	}
}

func caseMissingDataset(e *env) {
	fs := e.create("fs", false)
	missing := zfs.SnapshotRef(fs, "nonexist")
	err := e.z.Hold(e.ctx, missing, "t")
	e.wantErr(err, zfs.ErrDatasetNotExist, "hold", "", "")
	err = e.z.Bookmark(e.ctx, missing, "b")
	e.wantErr(err, zfs.ErrDatasetNotExist, "bookmark", "", fmt.Sprintf("cannot open '%s': dataset does not exist", missing))
	_, err = e.z.ListVersions(e.ctx, e.path("nofs"))
	e.wantErr(err, zfs.ErrDatasetNotExist, "", "", "")
	_, err = e.z.ListFilesystems(e.ctx, e.path("nofs"))
	e.wantErr(err, zfs.ErrDatasetNotExist, "", "", "")
}

// zfs snapshot of a filesystem that does not exist fails opening it
// (2.1.11 and 2.3.9, found by TestDifferential).
func caseSnapshotOfMissingFilesystem(e *env) {
	fs := e.path("nope")
	ref := zfs.SnapshotRef(fs, "s")
	err := e.z.Snapshot(e.ctx, fs, "s")
	e.wantErr(err, zfs.ErrDatasetNotExist, "snapshot", ref.String(), fmt.Sprintf("cannot open '%s': dataset does not exist", fs))
}
