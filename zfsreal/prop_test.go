package zfsreal

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
)

// hostile draws strings from characters that are valid in names and
// characters that would break a command line or a listing.
func hostile() *rapid.Generator[string] {
	chars := []string{"a", "Z", "0", "-", "_", ".", ":", " ", "@", "#", "/", ",", "=", "\t", "\n", "\x00", "é", "-r", "--"}
	bad := rapid.Custom(func(t *rapid.T) string {
		parts := rapid.SliceOfN(rapid.SampledFrom(chars), 0, 6).Draw(t, "parts")
		return strings.Join(parts, "")
	})
	// Mostly plausible names, some starting with '-', so that valid input
	// is drawn about as often as invalid.
	plausible := rapid.StringMatching(`-?[a-z][a-z0-9_.: -]{0,6}`)
	return rapid.OneOf(plausible, plausible, bad)
}

// flagsWithValue are the options this package passes that take a value.
var flagsWithValue = map[string]bool{"-o": true, "-x": true, "-i": true, "-t": true}

// knownFlags are the options each subcommand may get from this package.
var knownFlags = map[string][]string{
	"hold":     {"--"},
	"release":  {"--"},
	"rollback": {"-r"},
	"recv":     {"-s", "-u", "-F", "-o", "-x", "-A"},
	"create":   {"-o"},
	"send":     {"-w", "-c", "-L", "-e", "-i", "-t", "-nvP"},
}

// checkArgv fails if an argument zfs would parse as an option is not one
// of the subcommand's known flags, or a flag's value looks like an option.
func checkArgv(args []string) error {
	if len(args) == 0 {
		return errors.New("empty command line")
	}
	allowed := knownFlags[args[0]]
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" && slices.Contains(allowed, "--") {
			return nil // the rest is positional by definition
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		if !slices.Contains(allowed, a) {
			return fmt.Errorf("argument %d %q would be read as an option in %q", i, a, args)
		}
		if flagsWithValue[a] {
			i++
			if i < len(args) && strings.HasPrefix(args[i], "-") {
				return fmt.Errorf("value %q of %s looks like an option in %q", args[i], a, args)
			}
		}
	}
	return nil
}

// TestPropNamesNeverBecomeOptions: whatever the names, either they are
// refused before anything runs, or every one of them reaches zfs as the
// positional argument it is meant to be.
func TestPropNamesNeverBecomeOptions(t *testing.T) {
	f := newFake(t) // no rules: every command fails, which is fine here
	c := f.cli()
	validRuns, invalidRuns := 0, 0
	rapid.Check(t, func(rt *rapid.T) {
		before := len(f.calls())
		name := hostile().Draw(rt, "name")
		other := hostile().Draw(rt, "other")
		prop := hostile().Draw(rt, "prop")
		ref := snap(name)

		refValid := ref.Validate() == nil
		otherValid := zfs.ValidateVersionName(zfs.Bookmark, other) == nil
		tagValid := zfs.ValidateHoldTag(other) == nil
		expectRun := 0

		op := rapid.IntRange(0, 6).Draw(rt, "op")
		var err error
		valid := false
		switch op {
		case 0:
			err, valid = c.Snapshot(ctx, fs, name), refValid
		case 1:
			err, valid = c.Bookmark(ctx, ref, other), refValid && otherValid
		case 2:
			err, valid = c.Hold(ctx, ref, other), refValid && tagValid
		case 3:
			err, valid = c.Release(ctx, ref, other), refValid && tagValid
		case 4:
			err = c.Destroy(ctx, []zfs.VersionRef{ref, book(other)})
			valid = refValid && otherValid
			expectRun = 2
		case 5:
			err = c.SetUserProperty(ctx, fs, prop, other)
			valid = checkPropName(prop, true) == nil && checkPropValue(prop, other) == nil
		case 6:
			err = c.Receive(ctx, fs, bytes.NewReader(nil), zfs.RecvOptions{
				SetProperties: map[string]string{prop: name}, InheritProperties: []string{other}})
			valid = checkPropName(prop, false) == nil && checkPropValue(prop, name) == nil &&
				checkPropName(other, false) == nil && other != prop
		}
		if expectRun == 0 {
			expectRun = 1
		}
		calls := f.calls()[before:]
		if valid {
			validRuns++
		} else {
			invalidRuns++
		}
		if !valid {
			if zfs.KindOf(err) != zfs.ErrInvalidName {
				rt.Fatalf("op %d: invalid input gave %v", op, err)
			}
			if len(calls) != 0 {
				rt.Fatalf("op %d: invalid input ran %q", op, calls[0].Args)
			}
			return
		}
		if zfs.KindOf(err) == zfs.ErrInvalidName {
			rt.Fatalf("op %d: valid input refused: %v", op, err)
		}
		if len(calls) != expectRun {
			rt.Fatalf("op %d: %d commands ran, want %d", op, len(calls), expectRun)
		}
		for _, call := range calls {
			if err := checkArgv(call.Args); err != nil {
				rt.Fatal(err)
			}
		}
	})
	// Both sides of the property must have been exercised.
	require.Positive(t, validRuns, "no valid input was drawn")
	require.Positive(t, invalidRuns, "no invalid input was drawn")
	t.Logf("%d valid, %d invalid inputs", validRuns, invalidRuns)
}

