package zfsreal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// Options configure a CLI. The zero value is usable.
type Options struct {
	// ZFSBinary is the zfs executable: a path, or a name looked up in
	// PATH. Default "zfs".
	ZFSBinary string
	// StderrLimit is how many bytes of a command's stderr are kept (the
	// last ones). Default 64 KiB.
	StderrLimit int
	// MaxArgBytes bounds the bytes of names one command line carries when
	// Destroy and Holds batch many versions. Default 64 KiB: Linux limits
	// a single argument to 128 KiB and a whole command line to about 2 MiB.
	MaxArgBytes int
	// CancelGrace is how long a cancelled Receive waits for zfs after
	// closing its input (zfs then ends as for a cut-off stream, saving the
	// partial state with Resumable) before killing it. Default 30s.
	CancelGrace time.Duration
	// PipeSize is the buffer asked for the pipes a stream passes through
	// (send's stdout, recv's stdin). Default 1 MiB: with the system's
	// 64 KiB, zfs and this process take turns every 64 KiB, each turn a
	// wake-up, which costs a lot on a slow or busy host. Negative keeps the
	// system's default.
	PipeSize int
	// Observe, if set, is called once for every zfs child after it was
	// reaped: what ran and for how long. It is for finding where time
	// goes (every child is a process start, costly under emulation); it
	// may be called from several goroutines at once and must not block.
	Observe func(Invocation)
}

// Invocation is one zfs child as Options.Observe sees it.
type Invocation struct {
	// Args are zfs's arguments (without the binary), as run.
	Args []string
	// Start is when the child was started, Duration how long it took
	// until it was reaped (for send and recv: the whole stream).
	Start    time.Time
	Duration time.Duration
	// Err is how the child ended (nil: exit status 0).
	Err error
}

const (
	defaultStderrLimit = 64 << 10
	defaultMaxArgBytes = 64 << 10
	defaultCancelGrace = 30 * time.Second
	defaultPipeSize    = 1 << 20
)

// CLI is zfs.ZFS on the zfs command line tool. It holds no state besides
// its options; all methods may be called concurrently.
type CLI struct {
	bin         string
	stderrLimit int
	maxArgBytes int
	cancelGrace time.Duration
	observe     func(Invocation)
	pipeSize    int
}

var _ zfs.ZFS = (*CLI)(nil)

// New returns a CLI running opts.ZFSBinary.
func New(opts Options) *CLI {
	c := &CLI{bin: opts.ZFSBinary, stderrLimit: opts.StderrLimit, maxArgBytes: opts.MaxArgBytes,
		cancelGrace: opts.CancelGrace, observe: opts.Observe, pipeSize: opts.PipeSize}
	if c.bin == "" {
		c.bin = "zfs"
	}
	if c.stderrLimit <= 0 {
		c.stderrLimit = defaultStderrLimit
	}
	if c.maxArgBytes <= 0 {
		c.maxArgBytes = defaultMaxArgBytes
	}
	if c.cancelGrace <= 0 {
		c.cancelGrace = defaultCancelGrace
	}
	if c.pipeSize == 0 {
		c.pipeSize = defaultPipeSize
	}
	return c
}

// ListPools implements zfs.ZFS.
func (c *CLI) ListPools(ctx context.Context) ([]zfs.DatasetPath, error) {
	const op = "list"
	out, _, err := c.run(ctx, op, "", listPoolsArgs())
	if err != nil {
		return nil, err
	}
	pools, err := parsePools(out)
	if err != nil {
		return nil, &zfs.Error{Op: op, Err: err}
	}
	return pools, nil
}

// ListFilesystems implements zfs.ZFS.
func (c *CLI) ListFilesystems(ctx context.Context, root zfs.DatasetPath) ([]zfs.FilesystemInfo, error) {
	const op = "list"
	if err := checkFS(op, root); err != nil {
		return nil, err
	}
	out, _, err := c.run(ctx, op, root.String(), listFilesystemsArgs(root))
	if err != nil {
		return nil, err
	}
	infos, err := parseFilesystems(out, root)
	if err != nil {
		return nil, &zfs.Error{Op: op, Dataset: root.String(), Err: err}
	}
	ptrs := make([]*zfs.FilesystemInfo, len(infos))
	for i := range infos {
		ptrs[i] = &infos[i]
	}
	if err := c.localPlaceholders(ctx, op, root, ptrs); err != nil {
		return nil, err
	}
	return infos, nil
}

