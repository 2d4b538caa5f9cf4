package resumetoken

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

func TestMatch(t *testing.T) {
	fs := zfs.MustDatasetPath("pool/fs")
	snap := func(name string, guid uint64) zfs.FilesystemVersion {
		return zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: name, GUID: guid}
	}
	a, b := snap("a", 101), snap("b", 102)
	bm := zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: "a", GUID: 101}
	yes, no := true, false
	incr := Token{ToName: "pool/fs@b", ToGUID: 102, FromGUID: 101}
	raw := Token{ToName: "pool/fs@b", ToGUID: 102, RawOK: true}
	saved := Token{ToName: "pool/fs@b", ToGUID: 102, FromGUID: 101, SavedOK: true}
	cases := []struct {
		name string
		tok  Token
		send Send
		want string // "" for a match, else MismatchError.What
	}{
		{"incremental", incr, Send{FS: fs, To: b, From: &a}, ""},
		{"from a bookmark of the same guid", incr, Send{FS: fs, To: b, From: &bm}, ""},
		{"guids unknown are not checked", incr, Send{FS: fs, To: snap("b", 0), From: &zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "a"}}, ""},
		{"raw unasked is not checked", raw, Send{FS: fs, To: b}, ""},
		{"raw as asked", raw, Send{FS: fs, To: b, Raw: &yes}, ""},
		{"other dataset", incr, Send{FS: zfs.MustDatasetPath("pool/other"), To: b, From: &a}, DiffDataset},
		{"a prefix of the dataset", Token{ToName: "pool/fs2@b", ToGUID: 102}, Send{FS: fs, To: b}, DiffDataset},
		{"no snapshot part", Token{ToName: "pool/fs", ToGUID: 102}, Send{FS: fs, To: b}, DiffDataset},
		{"other snapshot name", incr, Send{FS: fs, To: snap("c", 102), From: &a}, DiffSnapshotName},
		{"other snapshot guid", incr, Send{FS: fs, To: snap("b", 999), From: &a}, DiffSnapshotGUID},
		{"full for incremental", incr, Send{FS: fs, To: b}, DiffFrom},
		{"incremental for full", raw, Send{FS: fs, To: b, From: &a}, DiffFrom},
		{"other source", incr, Send{FS: fs, To: b, From: &zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "a", GUID: 55}}, DiffFrom},
		{"raw where plain", raw, Send{FS: fs, To: b, Raw: &no}, DiffRaw},
		{"plain where raw", incr, Send{FS: fs, To: b, From: &a, Raw: &yes}, DiffRaw},
		{"saved state", saved, Send{FS: fs, To: b, From: &a}, DiffSaved},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.tok.Match(tc.send)
			_, serr := Match(tc.tok.Encode(), tc.send)
			if tc.want == "" {
				require.NoError(t, err)
				require.NoError(t, serr)
				return
			}
			var mm *MismatchError
			require.ErrorAs(t, err, &mm)
			assert.Equal(t, tc.want, mm.What)
			assert.Contains(t, err.Error(), "("+tc.want+" differs)")
			assert.ErrorIs(t, err, zfs.ErrResumeTokenMismatch)
			assert.NotErrorIs(t, err, zfs.ErrResumeTokenCorrupt)
			assert.Equal(t, zfs.ErrResumeTokenMismatch, zfs.KindOf(err), "rpc carries the kind (zfs.KindOf)")
			assert.Equal(t, err.Error(), serr.Error())
		})
	}
}

func TestMatchCorrupt(t *testing.T) {
	_, err := Match("1-deadbeef-10-0011", Send{FS: zfs.MustDatasetPath("pool/fs")})
	var de *DecodeError
	require.ErrorAs(t, err, &de)
	assert.ErrorIs(t, err, zfs.ErrResumeTokenCorrupt)
	assert.NotErrorIs(t, err, zfs.ErrResumeTokenMismatch)
	wrapped := errors.Join(errors.New("x"), err)
	assert.ErrorIs(t, wrapped, zfs.ErrResumeTokenCorrupt)
	assert.Equal(t, zfs.ErrResumeTokenCorrupt, zfs.KindOf(err), "a bare decode error keeps its kind over rpc")
}

func TestDescribeClipsNames(t *testing.T) {
	long := make([]byte, 5000)
	for i := range long {
		long[i] = 'x'
	}
	d := Describe(Token{ToName: string(long), ToGUID: 1})
	assert.Less(t, len(d), 400)
	assert.Contains(t, Describe(Token{ToName: "p/f@s", FromGUID: 7, SavedOK: true}), "from guid 7, raw false, saved state")
}
