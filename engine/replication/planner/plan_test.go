package planner

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

func snap(name string, guid, txg uint64) zfs.FilesystemVersion {
	return zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: name, GUID: guid, CreateTXG: txg}
}

func book(name string, guid, txg uint64) zfs.FilesystemVersion {
	return zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: name, GUID: guid, CreateTXG: txg}
}

func sender(path string, vs ...zfs.FilesystemVersion) Filesystem {
	return Filesystem{Path: path, Info: zfs.FilesystemInfo{Path: zfs.MustDatasetPath("pool/" + path), Encryption: "off", KeyStatus: zfs.KeyStatusNone}, Versions: vs}
}

func receiver(path string, vs ...zfs.FilesystemVersion) Filesystem {
	return Filesystem{Path: path, Info: zfs.FilesystemInfo{Path: zfs.MustDatasetPath("backup/" + path), Encryption: "off", KeyStatus: zfs.KeyStatusNone}, Versions: vs}
}

func encrypted(fs Filesystem, key zfs.KeyStatus) Filesystem {
	fs.Info.Encryption = "aes-256-gcm"
	fs.Info.EncryptionRoot = fs.Info.Path.String()
	fs.Info.KeyStatus = key
	return fs
}

func placeholder(fs Filesystem) Filesystem {
	fs.Info.Placeholder = true
	return fs
}

func withToken(fs Filesystem, tok string) Filesystem {
	fs.Info.ReceiveResumeToken = tok
	return fs
}

// planOne plans a single filesystem "fs" and returns its plan.
func planOne(t *testing.T, s Filesystem, r *Filesystem, pol Policy) FSPlan {
	t.Helper()
	in := Input{Sender: []Filesystem{s}, Policy: pol}
	if r != nil {
		in.Receiver = []Filesystem{*r}
	}
	res, err := Plan(in)
	require.NoError(t, err)
	p, ok := res.Find(s.Path)
	require.True(t, ok, "no plan for %q", s.Path)
	return *p
}

// stepsString renders steps compactly: "full @c", "@a -> @b", ...
func stepsString(steps []Step) string {
	var out []string
	for _, s := range steps {
		out = append(out, s.String())
	}
	return strings.Join(out, "; ")
}

func requireConflict(t *testing.T, p FSPlan, kind ConflictKind, msgParts ...string) {
	t.Helper()
	require.Equal(t, StatusConflict, p.Status, "steps: %s", stepsString(p.Steps))
	require.NotNil(t, p.Conflict)
	require.ErrorIs(t, p.Conflict, kind)
	require.Empty(t, p.Steps)
	require.Empty(t, p.Actions)
	msg := p.Conflict.Error()
	assert.Contains(t, msg, p.Sender.String(), "conflict message names the filesystem")
	for _, part := range msgParts {
		assert.Contains(t, msg, part)
	}
}

var (
	a = snap("a", 101, 10)
	b = snap("b", 102, 20)
	c = snap("c", 103, 30)
	d = snap("d", 104, 40)
)