// ListVersions implements zfs.ZFS.
func (c *CLI) ListVersions(ctx context.Context, fs zfs.DatasetPath) ([]zfs.FilesystemVersion, error) {
	const op = "list"
	if err := checkFS(op, fs); err != nil {
		return nil, err
	}
	out, _, err := c.run(ctx, op, fs.String(), listVersionsArgs(fs))
	if err != nil {
		return nil, err
	}
	vs, err := parseVersions(out, fs)
	if err != nil {
		return nil, &zfs.Error{Op: op, Dataset: fs.String(), Err: err}
	}
	return vs, nil
}

// ListTree implements zfs.ZFS with one zfs list.
func (c *CLI) ListTree(ctx context.Context, root zfs.DatasetPath) ([]zfs.Listing, error) {
	const op = "list"
	if err := checkFS(op, root); err != nil {
		return nil, err
	}
	out, _, err := c.run(ctx, op, root.String(), listTreeArgs(root))
	if err != nil {
		return nil, err
	}
	tree, err := parseTree(out, root)
	if err != nil {
		return nil, &zfs.Error{Op: op, Dataset: root.String(), Err: err}
	}
	ptrs := make([]*zfs.FilesystemInfo, len(tree))
	for i := range tree {
		ptrs[i] = &tree[i].Info
	}
	if err := c.localPlaceholders(ctx, op, root, ptrs); err != nil {
		return nil, err
	}
	return tree, nil
}

// CreatePlaceholder implements zfs.ZFS.
func (c *CLI) CreatePlaceholder(ctx context.Context, fs zfs.DatasetPath, opts zfs.PlaceholderOptions) error {
	const op = "create"
	if err := checkFS(op, fs); err != nil {
		return err
	}
	args := []string{"create", "-o", zfs.PlaceholderProperty + "=on", "-o", "mountpoint=none", "-o", "canmount=off"}
	if opts.EncryptionOff {
		args = append(args, "-o", "encryption=off")
	}
	_, _, err := c.run(ctx, op, fs.String(), append(args, fs.String()))
	return err
}

// SetUserProperty implements zfs.ZFS.
func (c *CLI) SetUserProperty(ctx context.Context, fs zfs.DatasetPath, property, value string) error {
	op := "set"
	if value == "" {
		op = "inherit"
	}
	if err := checkFS(op, fs); err != nil {
		return err
	}
	if err := checkPropName(property, true); err != nil {
		return badInput(op, fs.String(), err)
	}
	if err := checkPropValue(property, value); err != nil {
		return badInput(op, fs.String(), err)
	}
	args := []string{"set", property + "=" + value, fs.String()}
	if value == "" {
		args = []string{"inherit", property, fs.String()}
	}
	_, _, err := c.run(ctx, op, fs.String(), args)
	return err
}

// Snapshot implements zfs.ZFS.
func (c *CLI) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	const op = "snapshot"
	ref := zfs.SnapshotRef(fs, name)
	if err := checkRef(op, ref, zfs.Snapshot); err != nil {
		return err
	}
	_, _, err := c.run(ctx, op, ref.String(), []string{"snapshot", ref.String()})
	return err
}

// Bookmark implements zfs.ZFS.
func (c *CLI) Bookmark(ctx context.Context, from zfs.VersionRef, bookmark string) error {
	const op = "bookmark"
	if err := checkRef(op, from, zfs.Snapshot, zfs.Bookmark); err != nil {
		return err
	}
	to := zfs.BookmarkRef(from.FS, bookmark)
	if err := checkRef(op, to, zfs.Bookmark); err != nil {
		return err
	}
	_, _, err := c.run(ctx, op, to.String(), []string{"bookmark", from.String(), to.String()})
	// A missing source is the source's error, as zfsmodel says it
	// (TestDifferential on 2.1.11: "cannot open 'p/fs#nope': no such pool
	// or dataset").
	var ze *zfs.Error
	if errors.As(err, &ze) && strings.Contains(ze.Msg, "cannot open '"+from.String()+"'") {
		ze.Dataset = from.String()
	}
	return err
}

