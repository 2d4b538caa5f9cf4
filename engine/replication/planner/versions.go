package planner

import (
	"cmp"
	"fmt"
	"slices"

	"zrepl.dev/zrepl/engine/zfs"
)

// compareSenderVersions is the sender's history order: createtxg, then
// snapshots before the bookmarks made from them, then name. Names are
// unique per kind, so the order is total and the plan does not depend on
// the listing's order.
func compareSenderVersions(a, b zfs.FilesystemVersion) int {
	if c := cmp.Compare(a.CreateTXG, b.CreateTXG); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// compareReceiverSnapshots orders the receiver's snapshots by its own
// createtxg (unrelated to the sender's); GUID and name only break ties a
// bogus listing could contain.
func compareReceiverSnapshots(a, b zfs.FilesystemVersion) int {
	if c := cmp.Compare(a.CreateTXG, b.CreateTXG); c != 0 {
		return c
	}
	if c := cmp.Compare(a.GUID, b.GUID); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

func describe(v zfs.FilesystemVersion) string {
	return fmt.Sprintf("%s (guid %d, createtxg %d)", v.RelName(), v.GUID, v.CreateTXG)
}

func describePtr(v *zfs.FilesystemVersion, none string) string {
	if v == nil {
		return none
	}
	return describe(*v)
}

func checkVersion(v zfs.FilesystemVersion) error {
	if v.Kind != zfs.Snapshot && v.Kind != zfs.Bookmark {
		return fmt.Errorf("version %q has unknown kind %d", v.Name, v.Kind)
	}
	// Allocation-free unless the name is invalid: a listing can hold a
	// million versions.
	if err := zfs.ValidateVersionName(v.Kind, v.Name); err != nil {
		return err
	}
	if v.GUID == 0 {
		return fmt.Errorf("%s has guid 0", v.RelName())
	}
	return nil
}

// scratch holds buffers reused across filesystems.
type scratch struct {
	guids []uint64
	names []string
}

// senderHistory validates the sender's versions and returns them in
// history order. The input is not modified; it is copied only when it is
// not already in order (listings usually are).
func senderHistory(vs []zfs.FilesystemVersion, sc *scratch) ([]zfs.FilesystemVersion, error) {
	for _, v := range vs {
		if err := checkVersion(v); err != nil {
			return nil, err
		}
	}
	if !slices.IsSortedFunc(vs, compareSenderVersions) {
		vs = slices.Clone(vs)
		slices.SortFunc(vs, compareSenderVersions)
	}
	// One snapshot per txg and per GUID, one version per name and kind:
	// anything else would make From and To ambiguous.
	sc.guids = sc.guids[:0]
	var prevSnap *zfs.FilesystemVersion
	for i := range vs {
		v := &vs[i]
		if v.Kind != zfs.Snapshot {
			continue
		}
		if prevSnap != nil && prevSnap.CreateTXG == v.CreateTXG {
			return nil, fmt.Errorf("snapshots %s and %s have the same createtxg %d", prevSnap.RelName(), v.RelName(), v.CreateTXG)
		}
		prevSnap = v
		sc.guids = append(sc.guids, v.GUID)
	}
	slices.Sort(sc.guids)
	for i := 1; i < len(sc.guids); i++ {
		if sc.guids[i] == sc.guids[i-1] {
			return nil, fmt.Errorf("two snapshots have guid %d", sc.guids[i])
		}
	}
	for _, kind := range []zfs.VersionKind{zfs.Snapshot, zfs.Bookmark} {
		sc.names = sc.names[:0]
		for i := range vs {
			if vs[i].Kind == kind {
				sc.names = append(sc.names, vs[i].Name)
			}
		}
		slices.Sort(sc.names)
		for i := 1; i < len(sc.names); i++ {
			if sc.names[i] == sc.names[i-1] {
				return nil, fmt.Errorf("%s name %q listed twice", kind, sc.names[i])
			}
		}
	}
	return vs, nil
}

// receiverSnapshots validates the receiver's versions and returns its
// snapshots, oldest first. Bookmarks are ignored: a receive needs a
// snapshot as its incremental source. Like senderHistory it copies only
// when it must.
func receiverSnapshots(vs []zfs.FilesystemVersion) ([]zfs.FilesystemVersion, error) {
	onlySnaps := true
	for _, v := range vs {
		if err := checkVersion(v); err != nil {
			return nil, err
		}
		onlySnaps = onlySnaps && v.Kind == zfs.Snapshot
	}
	if onlySnaps && slices.IsSortedFunc(vs, compareReceiverSnapshots) {
		return vs, nil
	}
	snaps := make([]zfs.FilesystemVersion, 0, len(vs))
	for _, v := range vs {
		if v.Kind == zfs.Snapshot {
			snaps = append(snaps, v)
		}
	}
	slices.SortFunc(snaps, compareReceiverSnapshots)
	return snaps, nil
}