func TestHistoryRules(t *testing.T) {
	rp := func(fs Filesystem) *Filesystem { return &fs }
	tests := []struct {
		name   string
		s      Filesystem
		r      *Filesystem
		pol    Policy
		status Status
		steps  string
	}{
		{"initial most recent", sender("fs", a, b, c), nil, Policy{}, StatusReplicate, "full @c"},
		{"initial all snapshots", sender("fs", a, b, c), nil, Policy{InitialReplication: AllSnapshots}, StatusReplicate, "full @a; @a -> @b; @b -> @c"},
		{"initial, unordered listing", sender("fs", c, a, b), nil, Policy{InitialReplication: AllSnapshots}, StatusReplicate, "full @a; @a -> @b; @b -> @c"},
		{"initial into empty placeholder", sender("fs", a, b), rp(placeholder(receiver("fs"))), Policy{}, StatusReplicate, "full @b"},
		{"receiver bookmarks ignored", sender("fs", a, b), rp(placeholder(receiver("fs", book("a", 101, 1)))), Policy{}, StatusReplicate, "full @b"},
		{"no sender snapshots", sender("fs", book("x", 7, 5)), nil, Policy{}, StatusNoSnapshots, ""},
		{"no sender versions at all", sender("fs"), nil, Policy{InitialReplication: AllSnapshots}, StatusNoSnapshots, ""},
		{"no sender snapshots, empty non-placeholder receiver", sender("fs"), rp(receiver("fs")), Policy{}, StatusNoSnapshots, ""},
		{"incremental", sender("fs", a, b, c, d), rp(receiver("fs", snap("a", 101, 3), snap("b", 102, 4))), Policy{}, StatusReplicate, "@b -> @c; @c -> @d"},
		{"incremental ignores initial mode", sender("fs", a, b, c, d), rp(receiver("fs", snap("b", 102, 4))), Policy{InitialReplication: AllSnapshots}, StatusReplicate, "@b -> @c; @c -> @d"},
		{"incremental ignores initial fail", sender("fs", a, b, c, d), rp(receiver("fs", snap("b", 102, 4))), Policy{InitialReplication: Fail}, StatusReplicate, "@b -> @c; @c -> @d"},
		{"initial fail with nothing to send", sender("fs", book("x", 7, 5)), nil, Policy{InitialReplication: Fail}, StatusNoSnapshots, ""},
		{"receiver lacks older ones", sender("fs", a, b, c), rp(receiver("fs", snap("b", 102, 4))), Policy{}, StatusReplicate, "@b -> @c"},
		{"up to date", sender("fs", a, b), rp(receiver("fs", snap("a", 101, 3), snap("b", 102, 4))), Policy{}, StatusUpToDate, ""},
		{"up to date via bookmark", sender("fs", book("b", 102, 20)), rp(receiver("fs", snap("b", 102, 4))), Policy{}, StatusUpToDate, ""},
		{"bookmark base", sender("fs", book("cursor", 102, 20), c, d), rp(receiver("fs", snap("a", 101, 3), snap("b", 102, 4))), Policy{}, StatusReplicate, "#cursor -> @c; @c -> @d"},
		{"snapshot preferred over its bookmark", sender("fs", b, book("cursor", 102, 20), book("other_job", 102, 20), c), rp(receiver("fs", snap("b", 102, 4))), Policy{}, StatusReplicate, "@b -> @c"},
		{"another job's bookmark", sender("fs", book("zrepl_CURSOR_G_0000000000000066_J_other", 102, 20), c), rp(receiver("fs", snap("b", 102, 4))), Policy{}, StatusReplicate, "#zrepl_CURSOR_G_0000000000000066_J_other -> @c"},
		{"newest common wins", sender("fs", a, book("a2", 101, 10), b, c), rp(receiver("fs", snap("a", 101, 3), snap("b", 102, 4))), Policy{}, StatusReplicate, "@b -> @c"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planOne(t, tc.s, tc.r, tc.pol)
			require.Nil(t, p.Conflict)
			assert.Equal(t, tc.status, p.Status)
			assert.Equal(t, tc.steps, stepsString(p.Steps))
			assert.Empty(t, p.Actions)
			switch {
			case p.Status == StatusUpToDate:
				require.NotNil(t, p.Base, "an up-to-date filesystem names its base")
				assert.Equal(t, newest(sortedHistory(tc.s.Versions)).GUID, p.Base.GUID)
			case len(p.Steps) > 0 && p.Steps[0].From != nil:
				assert.Equal(t, p.Steps[0].From, p.Base)
			default:
				assert.Nil(t, p.Base)
			}
			for i, st := range p.Steps {
				assert.Equal(t, zfs.SendFlags{}, st.Flags)
				assert.Equal(t, i == 0 && tc.r != nil && tc.r.Info.Placeholder, st.ReplacePlaceholder, "step %d", i)
			}
		})
	}
}

func TestHistoryConflicts(t *testing.T) {
	t.Run("initial replication fail", func(t *testing.T) {
		// conflict_resolution.initial_replication: fail sends nothing
		// to a receiver without snapshots, also into a placeholder,
		// and names the key.
		for _, r := range []*Filesystem{nil, func() *Filesystem { r := placeholder(receiver("fs")); return &r }()} {
			p := planOne(t, sender("fs", a, b), r, Policy{InitialReplication: Fail})
			requireConflict(t, p, ConflictInitialReplication, "conflict_resolution.initial_replication is fail", "@b (guid 102")
			assert.Empty(t, p.Steps)
		}
	})
	t.Run("no common version", func(t *testing.T) {
		r := receiver("fs", snap("x", 901, 3), snap("y", 902, 4))
		p := planOne(t, sender("fs", a, b), &r, Policy{})
		requireConflict(t, p, ConflictNoCommonVersion, "@b (guid 102", "@y (guid 902")
	})
	t.Run("no common version, sender empty", func(t *testing.T) {
		r := receiver("fs", snap("x", 901, 3))
		p := planOne(t, sender("fs"), &r, Policy{})
		requireConflict(t, p, ConflictNoCommonVersion, "none", "@x (guid 901")
	})
	t.Run("receiver ahead", func(t *testing.T) {
		r := receiver("fs", snap("a", 101, 3), snap("b", 102, 4), snap("local", 903, 5))
		p := planOne(t, sender("fs", a, b), &r, Policy{})
		requireConflict(t, p, ConflictReceiverAhead, "common base is @b (guid 102", "@local (guid 903")
	})
	t.Run("diverged", func(t *testing.T) {
		r := receiver("fs", snap("a", 101, 3), snap("local", 903, 5))
		p := planOne(t, sender("fs", a, b, c), &r, Policy{})
		requireConflict(t, p, ConflictDiverged, "common base is @a", "@local (guid 903", "@b (guid 102", "@c (guid 103")
	})
	t.Run("receiver newest is an older sender snapshot", func(t *testing.T) {
		// The receiver got @a after @b (only possible by hand): it cannot
		// receive on top of @b without rolling @a back.
		r := receiver("fs", snap("b", 102, 3), snap("a", 101, 4))
		p := planOne(t, sender("fs", a, b, c), &r, Policy{})
		requireConflict(t, p, ConflictDiverged, "common base is @b", "@a (guid 101")
	})
	t.Run("existing filesystem that is no placeholder", func(t *testing.T) {
		r := receiver("fs")
		p := planOne(t, sender("fs", a), &r, Policy{})
		requireConflict(t, p, ConflictReceiverNotPlaceholder, "@a (guid 101")
	})
	t.Run("long lists are cut", func(t *testing.T) {
		var rs []zfs.FilesystemVersion
		rs = append(rs, snap("a", 101, 1))
		for i := range 10 {
			rs = append(rs, snap(fmt.Sprintf("r%d", i), uint64(1000+i), uint64(2+i)))
		}
		r := receiver("fs", rs...)
		p := planOne(t, sender("fs", a), &r, Policy{})
		requireConflict(t, p, ConflictReceiverAhead, "and 7 more")
	})
}