// Destroy implements zfs.ZFS. Snapshots go in batches (fs@a,b,c), which
// zfs destroys all or nothing; when a batch fails, each of its snapshots
// is destroyed on its own so that one held snapshot does not keep the
// others, and each failure is reported. Bookmarks go one at a time.
func (c *CLI) Destroy(ctx context.Context, versions []zfs.VersionRef) error {
	const op = "destroy"
	if len(versions) == 0 {
		return nil
	}
	fs := versions[0].FS
	for _, v := range versions {
		if err := checkRef(op, v, zfs.Snapshot, zfs.Bookmark); err != nil {
			return err
		}
	}
	if err := checkSameFS(op, fs, versions); err != nil {
		return err
	}
	var snaps, books []string
	seen := map[zfs.VersionRef]bool{}
	for _, v := range versions {
		if seen[v] {
			continue
		}
		seen[v] = true
		if v.Kind == zfs.Snapshot {
			snaps = append(snaps, v.Name)
		} else {
			books = append(books, v.Name)
		}
	}

	var errs []error
	destroy := func(name string) (stop bool) {
		_, _, err := c.run(ctx, op, name, []string{"destroy", name})
		if err != nil {
			errs = append(errs, err)
			return isStartError(ctx, err)
		}
		return false
	}
	prefix := fs.String() + "@"
	for _, batch := range c.batches(len(prefix), snaps, 1) {
		if len(batch) == 1 {
			if destroy(prefix + batch[0]) {
				return errors.Join(errs...)
			}
			continue
		}
		arg := prefix + strings.Join(batch, ",")
		_, _, err := c.run(ctx, op, arg, []string{"destroy", arg})
		if err == nil {
			continue
		}
		if isStartError(ctx, err) {
			return errors.Join(append(errs, err)...)
		}
		for _, name := range batch {
			if destroy(prefix + name) {
				return errors.Join(errs...)
			}
		}
	}
	for _, name := range books {
		if destroy(fs.String() + "#" + name) {
			return errors.Join(errs...)
		}
	}
	return errors.Join(errs...)
}

