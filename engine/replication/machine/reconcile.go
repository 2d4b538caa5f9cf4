package machine

import (
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// reconcileNeeds decides from the two listings of an up-to-date filesystem
// with common base base whether the sender's marks are not where a
// completed run leaves them (exactly one cursor of the job, at base; no
// step bookmarks; no held snapshot, which may be a step hold), and on the
// receiver the snapshot the last-received hold belongs on if it may not be
// there (base's snapshot unheld, or another snapshot held). Holds of
// others make it call needlessly, which is harmless: the calls are
// idempotent.
//
// A step whose receive committed but whose last-received hold or
// StepCompleted failed leaves the filesystem up to date with its marks
// where the step before left them; only a side whose listing shows such
// leftovers is called, so a quiet filesystem costs nothing.
func reconcileNeeds(base zfs.FilesystemVersion, s, r *endpoint.Filesystem) (sender bool, holdTo *zfs.FilesystemVersion) {
	m := s.Marks
	sender = m.StepBookmarks || len(m.Cursors) != 1 || m.Cursors[0] != base.GUID
	for _, v := range s.Versions {
		if v.Kind == zfs.Snapshot && v.UserRefs > 0 {
			sender = true
		}
	}
	var to *zfs.FilesystemVersion
	otherHeld := false
	for i, v := range r.Versions {
		if v.Kind != zfs.Snapshot {
			continue
		}
		if v.GUID == base.GUID && (to == nil || v.CreateTXG > to.CreateTXG) {
			to = &r.Versions[i]
		}
	}
	for _, v := range r.Versions {
		if v.Kind == zfs.Snapshot && v.UserRefs > 0 && (to == nil || v.Name != to.Name) {
			otherHeld = true
		}
	}
	if to != nil && (to.UserRefs == 0 || otherHeld) {
		holdTo = to
	}
	return sender, holdTo
}
