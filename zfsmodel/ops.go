package zfsmodel

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// ListPools implements zfs.ZFS.
func (m *Model) ListPools(ctx context.Context) ([]zfs.DatasetPath, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("ListPools"); err != nil {
		return nil, err
	}
	names := sortedKeys(m.st.Pools)
	out := make([]zfs.DatasetPath, len(names))
	for i, n := range names {
		out[i] = zfs.MustDatasetPath(n)
	}
	return out, nil
}

// ListFilesystems implements zfs.ZFS.
func (m *Model) ListFilesystems(ctx context.Context, root zfs.DatasetPath) ([]zfs.FilesystemInfo, error) {
	const op = "list"
	if err := checkPath(op, root); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("ListFilesystems"); err != nil {
		return nil, err
	}
	if _, err := m.lookup(op, root.String()); err != nil {
		return nil, err
	}
	// Sorting by name puts parents first: a parent is a proper prefix.
	var out []zfs.FilesystemInfo
	for _, name := range sortedKeys(m.st.Datasets) {
		if name != root.String() && !strings.HasPrefix(name, root.String()+"/") {
			continue
		}
		out = append(out, m.info(m.st.Datasets[name]))
	}
	return out, nil
}

func (m *Model) info(d *dataset) zfs.FilesystemInfo {
	fi := zfs.FilesystemInfo{
		Path:       zfs.MustDatasetPath(d.Name),
		GUID:       d.GUID,
		Encryption: "off",
		KeyStatus:  zfs.KeyStatusNone,
		// A local value only, as zrepl reads it (a received one, from
		// zfs send -p, makes no placeholder: ReceivedPlaceholderProperty).
		Placeholder: d.Props[zfs.PlaceholderProperty] == "on",
	}
	if d.Encrypted {
		fi.Encryption = Cipher
		fi.EncryptionRoot = d.EncRoot
		fi.KeyStatus = zfs.KeyStatusUnavailable
		if m.keyLoaded(d) {
			fi.KeyStatus = zfs.KeyStatusAvailable
		}
	}
	if d.Partial != nil {
		fi.ReceiveResumeToken = d.Partial.token()
	}
	return fi
}

// Info returns what ListFilesystems would list for fs alone.
func (m *Model) Info(fs zfs.DatasetPath) (zfs.FilesystemInfo, error) {
	if err := checkPath("list", fs); err != nil {
		return zfs.FilesystemInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookup("list", fs.String())
	if err != nil {
		return zfs.FilesystemInfo{}, err
	}
	return m.info(d), nil
}

// ListVersions implements zfs.ZFS.
func (m *Model) ListVersions(ctx context.Context, fs zfs.DatasetPath) ([]zfs.FilesystemVersion, error) {
	const op = "list"
	if err := checkPath(op, fs); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("ListVersions"); err != nil {
		return nil, err
	}
	d, err := m.lookup(op, fs.String())
	if err != nil {
		return nil, err
	}
	return versionsOf(d), nil
}

// ListTree implements zfs.ZFS.
func (m *Model) ListTree(ctx context.Context, root zfs.DatasetPath) ([]zfs.Listing, error) {
	const op = "list"
	if err := checkPath(op, root); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("ListTree", "ListFilesystems", "ListVersions"); err != nil {
		return nil, err
	}
	if _, err := m.lookup(op, root.String()); err != nil {
		return nil, err
	}
	var out []zfs.Listing
	for _, name := range sortedKeys(m.st.Datasets) {
		if name != root.String() && !strings.HasPrefix(name, root.String()+"/") {
			continue
		}
		d := m.st.Datasets[name]
		vs := versionsOf(d)
		out = append(out, zfs.Listing{Info: m.info(d), Versions: vs, Sizes: sizesOf(d, vs)})
	}
	return out, nil
}

// sizesOf says the size of each of vs, d's versions: a snapshot's blocks
// (the model stores them uncompressed), and those born since the previous
// snapshot (written).
func sizesOf(d *dataset, vs []zfs.FilesystemVersion) []zfs.VersionSize {
	out := make([]zfs.VersionSize, len(vs))
	var prevTXG uint64
	havePrev := false
	j := 0 // d.Snaps are in txg order, as vs: walk both
	for i, v := range vs {
		if v.Kind != zfs.Snapshot {
			continue
		}
		var s *snapshot
		if j < len(d.Snaps) && d.Snaps[j].Name == v.Name {
			s = d.Snaps[j]
			j++
		} else if s = d.snap(v.Name); s == nil {
			continue
		}
		var written uint64
		for _, b := range s.Content {
			if !havePrev || b.Birth > prevTXG {
				written++
			}
		}
		ref := uint64(len(s.Content)) * BlockSize
		out[i] = zfs.VersionSize{Written: written * BlockSize, Referenced: ref, LogicalReferenced: ref}
		prevTXG, havePrev = s.TXG, true
	}
	return out
}

// versionsOf lists d's snapshots and bookmarks in ListVersions' order.
func versionsOf(d *dataset) []zfs.FilesystemVersion {
	out := make([]zfs.FilesystemVersion, 0, len(d.Snaps)+len(d.Bookmarks))
	for _, s := range d.Snaps {
		out = append(out, zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: s.Name, GUID: s.GUID,
			CreateTXG: s.TXG, Creation: s.Creation, UserRefs: uint64(len(s.Holds))})
	}
	for _, b := range d.Bookmarks {
		out = append(out, zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: b.Name, GUID: b.GUID,
			CreateTXG: b.TXG, Creation: b.Creation})
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.CreateTXG != b.CreateTXG {
			return a.CreateTXG < b.CreateTXG
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind // snapshots first
		}
		return a.Name < b.Name
	})
	return out
}

