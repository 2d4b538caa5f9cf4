package zfs

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

func TestValidateDatasetPath(t *testing.T) {
	long := "pool/" + strings.Repeat("a", MaxNameLen-len("pool/")-1)
	tests := []struct {
		name    string
		wantErr string // substring of the error; empty: valid
		pos     int
	}{
		{"pool", "", 0},
		{"pool/a/b", "", 0},
		{"p/with space/x-y_z.w:v", "", 0},
		{long, "", 0},
		{long + "a", "limit is 255", -1},
		{"", "empty name", -1},
		{"/pool", "leading slash", 0},
		{"pool/", "trailing slash", 4},
		{"pool//a", "empty component", 5},
		{"pool/a@s", `unexpected '@'`, 6},
		{"pool/a#b", `unexpected '#'`, 6},
		{"pool/a%b", `invalid character '%'`, 6},
		{"pool/ä", "invalid byte 0xc3", 5},
		{"pool/a\x00", "invalid byte 0x00", 6},
		{"pool/.", "component is '.'", 5},
		{"pool/..", "component is '..'", 5},
		{"1pool", "must begin with a letter", 0},
		{"mirror2", "reserved", 0},
		{"raidz", "reserved", 0},
		{"c0t0", "reserved", 0},
		{"-pool", "must begin with a letter", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateDatasetPath(tc.name)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.Contains(t, err.Error(), "invalid dataset")
			assert.True(t, errors.Is(err, ErrInvalidName))
			var ne *NameError
			require.True(t, errors.As(err, &ne))
			assert.Equal(t, tc.pos, ne.Pos)
		})
	}
}

func TestValidateVersionName(t *testing.T) {
	require.NoError(t, ValidateVersionName(Snapshot, "zrepl_20260101_000000_000"))
	require.NoError(t, ValidateVersionName(Bookmark, "zrepl_CURSOR_G_0123456789abcdef_J_job"))
	for _, bad := range []string{"", "a/b", "a@b", "a#b", "a*b", ".", "..", strings.Repeat("x", MaxNameLen)} {
		err := ValidateVersionName(Snapshot, bad)
		assert.Error(t, err, bad)
		assert.ErrorIs(t, err, ErrInvalidName, bad)
	}
	assert.ErrorContains(t, ValidateVersionName(Bookmark, "x y?"), "bookmark name")
	assert.Error(t, ValidateVersionName(VersionKind(9), "x"))
}

func TestValidateHoldTag(t *testing.T) {
	require.NoError(t, ValidateHoldTag("zrepl_STEP_J_job"))
	require.NoError(t, ValidateHoldTag("weird tag/with@chars#"))
	assert.ErrorContains(t, ValidateHoldTag(""), "empty tag")
	assert.ErrorContains(t, ValidateHoldTag(strings.Repeat("t", MaxNameLen)), "limit is 255")
	assert.ErrorContains(t, ValidateHoldTag("a\nb"), "invalid byte 0x0a at position 1")
}

func TestParseVersionRef(t *testing.T) {
	r, err := ParseVersionRef("pool/a/b@snap1")
	require.NoError(t, err)
	assert.Equal(t, VersionRef{FS: MustDatasetPath("pool/a/b"), Kind: Snapshot, Name: "snap1"}, r)
	assert.Equal(t, "pool/a/b@snap1", r.String())
	require.NoError(t, r.Validate())

	r, err = ParseVersionRef("pool#bm")
	require.NoError(t, err)
	assert.Equal(t, Bookmark, r.Kind)
	assert.Equal(t, "pool#bm", r.String())

	_, err = ParseVersionRef("pool/a")
	assert.ErrorContains(t, err, "no '@' or '#'")
	_, err = ParseVersionRef("pool/a@s@t")
	var ne *NameError
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, 8, ne.Pos, "position counts from the start of the full name")
	assert.Equal(t, "pool/a@s@t", ne.Name)

	// The full name, not just each part, must stay below the limit.
	fs := "pool/" + strings.Repeat("a", 200)
	_, err = ParseVersionRef(fs + "@" + strings.Repeat("s", 60))
	assert.ErrorContains(t, err, "limit is 255")
	assert.Error(t, VersionRef{FS: MustDatasetPath(fs), Kind: Snapshot, Name: strings.Repeat("s", 60)}.Validate())
}

