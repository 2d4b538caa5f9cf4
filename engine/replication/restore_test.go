package replication_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

// A sender whose state went back in time (restored from a backup, or its
// last rename lost in a power cut) and drew the GUIDs of the snapshots it
// lost again for new ones: the seeded model does exactly that, as the
// model backend did when it seeded from its start time. The receiver has
// the lost snapshots. Every later run must fail for the filesystem, naming
// it, and leave the receiver as it is: never "up to date" with 0 bytes
// because a new snapshot has an old one's GUID, never an incremental onto
// the receiver's unrelated snapshot of that GUID.
func TestRestoredSenderReusingGUIDs(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Minute)
		return now
	}
	mp, err := modelpair.New(modelpair.Options{Clock: clock})
	require.NoError(t, err)
	p := &pair{t: t, src: mp.Src, dst: mp.Dst}
	p.setJob("job")
	const fs = "src/data/fs"
	p.create(fs, false)
	p.write(fs, 1, 2)
	p.snap(fs, "a")
	require.NoError(t, p.run(replication.Config{}).Err())

	var backup bytes.Buffer
	require.NoError(t, p.src.Save(&backup))
	for i, s := range []string{"b", "c"} {
		p.write(fs, int64(2+i), 2)
		p.snap(fs, s)
	}
	require.NoError(t, p.run(replication.Config{}).Err())
	received := snapNames(versions(t, p.dst, "dst/client/"+fs), zfs.Snapshot)
	require.Equal(t, []string{"a", "b", "c"}, received)

	restored, err := zfsmodel.Load(&backup, zfsmodel.Options{Clock: clock})
	require.NoError(t, err)
	p.src = restored
	p.setJob("job")
	for i, s := range []string{"x", "y", "z"} {
		p.write(fs, int64(10+i), 3)
		p.snap(fs, s)
		rep := p.run(replication.Config{})
		err := rep.Err()
		require.Error(t, err, "after @%s: %+v", s, rep)
		assert.Contains(t, err.Error(), fs, "after @%s", s)
		if s != "x" {
			// @x has @b's GUID and the receiver has @c after it: that
			// alone is a conflict. From @y on only the GUID check tells.
			assert.ErrorIs(t, err, planner.ConflictGUIDReused, "after @%s", s)
		}
		assert.Equal(t, received, snapNames(versions(t, p.dst, "dst/client/"+fs), zfs.Snapshot), "after @%s the receiver is unchanged", s)
	}
}