func TestCheckArgvCatchesOptions(t *testing.T) {
	require.Error(t, checkArgv([]string{"snapshot", "-r", "p/a@b"}))
	require.Error(t, checkArgv([]string{"hold", "-r", "t", "p/a@b"}))
	require.Error(t, checkArgv([]string{"recv", "-o", "-x", "p/a"}))
	require.NoError(t, checkArgv([]string{"hold", "--", "-r", "p/a@b"}))
	require.NoError(t, checkArgv([]string{"recv", "-s", "-u", "-o", "a=-b", "p/a"}))
}

// component draws a valid dataset path component.
func component() *rapid.Generator[string] {
	return rapid.StringMatching(`[a-z][a-zA-Z0-9_.: -]{0,6}`).Filter(func(s string) bool {
		return zfs.ValidateDatasetPath("p/"+s) == nil
	})
}

// TestPropFilesystemListing: any set of filesystems, listed in any order
// the way zfs prints them, parses back to the same infos, parents first.
func TestPropFilesystemListing(t *testing.T) {
	root := zfs.MustDatasetPath("pool/r")
	rapid.Check(t, func(rt *rapid.T) {
		paths := map[string]bool{root.String(): true}
		n := rapid.IntRange(0, 12).Draw(rt, "n")
		for range n {
			// Below root or below an existing path.
			existing := slices.Sorted(func(yield func(string) bool) {
				for p := range paths {
					if !yield(p) {
						return
					}
				}
			})
			parent := rapid.SampledFrom(existing).Draw(rt, "parent")
			paths[parent+"/"+component().Draw(rt, "comp")] = true
		}
		var want []zfs.FilesystemInfo
		var rows []string
		for p := range paths {
			info := zfs.FilesystemInfo{
				Path:        zfs.MustDatasetPath(p),
				GUID:        rapid.Uint64().Draw(rt, "guid"),
				Encryption:  "off",
				KeyStatus:   zfs.KeyStatusNone,
				Placeholder: rapid.Bool().Draw(rt, "placeholder"),
			}
			if rapid.Bool().Draw(rt, "token") {
				info.ReceiveResumeToken = "1-" + rapid.StringMatching(`[0-9a-f]{1,20}`).Draw(rt, "tok")
			}
			if rapid.Bool().Draw(rt, "encrypted") {
				info.Encryption = "aes-256-gcm"
				info.EncryptionRoot = root.String()
				info.KeyStatus = rapid.SampledFrom([]zfs.KeyStatus{zfs.KeyStatusAvailable, zfs.KeyStatusUnavailable}).Draw(rt, "ks")
			}
			want = append(want, info)
			orDash := func(s string) string {
				if s == "" {
					return "-"
				}
				return s
			}
			ks := string(info.KeyStatus)
			if ks == "none" {
				ks = "-"
			}
			ph := rapid.SampledFrom([]string{"-", "off"}).Draw(rt, "unset")
			if info.Placeholder {
				ph = "on"
			}
			rows = append(rows, strings.Join([]string{p, fmt.Sprint(info.GUID), orDash(info.ReceiveResumeToken),
				info.Encryption, orDash(info.EncryptionRoot), ks, ph}, "\t"))
		}
		rows = rapid.Permutation(rows).Draw(rt, "order")
		got, err := parseFilesystems([]byte(strings.Join(rows, "\n")+"\n"), root)
		if err != nil {
			rt.Fatal(err)
		}
		if len(got) != len(want) {
			rt.Fatalf("%d rows, want %d", len(got), len(want))
		}
		pos := map[string]int{}
		for i, g := range got {
			pos[g.Path.String()] = i
		}
		for _, w := range want {
			i, ok := pos[w.Path.String()]
			if !ok || got[i] != w {
				rt.Fatalf("row for %s: got %+v, want %+v", w.Path, got[i], w)
			}
			if parent, ok := w.Path.Parent(); ok && w.Path != root {
				if pos[parent.String()] >= i {
					rt.Fatalf("%s listed before its parent", w.Path)
				}
			}
		}
		if got[0].Path != root {
			rt.Fatalf("root not first: %s", got[0].Path)
		}
	})
}