// batches splits names so that prefix plus each batch, joined with one
// separator byte per name, stays within MaxArgBytes (a name that alone is
// over gets a batch of its own).
func (c *CLI) batches(prefix int, names []string, sep int) [][]string {
	var out [][]string
	var cur []string
	size := prefix
	for _, n := range names {
		if len(cur) > 0 && size+sep+len(n) > c.maxArgBytes {
			out = append(out, cur)
			cur, size = nil, prefix
		}
		cur = append(cur, n)
		size += sep + len(n)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Rollback implements zfs.ZFS.
func (c *CLI) Rollback(ctx context.Context, snapshot zfs.VersionRef, destroyNewer bool) error {
	const op = "rollback"
	if err := checkRef(op, snapshot, zfs.Snapshot); err != nil {
		return err
	}
	args := []string{"rollback"}
	if destroyNewer {
		args = append(args, "-r")
	}
	_, _, err := c.run(ctx, op, snapshot.String(), append(args, snapshot.String()))
	return err
}

// Hold implements zfs.ZFS. The tag goes after "--": a valid tag may start
// with '-' and must not be read as an option.
func (c *CLI) Hold(ctx context.Context, snapshot zfs.VersionRef, tag string) error {
	const op = "hold"
	if err := checkRef(op, snapshot, zfs.Snapshot); err != nil {
		return err
	}
	if err := zfs.ValidateHoldTag(tag); err != nil {
		return badInput(op, snapshot.String(), err)
	}
	_, _, err := c.run(ctx, op, snapshot.String(), []string{"hold", "--", tag, snapshot.String()})
	return err
}

// Release implements zfs.ZFS.
func (c *CLI) Release(ctx context.Context, snapshot zfs.VersionRef, tag string) error {
	const op = "release"
	if err := checkRef(op, snapshot, zfs.Snapshot); err != nil {
		return err
	}
	if err := zfs.ValidateHoldTag(tag); err != nil {
		return badInput(op, snapshot.String(), err)
	}
	_, _, err := c.run(ctx, op, snapshot.String(), []string{"release", "--", tag, snapshot.String()})
	return err
}

// Holds implements zfs.ZFS, with one `zfs holds -H` per batch of names.
func (c *CLI) Holds(ctx context.Context, snapshots []zfs.VersionRef) (map[string][]string, error) {
	const op = "holds"
	res := map[string][]string{}
	if len(snapshots) == 0 {
		return res, nil
	}
	fs := snapshots[0].FS
	for _, s := range snapshots {
		if err := checkRef(op, s, zfs.Snapshot); err != nil {
			return nil, err
		}
	}
	if err := checkSameFS(op, fs, snapshots); err != nil {
		return nil, err
	}
	var names []string
	for _, s := range snapshots {
		if _, ok := res[s.Name]; !ok {
			res[s.Name] = []string{}
			names = append(names, s.String())
		}
	}
	for _, batch := range c.batches(len("holds -H"), names, 1) {
		out, _, err := c.run(ctx, op, batch[0], append([]string{"holds", "-H"}, batch...))
		if err != nil {
			return nil, err
		}
		asked := map[string]bool{}
		for _, n := range batch {
			asked[n] = true
		}
		rows, err := parseHolds(out)
		if err != nil {
			return nil, &zfs.Error{Op: op, Dataset: fs.String(), Err: err}
		}
		for _, r := range rows {
			ref, err := zfs.ParseVersionRef(r.Snapshot)
			if err != nil || ref.FS != fs || ref.Kind != zfs.Snapshot || !asked[r.Snapshot] {
				return nil, &zfs.Error{Op: op, Dataset: fs.String(),
					Err: fmt.Errorf("zfs holds listed %q, which was not asked for", r.Snapshot)}
			}
			res[ref.Name] = append(res[ref.Name], r.Tag)
		}
	}
	for _, tags := range res {
		slices.Sort(tags)
	}
	return res, nil
}

// AbortReceive implements zfs.ZFS.
func (c *CLI) AbortReceive(ctx context.Context, fs zfs.DatasetPath) error {
	const op = "recv"
	if err := checkFS(op, fs); err != nil {
		return err
	}
	_, _, err := c.run(ctx, op, fs.String(), []string{"recv", "-A", fs.String()})
	return err
}

// localPlaceholders narrows the listed placeholders to those whose
// zrepl:placeholder is set on the filesystem itself. zfs list shows a
// user property's value also where it is inherited: a filesystem received
// below a placeholder shows "on" without being one (zrepl, too, counts
// only a local value). It costs a zfs get only where the listing shows a
// placeholder at all.
func (c *CLI) localPlaceholders(ctx context.Context, op string, root zfs.DatasetPath, infos []*zfs.FilesystemInfo) error {
	if !slices.ContainsFunc(infos, func(i *zfs.FilesystemInfo) bool { return i.Placeholder }) {
		return nil
	}
	out, _, err := c.run(ctx, op, root.String(), []string{"get", "-H", "-p", "-r", "-s", "local", "-t", "filesystem,volume",
		"-o", "name,value", zfs.PlaceholderProperty, root.String()})
	if err != nil {
		return err
	}
	local := map[string]bool{}
	if err := lines(out, 2, func(_ int, _ string, f []string) error {
		local[f[0]] = f[1] == "on"
		return nil
	}); err != nil {
		return &zfs.Error{Op: op, Dataset: root.String(), Err: err}
	}
	for _, i := range infos {
		i.Placeholder = i.Placeholder && local[i.Path.String()]
	}
	return nil
}
