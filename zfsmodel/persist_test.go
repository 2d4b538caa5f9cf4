package zfsmodel

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

// history runs the same calls on m: a filesystem, two snapshots; it
// returns the GUIDs they got.
func history(t *testing.T, m *Model, fs string) []uint64 {
	t.Helper()
	p := zfs.MustDatasetPath(fs)
	require.NoError(t, m.CreateFilesystem(p, FSOptions{Parents: true}))
	var guids []uint64
	for _, s := range []string{"a", "b"} {
		require.NoError(t, m.Snapshot(bg, p, s))
		vs, err := m.ListVersions(bg, p)
		require.NoError(t, err)
		guids = append(guids, vs[len(vs)-1].GUID)
	}
	info, err := m.Info(p)
	require.NoError(t, err)
	return append(guids, info.GUID)
}

// TestUnseededGUIDsDoNotRepeat: without a seed (the daemon's model
// backend) a state that goes back in time, restored from a backup, hands
// out new GUIDs, not those it handed out after the backup: a receiver that
// has those would take new snapshots for the old ones.
func TestUnseededGUIDsDoNotRepeat(t *testing.T) {
	m := New(Options{})
	require.NoError(t, m.CreatePool("p"))
	backup := saveBytes(t, m)
	first := history(t, m, "p/fs")
	restored := loadBytes(t, backup)
	again := history(t, restored, "p/fs")
	for i := range first {
		assert.NotEqual(t, first[i], again[i], "GUID %d repeated after a restore", i)
	}
	other := New(Options{})
	require.NoError(t, other.CreatePool("p"))
	assert.NotEqual(t, first, history(t, other, "p/fs"), "two unseeded models")
	// Saved and loaded again, it stays unseeded.
	var st saved
	require.NoError(t, json.Unmarshal(saveBytes(t, restored), &st))
	assert.Zero(t, st.State.Seed)
}

// TestSeededGUIDsAreDeterministic: a seed (tests, simulations) makes the
// same calls give the same GUIDs, also across Save and Load.
func TestSeededGUIDsAreDeterministic(t *testing.T) {
	a, b := New(Options{Seed: 5}), New(Options{Seed: 5})
	require.NoError(t, a.CreatePool("p"))
	require.NoError(t, b.CreatePool("p"))
	b = loadBytes(t, saveBytes(t, b))
	assert.Equal(t, history(t, a, "p/fs"), history(t, b, "p/fs"))
}

// TestLoadFormat1DropsSeed: format 1 saved the daemon's start time as the
// seed, so a restored format-1 state would repeat GUIDs; loaded, it draws
// random ones.
func TestLoadFormat1DropsSeed(t *testing.T) {
	m := New(Options{Seed: 99})
	require.NoError(t, m.CreatePool("p"))
	backup := bytes.Replace(saveBytes(t, m), []byte(`"Format":2`), []byte(`"Format":1`), 1)
	first := history(t, loadBytes(t, backup), "p/fs")
	assert.NotEqual(t, first, history(t, loadBytes(t, backup), "p/fs"))
}

