package daemon

import (
	"context"
	"io"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// metricsZFS is the backend as one job uses it, timing every call: zrepl's
// zfscmd_runtime by job and verb (the zfs subcommand the call stands
// for), and its zfs_* durations per filesystem.
type metricsZFS struct {
	zfs.ZFS
	m      *Metrics
	job    string
	binary string
}

func (z *metricsZFS) observe(verb string, start time.Time) {
	z.m.zfscmdRuntime.WithLabelValues(z.job, z.binary, verb).Observe(time.Since(start).Seconds())
}

func (z *metricsZFS) ListPools(ctx context.Context) ([]zfs.DatasetPath, error) {
	defer z.observe("list", time.Now())
	return z.ZFS.ListPools(ctx)
}

func (z *metricsZFS) ListFilesystems(ctx context.Context, root zfs.DatasetPath) ([]zfs.FilesystemInfo, error) {
	defer z.observe("list", time.Now())
	return z.ZFS.ListFilesystems(ctx, root)
}

func (z *metricsZFS) ListVersions(ctx context.Context, fs zfs.DatasetPath) ([]zfs.FilesystemVersion, error) {
	start := time.Now()
	defer z.observe("list", start)
	v, err := z.ZFS.ListVersions(ctx, fs)
	z.m.listVersions.WithLabelValues(fs.String()).Observe(time.Since(start).Seconds())
	return v, err
}

func (z *metricsZFS) CreatePlaceholder(ctx context.Context, fs zfs.DatasetPath, opts zfs.PlaceholderOptions) error {
	defer z.observe("create", time.Now())
	return z.ZFS.CreatePlaceholder(ctx, fs, opts)
}

func (z *metricsZFS) SetUserProperty(ctx context.Context, fs zfs.DatasetPath, property, value string) error {
	defer z.observe("set", time.Now())
	return z.ZFS.SetUserProperty(ctx, fs, property, value)
}

func (z *metricsZFS) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	start := time.Now()
	defer z.observe("snapshot", start)
	err := z.ZFS.Snapshot(ctx, fs, name)
	z.m.snapshotTime.WithLabelValues(fs.String()).Observe(time.Since(start).Seconds())
	return err
}

func (z *metricsZFS) Bookmark(ctx context.Context, from zfs.VersionRef, bookmark string) error {
	start := time.Now()
	defer z.observe("bookmark", start)
	err := z.ZFS.Bookmark(ctx, from, bookmark)
	z.m.bookmarkTime.WithLabelValues(from.FS.String()).Observe(time.Since(start).Seconds())
	return err
}

func (z *metricsZFS) Destroy(ctx context.Context, versions []zfs.VersionRef) error {
	start := time.Now()
	defer z.observe("destroy", start)
	err := z.ZFS.Destroy(ctx, versions)
	// One call may destroy many versions: each kind and filesystem of
	// them is observed with the call's time.
	type key struct{ kind, fs string }
	seen := map[key]bool{}
	took := time.Since(start).Seconds()
	for _, v := range versions {
		k := key{"snapshot", v.FS.String()}
		if v.Kind == zfs.Bookmark {
			k.kind = "bookmark"
		}
		if !seen[k] {
			seen[k] = true
			z.m.destroyTime.WithLabelValues(k.kind, k.fs).Observe(took)
		}
	}
	return err
}

func (z *metricsZFS) Rollback(ctx context.Context, snapshot zfs.VersionRef, destroyNewer bool) error {
	defer z.observe("rollback", time.Now())
	return z.ZFS.Rollback(ctx, snapshot, destroyNewer)
}

func (z *metricsZFS) Hold(ctx context.Context, snapshot zfs.VersionRef, tag string) error {
	defer z.observe("hold", time.Now())
	return z.ZFS.Hold(ctx, snapshot, tag)
}

func (z *metricsZFS) Release(ctx context.Context, snapshot zfs.VersionRef, tag string) error {
	defer z.observe("release", time.Now())
	return z.ZFS.Release(ctx, snapshot, tag)
}

func (z *metricsZFS) Holds(ctx context.Context, snapshots []zfs.VersionRef) (map[string][]string, error) {
	defer z.observe("holds", time.Now())
	return z.ZFS.Holds(ctx, snapshots)
}

func (z *metricsZFS) Send(ctx context.Context, args zfs.SendArgs) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := z.ZFS.Send(ctx, args)
	if err != nil {
		z.observe("send", start)
		return nil, err
	}
	return &timedStream{ReadCloser: rc, start: start, done: func(took time.Duration) {
		z.m.zfscmdRuntime.WithLabelValues(z.job, z.binary, "send").Observe(took.Seconds())
	}}, nil
}

func (z *metricsZFS) SendSize(ctx context.Context, args zfs.SendArgs) (int64, error) {
	defer z.observe("send", time.Now())
	return z.ZFS.SendSize(ctx, args)
}

func (z *metricsZFS) Receive(ctx context.Context, fs zfs.DatasetPath, stream io.Reader, opts zfs.RecvOptions) error {
	defer z.observe("recv", time.Now())
	return z.ZFS.Receive(ctx, fs, stream, opts)
}

func (z *metricsZFS) AbortReceive(ctx context.Context, fs zfs.DatasetPath) error {
	defer z.observe("recv", time.Now())
	return z.ZFS.AbortReceive(ctx, fs)
}