// CreatePlaceholder implements zfs.ZFS.
func (m *Model) CreatePlaceholder(ctx context.Context, fs zfs.DatasetPath, opts zfs.PlaceholderOptions) error {
	const op = "create"
	if err := checkPath(op, fs); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("CreatePlaceholder"); err != nil {
		return err
	}
	name := fs.String()
	props := map[string]string{zfs.PlaceholderProperty: "on"}
	parentName, _ := parentOf(name)
	parent := m.st.Datasets[parentName]
	if !opts.EncryptionOff || parent == nil || !parent.Encrypted || m.st.Datasets[name] != nil {
		// Nothing to turn off, or a failure zfs create reports whatever
		// the options.
		return m.createLocked(op, name, FSOptions{}, props)
	}
	// encryption=off below an encrypted parent: OpenZFS 2.1.11 creates an
	// unencrypted child, also while the parent's key is unloaded (so
	// createLocked, which inherits encryption and checks the key, is not
	// for this case).
	m.st.Datasets[name] = &dataset{Name: name, GUID: m.newGUID(), Props: props, Head: content{}}
	return nil
}

// SetUserProperty implements zfs.ZFS.
func (m *Model) SetUserProperty(ctx context.Context, fs zfs.DatasetPath, property, value string) error {
	const op = "set"
	if err := checkPath(op, fs); err != nil {
		return err
	}
	if !validUserProp(property) {
		return zerr(zfs.ErrInvalidName, op, fs.String(), "cannot set property for '%s': invalid property '%s'", fs, property)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("SetUserProperty"); err != nil {
		return err
	}
	d, err := m.lookup(op, fs.String())
	if err != nil {
		return err
	}
	if value == "" {
		delete(d.Props, property)
	} else {
		d.Props[property] = value
	}
	return nil
}

// UserProperty returns fs's local value of a user property. The model
// keeps local values only: it does not model inheritance of user properties
// (FilesystemInfo.Placeholder, like zrepl, looks at the local value).
func (m *Model) UserProperty(fs zfs.DatasetPath, property string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.st.Datasets[fs.String()]
	if d == nil {
		return "", false
	}
	v, ok := d.Props[property]
	return v, ok
}

// Property returns the value of property on fs and where it comes from,
// as `zfs get -o value,source` says it: "local", "received", or "-" for a
// property fs does not have (value ""). The model keeps no inheritance.
func (m *Model) Property(fs zfs.DatasetPath, property string) (value, source string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.st.Datasets[fs.String()]
	if d == nil {
		return "", "-"
	}
	if v, ok := d.Props[property]; ok {
		return v, "local"
	}
	if v, ok := d.Received[property]; ok {
		return v, "received"
	}
	return "", "-"
}

// validUserProp checks the "module:name" shape of a user property.
func validUserProp(p string) bool {
	if len(p) == 0 || len(p) >= zfs.MaxNameLen || !strings.Contains(p, ":") || p[0] == ':' {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == ':' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Snapshot implements zfs.ZFS.
func (m *Model) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	const op = "snapshot"
	ref := zfs.SnapshotRef(fs, name)
	if err := checkRef(op, ref, zfs.Snapshot); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("Snapshot"); err != nil {
		return err
	}
	d := m.st.Datasets[fs.String()]
	if d == nil {
		// zfs opens the filesystem first (2.1.11 and 2.3.9; found by
		// TestDifferential).
		return zerr(zfs.ErrDatasetNotExist, op, ref.String(), "cannot open '%s': dataset does not exist", fs)
	}
	if d.snap(name) != nil {
		return zerr(zfs.ErrDatasetExists, op, ref.String(), "cannot create snapshot '%s': dataset already exists", ref)
	}
	if d.Partial != nil && d.Partial.Full {
		return zerr(zfs.ErrDatasetBusy, op, ref.String(), "cannot create snapshot '%s': dataset is busy", ref)
	}
	d.Snaps = append(d.Snaps, &snapshot{Name: name, GUID: m.newGUID(), TXG: m.nextTXG(poolOf(d.Name)),
		Creation: m.clock(), Content: d.Head.clone()})
	return nil
}

// Bookmark implements zfs.ZFS.
func (m *Model) Bookmark(ctx context.Context, from zfs.VersionRef, name string) error {
	const op = "bookmark"
	if err := checkRef(op, from, 0); err != nil {
		return err
	}
	bref := zfs.BookmarkRef(from.FS, name)
	if err := checkRef(op, bref, zfs.Bookmark); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("Bookmark"); err != nil {
		return err
	}
	d, err := m.lookupRef(op, from)
	if err != nil {
		return err
	}
	var nb bookmark
	switch from.Kind {
	case zfs.Snapshot:
		s := d.snap(from.Name)
		if s == nil {
			return notExist(op, from.String())
		}
		nb = bookmark{GUID: s.GUID, TXG: s.TXG, Creation: s.Creation}
	case zfs.Bookmark:
		b := d.bookmark(from.Name)
		if b == nil {
			// zfs bookmark from a missing bookmark: ENOENT's other text
			// (2.1.11, found by TestDifferential).
			return zerr(zfs.ErrDatasetNotExist, op, from.String(), "cannot open '%s': no such pool or dataset", from)
		}
		nb = *b
	}
	if d.bookmark(name) != nil {
		return zerr(zfs.ErrDatasetExists, op, bref.String(), "cannot create bookmark '%s': bookmark exists", bref)
	}
	nb.Name = name
	d.Bookmarks = append(d.Bookmarks, &nb)
	return nil
}

// destroyOnMissing is Destroy's error where the filesystem does not
// exist: one per version named, a snapshot's from opening the filesystem
// (conformance case DestroyOnMissingFilesystem, 2.1.11 and 2.3.9).
func destroyOnMissing(op string, versions []zfs.VersionRef) error {
	var errs []error
	for i, v := range versions {
		if slices.Contains(versions[:i], v) {
			continue
		}
		if v.Kind == zfs.Bookmark {
			errs = append(errs, zerr(zfs.ErrDatasetNotExist, op, v.String(), "bookmark '%s' does not exist.", v))
		} else {
			errs = append(errs, zerr(zfs.ErrDatasetNotExist, op, v.String(), "cannot open '%s': dataset does not exist", v.FS))
		}
	}
	return errors.Join(errs...)
}

// Destroy implements zfs.ZFS.
func (m *Model) Destroy(ctx context.Context, versions []zfs.VersionRef) error {
	const op = "destroy"
	if len(versions) == 0 {
		return nil
	}
	for _, v := range versions {
		if err := checkRef(op, v, 0); err != nil {
			return err
		}
		if v.FS != versions[0].FS {
			return zerr(zfs.ErrUnsupported, op, v.String(), "cannot destroy '%s': all versions of one destroy must belong to %s", v, versions[0].FS)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("Destroy"); err != nil {
		return err
	}
	d := m.st.Datasets[versions[0].FS.String()]
	if d == nil {
		return destroyOnMissing(op, versions)
	}
	// The snapshots go in one zfs destroy p/fs@a,b,...: where that
	// succeeds, absent names in it are not mentioned; where it fails
	// (nothing in it exists, or something in it cannot be destroyed), each
	// snapshot is destroyed on its own, and each absent one is an error
	// (conformance case BatchedDestroyOfAbsentSnapshots, 2.1.11 and 2.3.9).
	anyExists, allFree := false, true
	for _, v := range versions {
		if s := d.snap(v.Name); v.Kind == zfs.Snapshot && s != nil {
			anyExists = true
			allFree = allFree && len(s.Holds) == 0 && d.partialBase() != s
		}
	}
	absentIsError := !anyExists || !allFree
	var errs []error
	for _, v := range versions {
		switch v.Kind {
		case zfs.Snapshot:
			s := d.snap(v.Name)
			switch {
			case s == nil && !absentIsError:
			case s == nil:
				errs = append(errs, zerr(zfs.ErrDatasetNotExist, op, v.String(), "could not find any snapshots to destroy; check snapshot names."))
			case len(s.Holds) > 0:
				errs = append(errs, m.heldDestroy(op, v))
			case d.partialBase() == s:
				// The partial receive state is a clone of this snapshot
				// (OpenZFS 2.1.11's text, exit status 1).
				errs = append(errs, zerr(zfs.ErrDatasetBusy, op, v.String(),
					"cannot destroy '%s': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\n%s", v, d.recvClone()))
			default:
				d.Snaps = removeSnap(d.Snaps, s)
			}
		case zfs.Bookmark:
			b := d.bookmark(v.Name)
			if b == nil {
				errs = append(errs, zerr(zfs.ErrDatasetNotExist, op, v.String(), "bookmark '%s' does not exist.", v))
				continue
			}
			out := d.Bookmarks[:0]
			for _, x := range d.Bookmarks {
				if x != b {
					out = append(out, x)
				}
			}
			d.Bookmarks = out
		}
	}
	return errors.Join(errs...)
}

func removeSnap(snaps []*snapshot, s *snapshot) []*snapshot {
	out := snaps[:0]
	for _, x := range snaps {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// Rollback implements zfs.ZFS.
func (m *Model) Rollback(ctx context.Context, snapshot zfs.VersionRef, destroyNewer bool) error {
	const op = "rollback"
	if err := checkRef(op, snapshot, zfs.Snapshot); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("Rollback"); err != nil {
		return err
	}
	d, err := m.lookupRef(op, snapshot)
	if err != nil {
		return err
	}
	s := d.snap(snapshot.Name)
	if s == nil {
		return notExist(op, snapshot.String())
	}
	return m.rollbackLocked(op, d, s, destroyNewer)
}

// rollbackLocked rolls d back to s; like zfs rollback -r it destroys the
// newer snapshots and bookmarks, or refuses when destroyNewer is false.
// The saved state of a partial incremental receive stays: it is a clone
// of its base snapshot, so real ZFS refuses to destroy that base (and
// with it the whole rollback) while the state exists; a rollback that
// keeps the base, e.g. to the newest snapshot, keeps the state too.
func (m *Model) rollbackLocked(op string, d *dataset, s *snapshot, destroyNewer bool) error {
	var newer []string
	var held []string
	for _, x := range d.Snaps {
		if x.TXG > s.TXG {
			newer = append(newer, d.Name+"@"+x.Name)
			if len(x.Holds) > 0 {
				held = append(held, d.Name+"@"+x.Name)
			}
		}
	}
	for _, b := range d.Bookmarks {
		if b.TXG > s.TXG {
			newer = append(newer, d.Name+"#"+b.Name)
		}
	}
	ref := d.Name + "@" + s.Name
	if len(newer) > 0 && !destroyNewer {
		return zerr(zfs.ErrNewerSnapshotsExist, op, ref,
			"cannot rollback to '%s': more recent snapshots or bookmarks exist\nuse '-r' to force deletion of the following snapshots and bookmarks:\n%s",
			ref, strings.Join(newer, "\n"))
	}
	// zfs rollback -r looks for clones of the newer snapshots before it
	// destroys anything, so this refusal comes before a hold's. Text and
	// exit status 1 as on OpenZFS 2.1.11.
	if b := d.partialBase(); b != nil && b.TXG > s.TXG {
		return zerr(zfs.ErrDatasetBusy, op, ref,
			"cannot rollback to '%s': clones of previous snapshots exist\nuse '-R' to force deletion of the following clones and dependents:\n%s",
			ref, d.recvClone())
	}
	if len(held) > 0 {
		return zerr(zfs.ErrDatasetBusy, op, held[0], "cannot destroy '%s': dataset is busy", held[0])
	}
	keep := d.Snaps[:0]
	for _, x := range d.Snaps {
		if x.TXG <= s.TXG {
			keep = append(keep, x)
		}
	}
	d.Snaps = keep
	bms := d.Bookmarks[:0]
	for _, b := range d.Bookmarks {
		if b.TXG <= s.TXG {
			bms = append(bms, b)
		}
	}
	d.Bookmarks = bms
	d.Head = s.Content.clone()
	d.HeadTXG = s.TXG
	return nil
}

// Hold implements zfs.ZFS.
func (m *Model) Hold(ctx context.Context, snapshot zfs.VersionRef, tag string) error {
	const op = "hold"
	if err := checkRef(op, snapshot, zfs.Snapshot); err != nil {
		return err
	}
	if err := zfs.ValidateHoldTag(tag); err != nil {
		return nameErr(op, snapshot.String(), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("Hold"); err != nil {
		return err
	}
	return m.holdLocked(op, snapshot, tag)
}

// HoldAll implements zfs.ZFS: every name is checked before anything is
// held, then each snapshot is held on its own, as zfs hold does with
// several snapshots.
func (m *Model) HoldAll(ctx context.Context, tag string, snapshots []zfs.VersionRef) error {
	return m.eachSnapshot("hold", []string{"HoldAll", "Hold"}, tag, snapshots, m.holdLocked)
}

// ReleaseAll implements zfs.ZFS like HoldAll.
func (m *Model) ReleaseAll(ctx context.Context, tag string, snapshots []zfs.VersionRef) error {
	return m.eachSnapshot("release", []string{"ReleaseAll", "Release"}, tag, snapshots, m.releaseLocked)
}

func (m *Model) eachSnapshot(op string, faults []string, tag string, snapshots []zfs.VersionRef, do func(op string, s zfs.VersionRef, tag string) error) error {
	if len(snapshots) == 0 {
		return nil
	}
	for _, s := range snapshots {
		if err := checkRef(op, s, zfs.Snapshot); err != nil {
			return err
		}
		if err := zfs.ValidateHoldTag(tag); err != nil {
			return nameErr(op, s.String(), err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault(faults...); err != nil {
		return err
	}
	var errs []error
	seen := map[zfs.VersionRef]bool{}
	for _, s := range snapshots {
		if seen[s] {
			continue
		}
		seen[s] = true
		if err := do(op, s, tag); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Model) holdLocked(op string, snapshot zfs.VersionRef, tag string) error {
	if err := m.holdFSExists(op, snapshot); err != nil {
		return err
	}
	s := m.snapOf(snapshot)
	if s == nil {
		return zerr(zfs.ErrDatasetNotExist, op, snapshot.String(), "cannot hold snapshot '%s': dataset does not exist", snapshot)
	}
	i := sort.SearchStrings(s.Holds, tag)
	if i < len(s.Holds) && s.Holds[i] == tag {
		return zerr(zfs.ErrHoldTagExists, op, snapshot.String(), "cannot hold snapshot '%s': tag already exists on this dataset", snapshot)
	}
	s.Holds = append(s.Holds, "")
	copy(s.Holds[i+1:], s.Holds[i:])
	s.Holds[i] = tag
	return nil
}

// holdFSExists is zfs hold's and zfs release's first step: they open the
// snapshot's filesystem, and fail with its name where it does not exist
// (conformance case HoldOnMissingFilesystem, 2.1.11 and 2.3.9).
func (m *Model) holdFSExists(op string, snapshot zfs.VersionRef) error {
	if m.st.Datasets[snapshot.FS.String()] == nil {
		return zerr(zfs.ErrDatasetNotExist, op, snapshot.String(), "cannot open '%s': dataset does not exist", snapshot.FS)
	}
	return nil
}

func (m *Model) snapOf(r zfs.VersionRef) *snapshot {
	d := m.st.Datasets[r.FS.String()]
	if d == nil {
		return nil
	}
	return d.snap(r.Name)
}

// Release implements zfs.ZFS.
func (m *Model) Release(ctx context.Context, snapshot zfs.VersionRef, tag string) error {
	const op = "release"
	if err := checkRef(op, snapshot, zfs.Snapshot); err != nil {
		return err
	}
	if err := zfs.ValidateHoldTag(tag); err != nil {
		return nameErr(op, snapshot.String(), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("Release"); err != nil {
		return err
	}
	return m.releaseLocked(op, snapshot, tag)
}

func (m *Model) releaseLocked(op string, snapshot zfs.VersionRef, tag string) error {
	if err := m.holdFSExists(op, snapshot); err != nil {
		return err
	}
	s := m.snapOf(snapshot)
	if s == nil {
		return zerr(zfs.ErrDatasetNotExist, op, snapshot.String(), "cannot release hold from snapshot '%s': dataset does not exist", snapshot)
	}
	i := sort.SearchStrings(s.Holds, tag)
	if i == len(s.Holds) || s.Holds[i] != tag {
		return zerr(zfs.ErrHoldTagNotFound, op, snapshot.String(), "cannot release hold from snapshot '%s': no such tag on this dataset", snapshot)
	}
	s.Holds = append(s.Holds[:i], s.Holds[i+1:]...)
	return nil
}

// Holds implements zfs.ZFS.
func (m *Model) Holds(ctx context.Context, snapshots []zfs.VersionRef) (map[string][]string, error) {
	const op = "holds"
	for _, s := range snapshots {
		if err := checkRef(op, s, zfs.Snapshot); err != nil {
			return nil, err
		}
		if s.FS != snapshots[0].FS {
			return nil, zerr(zfs.ErrUnsupported, op, s.String(), "cannot list holds of '%s': all snapshots must belong to %s", s, snapshots[0].FS)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.takeFault("Holds"); err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(snapshots))
	for _, r := range snapshots {
		s := m.snapOf(r)
		if s == nil {
			return nil, notExist(op, r.String())
		}
		out[r.Name] = append([]string{}, s.Holds...)
	}
	return out, nil
}

// Checksum is a digest of a snapshot's content; equal digests mean equal
// content. Reading an encrypted snapshot needs its key loaded.
func (m *Model) Checksum(ref zfs.VersionRef) (string, error) {
	const op = "checksum"
	if err := checkRef(op, ref, zfs.Snapshot); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookupRef(op, ref)
	if err != nil {
		return "", err
	}
	s := d.snap(ref.Name)
	if s == nil {
		return "", notExist(op, ref.String())
	}
	if !m.keyLoaded(d) {
		return "", zerr(zfs.ErrKeyNotLoaded, op, ref.String(), "cannot read '%s': encryption key not loaded", ref)
	}
	return s.Content.digest(), nil
}

// LiveChecksum is Checksum of the live filesystem.
func (m *Model) LiveChecksum(fs zfs.DatasetPath) (string, error) {
	const op = "checksum"
	if err := checkPath(op, fs); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookup(op, fs.String())
	if err != nil {
		return "", err
	}
	if !m.keyLoaded(d) {
		return "", zerr(zfs.ErrKeyNotLoaded, op, d.Name, "cannot read '%s': encryption key not loaded", d.Name)
	}
	return d.Head.digest(), nil
}

// Modified reports whether fs changed since its most recent snapshot (or
// has any content, when it has no snapshot).
func (m *Model) Modified(fs zfs.DatasetPath) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookup("list", fs.String())
	if err != nil {
		return false, err
	}
	s := d.latest()
	if s == nil {
		return d.HeadTXG > 0, nil
	}
	return d.modifiedSince(s), nil
}

// digest hashes block numbers and keys, not birth txgs: a received copy has
// other births but the same content.
func (c content) digest() string {
	bns := make([]uint64, 0, len(c))
	for bn := range c {
		bns = append(bns, bn)
	}
	sort.Slice(bns, func(i, j int) bool { return bns[i] < bns[j] })
	h := sha256.New()
	var buf [16]byte
	for _, bn := range bns {
		binary.BigEndian.PutUint64(buf[:8], bn)
		binary.BigEndian.PutUint64(buf[8:], c[bn].Key)
		h.Write(buf[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// String summarises a dataset, for test failure messages.
func (d *dataset) String() string {
	return fmt.Sprintf("%s(guid=%x snaps=%d bookmarks=%d blocks=%d)", d.Name, d.GUID, len(d.Snaps), len(d.Bookmarks), len(d.Head))
}

// heldDestroy is the error of destroying a held snapshot: 2.3 names the
// holds, 2.1 says busy (both measured in the VM: HoldBlocksDestroy).
func (m *Model) heldDestroy(op string, v zfs.VersionRef) error {
	if m.release == OpenZFS21 {
		return zerr(zfs.ErrDatasetBusy, op, v.String(), "cannot destroy snapshot %s: dataset is busy", v)
	}
	return zerr(zfs.ErrDatasetBusy, op, v.String(), "cannot destroy snapshot %s: it's being held. Run 'zfs holds -r %s' to see holders.", v, v)
}