// created sets a version's creation time (seconds after an epoch).
func created(v zfs.FilesystemVersion, sec int64) zfs.FilesystemVersion {
	v.Creation = time.Unix(1_700_000_000+sec, 0)
	return v
}

// One GUID with two creation times is two snapshots: a sender whose state
// went back in time and drew GUIDs from a sequence again (the model
// backend before it drew random ones) would otherwise be "up to date" or
// send incrementals onto the receiver's unrelated snapshot.
func TestGUIDReused(t *testing.T) {
	// The receiver got a, b, c; the sender was restored to a and made
	// x and y, which drew b's and c's GUIDs again.
	rcv := receiver("fs", created(snap("a", 101, 3), 1), created(snap("b", 102, 4), 2), created(snap("c", 103, 5), 3))
	x, y := created(snap("x", 102, 20), 50), created(snap("y", 103, 30), 60)
	t.Run("would be up to date", func(t *testing.T) {
		p := planOne(t, sender("fs", created(a, 1), x, y), &rcv, Policy{})
		requireConflict(t, p, ConflictGUIDReused, "@y (guid 103", "@c (guid 103", "different times", "from @c on")
		assert.Nil(t, p.Base)
	})
	t.Run("would send onto the wrong base", func(t *testing.T) {
		z := created(snap("z", 104, 40), 70)
		p := planOne(t, sender("fs", created(a, 1), x, y, z), &rcv, Policy{})
		requireConflict(t, p, ConflictGUIDReused, "@y (guid 103")
	})
	t.Run("a bookmark base carries its snapshot's creation", func(t *testing.T) {
		p := planOne(t, sender("fs", created(book("cursor", 103, 30), 60), created(snap("z", 104, 40), 70)), &rcv, Policy{})
		requireConflict(t, p, ConflictGUIDReused, "#cursor (guid 103")
		ok := planOne(t, sender("fs", created(book("cursor", 103, 30), 3), created(snap("z", 104, 40), 70)), &rcv, Policy{})
		assert.Equal(t, "#cursor -> @z", stepsString(ok.Steps))
	})
	t.Run("same creation second, or unknown, is the same snapshot", func(t *testing.T) {
		sub := created(snap("c", 103, 30), 3)
		sub.Creation = sub.Creation.Add(900 * time.Millisecond)
		p := planOne(t, sender("fs", created(a, 1), created(b, 2), sub), &rcv, Policy{})
		assert.Equal(t, StatusUpToDate, p.Status)
		p = planOne(t, sender("fs", a, b, c), &rcv, Policy{})
		assert.Equal(t, StatusUpToDate, p.Status)
	})
}

// sends gives the sender's filesystem the sending job's policy.
func sends(fs Filesystem, p zfs.SendPolicy) Filesystem {
	fs.Send = p
	return fs
}

var (
	encryptedOnly = zfs.SendPolicy{Encrypted: true}
	rawAll        = zfs.SendPolicy{Flags: zfs.SendFlags{Raw: true}}
	embedding     = zfs.SendPolicy{Flags: zfs.SendFlags{EmbeddedData: true}}
)