// TestLoadRefusesInvalidState: a state with names or GUIDs the model
// never produces is refused, naming the dataset, rather than served to a
// planner or pruner that would fail on it at every run.
func TestLoadRefusesInvalidState(t *testing.T) {
	w := newWorld(t)
	require.NoError(t, w.m.Hold(bg, zfs.SnapshotRef(w.src, "s1"), "keep"))
	require.NoError(t, w.m.Bookmark(bg, zfs.SnapshotRef(w.src, "s1"), "b1"))
	good := saveBytes(t, w.m)
	loadBytes(t, good)

	cases := []struct {
		name    string
		edit    func(st *state)
		dataset string
		want    string
	}{
		{"invalid snapshot name", func(st *state) { st.Datasets["srcp/fs"].Snaps[0].Name = "s 1@x" }, "srcp/fs", "snapshot"},
		{"empty snapshot name", func(st *state) { st.Datasets["srcp/fs"].Snaps[0].Name = "" }, "srcp/fs", "snapshot"},
		{"duplicate snapshot name", func(st *state) { st.Datasets["srcp/fs"].Snaps[1].Name = "s1" }, "srcp/fs", "listed twice"},
		{"duplicate snapshot guid", func(st *state) {
			s := st.Datasets["srcp/fs"].Snaps
			s[1].GUID = s[0].GUID
		}, "srcp/fs", "two snapshots have guid"},
		{"snapshot guid 0", func(st *state) { st.Datasets["srcp/fs"].Snaps[0].GUID = 0 }, "srcp/fs", "guid 0"},
		{"snapshot txg after the pool's", func(st *state) { st.Datasets["srcp/fs"].Snaps[1].TXG = 1 << 40 }, "srcp/fs", "outside its pool's"},
		{"snapshots out of order", func(st *state) {
			s := st.Datasets["srcp/fs"].Snaps
			s[0], s[1] = s[1], s[0]
		}, "srcp/fs", "createtxg order"},
		{"invalid hold tag", func(st *state) { st.Datasets["srcp/fs"].Snaps[0].Holds = []string{""} }, "srcp/fs", "hold"},
		{"duplicate hold tag", func(st *state) { st.Datasets["srcp/fs"].Snaps[0].Holds = []string{"keep", "keep"} }, "srcp/fs", "sorted and unique"},
		{"invalid bookmark name", func(st *state) { st.Datasets["srcp/fs"].Bookmarks[0].Name = "b#1" }, "srcp/fs", "bookmark"},
		{"duplicate bookmark name", func(st *state) {
			d := st.Datasets["srcp/fs"]
			b := *d.Bookmarks[0]
			d.Bookmarks = append(d.Bookmarks, &b)
		}, "srcp/fs", "listed twice"},
		{"bookmark with another createtxg than its snapshot", func(st *state) { st.Datasets["srcp/fs"].Bookmarks[0].TXG++ }, "srcp/fs", "createtxg"},
		{"filesystem guid 0", func(st *state) { st.Datasets["srcp/fs"].GUID = 0 }, "srcp/fs", "guid 0"},
		{"duplicate filesystem guid", func(st *state) { st.Datasets["srcp/fs"].GUID = st.Datasets["srcp"].GUID }, "srcp/fs", "has the guid"},
		{"pool with a slash", func(st *state) {
			st.Pools["a/b"] = &pool{Name: "a/b"}
		}, "a/b", "pool name"},
		{"pool without root filesystem", func(st *state) { delete(st.Datasets, "dstp") }, "dstp", "root filesystem"},
		{"head written after the pool's txg", func(st *state) { st.Datasets["srcp/fs"].HeadTXG = 1 << 40 }, "srcp/fs", "after its pool's txg"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s saved
			require.NoError(t, json.Unmarshal(good, &s))
			c.edit(&s.State)
			b, err := json.Marshal(s)
			require.NoError(t, err)
			_, err = Load(bytes.NewReader(b), Options{})
			require.Error(t, err)
			var le *LoadError
			require.True(t, errors.As(err, &le), "%T %v", err, err)
			assert.Equal(t, c.dataset, le.Dataset, "%v", err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

// checkServable asserts what the engine relies on of every listing of an
// accepted state: valid names, each once per kind, non-zero GUIDs.
func checkServable(t *testing.T, m *Model) {
	for _, name := range sortedKeys(m.st.Datasets) {
		vs, err := m.ListVersions(bg, zfs.MustDatasetPath(name))
		require.NoError(t, err)
		seen := map[string]bool{}
		for _, v := range vs {
			require.NoError(t, zfs.ValidateVersionName(v.Kind, v.Name), "%s%s", name, v.RelName())
			require.False(t, seen[v.RelName()], "%s%s listed twice", name, v.RelName())
			require.NotZero(t, v.GUID, "%s%s", name, v.RelName())
			seen[v.RelName()] = true
		}
		if !strings.Contains(name, "/") {
			_, err := m.ListFilesystems(bg, zfs.MustDatasetPath(name))
			require.NoError(t, err)
		}
	}
}