func TestDatasetPathNavigation(t *testing.T) {
	p := MustDatasetPath("pool/a/b")
	assert.Equal(t, "pool", p.Pool())
	assert.Equal(t, 2, p.Depth())
	parent, ok := p.Parent()
	require.True(t, ok)
	assert.Equal(t, "pool/a", parent.String())
	_, ok = MustDatasetPath("pool").Parent()
	assert.False(t, ok)

	root := MustDatasetPath("pool/a")
	assert.True(t, p.HasPrefix(root))
	assert.True(t, root.HasPrefix(root))
	assert.False(t, MustDatasetPath("pool/ab").HasPrefix(root), "prefix is by component, not by string")
	rel, ok := p.TrimPrefix(root)
	require.True(t, ok)
	assert.Equal(t, "b", rel)
	_, ok = root.TrimPrefix(root)
	assert.False(t, ok)

	j, err := MustDatasetPath("sink/client").Join("a/b")
	require.NoError(t, err)
	assert.Equal(t, "sink/client/a/b", j.String())
	_, err = root.Child("x/y")
	require.NoError(t, err)
	_, err = root.Child("bad@")
	assert.ErrorIs(t, err, ErrInvalidName)

	var q DatasetPath
	assert.True(t, q.IsZero())
	require.NoError(t, q.UnmarshalText([]byte("pool/x")))
	assert.Equal(t, "pool/x", q.String())
	assert.Error(t, q.UnmarshalText([]byte("pool/x@")))
	b, _ := q.MarshalText()
	assert.Equal(t, "pool/x", string(b))
	assert.Panics(t, func() { MustDatasetPath("") })
}

// genComponent draws a valid path component.
func genComponent() *rapid.Generator[string] {
	return rapid.StringMatching(`[a-zA-Z0-9_\-:. ]{1,20}`).Filter(func(s string) bool { return s != "." && s != ".." })
}

func TestDatasetPathRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		pool := rapid.StringMatching(`[a-bd-ln-qs-z][a-zA-Z0-9_]{0,10}`).Draw(t, "pool")
		comps := rapid.SliceOfN(genComponent(), 0, 6).Draw(t, "components")
		s := strings.Join(append([]string{pool}, comps...), "/")
		p, err := NewDatasetPath(s)
		if err != nil {
			t.Fatalf("valid path %q rejected: %v", s, err)
		}
		if p.String() != s || p.Depth() != len(comps) {
			t.Fatalf("round trip of %q gave %q depth %d", s, p, p.Depth())
		}
		snap := genComponent().Draw(t, "snap")
		r, err := ParseVersionRef(s + "@" + snap)
		if len(s)+1+len(snap) >= MaxNameLen {
			if err == nil {
				t.Fatalf("over-long %q accepted", s)
			}
			return
		}
		if err != nil || r.FS != p || r.Name != snap {
			t.Fatalf("ParseVersionRef(%q@%q) = %v, %v", s, snap, r, err)
		}
	})
}

// A name is valid exactly when every byte is allowed and the structure
// rules hold; the checker never panics and any error is a *NameError whose
// position points at a byte of the name.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"pool/a", "pool/a@s", "pool#b", "/x", "a//b", "c0", "pool/..", "pool/a@b@c", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		check := func(err error) {
			if err == nil {
				return
			}
			var ne *NameError
			if !errors.As(err, &ne) {
				t.Fatalf("%q: error %v is not a *NameError", s, err)
			}
			if ne.Pos >= len(ne.Name) || ne.Pos < -1 {
				t.Fatalf("%q: position %d outside name %q", s, ne.Pos, ne.Name)
			}
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("%q: not ErrInvalidName", s)
			}
		}
		err := ValidateDatasetPath(s)
		check(err)
		if err == nil {
			if len(s) >= MaxNameLen || strings.ContainsAny(s, "@#") || strings.Contains(s, "//") {
				t.Fatalf("%q accepted", s)
			}
			for i := 0; i < len(s); i++ {
				if s[i] != '/' && !ValidNameChar(s[i]) {
					t.Fatalf("%q accepted with byte %q", s, s[i])
				}
			}
		}
		r, err := ParseVersionRef(s)
		check(err)
		if err == nil && r.String() != s {
			t.Fatalf("ParseVersionRef(%q).String() = %q", s, r.String())
		}
		check(ValidateHoldTag(s))
	})
}

func TestValidateVersionNameDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		_ = ValidateVersionName(Snapshot, "zrepl_20260101_000000_000")
	})
	assert.Zero(t, allocs, "validation runs for every listed version")
}
