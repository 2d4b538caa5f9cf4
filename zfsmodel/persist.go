package zfsmodel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// saveFormat versions the persisted state. Format 1 had a seed in every
// state, also the daemon's (its start time): such a state restored from a
// backup handed out the GUIDs it had handed out since once more. Format 2
// has a seed only where a test gave one; Load of format 1 drops its seed.
const saveFormat = 2

type saved struct {
	Format int
	State  state
}

// Save writes the whole model state (pools, filesystems, versions, holds,
// partial receive state) as JSON. Receives in flight and pending fault
// injections are not saved.
func (m *Model) Save(w io.Writer) error {
	m.mu.Lock()
	b, err := m.st.appendJSON(make([]byte, 0, 4096))
	m.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// LoadError is why Load refused a state: the dataset (or pool) it concerns,
// empty where the state as a whole is at fault.
type LoadError struct {
	Dataset string
	Reason  string
}

func (e *LoadError) Error() string {
	if e.Dataset == "" {
		return "zfsmodel: load: " + e.Reason
	}
	return fmt.Sprintf("zfsmodel: load: %s: %s", e.Dataset, e.Reason)
}

// Load reads a model written by Save. A seeded model (format 2) keeps its
// saved seed and goes on with its GUID sequence; o.Seed is ignored, o.Clock
// is used from now on.
//
// Load accepts only a state the model itself could have produced in every
// respect the engine relies on: valid and unique names, non-zero GUIDs
// unique where ZFS makes them unique, transaction groups in order and not
// ahead of their pool's. A state edited by hand or damaged otherwise is
// refused with the dataset at fault, not served to a pruner or planner
// that would fail on it at every run.
func Load(r io.Reader, o Options) (*Model, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("zfsmodel: load: %w", err)
	}
	s, err := decode(data)
	if err != nil {
		return nil, err
	}
	switch s.Format {
	case saveFormat:
	case 1:
		s.State.Seed = 0
	default:
		return nil, &LoadError{Reason: fmt.Sprintf("unsupported format %d (want %d)", s.Format, saveFormat)}
	}
	if err := s.State.validate(); err != nil {
		return nil, err
	}
	m := &Model{st: s.State}
	m.init(o)
	return m, nil
}

// decode is what data says: decodeSaved's fast way for what Save wrote,
// encoding/json for the rest (older formats, states written otherwise).
func decode(data []byte) (saved, error) {
	if st, ok := decodeSaved(data); ok {
		return saved{Format: saveFormat, State: st}, nil
	}
	var s saved
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return saved{}, fmt.Errorf("zfsmodel: load: %w", err)
	}
	return s, nil
}

// validate checks a loaded state and fills in empty maps that JSON leaves
// nil. It visits pools and datasets in name order, so that the error for a
// state with several faults does not depend on map order.
func (st *state) validate() error {
	if st.Pools == nil || st.Datasets == nil {
		return &LoadError{Reason: "state has no pools or datasets"}
	}
	for _, name := range sortedKeys(st.Pools) {
		p := st.Pools[name]
		bad := func(format string, args ...any) error {
			return &LoadError{Dataset: name, Reason: "pool: " + fmt.Sprintf(format, args...)}
		}
		switch {
		case p == nil || p.Name != name:
			return bad("entry is inconsistent")
		case zfs.ValidateDatasetPath(name) != nil || strings.Contains(name, "/"):
			return bad("not a valid pool name")
		case st.Datasets[name] == nil:
			return bad("has no root filesystem")
		}
	}
	fsGUIDs := map[uint64]string{}
	for _, name := range sortedKeys(st.Datasets) {
		if err := st.validateDataset(name, fsGUIDs); err != nil {
			return err
		}
	}
	return nil
}

