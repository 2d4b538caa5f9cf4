package endpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// placeholderWorld: a sender p/a (no snapshots yet) with a child p/a/b at
// @s1, and a receiver whose Root d/enc/r is missing below the encrypted
// d/enc.
type placeholderWorld struct {
	src, dst *zfsmodel.Model
	r        *Receiver
	created  []string // CreatePlaceholder calls: "fs opts"
}

func newPlaceholderWorld(t *testing.T, mode PlaceholderEncryption, encrypted bool) *placeholderWorld {
	t.Helper()
	w := &placeholderWorld{src: zfsmodel.New(zfsmodel.Options{Seed: 1}), dst: zfsmodel.New(zfsmodel.Options{Seed: 2})}
	require.NoError(t, w.src.CreatePool("p"))
	require.NoError(t, w.dst.CreatePool("d"))
	require.NoError(t, w.src.CreateFilesystem(zfs.MustDatasetPath("p/a/b"), zfsmodel.FSOptions{Parents: true}))
	require.NoError(t, w.src.WriteData(zfs.MustDatasetPath("p/a/b"), 1, 2))
	require.NoError(t, w.src.Snapshot(ctx, zfs.MustDatasetPath("p/a/b"), "s1"))
	require.NoError(t, w.dst.CreateFilesystem(zfs.MustDatasetPath("d/enc"), zfsmodel.FSOptions{Encrypted: encrypted}))
	w.r = &Receiver{ZFS: recordPlaceholders{w.dst, &w.created}, Job: MustJobID("sink"), Root: zfs.MustDatasetPath("d/enc/r"), Placeholder: mode}
	return w
}

type recordPlaceholders struct {
	zfs.ZFS
	calls *[]string
}

func (r recordPlaceholders) CreatePlaceholder(ctx context.Context, fs zfs.DatasetPath, opts zfs.PlaceholderOptions) error {
	*r.calls = append(*r.calls, fmt.Sprintf("%s %+v", fs, opts))
	return r.ZFS.CreatePlaceholder(ctx, fs, opts)
}

// receiveFull sends fs@snap of the sender in full into the receiver.
func (w *placeholderWorld) receiveFull(t *testing.T, fs, snap string) error {
	t.Helper()
	var to zfs.FilesystemVersion
	vs, err := w.src.ListVersions(ctx, zfs.MustDatasetPath(fs))
	require.NoError(t, err)
	for _, v := range vs {
		if v.Name == snap {
			to = v
		}
	}
	require.NotZero(t, to.GUID, "%s@%s", fs, snap)
	stream, err := w.src.Send(ctx, zfs.SendArgs{FS: zfs.MustDatasetPath(fs), To: to})
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = io.Copy(&buf, stream)
	require.NoError(t, err)
	require.NoError(t, stream.Close())
	return w.r.Receive(ctx, ReceiveRequest{FS: fs, To: to, Full: true}, &buf)
}

func (w *placeholderWorld) info(t *testing.T, fs string) (zfs.FilesystemInfo, bool) {
	t.Helper()
	info, err := w.dst.Info(zfs.MustDatasetPath(fs))
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		return info, false
	}
	require.NoError(t, err)
	return info, true
}

func TestPlaceholderEncryptionBelowEncryptedParent(t *testing.T) {
	placeholders := []string{"d/enc/r", "d/enc/r/p", "d/enc/r/p/a"}

	t.Run("off", func(t *testing.T) {
		w := newPlaceholderWorld(t, PlaceholderOff, true)
		require.NoError(t, w.receiveFull(t, "p/a/b", "s1"))
		assert.Equal(t, []string{
			"d/enc/r {EncryptionOff:true}", "d/enc/r/p {EncryptionOff:true}", "d/enc/r/p/a {EncryptionOff:true}",
		}, w.created)
		for _, fs := range placeholders {
			info, ok := w.info(t, fs)
			require.True(t, ok, fs)
			assert.True(t, info.Placeholder && !info.Encrypted(), "%s: %+v, want an unencrypted placeholder", fs, info)
		}
		// Once the sender's p/a has a snapshot, its full receive replaces
		// the placeholder, which stops being one; the child stays.
		require.NoError(t, w.src.WriteData(zfs.MustDatasetPath("p/a"), 2, 2))
		require.NoError(t, w.src.Snapshot(ctx, zfs.MustDatasetPath("p/a"), "s1"))
		require.NoError(t, w.receiveFull(t, "p/a", "s1"))
		info, _ := w.info(t, "d/enc/r/p/a")
		assert.False(t, info.Placeholder || info.Encrypted(), "%+v", info)
		_, ok := w.info(t, "d/enc/r/p/a/b")
		assert.True(t, ok, "the child survives")
		// Nothing is created any more: no placeholder is missing.
		assert.Len(t, w.created, 3)
	})

	t.Run("inherit", func(t *testing.T) {
		w := newPlaceholderWorld(t, PlaceholderInherit, true)
		require.NoError(t, w.receiveFull(t, "p/a/b", "s1"))
		assert.Equal(t, []string{"d/enc/r {EncryptionOff:false}", "d/enc/r/p {EncryptionOff:false}", "d/enc/r/p/a {EncryptionOff:false}"}, w.created)
		for _, fs := range placeholders {
			info, ok := w.info(t, fs)
			require.True(t, ok, fs)
			assert.True(t, info.Placeholder && info.EncryptionRoot == "d/enc", "%s: %+v, want a placeholder encrypted below d/enc", fs, info)
		}
		// What "off" avoids: the encrypted placeholder cannot be replaced.
		require.NoError(t, w.src.Snapshot(ctx, zfs.MustDatasetPath("p/a"), "s1"))
		require.ErrorIs(t, w.receiveFull(t, "p/a", "s1"), zfs.ErrEncryptionMismatch)
	})

	t.Run("unspecified", func(t *testing.T) {
		w := newPlaceholderWorld(t, PlaceholderUnspecified, true)
		err := w.receiveFull(t, "p/a/b", "s1")
		require.ErrorIs(t, err, ErrNotAllowed)
		for _, s := range []string{"placeholder d/enc/r", "d/enc is encrypted", "recv.placeholder.encryption", "off", "inherit"} {
			assert.ErrorContains(t, err, s)
		}
		assert.Empty(t, w.created, "nothing is created")
		_, ok := w.info(t, "d/enc/r")
		assert.False(t, ok)
	})

	t.Run("zero value inherits", func(t *testing.T) {
		var r Receiver
		assert.Equal(t, PlaceholderInherit, r.Placeholder)
	})
}