func TestEncryption(t *testing.T) {
	rp := func(fs Filesystem) *Filesystem { return &fs }
	incr := receiver("fs", snap("a", 101, 3))
	t.Run("encrypted but source plain", func(t *testing.T) {
		p := planOne(t, sends(sender("fs", a, b), encryptedOnly), nil, Policy{})
		requireConflict(t, p, ConflictSenderNotEncrypted, "send.encrypted")
	})
	t.Run("encrypted and source encrypted: raw", func(t *testing.T) {
		pol := zfs.SendPolicy{Encrypted: true, Flags: zfs.SendFlags{EmbeddedData: true, Compressed: true}}
		p := planOne(t, sends(encrypted(sender("fs", a, b), zfs.KeyStatusUnavailable), pol), nil, Policy{})
		require.Equal(t, "full @b", stepsString(p.Steps))
		assert.Equal(t, zfs.SendFlags{Raw: true, Compressed: true, EmbeddedData: true}, p.Steps[0].Flags)
	})
	t.Run("the default sends encrypted filesystems plain", func(t *testing.T) {
		p := planOne(t, encrypted(sender("fs", a, b), zfs.KeyStatusAvailable), nil, Policy{})
		require.Equal(t, "full @b", stepsString(p.Steps))
		assert.False(t, p.Steps[0].Flags.Raw)
		// ...and a plain stream into a raw copy needs the receiver's key.
		p = planOne(t, encrypted(sender("fs", a, b), zfs.KeyStatusAvailable), rp(encrypted(incr, zfs.KeyStatusUnavailable)), Policy{})
		requireConflict(t, p, ConflictEncryptionMismatch, "plain", "not loaded")
	})
	t.Run("plain send needs the sender's key", func(t *testing.T) {
		p := planOne(t, encrypted(sender("fs", a, b), zfs.KeyStatusUnavailable), nil, Policy{})
		requireConflict(t, p, ConflictKeyUnavailable, "@b", "send.encrypted or send.raw")
	})
	t.Run("raw sends everything raw", func(t *testing.T) {
		p := planOne(t, sends(encrypted(sender("fs", a, b), zfs.KeyStatusUnavailable), rawAll), rp(encrypted(incr, zfs.KeyStatusUnavailable)), Policy{})
		require.Equal(t, "@a -> @b", stepsString(p.Steps))
		assert.True(t, p.Steps[0].Flags.Raw)
		p = planOne(t, sends(sender("fs", a, b), rawAll), rp(incr), Policy{})
		require.Equal(t, "@a -> @b", stepsString(p.Steps))
		assert.True(t, p.Steps[0].Flags.Raw, "an unencrypted filesystem too")
	})
	t.Run("raw incremental into unencrypted", func(t *testing.T) {
		p := planOne(t, sends(encrypted(sender("fs", a, b), zfs.KeyStatusAvailable), encryptedOnly), rp(incr), Policy{})
		requireConflict(t, p, ConflictEncryptionMismatch, "raw", "@b")
	})
	t.Run("plain incremental into encrypted, key unavailable", func(t *testing.T) {
		p := planOne(t, sender("fs", a, b), rp(encrypted(incr, zfs.KeyStatusUnavailable)), Policy{})
		requireConflict(t, p, ConflictEncryptionMismatch, "plain", "not loaded")
	})
	t.Run("plain incremental into encrypted at rest", func(t *testing.T) {
		r := encrypted(incr, zfs.KeyStatusAvailable)
		r.Info.EncryptionRoot = "backup"
		p := planOne(t, sender("fs", a, b), &r, Policy{})
		require.Equal(t, "@a -> @b", stepsString(p.Steps))
		assert.False(t, p.Steps[0].Flags.Raw)
		// ZFS cannot receive embedded data there: the job's flag is not
		// dropped behind the administrator's back.
		p = planOne(t, sends(sender("fs", a, b), embedding), &r, Policy{})
		requireConflict(t, p, ConflictEncryptionMismatch, "send.embedded_data", "@b")
		p = planOne(t, sends(sender("fs", a, b), rawAll), &r, Policy{})
		requireConflict(t, p, ConflictEncryptionMismatch, "send.raw", "@b")
	})
	t.Run("no embedded data into a new filesystem below an encrypted one", func(t *testing.T) {
		parent := encrypted(placeholder(receiver("a")), zfs.KeyStatusAvailable)
		res, err := Plan(Input{Sender: []Filesystem{sends(sender("a/b/c", a), embedding), sends(sender("x/y", a), embedding)}, Receiver: []Filesystem{parent, receiver("x")}})
		require.NoError(t, err)
		c, _ := res.Find("a/b/c")
		requireConflict(t, *c, ConflictEncryptionMismatch, "send.embedded_data")
		y, _ := res.Find("x/y")
		require.Equal(t, "full @a", stepsString(y.Steps))
		assert.True(t, y.Steps[0].Flags.EmbeddedData)
	})
	t.Run("up to date needs no encryption match", func(t *testing.T) {
		p := planOne(t, sends(encrypted(sender("fs", a), zfs.KeyStatusAvailable), encryptedOnly), rp(incr), Policy{})
		assert.Equal(t, StatusUpToDate, p.Status)
		p = planOne(t, encrypted(sender("fs", a), zfs.KeyStatusUnavailable), rp(incr), Policy{})
		assert.Equal(t, StatusUpToDate, p.Status, "nothing to send needs no key")
	})
	t.Run("encrypted placeholder cannot be replaced", func(t *testing.T) {
		p := planOne(t, sender("fs", a), rp(placeholder(encrypted(receiver("fs"), zfs.KeyStatusAvailable))), Policy{})
		requireConflict(t, p, ConflictEncryptionMismatch, "placeholder is encrypted", "destroy the placeholder with what is below it")
	})
	t.Run("raw cannot replace plain placeholder", func(t *testing.T) {
		p := planOne(t, sends(encrypted(sender("fs", a), zfs.KeyStatusAvailable), encryptedOnly), rp(placeholder(receiver("fs"))), Policy{})
		requireConflict(t, p, ConflictEncryptionMismatch, "raw")
		p = planOne(t, sends(sender("fs", a), rawAll), rp(placeholder(receiver("fs"))), Policy{})
		require.Equal(t, "full @a", stepsString(p.Steps), "a raw stream of an unencrypted filesystem is no encrypted stream")
	})
}

