package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
