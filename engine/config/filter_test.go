package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
)

func TestFilterMatch(t *testing.T) {
	type probe struct {
		path string
		want bool
	}
	for _, tc := range []struct {
		name   string
		rules  map[string]bool
		probes []probe
	}{
		{"zrepl docs example", map[string]bool{"tank<": true, "tank/foo<": false, "tank/foo/bar": true}, []probe{
			{"tank/foo/bar/loo", false}, // rule 2
			{"tank/bar", true},          // rule 1
			{"tank/foo/bar", true},      // rule 3
			{"zroot", false},            // no rule
			{"tank/var/log", true},      // rule 1
			{"tank", true},
			{"tank/foo", false},
		}},
		{"everything", map[string]bool{"<": true}, []probe{
			{"a", true}, {"a/b/c", true},
		}},
		{"everything but a subtree", map[string]bool{"<": true, "tmp<": false, "tank/tmp<": false}, []probe{
			{"tank", true}, {"tmp", false}, {"tmp/x", false}, {"tank/tmp/y", false}, {"tank/tmpx", true},
		}},
		{"exact only", map[string]bool{"pool/a": true}, []probe{
			{"pool/a", true}, {"pool/a/b", false}, {"pool", false}, {"pool/ab", false},
		}},
		{"exact wins over subtree at the same path", map[string]bool{"pool/a<": true, "pool/a": false}, []probe{
			{"pool/a", false}, {"pool/a/b", true},
		}},
		{"exact include inside excluded subtree", map[string]bool{"pool<": false, "pool/keep": true}, []probe{
			{"pool", false}, {"pool/keep", true}, {"pool/keep/child", false},
		}},
		{"deeper subtree wins whatever its order", map[string]bool{"a/b/c<": true, "a<": false, "a/b<": true}, []probe{
			{"a", false}, {"a/x", false}, {"a/b", true}, {"a/b/c/d", true},
		}},
		{"prefix is by component, not by string", map[string]bool{"pool/data<": true}, []probe{
			{"pool/data", true}, {"pool/data2", false}, {"pool/database/x", false},
		}},
		{"empty filter", map[string]bool{}, []probe{{"pool", false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := FilterFromMap(tc.rules)
			require.NoError(t, err)
			for _, p := range tc.probes {
				assert.Equal(t, p.want, f.Match(zfs.MustDatasetPath(p.path)), "Match(%s) with %v", p.path, f)
			}
		})
	}
}

func TestNilFilterMatchesNothing(t *testing.T) {
	var f *Filter
	assert.False(t, f.Match(zfs.MustDatasetPath("pool")))
	assert.Empty(t, f.Rules())
}

func TestParseFilterPattern(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    FilterRule
		wantErr string
	}{
		{in: "<", want: FilterRule{Subtree: true}},
		{in: "pool", want: FilterRule{Path: zfs.MustDatasetPath("pool")}},
		{in: "pool/a b<", want: FilterRule{Path: zfs.MustDatasetPath("pool/a b"), Subtree: true}},
		{in: "", wantErr: `empty filter pattern (use "<" to match every filesystem)`},
		{in: "pool<<", wantErr: `invalid filter pattern "pool<<": '<' may only end a pattern`},
		{in: "pool/<", wantErr: `invalid filter pattern "pool/<": invalid dataset "pool/": trailing slash at position 4`},
		{in: "pool@snap", wantErr: `invalid filter pattern "pool@snap": invalid dataset "pool@snap": unexpected '@' in a dataset path at position 4`},
	} {
		got, err := ParseFilterPattern(tc.in)
		if tc.wantErr != "" {
			assert.EqualError(t, err, tc.wantErr, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
		assert.Equal(t, tc.in, got.Pattern())
	}
}

func TestNewFilterRejectsDuplicatePatterns(t *testing.T) {
	r := FilterRule{Path: zfs.MustDatasetPath("pool"), Subtree: true, Accept: true}
	_, err := NewFilter([]FilterRule{r, r})
	assert.EqualError(t, err, `filter pattern "pool<" appears twice`)
}

func TestFilterFromMapReportsEveryBadPattern(t *testing.T) {
	_, err := FilterFromMap(map[string]bool{"a<b": true, "": false, "ok": true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"a<b"`)
	assert.Contains(t, err.Error(), `empty filter pattern`)
}

func TestFilterOverlap(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b map[string]bool
		want bool
	}{
		{"disjoint subtrees", map[string]bool{"pool/a<": true}, map[string]bool{"pool/b<": true}, false},
		{"nested subtrees", map[string]bool{"pool<": true}, map[string]bool{"pool/b/c<": true}, true},
		{"nested but excluded", map[string]bool{"pool<": true, "pool/b<": false}, map[string]bool{"pool/b/c<": true}, false},
		{"exact exclusion leaves children", map[string]bool{"p<": true, "p/x": false}, map[string]bool{"p/x<": true}, true},
		{"only the excluded exact dataset", map[string]bool{"p<": true, "p/x": false}, map[string]bool{"p/x": true}, false},
		{"everything vs everything", map[string]bool{"<": true}, map[string]bool{"<": true}, true},
		{"everything minus a pool vs that pool", map[string]bool{"<": true, "p<": false}, map[string]bool{"p<": true}, false},
		{"everything minus a pool vs another", map[string]bool{"<": true, "p<": false}, map[string]bool{"q/r": true}, true},
		{"probe name taken by a rule", map[string]bool{"x<": true, "x/x": false}, map[string]bool{"x/x<": true, "x/x/xx": false}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := FilterFromMap(tc.a)
			require.NoError(t, err)
			b, err := FilterFromMap(tc.b)
			require.NoError(t, err)
			w, got := a.Overlap(b)
			assert.Equal(t, tc.want, got)
			w2, got2 := b.Overlap(a)
			assert.Equal(t, tc.want, got2, "symmetric")
			if got {
				assert.True(t, a.Match(w) && b.Match(w), "witness %s is accepted by both", w)
				assert.True(t, a.Match(w2) && b.Match(w2), "witness %s is accepted by both", w2)
			}
		})
	}
}

// Overlap agrees with brute force over a small universe of datasets.
func TestFilterOverlapProperty(t *testing.T) {
	comps := []string{"a", "b", "x"}
	var universe []string
	for _, c1 := range comps {
		universe = append(universe, c1)
		for _, c2 := range comps {
			universe = append(universe, c1+"/"+c2)
			for _, c3 := range comps {
				universe = append(universe, c1+"/"+c2+"/"+c3)
			}
		}
	}
	genFilter := rapid.Custom(func(t *rapid.T) *Filter {
		m := map[string]bool{}
		n := rapid.IntRange(0, 4).Draw(t, "n")
		for i := 0; i < n; i++ {
			pat := rapid.SampledFrom(universe).Draw(t, "path")
			if rapid.Bool().Draw(t, "subtree") {
				pat += "<"
			}
			m[pat] = rapid.Bool().Draw(t, "accept")
		}
		if rapid.Bool().Draw(t, "all") {
			m["<"] = rapid.Bool().Draw(t, "acceptAll")
		}
		f, err := FilterFromMap(m)
		if err != nil {
			t.Fatal(err)
		}
		return f
	})
	rapid.Check(t, func(t *rapid.T) {
		a, b := genFilter.Draw(t, "a"), genFilter.Draw(t, "b")
		// Every rule path, a child "y" of each (no rule names a "y") and
		// the pool "y" reach every class of dataset.
		want := false
		for _, u := range append(universe, "y") {
			for _, c := range []string{u, u + "/y"} {
				p := zfs.MustDatasetPath(c)
				if a.Match(p) && b.Match(p) {
					want = true
				}
			}
		}
		if _, got := a.Overlap(b); got != want {
			t.Fatalf("Overlap(%v, %v) = %v, brute force says %v", a, b, got, want)
		}
	})
}