func (st *state) validateDataset(name string, fsGUIDs map[uint64]string) error {
	d := st.Datasets[name]
	bad := func(format string, args ...any) error {
		return &LoadError{Dataset: name, Reason: fmt.Sprintf(format, args...)}
	}
	if d == nil || d.Name != name {
		return bad("dataset entry is inconsistent")
	}
	if err := zfs.ValidateDatasetPath(name); err != nil {
		return bad("%v", err)
	}
	p := st.Pools[poolOf(name)]
	if p == nil {
		return bad("has no pool")
	}
	if parent, ok := parentOf(name); ok && st.Datasets[parent] == nil {
		return bad("has no parent")
	}
	if d.GUID == 0 {
		return bad("guid 0")
	}
	if other, dup := fsGUIDs[d.GUID]; dup {
		return bad("has the guid %d of %s", d.GUID, other)
	}
	fsGUIDs[d.GUID] = name
	if d.HeadTXG > p.TXG {
		return bad("written in txg %d, after its pool's txg %d", d.HeadTXG, p.TXG)
	}
	if d.Props == nil {
		d.Props = map[string]string{}
	}
	if d.Head == nil {
		d.Head = content{}
	}
	snapTXG := map[uint64]uint64{} // guid -> txg
	names := map[string]bool{}
	for i, sn := range d.Snaps {
		if sn == nil {
			return bad("null snapshot")
		}
		rel := "@" + sn.Name
		if err := zfs.ValidateVersionName(zfs.Snapshot, sn.Name); err != nil {
			return bad("snapshot %q: %v", sn.Name, err)
		}
		switch {
		case names[sn.Name]:
			return bad("snapshot %s listed twice", rel)
		case sn.GUID == 0:
			return bad("snapshot %s has guid 0", rel)
		case snapTXG[sn.GUID] != 0:
			return bad("two snapshots have guid %d", sn.GUID)
		case sn.TXG == 0 || sn.TXG > p.TXG:
			return bad("snapshot %s has createtxg %d, outside its pool's 1..%d", rel, sn.TXG, p.TXG)
		case i > 0 && sn.TXG <= d.Snaps[i-1].TXG:
			return bad("snapshots are not in createtxg order (%s after @%s)", rel, d.Snaps[i-1].Name)
		case !slices.IsSorted(sn.Holds) || len(slices.Compact(slices.Clone(sn.Holds))) != len(sn.Holds):
			return bad("holds of %s are not sorted and unique", rel)
		}
		for _, tag := range sn.Holds {
			if err := zfs.ValidateHoldTag(tag); err != nil {
				return bad("hold on %s: %v", rel, err)
			}
		}
		names[sn.Name] = true
		snapTXG[sn.GUID] = sn.TXG
		if sn.Content == nil {
			sn.Content = content{}
		}
	}
	clear(names)
	for _, b := range d.Bookmarks {
		if b == nil {
			return bad("null bookmark")
		}
		rel := "#" + b.Name
		if err := zfs.ValidateVersionName(zfs.Bookmark, b.Name); err != nil {
			return bad("bookmark %q: %v", b.Name, err)
		}
		switch {
		case names[b.Name]:
			return bad("bookmark %s listed twice", rel)
		case b.GUID == 0:
			return bad("bookmark %s has guid 0", rel)
		case b.TXG == 0 || b.TXG > p.TXG:
			return bad("bookmark %s has createtxg %d, outside its pool's 1..%d", rel, b.TXG, p.TXG)
		case snapTXG[b.GUID] != 0 && snapTXG[b.GUID] != b.TXG:
			// A bookmark is made from a snapshot and carries its guid and
			// createtxg: these would be two versions taken for one.
			return bad("bookmark %s has the guid %d of a snapshot but createtxg %d, not the snapshot's %d", rel, b.GUID, b.TXG, snapTXG[b.GUID])
		}
		names[b.Name] = true
	}
	if d.Encrypted {
		r := st.Datasets[d.EncRoot]
		if r == nil || !r.Encrypted || r.EncRoot != r.Name {
			return bad("encryption root %q is not an encryption root", d.EncRoot)
		}
	}
	if pa := d.Partial; pa != nil {
		if pa.Blocks == nil {
			pa.Blocks = content{}
		}
		if !pa.Full && !pa.Overwrite && snapTXG[pa.BaseGUID] == 0 {
			return bad("partial receive builds on guid %d, which is none of its snapshots", pa.BaseGUID)
		}
	}
	return nil
}

// Clone is a model with a copy of m's persisted state, as Load(Save(m))
// would give, without encoding it: receives in flight and pending fault
// injections stay behind. Snapshot contents are shared (they never change
// once taken); everything that can change is copied.
func (m *Model) Clone(o Options) *Model {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := state{Seed: m.st.Seed, GUIDCounter: m.st.GUIDCounter, Pools: make(map[string]*pool, len(m.st.Pools)), Datasets: make(map[string]*dataset, len(m.st.Datasets))}
	for name, p := range m.st.Pools {
		cp := *p
		st.Pools[name] = &cp
	}
	for name, d := range m.st.Datasets {
		st.Datasets[name] = d.clone()
	}
	c := &Model{st: st}
	c.init(o)
	return c
}

// clone is a copy of d that shares only the snapshots' contents (they
// never change once taken).
func (d *dataset) clone() *dataset {
	cd := *d
	cd.Props = make(map[string]string, len(d.Props))
	for k, v := range d.Props {
		cd.Props[k] = v
	}
	cd.Received = maps.Clone(d.Received)
	cd.Head = d.Head.clone()
	// slices.Clone keeps nil apart from empty, as Save tells them
	// apart.
	cd.Snaps = slices.Clone(d.Snaps)
	for i, s := range cd.Snaps {
		cs := *s
		cs.Holds = slices.Clone(s.Holds)
		cd.Snaps[i] = &cs
	}
	cd.Bookmarks = slices.Clone(d.Bookmarks)
	for i, b := range cd.Bookmarks {
		cb := *b
		cd.Bookmarks[i] = &cb
	}
	if d.Partial != nil {
		cp := *d.Partial
		cp.Blocks = d.Partial.Blocks.clone()
		cd.Partial = &cp
	}
	return &cd
}
