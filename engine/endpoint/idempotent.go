package endpoint

import (
	"context"
	"errors"
	"fmt"

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
func ignoreNotExist(err error) error {
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var rest []error
		for _, e := range joined.Unwrap() {
			if e := ignoreNotExist(e); e != nil {
				rest = append(rest, e)
			}
		}
		return errors.Join(rest...)
	}
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		return nil
	}
	return err
}
