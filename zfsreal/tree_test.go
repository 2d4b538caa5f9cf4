package zfsreal

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
)

// TestPropTreeListing: one listing of filesystems, snapshots and bookmarks
// in any order, the way zfs list -t filesystem,volume,snapshot,bookmark
// prints it ("-" where a property does not apply), parses to what
// parseFilesystems and parseVersions give for the same datasets.
func TestPropTreeListing(t *testing.T) {
	root := zfs.MustDatasetPath("pool/r")
	rapid.Check(t, func(rt *rapid.T) {
		paths := []string{root.String()}
		for range rapid.IntRange(0, 6).Draw(rt, "n") {
			p := rapid.SampledFrom(paths).Draw(rt, "parent") + "/" + component().Draw(rt, "comp")
			if !slices.Contains(paths, p) {
				paths = append(paths, p)
			}
		}
		var treeRows, fsRows []string
		versionRows := map[string][]string{}
		sizes := map[string]zfs.VersionSize{} // by full name
		for _, p := range paths {
			guid := rapid.Uint64().Draw(rt, "guid")
			token := rapid.SampledFrom([]string{"-", "1-abc"}).Draw(rt, "token")
			enc, encRoot, ks := "off", "-", "-"
			if rapid.Bool().Draw(rt, "encrypted") {
				enc, encRoot, ks = "aes-256-gcm", p, rapid.SampledFrom([]string{"available", "unavailable"}).Draw(rt, "ks")
			}
			ph := rapid.SampledFrom([]string{"-", "on", "off"}).Draw(rt, "placeholder")
			fsRows = append(fsRows, strings.Join([]string{p, fmt.Sprint(guid), token, enc, encRoot, ks, ph}, "\t"))
			treeRows = append(treeRows, strings.Join([]string{p, fmt.Sprint(guid), "7", "1700000000", "-", token, enc, encRoot, ks, ph, "4096", "8192", "8192"}, "\t"))
			for i := range rapid.IntRange(0, 4).Draw(rt, "versions") {
				kind := rapid.SampledFrom([]string{"@", "#"}).Draw(rt, "kind")
				name := fmt.Sprintf("%s%sv%d", p, kind, i)
				refs := "-"
				if kind == "@" {
					refs = fmt.Sprint(rapid.IntRange(0, 2).Draw(rt, "refs"))
				}
				cols := []string{name, fmt.Sprint(rapid.Uint64().Draw(rt, "vguid")), fmt.Sprint(rapid.IntRange(1, 9).Draw(rt, "txg")),
					fmt.Sprint(rapid.Int64Range(0, 1<<40).Draw(rt, "creation")), refs}
				versionRows[p] = append(versionRows[p], strings.Join(cols, "\t"))
				// A snapshot's row shows its filesystem's inherited
				// properties, a bookmark's none.
				var size zfs.VersionSize
				if kind == "@" {
					size = zfs.VersionSize{Written: rapid.Uint64().Draw(rt, "written"), Referenced: rapid.Uint64().Draw(rt, "referenced"),
						LogicalReferenced: rapid.Uint64().Draw(rt, "logical")}
				}
				sizes[name] = size
				rest := []string{"-", enc, encRoot, "-", ph, fmt.Sprint(size.Written), fmt.Sprint(size.Referenced), fmt.Sprint(size.LogicalReferenced)}
				if kind == "#" {
					rest = []string{"-", "-", "-", "-", "-", "-", "-", "-"}
				}
				treeRows = append(treeRows, strings.Join(append(cols, rest...), "\t"))
			}
		}
		treeRows = rapid.Permutation(treeRows).Draw(rt, "order")
		got, err := parseTree([]byte(strings.Join(treeRows, "\n")+"\n"), root)
		if err != nil {
			rt.Fatal(err)
		}
		infos, err := parseFilesystems([]byte(strings.Join(fsRows, "\n")), root)
		if err != nil {
			rt.Fatal(err)
		}
		if len(got) != len(infos) {
			rt.Fatalf("%d filesystems, want %d", len(got), len(infos))
		}
		for i, info := range infos {
			vs, err := parseVersions([]byte(strings.Join(versionRows[info.Path.String()], "\n")), info.Path)
			if err != nil {
				rt.Fatal(err)
			}
			if got[i].Info != info || !slices.Equal(got[i].Versions, vs) {
				rt.Fatalf("filesystem %d: got %+v, want %+v with %+v", i, got[i], info, vs)
			}
			if len(got[i].Sizes) != len(vs) {
				rt.Fatalf("filesystem %d: %d sizes for %d versions", i, len(got[i].Sizes), len(vs))
			}
			for j, v := range got[i].Versions {
				if want := sizes[v.Ref(info.Path).String()]; got[i].Sizes[j] != want {
					rt.Fatalf("%s: size %+v, want %+v", v.Ref(info.Path), got[i].Sizes[j], want)
				}
			}
		}
	})
	for _, bad := range []string{
		"", // root missing
		"pool/x\t1\t1\t1\t-\t-\toff\t-\t-\t-\t1\t1\t1",                                                 // outside root
		"pool/r\t1\t1\t1\t-\t-\toff\t-\t-\t-\t1\t1\t1\npool/r/a@s\t2\t1\t1\t0\t-\t-\t-\t-\t-\t1\t1\t1", // a version of an unlisted filesystem
		"pool/r\t1\t1\t1\t-\t-\toff\t-\t-\t-\t1\t1\t1\npool/r\t1\t1\t1\t-\t-\toff\t-\t-\t-\t1\t1\t1",   // twice
		"pool/r\t1\t1\t1\t-\t-\toff\t-\t-\t-",                                                          // 10 fields
		"pool/r\t1\t1\t1\t-\t-\toff\t-\t-\t-\t1\t1\t1\npool/r@s\t2\t1\t1\t0\t-\t-\t-\t-\t-\t-\t1\t1",   // a snapshot without its size
	} {
		if _, err := parseTree([]byte(bad), root); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseTree(f *testing.F) {
	root := zfs.MustDatasetPath("pool/r")
	f.Add([]byte("pool/r\t1\t5\t1700000000\t-\t-\toff\t-\t-\t-\t0\t1\t1\npool/r@s1\t11\t10\t1700000000\t0\t-\toff\t-\t-\t-\t5\t6\t7\npool/r#b\t11\t10\t1700000000\t-\t-\t-\t-\t-\t-\t-\t-\t-\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		tree, err := parseTree(out, root)
		if err != nil {
			return
		}
		if len(tree) == 0 || tree[0].Info.Path != root {
			t.Fatalf("parsed without root first: %+v", tree)
		}
		for _, l := range tree {
			if len(l.Sizes) != len(l.Versions) {
				t.Fatalf("%d sizes for %d versions", len(l.Sizes), len(l.Versions))
			}
			for i, v := range l.Versions {
				if err := v.Ref(l.Info.Path).Validate(); err != nil {
					t.Fatal(err)
				}
				if i > 0 && compareVersions(l.Versions[i-1], v) > 0 {
					t.Fatalf("out of order: %+v", l.Versions)
				}
			}
		}
	})
}

// perSnapshot reads zfs hold's and release's per-snapshot lines.
func TestPerSnapshot(t *testing.T) {
	batch := []string{"p/fs@a", "p/fs@b", "p/gone@x", "p/gone@y", "p/fs@c"}
	stderr := "cannot hold snapshot 'p/fs@a': tag already exists on this dataset\n" +
		"cannot open 'p/gone': dataset does not exist\n" +
		"cannot hold snapshot 'p/fs@c': dataset does not exist\n"
	cmdErr := &zfs.Error{Op: "hold", Dataset: "p/fs@a", Msg: stderr, ExitStatus: 1}
	errs := perSnapshot("hold", batch, stderr, cmdErr)
	var got []string
	for _, err := range errs {
		ze := err.(*zfs.Error)
		got = append(got, fmt.Sprintf("%s %v %d", ze.Dataset, ze.Kind, ze.ExitStatus))
	}
	want := []string{
		"p/fs@a hold tag already exists 1",
		"p/gone@x dataset does not exist 1",
		"p/gone@y dataset does not exist 1",
		"p/fs@c dataset does not exist 1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// Nothing attributable: the command's error stands.
	if errs := perSnapshot("hold", batch, "usage:\n\thold ...\n", cmdErr); len(errs) != 1 || errs[0] != cmdErr {
		t.Errorf("unattributed: %v", errs)
	}
}