// Below an unencrypted parent the three settings create the same
// placeholders with the same call.
func TestPlaceholderEncryptionBelowUnencryptedParent(t *testing.T) {
	for _, mode := range []PlaceholderEncryption{PlaceholderInherit, PlaceholderOff, PlaceholderUnspecified} {
		t.Run(mode.String(), func(t *testing.T) {
			w := newPlaceholderWorld(t, mode, false)
			require.NoError(t, w.receiveFull(t, "p/a/b", "s1"))
			assert.Equal(t, []string{"d/enc/r {EncryptionOff:false}", "d/enc/r/p {EncryptionOff:false}", "d/enc/r/p/a {EncryptionOff:false}"}, w.created)
			info, ok := w.info(t, "d/enc/r/p/a")
			require.True(t, ok)
			assert.True(t, info.Placeholder && !info.Encrypted())
		})
	}
}

// Only the nearest existing ancestor's encryption counts: below an
// unencrypted placeholder that an earlier "off" left, unspecified creates
// more placeholders without complaint.
func TestPlaceholderEncryptionBelowUnencryptedPlaceholder(t *testing.T) {
	w := newPlaceholderWorld(t, PlaceholderOff, true)
	require.NoError(t, w.receiveFull(t, "p/a/b", "s1"))
	w.r.Placeholder = PlaceholderUnspecified
	require.NoError(t, w.src.CreateFilesystem(zfs.MustDatasetPath("p/x/y"), zfsmodel.FSOptions{Parents: true}))
	require.NoError(t, w.src.Snapshot(ctx, zfs.MustDatasetPath("p/x/y"), "s1"))
	require.NoError(t, w.receiveFull(t, "p/x/y", "s1"))
	assert.Equal(t, "d/enc/r/p/x {EncryptionOff:false}", w.created[len(w.created)-1])
	// And with the parent encrypted again the refusal names the nearest.
	require.NoError(t, w.dst.CreateFilesystem(zfs.MustDatasetPath("d/enc/r/q"), zfsmodel.FSOptions{Encrypted: true}))
	require.NoError(t, w.src.CreateFilesystem(zfs.MustDatasetPath("p/z"), zfsmodel.FSOptions{}))
	require.NoError(t, w.src.Snapshot(ctx, zfs.MustDatasetPath("p/z"), "s1"))
	w.r.Root = zfs.MustDatasetPath("d/enc/r/q")
	err := w.receiveFull(t, "p/z", "s1")
	require.ErrorIs(t, err, ErrNotAllowed)
	assert.ErrorContains(t, err, "placeholder d/enc/r/q/p: its parent d/enc/r/q is encrypted (encryption root d/enc/r/q)")
}

func TestPlaceholderEncryptionString(t *testing.T) {
	assert.Equal(t, "unspecified", PlaceholderUnspecified.String())
	assert.Equal(t, "off", PlaceholderOff.String())
	assert.Equal(t, "inherit", PlaceholderInherit.String())
	assert.Equal(t, "PlaceholderEncryption(9)", PlaceholderEncryption(9).String())
}