func token(t resumetoken.Token) string { return t.Encode() }

func TestResumeTokens(t *testing.T) {
	incrTok := resumetoken.Token{ToName: "pool/fs@b", ToGUID: 102, FromGUID: 101, Bytes: 5, CompressOK: true, LargeBlockOK: true}
	r := receiver("fs", snap("a", 101, 3))
	s := sender("fs", a, b, c)

	t.Run("matching incremental", func(t *testing.T) {
		r := withToken(r, token(incrTok))
		p := planOne(t, sends(s, embedding), &r, Policy{})
		require.Equal(t, "@a -> @b (resuming); @b -> @c", stepsString(p.Steps))
		st := p.Steps[0]
		assert.Equal(t, r.Info.ReceiveResumeToken, st.ResumeToken)
		assert.Equal(t, zfs.SendFlags{Compressed: true, LargeBlocks: true}, st.Flags, "flags come from the token")
		assert.Equal(t, embedding.Flags, p.Steps[1].Flags, "later steps use the policy")
		assert.Empty(t, p.Actions)
		args := st.SendArgs(p.Sender)
		assert.Equal(t, "pool/fs", args.FS.String())
		assert.Equal(t, uint64(101), args.From.GUID)
		assert.Equal(t, st.ResumeToken, args.ResumeToken)
	})
	t.Run("continued initial replication", func(t *testing.T) {
		// A step a -> c that skips b (an earlier planner of ours made
		// such steps after an interrupted initial replication; zrepl
		// resumes any step its token names) was cut: it is resumed,
		// then each newer snapshot follows, whatever the policy.
		r := withToken(r, token(resumetoken.Token{ToName: "pool/fs@c", ToGUID: 103, FromGUID: 101}))
		for _, pol := range []Policy{{}, {InitialReplication: AllSnapshots}, {InitialReplication: Fail}} {
			p := planOne(t, sender("fs", a, b, c, d), &r, pol)
			require.Equal(t, "@a -> @c (resuming); @c -> @d", stepsString(p.Steps), "%v", pol.InitialReplication)
			assert.Empty(t, p.Actions)
		}
	})
	t.Run("matching full into partially received filesystem", func(t *testing.T) {
		// A full receive interrupted: the filesystem exists with a token
		// and no snapshots, and is no placeholder.
		r := withToken(receiver("fs"), token(resumetoken.Token{ToName: "pool/fs@c", ToGUID: 103}))
		p := planOne(t, s, &r, Policy{})
		require.Equal(t, "full @c (resuming)", stepsString(p.Steps))
		assert.False(t, p.Steps[0].ReplacePlaceholder)
	})
	t.Run("matching raw full into placeholder", func(t *testing.T) {
		r := withToken(placeholder(receiver("fs")), token(resumetoken.Token{ToName: "pool/fs@c", ToGUID: 103, RawOK: true}))
		p := planOne(t, sends(encrypted(s, zfs.KeyStatusUnavailable), encryptedOnly), &r, Policy{})
		requireConflict(t, p, ConflictEncryptionMismatch, "raw")
	})

	foreign := []struct {
		name string
		tok  string
		want string
		// unresumable: the token's incremental source is not on the
		// receiver, or its snapshot not on the sender, so the state is
		// discarded whatever the policy.
		unresumable bool
	}{
		{"garbage", "1-deadbeef-10-0011", "does not decode", false},
		{"other dataset", token(resumetoken.Token{ToName: "pool/other@b", ToGUID: 102, FromGUID: 101}), "dataset differs", false},
		{"other snapshot name", token(resumetoken.Token{ToName: "pool/fs@c", ToGUID: 102, FromGUID: 101}), "snapshot name differs", false},
		{"next snapshot", token(resumetoken.Token{ToName: "pool/fs@c", ToGUID: 103, FromGUID: 102}), "snapshot name differs", true},
		{"other guid", token(resumetoken.Token{ToName: "pool/fs@b", ToGUID: 999, FromGUID: 101}), "snapshot guid differs", true},
		{"full instead of incremental", token(resumetoken.Token{ToName: "pool/fs@b", ToGUID: 102}), "incremental source differs", false},
		{"other source", token(resumetoken.Token{ToName: "pool/fs@b", ToGUID: 102, FromGUID: 55}), "incremental source differs", true},
		{"raw", token(resumetoken.Token{ToName: "pool/fs@b", ToGUID: 102, FromGUID: 101, RawOK: true}), "raw flag differs", false},
		{"saved", token(resumetoken.Token{ToName: "pool/fs@b", ToGUID: 102, FromGUID: 101, SavedOK: true}), "saved-state flag differs", false},
		{"no snapshot part", token(resumetoken.Token{ToName: "pool/fs", ToGUID: 102, FromGUID: 101}), "dataset differs", false},
	}
	for _, tc := range foreign {
		t.Run("foreign "+tc.name, func(t *testing.T) {
			r := withToken(r, tc.tok)
			p := planOne(t, s, &r, Policy{})
			if tc.unresumable {
				require.Nil(t, p.Conflict)
				require.Len(t, p.Actions, 1)
				assert.Contains(t, p.Actions[0].Reason, "so it can never resume")
			} else {
				requireConflict(t, p, ConflictForeignPartialReceive, tc.want)
				if !strings.Contains(tc.want, "decode") {
					assert.Contains(t, p.Conflict.Msg, `"pool/fs@b" (guid 102, from @a (guid 101)`, "names the plan")
				}
			}

			p = planOne(t, s, &r, Policy{AbortForeignPartialReceive: true})
			require.Nil(t, p.Conflict)
			require.Equal(t, "@a -> @b; @b -> @c", stepsString(p.Steps))
			require.Len(t, p.Actions, 1)
			assert.Equal(t, ActionAbortPartialReceive, p.Actions[0].Kind)
			assert.Contains(t, p.Actions[0].Reason, tc.want)
			for _, st := range p.Steps {
				assert.Empty(t, st.ResumeToken)
			}
		})
	}
	t.Run("token with nothing to send", func(t *testing.T) {
		r := withToken(receiver("fs", snap("a", 101, 3), snap("b", 102, 4)), token(incrTok))
		p := planOne(t, sender("fs", a, b), &r, Policy{})
		requireConflict(t, p, ConflictForeignPartialReceive, "nothing to send")
		p = planOne(t, sender("fs", a, b), &r, Policy{AbortForeignPartialReceive: true})
		assert.Equal(t, StatusUpToDate, p.Status)
		require.Len(t, p.Actions, 1)
		assert.Equal(t, ActionAbortPartialReceive, p.Actions[0].Kind)
	})
	t.Run("interrupted older full is finished, then each newer snapshot follows", func(t *testing.T) {
		// As zrepl: after the resumed step every newer snapshot is
		// sent incrementally, also under most_recent (jumping to the
		// newest would leave the receiver without @b), and also under
		// fail, which refuses only to start an initial replication.
		r := withToken(receiver("fs"), token(resumetoken.Token{ToName: "pool/fs@a", ToGUID: 101}))
		for _, pol := range []Policy{{}, {InitialReplication: AllSnapshots}, {InitialReplication: Fail}} {
			p := planOne(t, s, &r, pol)
			require.Equal(t, "full @a (resuming); @a -> @b; @b -> @c", stepsString(p.Steps), "%v", pol.InitialReplication)
			assert.Empty(t, p.Actions)
		}
	})
	t.Run("interrupted full of a re-created snapshot is foreign", func(t *testing.T) {
		r := withToken(receiver("fs"), token(resumetoken.Token{ToName: "pool/fs@a", ToGUID: 999}))
		p := planOne(t, s, &r, Policy{AbortForeignPartialReceive: true})
		require.Equal(t, "full @c", stepsString(p.Steps))
		require.Len(t, p.Actions, 1)
	})
}

