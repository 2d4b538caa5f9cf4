package endpoint

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
)

func TestNewJobID(t *testing.T) {
	for _, ok := range []string{"prod_to_backup", "a", "job-1.2:x", "has space", strings.Repeat("j", MaxJobIDLen)} {
		_, err := NewJobID(ok)
		require.NoError(t, err, ok)
	}
	for bad, reason := range map[string]string{
		"":                                 "empty",
		"tab\there":                        `character '\t' at position 3`,
		"slash/y":                          `character '/' at position 5`,
		"at@":                              `character '@'`,
		"hash#":                            `character '#'`,
		strings.Repeat("j", MaxJobIDLen+1): "the limit is 200",
	} {
		_, err := NewJobID(bad)
		require.Error(t, err, bad)
		assert.ErrorIs(t, err, ErrInvalidJobID)
		assert.ErrorContains(t, err, reason)
		assert.ErrorContains(t, err, "hold tags and bookmark names", "the error says why the rule exists")
	}
	assert.Panics(t, func() { MustJobID("") })
}

func TestDerivedNames(t *testing.T) {
	job := MustJobID("push")
	assert.Equal(t, "zrepl_STEP_J_push", StepHoldTag(job))
	assert.Equal(t, "zrepl_last_received_J_push", LastReceivedHoldTag(job))
	assert.Equal(t, "zrepl_STEP_G_00000000000000ff_J_push", StepBookmarkName(0xff, job))
	assert.Equal(t, "zrepl_CURSOR_G_ab88464e08d6da2c_J_push", CursorBookmarkName(0xab88464e08d6da2c, job))
	// zrepl's name, with its two underscores before G.
	assert.Equal(t, "zrepl_CURSORTENTATIVE__G_ab88464e08d6da2c_J_push", TentativeCursorBookmarkName(0xab88464e08d6da2c, job))
	p, ok := ParseBookmarkName("zrepl_CURSORTENTATIVE__G_ab88464e08d6da2c_J_my job")
	require.True(t, ok)
	assert.Equal(t, ParsedName{Kind: TentativeCursor, Job: MustJobID("my job"), GUID: 0xab88464e08d6da2c}, p)

	p, ok = ParseBookmarkName(CursorV1BookmarkName)
	require.True(t, ok)
	assert.Equal(t, ReplicationCursorV1, p.Kind)

	for _, foreign := range []string{
		"zrepl_CURSOR_G_AB88464E08D6DA2C_J_push", // upper-case hex is not ours
		"zrepl_CURSOR_G_ab88464e08d6da2_J_push",  // 15 digits
		"zrepl_CURSOR_G_ab88464e08d6da2c_J_",     // no job
		"zrepl_CURSOR_G_ab88464e08d6da2c_X_push",
		"zrepl_CURSOR_G_zz88464e08d6da2c_J_push",
		"manual_bookmark",
	} {
		_, ok := ParseBookmarkName(foreign)
		assert.False(t, ok, foreign)
	}
	for _, foreign := range []string{"zrepl_STEP_J_", "zrepl_STEP_J_a/b", "keep", "zrepl_last_received_J_"} {
		_, ok := ParseHoldTag(foreign)
		assert.False(t, ok, foreign)
	}
}

// Every valid job ID yields valid ZFS names that parse back to their owner.
// A job called "my job", as zrepl allows, owns the holds and cursors it
// left: zrepl v0.7.0 names them as we do.
func TestJobNameWithSpaces(t *testing.T) {
	job := MustJobID("my job")
	for tag, kind := range map[string]AbstractionKind{"zrepl_STEP_J_my job": StepHold, "zrepl_last_received_J_my job": LastReceivedHold} {
		p, ok := ParseHoldTag(tag)
		require.True(t, ok, tag)
		assert.Equal(t, ParsedName{Kind: kind, Job: job}, p)
	}
	p, ok := ParseBookmarkName("zrepl_CURSOR_G_ab88464e08d6da2c_J_my job")
	require.True(t, ok)
	assert.Equal(t, ParsedName{Kind: ReplicationCursorV2, Job: job, GUID: 0xab88464e08d6da2c}, p)
	assert.Equal(t, "zrepl_CURSOR_G_ab88464e08d6da2c_J_my job", CursorBookmarkName(0xab88464e08d6da2c, job))
	require.NoError(t, zfs.ValidateVersionName(zfs.Bookmark, CursorBookmarkName(1, job)))
}

func TestDerivedNamesRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		name := rapid.StringMatching(`[a-zA-Z0-9_.: -]{1,200}`).Draw(t, "job")
		job, err := NewJobID(name)
		if err != nil {
			t.Fatalf("valid job %q rejected: %v", name, err)
		}
		guid := rapid.Uint64().Draw(t, "guid")
		for _, c := range []struct {
			name string
			kind AbstractionKind
		}{{StepBookmarkName(guid, job), StepBookmark}, {CursorBookmarkName(guid, job), ReplicationCursorV2}, {TentativeCursorBookmarkName(guid, job), TentativeCursor}} {
			if err := zfs.ValidateVersionName(zfs.Bookmark, c.name); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			p, ok := ParseBookmarkName(c.name)
			if !ok || p != (ParsedName{Kind: c.kind, Job: job, GUID: guid}) {
				t.Fatalf("ParseBookmarkName(%q) = %+v, %v", c.name, p, ok)
			}
		}
		for _, c := range []struct {
			tag  string
			kind AbstractionKind
		}{{StepHoldTag(job), StepHold}, {LastReceivedHoldTag(job), LastReceivedHold}} {
			if err := zfs.ValidateHoldTag(c.tag); err != nil {
				t.Fatalf("%s: %v", c.tag, err)
			}
			p, ok := ParseHoldTag(c.tag)
			if !ok || p != (ParsedName{Kind: c.kind, Job: job}) {
				t.Fatalf("ParseHoldTag(%q) = %+v, %v", c.tag, p, ok)
			}
		}
	})
}
