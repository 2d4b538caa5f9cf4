package endpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// Abstraction is one hold or bookmark the project owns: what `zrepl holds
// list` shows and stale-hold cleanup works on.
type Abstraction struct {
	Kind AbstractionKind
	// Job is zero for the v1 cursor.
	Job JobID
	// Version is the held snapshot or the bookmark.
	Version zfs.VersionRef
	GUID    uint64
	TXG     uint64
	// Tag is the hold tag, for holds.
	Tag string
}

func (a Abstraction) String() string {
	job := a.Job.String()
	if job == "" {
		job = "-"
	}
	if a.Tag != "" {
		return fmt.Sprintf("%s job=%s %s tag=%s", a.Kind, job, a.Version, a.Tag)
	}
	return fmt.Sprintf("%s job=%s %s", a.Kind, job, a.Version)
}

// AbstractionFilter selects abstractions; zero fields select all.
type AbstractionFilter struct {
	Job   *JobID
	Kinds []AbstractionKind
}

func (f AbstractionFilter) match(a Abstraction) bool {
	if f.Job != nil && a.Job != *f.Job {
		return false
	}
	return len(f.Kinds) == 0 || slices.Contains(f.Kinds, a.Kind)
}

// ListAbstractions lists the project's holds and bookmarks on every
// filesystem below roots, ordered by filesystem, then txg, then name: one
// listing per root, and only snapshots with user references are asked for
// their holds.
func ListAbstractions(ctx context.Context, z zfs.ZFS, roots []zfs.DatasetPath, filter AbstractionFilter) ([]Abstraction, error) {
	var out []Abstraction
	seen := map[string]bool{}
	for _, root := range roots {
		tree, err := z.ListTree(ctx, root)
		if err != nil {
			return nil, fmt.Errorf("list filesystems below %s: %w", root, err)
		}
		for _, l := range tree {
			if seen[l.Info.Path.String()] {
				continue
			}
			seen[l.Info.Path.String()] = true
			found, err := abstractionsOf(ctx, z, l.Info.Path, l.Versions, filter)
			if err != nil {
				return nil, err
			}
			out = append(out, found...)
		}
	}
	return out, nil
}

// ListAbstractionsOf lists the project's holds and bookmarks on fs alone
// (not below it), ordered by txg, then name; none if fs vanished.
func ListAbstractionsOf(ctx context.Context, z zfs.ZFS, fs zfs.DatasetPath, filter AbstractionFilter) ([]Abstraction, error) {
	versions, err := z.ListVersions(ctx, fs)
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		return nil, nil // destroyed while we listed
	}
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", fs, err)
	}
	return abstractionsOf(ctx, z, fs, versions, filter)
}

func abstractionsOf(ctx context.Context, z zfs.ZFS, fs zfs.DatasetPath, versions []zfs.FilesystemVersion, filter AbstractionFilter) ([]Abstraction, error) {
	var out []Abstraction
	var held []zfs.VersionRef
	byName := map[string]zfs.FilesystemVersion{}
	for _, v := range versions {
		switch v.Kind {
		case zfs.Bookmark:
			if p, ok := ParseBookmarkName(v.Name); ok {
				out = append(out, Abstraction{Kind: p.Kind, Job: p.Job, Version: v.Ref(fs), GUID: v.GUID, TXG: v.CreateTXG})
			}
		case zfs.Snapshot:
			if v.UserRefs > 0 {
				held = append(held, v.Ref(fs))
				byName[v.Name] = v
			}
		}
	}
	if len(held) > 0 {
		holds, err := z.Holds(ctx, held)
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			return nil, nil // destroyed while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("list holds of %s: %w", fs, err)
		}
		for name, tags := range holds {
			v := byName[name]
			for _, tag := range tags {
				if p, ok := ParseHoldTag(tag); ok {
					out = append(out, Abstraction{Kind: p.Kind, Job: p.Job, Version: v.Ref(fs), GUID: v.GUID, TXG: v.CreateTXG, Tag: tag})
				}
			}
		}
	}
	out = slices.DeleteFunc(out, func(a Abstraction) bool { return !filter.match(a) })
	slices.SortFunc(out, func(a, b Abstraction) int {
		if a.TXG != b.TXG {
			return cmpUint(a.TXG, b.TXG)
		}
		return strings.Compare(a.String(), b.String())
	})
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