func TestTree(t *testing.T) {
	paths := func(res *Result) []string {
		var out []string
		for _, p := range res.Filesystems {
			out = append(out, p.Path)
		}
		return out
	}
	t.Run("gaps become placeholders", func(t *testing.T) {
		res, err := Plan(Input{Sender: []Filesystem{sender("a/b/c", a), sender("x", a)}})
		require.NoError(t, err)
		require.Equal(t, []string{"a", "a/b", "a/b/c", "x"}, paths(res))
		pa, pb, pc := res.Filesystems[0], res.Filesystems[1], res.Filesystems[2]
		for _, p := range []FSPlan{pa, pb} {
			assert.Equal(t, StatusPlaceholder, p.Status)
			assert.True(t, p.Sender.IsZero())
			require.Len(t, p.Actions, 1, p.Path)
			assert.Equal(t, ActionCreatePlaceholder, p.Actions[0].Kind)
			assert.Empty(t, p.Steps)
		}
		assert.Equal(t, "", pa.WaitFor)
		assert.Equal(t, "a", pb.WaitFor)
		assert.Equal(t, "a/b", pc.WaitFor)
		assert.Equal(t, "full @a", stepsString(pc.Steps))
	})
	t.Run("existing ancestors are not recreated", func(t *testing.T) {
		res, err := Plan(Input{Sender: []Filesystem{sender("a/b/c", a)}, Receiver: []Filesystem{placeholder(receiver("a"))}})
		require.NoError(t, err)
		require.Equal(t, []string{"a/b", "a/b/c"}, paths(res))
		assert.Equal(t, "", res.Filesystems[0].WaitFor)
		assert.Equal(t, ActionCreatePlaceholder, res.Filesystems[0].Actions[0].Kind)
	})
	t.Run("no placeholder when children need nothing", func(t *testing.T) {
		r := receiver("a/b", snap("a", 101, 1))
		res, err := Plan(Input{Sender: []Filesystem{sender("a/b", a)}, Receiver: []Filesystem{r}})
		require.NoError(t, err)
		require.Equal(t, []string{"a/b"}, paths(res))
		assert.Equal(t, StatusUpToDate, res.Filesystems[0].Status)
	})
	t.Run("sender parent without snapshots", func(t *testing.T) {
		res, err := Plan(Input{Sender: []Filesystem{sender("a"), sender("a/b", a), sender("z")}})
		require.NoError(t, err)
		require.Equal(t, []string{"a", "a/b", "z"}, paths(res))
		assert.Equal(t, StatusPlaceholder, res.Filesystems[0].Status)
		assert.Equal(t, "pool/a", res.Filesystems[0].Sender.String())
		require.Len(t, res.Filesystems[0].Actions, 1)
		assert.Equal(t, ActionCreatePlaceholder, res.Filesystems[0].Actions[0].Kind)
		assert.Equal(t, "a", res.Filesystems[1].WaitFor)
		assert.Empty(t, res.Filesystems[2].Actions, "nothing below z needs it")
		assert.Equal(t, StatusNoSnapshots, res.Filesystems[2].Status)
	})
	t.Run("parent received first", func(t *testing.T) {
		res, err := Plan(Input{Sender: []Filesystem{sender("a/b", b), sender("a", a)}})
		require.NoError(t, err)
		require.Equal(t, []string{"a", "a/b"}, paths(res))
		assert.Empty(t, res.Filesystems[0].Actions)
		assert.Equal(t, "full @a", stepsString(res.Filesystems[0].Steps))
		assert.Equal(t, "a", res.Filesystems[1].WaitFor)
	})
	t.Run("parent conflict blocks the subtree", func(t *testing.T) {
		res, err := Plan(Input{
			Sender: []Filesystem{sends(sender("a", a), encryptedOnly), sends(encrypted(sender("a/b", a), zfs.KeyStatusAvailable), encryptedOnly),
				sends(encrypted(sender("a/b/c", a), zfs.KeyStatusAvailable), encryptedOnly), sends(encrypted(sender("a/b/c/d", a), zfs.KeyStatusAvailable), encryptedOnly)},
			Receiver: []Filesystem{receiver("a", a)},
		})
		require.NoError(t, err)
		require.Equal(t, []string{"a", "a/b", "a/b/c", "a/b/c/d"}, paths(res))
		requireConflict(t, res.Filesystems[0], ConflictSenderNotEncrypted)
		assert.Equal(t, "full @a", stepsString(res.Filesystems[1].Steps), "parent exists on the receiver despite its conflict")
		assert.Equal(t, "", res.Filesystems[1].WaitFor)
		assert.Equal(t, "a/b", res.Filesystems[2].WaitFor)

		res, err = Plan(Input{
			Sender: []Filesystem{sends(sender("a", a), encryptedOnly), sends(encrypted(sender("a/b/c", a), zfs.KeyStatusAvailable), encryptedOnly),
				sends(encrypted(sender("a/b/c/d", a), zfs.KeyStatusAvailable), encryptedOnly)},
		})
		require.NoError(t, err)
		require.Equal(t, []string{"a", "a/b", "a/b/c", "a/b/c/d"}, paths(res))
		requireConflict(t, res.Filesystems[0], ConflictSenderNotEncrypted)
		assert.Equal(t, StatusConflict, res.Filesystems[1].Status)
		require.ErrorIs(t, res.Filesystems[1].Conflict, ConflictParentMissing)
		assert.Contains(t, res.Filesystems[1].Conflict.Error(), `parent "a"`)
		assert.Contains(t, res.Filesystems[1].Conflict.Error(), "sender not encrypted")
		requireConflict(t, res.Filesystems[2], ConflictParentMissing, `parent "a/b"`)
		requireConflict(t, res.Filesystems[3], ConflictParentMissing, `parent "a/b/c"`)
	})
}

