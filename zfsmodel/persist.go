package zfsmodel

import (
	"encoding/json"
	"fmt"
	"io"

	"zrepl.dev/zrepl/engine/zfs"
)

// saveFormat versions the persisted state.
const saveFormat = 1

type saved struct {
	Format int
	State  state
}

// Save writes the whole model state (pools, filesystems, versions, holds,
// partial receive state) as JSON. Receives in flight and pending fault
// injections are not saved.
func (m *Model) Save(w io.Writer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	enc := json.NewEncoder(w)
	return enc.Encode(saved{Format: saveFormat, State: m.st})
}

// Load reads a model written by Save. The seed is the saved one; o.Seed is
// ignored, o.Clock is used from now on.
func Load(r io.Reader, o Options) (*Model, error) {
	var s saved
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("zfsmodel: load: %w", err)
	}
	if s.Format != saveFormat {
		return nil, fmt.Errorf("zfsmodel: load: unsupported format %d (want %d)", s.Format, saveFormat)
	}
	if s.State.Pools == nil || s.State.Datasets == nil {
		return nil, fmt.Errorf("zfsmodel: load: state has no pools or datasets")
	}
	for name, d := range s.State.Datasets {
		if d == nil || d.Name != name {
			return nil, fmt.Errorf("zfsmodel: load: dataset entry %q is inconsistent", name)
		}
		if err := zfs.ValidateDatasetPath(name); err != nil {
			return nil, fmt.Errorf("zfsmodel: load: %w", err)
		}
		if s.State.Pools[poolOf(name)] == nil {
			return nil, fmt.Errorf("zfsmodel: load: dataset %q has no pool", name)
		}
		if parent, ok := parentOf(name); ok && s.State.Datasets[parent] == nil {
			return nil, fmt.Errorf("zfsmodel: load: dataset %q has no parent", name)
		}
		for i := 1; i < len(d.Snaps); i++ {
			if d.Snaps[i] == nil || d.Snaps[i-1] == nil || d.Snaps[i].TXG <= d.Snaps[i-1].TXG {
				return nil, fmt.Errorf("zfsmodel: load: snapshots of %q are not in createtxg order", name)
			}
		}
		if d.Props == nil {
			d.Props = map[string]string{}
		}
		if d.Head == nil {
			d.Head = content{}
		}
		for _, b := range d.Bookmarks {
			if b == nil {
				return nil, fmt.Errorf("zfsmodel: load: null bookmark in %q", name)
			}
		}
		for _, sn := range d.Snaps {
			if sn == nil {
				return nil, fmt.Errorf("zfsmodel: load: null snapshot in %q", name)
			}
			if sn.Content == nil {
				sn.Content = content{}
			}
		}
		if d.Encrypted {
			r := s.State.Datasets[d.EncRoot]
			if r == nil || !r.Encrypted || r.EncRoot != r.Name {
				return nil, fmt.Errorf("zfsmodel: load: encryption root %q of %q is not an encryption root", d.EncRoot, name)
			}
		}
		if d.Partial != nil && d.Partial.Blocks == nil {
			d.Partial.Blocks = content{}
		}
	}
	m := &Model{st: s.State}
	m.init(o)
	return m, nil
}
