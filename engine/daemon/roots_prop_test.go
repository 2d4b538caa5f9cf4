package daemon

import (
	"strings"
	"testing"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/zfs"
)

// Every filesystem a filter matches lies below one of its roots (listing
// the roots finds it), and no root lies below another (nothing is listed
// twice).
func TestRootsCoverTheFilter(t *testing.T) {
	path := rapid.Custom(func(t *rapid.T) string {
		n := rapid.IntRange(1, 4).Draw(t, "depth")
		parts := make([]string, n)
		for i := range parts {
			parts[i] = rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "part")
		}
		return strings.Join(parts, "/")
	})
	rapid.Check(t, func(t *rapid.T) {
		rules := map[string]bool{}
		for _, p := range rapid.SliceOfN(path, 1, 6).Draw(t, "patterns") {
			if rapid.Bool().Draw(t, "subtree") {
				p += "<"
			}
			rules[p] = rapid.Bool().Draw(t, "accept")
		}
		f, err := config.FilterFromMap(rules)
		if err != nil {
			t.Skip(err)
		}
		roots := Roots(f)
		for i, r := range roots {
			for j, q := range roots {
				if i != j && r.HasPrefix(q) {
					t.Fatalf("root %s lies below root %s", r, q)
				}
			}
		}
		for _, p := range rapid.SliceOfN(path, 1, 20).Draw(t, "filesystems") {
			fs := zfs.MustDatasetPath(p)
			if !f.Match(fs) {
				continue
			}
			covered := false
			for _, r := range roots {
				covered = covered || fs.HasPrefix(r)
			}
			if !covered {
				t.Fatalf("%s matches %v but lies below no root of %v", fs, rules, roots)
			}
		}
	})
}