func TestComparePaths(t *testing.T) {
	sorted := []string{"a", "a/b", "a/b/c", "a/c", "a b", "a-b", "a.b", "a:b", "aa", "b"}
	for i := range sorted {
		for j := range sorted {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			assert.Equal(t, want, comparePaths(sorted[i], sorted[j]), "%q vs %q", sorted[i], sorted[j])
		}
	}
}

func TestInvalidInput(t *testing.T) {
	good := sender("fs", a)
	noName := good
	noName.Info.Path = zfs.DatasetPath{}
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{"empty path", Input{Sender: []Filesystem{sender("x", a), {Path: "", Info: good.Info}}}, "empty path"},
		{"bad char", Input{Sender: []Filesystem{{Path: "a/b@c", Info: good.Info}}}, `invalid character '@'`},
		{"dot component", Input{Receiver: []Filesystem{{Path: "a/../b"}}}, "component"},
		{"leading slash", Input{Sender: []Filesystem{{Path: "/a", Info: good.Info}}}, "empty component"},
		{"trailing slash", Input{Sender: []Filesystem{{Path: "a/", Info: good.Info}}}, "empty component"},
		{"too long", Input{Sender: []Filesystem{{Path: strings.Repeat("x", 300), Info: good.Info}}}, "limit"},
		{"duplicate sender", Input{Sender: []Filesystem{good, good}}, `sender filesystem "fs" listed twice`},
		{"duplicate receiver", Input{Sender: []Filesystem{good}, Receiver: []Filesystem{receiver("fs"), receiver("fs")}}, `receiver filesystem "fs" listed twice`},
		{"sender without name", Input{Sender: []Filesystem{noName}}, "no full name"},
		{"initial mode", Input{Policy: Policy{InitialReplication: 7}}, "initial replication"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Plan(tc.in)
			require.Error(t, err)
			assert.Nil(t, res)
			assert.ErrorIs(t, err, ErrInvalidInput)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := Plan(Input{Sender: []Filesystem{{Path: "a/b@c", Info: good.Info}}})
	assert.True(t, errors.Is(err, zfs.ErrInvalidName), "path errors are name errors too")
}

func TestInvalidListing(t *testing.T) {
	tests := []struct {
		name string
		s, r []zfs.FilesystemVersion
		want string
	}{
		{"zero guid", []zfs.FilesystemVersion{snap("a", 0, 1)}, nil, "guid 0"},
		{"unknown kind", []zfs.FilesystemVersion{{Kind: 9, Name: "a", GUID: 1, CreateTXG: 1}}, nil, "unknown kind"},
		{"bad name", []zfs.FilesystemVersion{snap("a/b", 1, 1)}, nil, "invalid snapshot name"},
		{"same txg", []zfs.FilesystemVersion{snap("a", 1, 1), snap("b", 2, 1)}, nil, "same createtxg"},
		{"same guid", []zfs.FilesystemVersion{snap("a", 1, 1), snap("b", 1, 2)}, nil, "guid 1"},
		{"same snapshot name", []zfs.FilesystemVersion{snap("a", 1, 1), snap("a", 2, 2)}, nil, `"a" listed twice`},
		{"same bookmark name", []zfs.FilesystemVersion{book("a", 1, 1), book("a", 2, 2)}, nil, `"a" listed twice`},
		{"receiver zero guid", []zfs.FilesystemVersion{a}, []zfs.FilesystemVersion{snap("a", 0, 1)}, "receiver: "},
		{"receiver bad kind", []zfs.FilesystemVersion{a}, []zfs.FilesystemVersion{{Kind: 0, Name: "a", GUID: 1}}, "receiver: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r *Filesystem
			if tc.r != nil {
				rf := receiver("fs", tc.r...)
				r = &rf
			}
			p := planOne(t, sender("fs", tc.s...), r, Policy{})
			requireConflict(t, p, ConflictInvalidListing, tc.want)
		})
	}
	t.Run("snapshot and bookmark may share a name", func(t *testing.T) {
		p := planOne(t, sender("fs", a, book("a", 101, 10), b), nil, Policy{})
		assert.Equal(t, "full @b", stepsString(p.Steps))
	})
}