// TestPropVersionListing: any versions, in any order, come back ordered
// by createtxg, snapshots before bookmarks of the same txg.
func TestPropVersionListing(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(0, 15).Draw(rt, "n")
		seen := map[string]bool{}
		var rows []string
		var want []zfs.FilesystemVersion
		for range n {
			kind := rapid.SampledFrom([]zfs.VersionKind{zfs.Snapshot, zfs.Bookmark}).Draw(rt, "kind")
			name := component().Draw(rt, "name")
			ref := zfs.VersionRef{FS: fs, Kind: kind, Name: name}
			if seen[ref.String()] {
				continue
			}
			seen[ref.String()] = true
			v := zfs.FilesystemVersion{Kind: kind, Name: name,
				GUID:      rapid.Uint64().Draw(rt, "guid"),
				CreateTXG: rapid.Uint64Range(1, 5).Draw(rt, "txg"),
				Creation:  time.Unix(rapid.Int64Range(0, 1<<40).Draw(rt, "creation"), 0).UTC(),
			}
			refs := "-"
			if kind == zfs.Snapshot {
				v.UserRefs = rapid.Uint64Range(0, 3).Draw(rt, "refs")
				refs = fmt.Sprint(v.UserRefs)
			}
			want = append(want, v)
			rows = append(rows, fmt.Sprintf("%s\t%d\t%d\t%d\t%s", ref, v.GUID, v.CreateTXG, v.Creation.Unix(), refs))
		}
		rows = rapid.Permutation(rows).Draw(rt, "order")
		got, err := parseVersions([]byte(strings.Join(rows, "\n")), fs)
		if err != nil {
			rt.Fatal(err)
		}
		if len(got) != len(want) {
			rt.Fatalf("%d versions, want %d", len(got), len(want))
		}
		for i := 1; i < len(got); i++ {
			a, b := got[i-1], got[i]
			if a.CreateTXG > b.CreateTXG || a.CreateTXG == b.CreateTXG && a.Kind == zfs.Bookmark && b.Kind == zfs.Snapshot {
				rt.Fatalf("out of order: %+v before %+v", a, b)
			}
		}
		slices.SortFunc(want, compareVersions)
		for i := range want {
			if got[i] != want[i] {
				rt.Fatalf("version %d: got %+v, want %+v", i, got[i], want[i])
			}
		}
	})
}

// TestPropTailBuffer: the buffer keeps exactly the tail of what was
// written, from a line start once something was dropped, and says so.
func TestPropTailBuffer(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		limit := rapid.IntRange(1, 64).Draw(rt, "limit")
		tb := newTailBuffer(limit)
		var all []byte
		for _, w := range rapid.SliceOf(rapid.SliceOfN(rapid.SampledFrom([]byte("ab\n")), 0, 80)).Draw(rt, "writes") {
			n, err := tb.Write(w)
			if n != len(w) || err != nil {
				rt.Fatalf("Write = %d, %v", n, err)
			}
			all = append(all, w...)
		}
		got := tb.String()
		if len(all) <= limit {
			if got != string(all) {
				rt.Fatalf("got %q, want %q", got, all)
			}
			return
		}
		header, kept, ok := strings.Cut(got, "]\n")
		if !ok || !strings.HasPrefix(header, "[") {
			rt.Fatalf("no header in %q", got)
		}
		var dropped int
		fmt.Sscanf(header, "[%d bytes of stderr dropped", &dropped)
		if dropped+len(kept) != len(all) || !strings.HasSuffix(string(all), kept) || len(kept) > limit {
			rt.Fatalf("kept %q (dropped %d) of %q with limit %d", kept, dropped, all, limit)
		}
	})
}

func FuzzParseFilesystems(f *testing.F) {
	f.Add([]byte("pool/r\t1\t-\toff\t-\t-\t-\npool/r/a\t2\t1-ab\taes-256-gcm\tpool/r/a\tavailable\ton\n"))
	f.Add([]byte("pool/r\t1\n"))
	root := zfs.MustDatasetPath("pool/r")
	f.Fuzz(func(t *testing.T, out []byte) {
		infos, err := parseFilesystems(out, root)
		if err != nil {
			return
		}
		if len(infos) == 0 || infos[0].Path != root {
			t.Fatalf("parsed without root first: %+v", infos)
		}
		for _, in := range infos {
			if !in.Path.HasPrefix(root) {
				t.Fatalf("%s outside root", in.Path)
			}
		}
	})
}

func FuzzParseVersions(f *testing.F) {
	f.Add([]byte("pool/a/fs@s1\t11\t10\t1700000000\t0\npool/a/fs#b\t11\t10\t1700000000\t-\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		vs, err := parseVersions(out, fs)
		if err != nil {
			return
		}
		for i := 1; i < len(vs); i++ {
			if compareVersions(vs[i-1], vs[i]) > 0 {
				t.Fatalf("out of order: %+v", vs)
			}
		}
		for _, v := range vs {
			if err := v.Ref(fs).Validate(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParseSendSize(f *testing.F) {
	f.Add("full\tp/fs@a\t10\nsize\t10\n")
	f.Fuzz(func(t *testing.T, out string) {
		if n, ok := parseSendSize(out); ok && n < 0 {
			t.Fatalf("negative size %d", n)
		}
	})
}
