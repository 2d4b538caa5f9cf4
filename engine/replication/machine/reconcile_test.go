package machine

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

func TestReconcileNeeds(t *testing.T) {
	snap := func(name string, guid, txg, refs uint64) zfs.FilesystemVersion {
		return zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: name, GUID: guid, CreateTXG: txg, UserRefs: refs}
	}
	base := snap("b", 2, 20, 0)
	clean := endpoint.Filesystem{Versions: []zfs.FilesystemVersion{snap("a", 1, 10, 0), base}, Marks: endpoint.JobMarks{Cursors: []uint64{2}}}
	recv := func(aRefs, bRefs uint64) *endpoint.Filesystem {
		return &endpoint.Filesystem{Versions: []zfs.FilesystemVersion{snap("a", 1, 3, aRefs), snap("b", 2, 4, bRefs)}}
	}
	with := func(f func(*endpoint.Filesystem)) *endpoint.Filesystem {
		c := clean
		c.Versions = append([]zfs.FilesystemVersion(nil), clean.Versions...)
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		name       string
		s, r       *endpoint.Filesystem
		wantSender bool
		wantHold   bool
	}{
		{"as a completed run leaves it", &clean, recv(0, 1), false, false},
		{"no cursor", with(func(f *endpoint.Filesystem) { f.Marks.Cursors = nil }), recv(0, 1), true, false},
		{"cursor behind", with(func(f *endpoint.Filesystem) { f.Marks.Cursors = []uint64{1} }), recv(0, 1), true, false},
		{"two cursors", with(func(f *endpoint.Filesystem) { f.Marks.Cursors = []uint64{1, 2} }), recv(0, 1), true, false},
		{"step bookmark left", with(func(f *endpoint.Filesystem) { f.Marks.StepBookmarks = true }), recv(0, 1), true, false},
		{"held sender snapshot", with(func(f *endpoint.Filesystem) { f.Versions[1].UserRefs = 1 }), recv(0, 1), true, false},
		{"receiver's hold behind", &clean, recv(1, 0), false, true},
		{"receiver's hold on both", &clean, recv(1, 1), false, true},
		{"receiver unheld", &clean, recv(0, 0), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sender, hold := reconcileNeeds(base, tc.s, tc.r)
			assert.Equal(t, tc.wantSender, sender)
			if tc.wantHold {
				if assert.NotNil(t, hold) {
					assert.Equal(t, "b", hold.Name)
				}
			} else {
				assert.Nil(t, hold)
			}
		})
	}
}