func TestListingNotModified(t *testing.T) {
	vs := []zfs.FilesystemVersion{c, a, b}
	rv := []zfs.FilesystemVersion{snap("b", 102, 2), snap("a", 101, 1)}
	_, err := Plan(Input{Sender: []Filesystem{sender("fs", vs...)}, Receiver: []Filesystem{receiver("fs", rv...)}})
	require.NoError(t, err)
	assert.Equal(t, []zfs.FilesystemVersion{c, a, b}, vs)
	assert.Equal(t, []zfs.FilesystemVersion{snap("b", 102, 2), snap("a", 101, 1)}, rv)
}

func TestFind(t *testing.T) {
	res, err := Plan(Input{Sender: []Filesystem{sender("b", a), sender("a-b", a), sender("a/b/c", a), sender("a", a)}})
	require.NoError(t, err)
	for _, p := range []string{"a", "a/b", "a/b/c", "a-b", "b"} {
		fp, ok := res.Find(p)
		require.True(t, ok, p)
		assert.Equal(t, p, fp.Path)
	}
	for _, p := range []string{"", "c", "a/b/c/d", "a/c"} {
		_, ok := res.Find(p)
		assert.False(t, ok, p)
	}
}

func TestHugeTokenNameIsClipped(t *testing.T) {
	r := withToken(receiver("fs", snap("a", 101, 3)), resumetoken.Token{ToName: "pool/fs@" + strings.Repeat("x", 100000), ToGUID: 102, FromGUID: 101}.Encode())
	p := planOne(t, sender("fs", a, b), &r, Policy{})
	requireConflict(t, p, ConflictForeignPartialReceive, "snapshot name differs")
	assert.Less(t, len(p.Conflict.Error()), 1000)
}

func sortedHistory(vs []zfs.FilesystemVersion) []zfs.FilesystemVersion {
	out := slices.Clone(vs)
	slices.SortFunc(out, func(x, y zfs.FilesystemVersion) int { return cmp.Compare(x.CreateTXG, y.CreateTXG) })
	return out
}
