package endpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"zrepl.dev/zrepl/engine/zfs"
)

// The driver retries steps after network failures and crashes, so every
// ZFS operation an endpoint issues must be safe to repeat: an operation
// whose effect is already there succeeds; anything else is an error.

// holdIdempotent places tag on snap; an existing hold with that tag is
// what we wanted.
func holdIdempotent(ctx context.Context, z zfs.ZFS, snap zfs.VersionRef, tag string) error {
	_, err := holdCreated(ctx, z, snap, tag)
	return err
}

// holdCreated is holdIdempotent that also says whether this call placed
// the hold (false: it was there, or the call failed).
func holdCreated(ctx context.Context, z zfs.ZFS, snap zfs.VersionRef, tag string) (bool, error) {
	err := z.Hold(ctx, snap, tag)
	if errors.Is(err, zfs.ErrHoldTagExists) {
		return false, nil
	}
	return err == nil, err
}

// holdAllCreated places tag on snaps in one call; a hold that exists is
// what we wanted. It returns the snapshots this call held, also when it
// fails for others; where a failure names no one snapshot, it claims none.
func holdAllCreated(ctx context.Context, z zfs.ZFS, tag string, snaps []zfs.VersionRef) ([]zfs.VersionRef, error) {
	err := z.HoldAll(ctx, tag, snaps)
	asked := map[string]bool{}
	for _, s := range snaps {
		asked[s.String()] = true
	}
	failed := map[string]bool{}
	for _, e := range joined(err) {
		var ze *zfs.Error
		if !errors.As(e, &ze) || !asked[ze.Dataset] {
			return nil, err
		}
		failed[ze.Dataset] = true
	}
	var created []zfs.VersionRef
	for _, s := range snaps {
		if !failed[s.String()] {
			created = append(created, s)
		}
	}
	return created, dropKinds(err, zfs.ErrHoldTagExists)
}

// joined lists the errors err joins (err itself if it joins none).
func joined(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// dropKinds drops the parts of a (possibly joined) error of the given
// kinds.
func dropKinds(err error, kinds ...zfs.Kind) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var rest []error
		for _, e := range j.Unwrap() {
			if e := dropKinds(e, kinds...); e != nil {
				rest = append(rest, e)
			}
		}
		return errors.Join(rest...)
	}
	if slices.ContainsFunc(kinds, func(k zfs.Kind) bool { return errors.Is(err, k) }) {
		return nil
	}
	return err
}

// releaseIdempotent removes tag from snap; a tag or snapshot already gone
// is what we wanted.
func releaseIdempotent(ctx context.Context, z zfs.ZFS, snap zfs.VersionRef, tag string) error {
	err := z.Release(ctx, snap, tag)
	if errors.Is(err, zfs.ErrHoldTagNotFound) || errors.Is(err, zfs.ErrDatasetNotExist) {
		return nil
	}
	return err
}

// bookmarkIdempotent creates fs#name from `from`. An existing bookmark of
// that name is fine only if it marks the same GUID: a same-named bookmark
// of another snapshot would silently change what the name stands for.
func bookmarkIdempotent(ctx context.Context, z zfs.ZFS, from zfs.VersionRef, fromGUID uint64, name string) error {
	_, err := bookmarkCreated(ctx, z, from, fromGUID, name)
	return err
}

// bookmarkCreated is bookmarkIdempotent that also says whether this call
// created the bookmark.
func bookmarkCreated(ctx context.Context, z zfs.ZFS, from zfs.VersionRef, fromGUID uint64, name string) (bool, error) {
	err := z.Bookmark(ctx, from, name)
	if err == nil || !errors.Is(err, zfs.ErrDatasetExists) {
		return err == nil, err
	}
	versions, lerr := z.ListVersions(ctx, from.FS)
	if lerr != nil {
		return false, errors.Join(err, lerr)
	}
	for _, v := range versions {
		if v.Kind == zfs.Bookmark && v.Name == name {
			if v.GUID == fromGUID {
				return false, nil
			}
			return false, fmt.Errorf("bookmark %s#%s exists but marks GUID %016x, not %016x: %w", from.FS, name, v.GUID, fromGUID, err)
		}
	}
	return false, err
}

// destroyIdempotent destroys versions; versions already gone are fine.
func destroyIdempotent(ctx context.Context, z zfs.ZFS, versions []zfs.VersionRef) error {
	if len(versions) == 0 {
		return nil
	}
	return ignoreNotExist(z.Destroy(ctx, versions))
}

// ignoreNotExist drops ErrDatasetNotExist parts from a (possibly joined) error.
func ignoreNotExist(err error) error { return dropKinds(err, zfs.ErrDatasetNotExist) }
