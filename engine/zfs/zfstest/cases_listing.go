package zfstest

import (
	"errors"
	"fmt"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("ListTree", caseListTree)
	register("ListTreeSizes", caseListTreeSizes)
}

// ListTree gives each snapshot's sizes (zero for bookmarks), and what
// they estimate of a full and of incremental sends is within a factor of
// two of the stream (plus 64 KiB for a stream's own records).
func caseListTreeSizes(e *env) {
	src, _, a, b, c := e.pair()
	bm := e.bookmark(a.Ref(src), "a_bm")
	tree, err := e.z.ListTree(e.ctx, src)
	e.noErr(err, "list tree")
	if len(tree) != 1 {
		e.t.Fatalf("ListTree of %s:\n%s", src, describeTree(tree))
	}
	l := tree[0]
	if len(l.Sizes) != len(l.Versions) {
		e.t.Fatalf("%d sizes for %d versions", len(l.Sizes), len(l.Versions))
	}
	for i, v := range l.Versions {
		s := l.Sizes[i]
		switch {
		case v.Kind == zfs.Bookmark && s != (zfs.VersionSize{}):
			e.t.Errorf("bookmark %s has sizes %+v", v.RelName(), s)
		case v.Kind == zfs.Snapshot && (s.Written == 0 || s.Referenced == 0 || s.LogicalReferenced == 0):
			e.t.Errorf("snapshot %s has sizes %+v", v.RelName(), s)
		}
	}
	const slack = 64 << 10
	for _, tc := range []struct {
		what string
		args zfs.SendArgs
	}{
		{"full @a", full(src, a)},
		{"@a to @b", incr(src, a, b)},
		{"@a to @c", incr(src, a, c)},
		{"#a_bm to @c", incr(src, bm, c)},
	} {
		est, ok := zfs.EstimateSendSize(l.Versions, l.Sizes, tc.args.From, tc.args.To, false)
		n := e.streamSize(tc.args)
		if !ok || est > 2*n+slack || n > 2*est+slack {
			e.t.Errorf("%s: the listing estimates %d bytes (ok %v), the stream has %d", tc.what, est, ok, n)
		}
	}
}

// ListTree is ListFilesystems and ListVersions of each filesystem in one:
// compared on a tree with snapshots, bookmarks, a hold, a placeholder, an
// encrypted filesystem with its key unloaded, partial receive state and a
// filesystem without versions.
func caseListTree(e *env) {
	src, dst, _, b, _ := e.pair() // root/src@a,b,c and root/sink
	e.noErr(e.z.Hold(e.ctx, b.Ref(src), "keep"), "hold")
	e.bookmark(b.Ref(src), "b_bm")
	e.create("src/child", false)
	e.create("src/child/grand", false)
	e.write(e.path("src/child/grand"), 4)
	e.snap(e.path("src/child/grand"), "g1")
	e.noErr(e.z.CreatePlaceholder(e.ctx, e.path("sink/ph"), zfs.PlaceholderOptions{}), "placeholder")
	enc := e.create("enc", true)
	e.write(enc, 5)
	e.snap(enc, "e1")
	e.noErr(e.h.UnloadKey(e.ctx, enc), "unload key")
	e.interrupt(full(src, b), dst, true) // root/sink/dst: partial state

	tree, err := e.z.ListTree(e.ctx, e.root)
	e.noErr(err, "list tree")
	infos, err := e.z.ListFilesystems(e.ctx, e.root)
	e.noErr(err, "list filesystems")
	var want []zfs.Listing
	for _, fi := range infos {
		want = append(want, zfs.Listing{Info: fi, Versions: e.versions(fi.Path)})
	}
	if got, w := describeTree(tree), describeTree(want); got != w {
		e.t.Errorf("ListTree:\n%s\nListFilesystems and ListVersions:\n%s", got, w)
	}
	// The listing has what it should, not only what the others list.
	for _, l := range tree {
		switch l.Info.Path {
		case src:
			if len(l.Versions) != 4 {
				e.t.Errorf("%s: %d versions, want @a @b #b_bm @c", src, len(l.Versions))
			}
		case dst:
			if l.Info.ReceiveResumeToken == "" {
				e.t.Errorf("%s: no resume token", dst)
			}
		case e.path("sink/ph"):
			if !l.Info.Placeholder {
				e.t.Errorf("placeholder not marked")
			}
		case enc:
			if l.Info.KeyStatus != zfs.KeyStatusUnavailable || !l.Info.Encrypted() {
				e.t.Errorf("%s: %+v", enc, l.Info)
			}
		}
	}
	if len(tree) != 8 { // root, enc, sink, sink/dst, sink/ph, src, src/child, src/child/grand
		e.t.Errorf("ListTree listed %d filesystems:\n%s", len(tree), describeTree(tree))
	}
	// A subtree lists only itself.
	sub, err := e.z.ListTree(e.ctx, e.path("src/child"))
	e.noErr(err, "list subtree")
	if len(sub) != 2 || sub[0].Info.Path != e.path("src/child") || len(sub[1].Versions) != 1 {
		e.t.Errorf("subtree:\n%s", describeTree(sub))
	}
	_, err = e.z.ListTree(e.ctx, e.path("none"))
	if !errors.Is(err, zfs.ErrDatasetNotExist) {
		e.t.Errorf("ListTree of a missing root: %v, want ErrDatasetNotExist", err)
	}
}

func describeTree(tree []zfs.Listing) string {
	var b strings.Builder
	for _, l := range tree {
		fmt.Fprintf(&b, "%+v\n", l.Info)
		for _, v := range l.Versions {
			fmt.Fprintf(&b, "  %s guid=%d txg=%d creation=%d userrefs=%d\n", v.RelName(), v.GUID, v.CreateTXG, v.Creation.Unix(), v.UserRefs)
		}
	}
	return b.String()
}
