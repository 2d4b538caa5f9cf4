package zfstest

import (
	"slices"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	registerSerial("ListPools", caseListPools)
}

func (e *env) pools() []zfs.DatasetPath {
	e.t.Helper()
	ps, err := e.z.ListPools(e.ctx)
	e.noErr(err, "list pools")
	for i, p := range ps {
		if p.Depth() != 0 {
			e.t.Errorf("ListPools lists %s, which is not a pool's root filesystem", p)
		}
		if i > 0 && ps[i-1].String() >= p.String() {
			e.t.Errorf("ListPools is not sorted and unique: %v", ps)
		}
	}
	return ps
}

// caseListPools: every imported pool is listed by its root filesystem, a
// new pool appears and a destroyed one goes.
func caseListPools(e *env) {
	home := zfs.MustDatasetPath(e.root.Pool())
	before := e.pools()
	if !slices.Contains(before, home) {
		e.t.Fatalf("ListPools = %v lacks %s, the pool of %s", before, home, e.root)
	}
	other, destroy := e.h.NewPool(e.t)
	if other.Depth() != 0 {
		e.t.Fatalf("harness gave %s as a pool's root filesystem", other)
	}
	during := e.pools()
	if !slices.Contains(during, other) || !slices.Contains(during, home) || len(during) != len(before)+1 {
		e.t.Errorf("after creating pool %s: ListPools = %v, was %v", other, during, before)
	}
	// Each root lists as the first filesystem of its pool.
	for _, p := range []zfs.DatasetPath{home, other} {
		infos, err := e.z.ListFilesystems(e.ctx, p)
		e.noErr(err, "list filesystems of %s", p)
		if len(infos) == 0 || infos[0].Path != p {
			e.t.Errorf("ListFilesystems(%s) does not start with it: %v", p, infos)
		}
	}
	e.noErr(destroy(), "destroy pool %s", other)
	if after := e.pools(); !slices.Equal(after, before) {
		e.t.Errorf("after destroying pool %s: ListPools = %v, want %v", other, after, before)
	}
}