// Placeholders are created only for a stream whose header is valid and
// is the step asked for: 100 receives of garbage into deep new paths used
// to leave 1000 placeholder filesystems that nothing removes (item 7 of
// issue 12). A stream of another snapshot than the request's is refused
// before anything is created, too.
func TestGarbageReceivesCreateNothing(t *testing.T) {
	w := newPlaceholderWorld(t, PlaceholderInherit, false)
	rng := rand.New(rand.NewPCG(1, 2))
	listing := func() []string {
		infos, err := w.dst.ListFilesystems(ctx, zfs.MustDatasetPath("d"))
		require.NoError(t, err)
		var out []string
		for _, fi := range infos {
			out = append(out, fi.Path.String())
		}
		return out
	}
	before := listing()
	to := zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "s1", GUID: 0x1234, CreateTXG: 3}
	for i := range 100 {
		garbage := make([]byte, rng.IntN(4096))
		for j := range garbage {
			garbage[j] = byte(rng.Uint32())
		}
		fs := fmt.Sprintf("g1/g2/g3/g4/g5/g6/g7/g8/g9/fs%d", i)
		err := w.r.Receive(ctx, ReceiveRequest{FS: fs, To: to, Full: true}, bytes.NewReader(garbage))
		require.Error(t, err, "receive %d", i)
	}
	assert.Equal(t, before, listing(), "garbage created filesystems")
	assert.Empty(t, w.created, "no CreatePlaceholder call")

	// A valid stream of p/a/b@s1 offered as another snapshot.
	vs, err := w.src.ListVersions(ctx, zfs.MustDatasetPath("p/a/b"))
	require.NoError(t, err)
	stream, err := w.src.Send(ctx, zfs.SendArgs{FS: zfs.MustDatasetPath("p/a/b"), To: vs[0]})
	require.NoError(t, err)
	defer stream.Close()
	other := vs[0]
	other.GUID++
	err = w.r.Receive(ctx, ReceiveRequest{FS: "p/a/b", To: other, Full: true}, stream)
	assert.ErrorIs(t, err, ErrReceivedWrongVersion)
	assert.Equal(t, before, listing())

	// The real thing creates the placeholders it needs.
	require.NoError(t, w.receiveFull(t, "p/a/b", "s1"))
	assert.Equal(t, append(before, "d/enc/r", "d/enc/r/p", "d/enc/r/p/a", "d/enc/r/p/a/b"), listing())
}

// A sink's client-identity dataset is the sink's own: with the default
// (unspecified) placeholder encryption below an encrypted root_fs, it is
// created inheriting the encryption, as zrepl does, so a new client's
// first push is accepted. Placeholders below it still need the setting.
func TestClientRootInheritsEncryptionWhenUnspecified(t *testing.T) {
	t.Run("first push of a pool", func(t *testing.T) {
		w := newPlaceholderWorld(t, PlaceholderUnspecified, true)
		w.r.ClientRoot = true
		w.r.Root = zfs.MustDatasetPath("d/enc/client")
		require.NoError(t, w.src.WriteData(zfs.MustDatasetPath("p"), 1, 2))
		require.NoError(t, w.src.Snapshot(ctx, zfs.MustDatasetPath("p"), "s1"))
		require.NoError(t, w.receiveFull(t, "p", "s1"))
		assert.Equal(t, []string{"d/enc/client {EncryptionOff:false}"}, w.created)
		info, ok := w.info(t, "d/enc/client")
		require.True(t, ok)
		assert.True(t, info.Placeholder && info.EncryptionRoot == "d/enc", "%+v, want a placeholder encrypted below d/enc", info)
		info, ok = w.info(t, "d/enc/client/p")
		require.True(t, ok)
		assert.Equal(t, "d/enc", info.EncryptionRoot, "received below the client root, inheriting")
	})
	t.Run("a placeholder below the client root", func(t *testing.T) {
		w := newPlaceholderWorld(t, PlaceholderUnspecified, true)
		w.r.ClientRoot = true
		err := w.receiveFull(t, "p/a/b", "s1")
		require.ErrorIs(t, err, ErrNotAllowed)
		assert.ErrorContains(t, err, "placeholder d/enc/r/p: its parent d/enc/r is encrypted")
		assert.Equal(t, []string{"d/enc/r {EncryptionOff:false}"}, w.created)
	})
	t.Run("off and inherit apply to the client root too", func(t *testing.T) {
		for mode, want := range map[PlaceholderEncryption]string{PlaceholderOff: "d/enc/r {EncryptionOff:true}", PlaceholderInherit: "d/enc/r {EncryptionOff:false}"} {
			w := newPlaceholderWorld(t, mode, true)
			w.r.ClientRoot = true
			require.NoError(t, w.receiveFull(t, "p/a/b", "s1"))
			assert.Equal(t, want, w.created[0], mode.String())
		}
	})
	t.Run("not a client root", func(t *testing.T) {
		w := newPlaceholderWorld(t, PlaceholderUnspecified, true)
		require.NoError(t, w.src.Snapshot(ctx, zfs.MustDatasetPath("p"), "s1"))
		require.ErrorIs(t, w.receiveFull(t, "p", "s1"), ErrNotAllowed)
		assert.Empty(t, w.created)
	})
}
