package main

import (
	"context"
	"log/slog"

	"zrepl.dev/zrepl/engine/zfs"
)

// demoZFS is the quickstart's live demo on the model backend: before each
// snapshot it writes some data into the filesystem, so that every
// snapshot differs from the one before and replication and pruning have
// something to do. It decorates the daemon's ZFS only; the offline
// commands see the model as it is.
type demoZFS struct {
	zfs.ZFS
	write func(zfs.DatasetPath) error
	log   *slog.Logger
}

func (d demoZFS) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	if err := d.write(fs); err != nil {
		// The snapshot is what the job is for; the demo data is not.
		d.log.Warn("model backend: writing demo data before the snapshot failed", "filesystem", fs.String(), "err", err)
	} else {
		d.log.Debug("model backend: wrote demo data before the snapshot", "filesystem", fs.String())
	}
	return d.ZFS.Snapshot(ctx, fs, name)
}
