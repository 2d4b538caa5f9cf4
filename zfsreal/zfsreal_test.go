package zfsreal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

var (
	ctx = context.Background()
	fs  = zfs.MustDatasetPath("pool/a/fs")
)

func snap(name string) zfs.VersionRef { return zfs.SnapshotRef(fs, name) }
func book(name string) zfs.VersionRef { return zfs.BookmarkRef(fs, name) }

// zerr asserts err is a *zfs.Error of kind k and returns it.
func zerr(t *testing.T, err error, k zfs.Kind) *zfs.Error {
	t.Helper()
	require.Error(t, err)
	var e *zfs.Error
	require.True(t, errors.As(err, &e), "not a *zfs.Error: %T %v", err, err)
	if k != 0 {
		require.True(t, errors.Is(err, k), "error %v is not %v", err, k)
	}
	require.Equal(t, k, zfs.KindOf(err), "kind of %v", err)
	return e
}

const fsListArgs = "list -H -p -o name,guid,receive_resume_token,encryption,encryptionroot,keystatus,zrepl:placeholder -t filesystem,volume -r"

func TestListFilesystems(t *testing.T) {
	f := newFake(t)
	// Out of order on purpose; "a-b" sorts before "a/..." bytewise.
	// pool/a/x/y inherits "on" from pool/a: zfs list shows the value,
	// the local-only zfs get tells it is no placeholder.
	f.on(fsListArgs+" pool/a", fakeRule{Stdout: "" +
		"pool/a/x/y\t3\t-\toff\t-\t-\ton\n" +
		"pool/a\t1\t-\toff\t-\t-\ton\n" +
		"pool/a/x-z\t4\t-\taes-256-gcm\tpool/a/x-z\tunavailable\t-\n" +
		"pool/a/x\t2\t1-abc-de-789c\toff\t-\t-\toff\n"})
	f.on(placeholderGetArgs+" pool/a", fakeRule{Stdout: "pool/a\ton\npool/a/x\toff\n"})
	got, err := f.cli().ListFilesystems(ctx, zfs.MustDatasetPath("pool/a"))
	require.NoError(t, err)
	want := []zfs.FilesystemInfo{
		{Path: zfs.MustDatasetPath("pool/a"), GUID: 1, Encryption: "off", KeyStatus: zfs.KeyStatusNone, Placeholder: true},
		{Path: zfs.MustDatasetPath("pool/a/x"), GUID: 2, ReceiveResumeToken: "1-abc-de-789c", Encryption: "off", KeyStatus: zfs.KeyStatusNone},
		{Path: zfs.MustDatasetPath("pool/a/x/y"), GUID: 3, Encryption: "off", KeyStatus: zfs.KeyStatusNone},
		{Path: zfs.MustDatasetPath("pool/a/x-z"), GUID: 4, Encryption: "aes-256-gcm", EncryptionRoot: "pool/a/x-z", KeyStatus: zfs.KeyStatusUnavailable},
	}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(zfs.DatasetPath{})); d != "" {
		t.Errorf("listing (-want +got):\n%s", d)
	}
	assert.Equal(t, []string{fsListArgs + " pool/a", placeholderGetArgs + " pool/a"}, f.commands())
}

const placeholderGetArgs = "get -H -p -r -s local -t filesystem,volume -o name,value zrepl:placeholder"

func TestListFilesystemsErrors(t *testing.T) {
	f := newFake(t)
	f.on(fsListArgs+" pool/gone", fakeRule{Stderr: "cannot open 'pool/gone': dataset does not exist\n", Exit: 1})
	f.on(fsListArgs+" pool/odd", fakeRule{Stdout: "pool/odd\t1\t-\toff\t-\t-\n"})
	f.on(fsListArgs+" pool/other", fakeRule{Stdout: "pool/other\t1\t-\toff\t-\t-\t-\npool/else\t2\t-\toff\t-\t-\t-\n"})
	c := f.cli()

	_, err := c.ListFilesystems(ctx, zfs.MustDatasetPath("pool/gone"))
	e := zerr(t, err, zfs.ErrDatasetNotExist)
	assert.Equal(t, "list", e.Op)
	assert.Equal(t, "pool/gone", e.Dataset)
	assert.Equal(t, "cannot open 'pool/gone': dataset does not exist", e.Msg)
	assert.Equal(t, 1, e.ExitStatus)

	_, err = c.ListFilesystems(ctx, zfs.MustDatasetPath("pool/odd"))
	var oe *outputError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, 1, oe.Line)

	_, err = c.ListFilesystems(ctx, zfs.MustDatasetPath("pool/other"))
	require.ErrorAs(t, err, &oe)
	assert.Contains(t, oe.Reason, "not below")

	_, err = c.ListFilesystems(ctx, zfs.DatasetPath{})
	zerr(t, err, zfs.ErrInvalidName)
	assert.Len(t, f.calls(), 3)
}

const poolListArgs = "list -H -o name -t filesystem -d 0"

func TestListPools(t *testing.T) {
	f := newFake(t)
	f.on(poolListArgs, fakeRule{Stdout: "tank\nbackup\nb-pool\n"})
	got, err := f.cli().ListPools(ctx)
	require.NoError(t, err)
	var names []string
	for _, p := range got {
		names = append(names, p.String())
	}
	assert.Equal(t, []string{"b-pool", "backup", "tank"}, names)
	assert.Equal(t, []string{poolListArgs}, f.commands())

	// No pool: zfs says "no datasets available" on stderr and exits 0.
	f.rules = nil
	f.on(poolListArgs, fakeRule{Stderr: "no datasets available\n"})
	got, err = f.cli().ListPools(ctx)
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestListPoolsErrors(t *testing.T) {
	for _, c := range []struct{ out, reason string }{
		{"tank\ntank/child\n", "not a pool's root filesystem"},
		{"tank\ntank\n", "listed twice"},
		{"tank\tx\n", "2 fields, want 1"},
		{"tank%recv\n", "%"},
		{"tank@s\n", "unexpected '@'"},
	} {
		f := newFake(t)
		f.on(poolListArgs, fakeRule{Stdout: c.out})
		_, err := f.cli().ListPools(ctx)
		e := zerr(t, err, 0)
		assert.Equal(t, "list", e.Op)
		var oe *outputError
		require.ErrorAs(t, err, &oe, "output %q", c.out)
		assert.Contains(t, oe.Reason, c.reason, "output %q", c.out)
	}
	f := newFake(t)
	f.on(poolListArgs, fakeRule{Stderr: "internal error: failed to initialize ZFS library\n", Exit: 1})
	_, err := f.cli().ListPools(ctx)
	e := zerr(t, err, 0)
	assert.Equal(t, "internal error: failed to initialize ZFS library", e.Msg)
	assert.Equal(t, 1, e.ExitStatus)
}

const versionListArgs = "list -H -p -o name,guid,createtxg,creation,userrefs -t snapshot,bookmark -d 1"

func TestListVersions(t *testing.T) {
	f := newFake(t)
	f.on(versionListArgs+" pool/a/fs", fakeRule{Stdout: "" +
		"pool/a/fs#b2\t22\t20\t1700000100\t-\n" +
		"pool/a/fs@s2\t22\t20\t1700000100\t2\n" +
		"pool/a/fs@s1\t11\t10\t1700000000\t0\n" +
		"pool/a/fs#a2\t22\t20\t1700000100\t-\n"})
	got, err := f.cli().ListVersions(ctx, fs)
	require.NoError(t, err)
	t1, t2 := time.Unix(1700000000, 0).UTC(), time.Unix(1700000100, 0).UTC()
	want := []zfs.FilesystemVersion{
		{Kind: zfs.Snapshot, Name: "s1", GUID: 11, CreateTXG: 10, Creation: t1},
		{Kind: zfs.Snapshot, Name: "s2", GUID: 22, CreateTXG: 20, Creation: t2, UserRefs: 2},
		{Kind: zfs.Bookmark, Name: "a2", GUID: 22, CreateTXG: 20, Creation: t2},
		{Kind: zfs.Bookmark, Name: "b2", GUID: 22, CreateTXG: 20, Creation: t2},
	}
	assert.Equal(t, want, got)
	assert.Equal(t, []string{versionListArgs + " pool/a/fs"}, f.commands())
}

func TestListVersionsRejectsForeignRows(t *testing.T) {
	f := newFake(t)
	f.on(versionListArgs+" pool/a/fs", fakeRule{Stdout: "pool/a/fs/child@s1\t11\t10\t1700000000\t0\n"})
	_, err := f.cli().ListVersions(ctx, fs)
	var oe *outputError
	require.ErrorAs(t, err, &oe)
	assert.Contains(t, oe.Reason, "not a version of pool/a/fs")
}

// TestCommandLines checks the exact command line of every operation that
// runs one command.
func TestCommandLines(t *testing.T) {
	cases := []struct {
		name string
		call func(c *CLI) error
		want string
	}{
		{"placeholder", func(c *CLI) error { return c.CreatePlaceholder(ctx, fs, zfs.PlaceholderOptions{}) },
			"create -o zrepl:placeholder=on -o mountpoint=none -o canmount=off pool/a/fs"},
		{"placeholder unencrypted", func(c *CLI) error {
			return c.CreatePlaceholder(ctx, fs, zfs.PlaceholderOptions{EncryptionOff: true})
		}, "create -o zrepl:placeholder=on -o mountpoint=none -o canmount=off -o encryption=off pool/a/fs"},
		{"set", func(c *CLI) error { return c.SetUserProperty(ctx, fs, "zrepl:x", "-v a=b") },
			"set zrepl:x=-v a=b pool/a/fs"},
		{"inherit", func(c *CLI) error { return c.SetUserProperty(ctx, fs, "zrepl:x", "") },
			"inherit zrepl:x pool/a/fs"},
		{"snapshot", func(c *CLI) error { return c.Snapshot(ctx, fs, "s1") }, "snapshot pool/a/fs@s1"},
		{"bookmark from snapshot", func(c *CLI) error { return c.Bookmark(ctx, snap("s1"), "b1") },
			"bookmark pool/a/fs@s1 pool/a/fs#b1"},
		{"bookmark from bookmark", func(c *CLI) error { return c.Bookmark(ctx, book("b1"), "b2") },
			"bookmark pool/a/fs#b1 pool/a/fs#b2"},
		{"rollback", func(c *CLI) error { return c.Rollback(ctx, snap("s1"), false) }, "rollback pool/a/fs@s1"},
		{"rollback -r", func(c *CLI) error { return c.Rollback(ctx, snap("s1"), true) }, "rollback -r pool/a/fs@s1"},
		{"hold", func(c *CLI) error { return c.Hold(ctx, snap("s1"), "zrepl_J_x") }, "hold -- zrepl_J_x pool/a/fs@s1"},
		{"hold dash tag", func(c *CLI) error { return c.Hold(ctx, snap("s1"), "-r") }, "hold -- -r pool/a/fs@s1"},
		{"release", func(c *CLI) error { return c.Release(ctx, snap("s1"), "zrepl_J_x") }, "release -- zrepl_J_x pool/a/fs@s1"},
		{"abort", func(c *CLI) error { return c.AbortReceive(ctx, fs) }, "recv -A pool/a/fs"},
		{"destroy one snapshot", func(c *CLI) error { return c.Destroy(ctx, []zfs.VersionRef{snap("s1")}) }, "destroy pool/a/fs@s1"},
		{"destroy one bookmark", func(c *CLI) error { return c.Destroy(ctx, []zfs.VersionRef{book("b1")}) }, "destroy pool/a/fs#b1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			// Hold tags and property values may hold spaces: match the
			// recorded line, not a split of it.
			f.onArgs(splitWant(tc.want), fakeRule{})
			require.NoError(t, tc.call(f.cli()))
			assert.Equal(t, []string{tc.want}, f.commands())
		})
	}
}

// splitWant splits an expected command line on spaces, except inside the
// "set" value used above.
func splitWant(s string) []string {
	if strings.HasPrefix(s, "set ") {
		rest := strings.TrimPrefix(s, "set ")
		i := strings.LastIndexByte(rest, ' ')
		return []string{"set", rest[:i], rest[i+1:]}
	}
	return strings.Fields(s)
}

// TestOperationErrors checks that each operation reports zfs's failure
// with the kind, the dataset it concerns, the message and the status.
func TestOperationErrors(t *testing.T) {
	cases := []struct {
		name    string
		args    string
		stderr  string
		status  int
		call    func(c *CLI) error
		kind    zfs.Kind
		dataset string
	}{
		{"snapshot exists", "snapshot pool/a/fs@s1", "cannot create snapshot 'pool/a/fs@s1': dataset already exists\n", 1,
			func(c *CLI) error { return c.Snapshot(ctx, fs, "s1") }, zfs.ErrDatasetExists, "pool/a/fs@s1"},
		{"bookmark exists", "bookmark pool/a/fs@s1 pool/a/fs#b1", "cannot create bookmark 'pool/a/fs#b1': bookmark exists\n", 1,
			func(c *CLI) error { return c.Bookmark(ctx, snap("s1"), "b1") }, zfs.ErrDatasetExists, "pool/a/fs#b1"},
		{"hold exists", "hold -- t pool/a/fs@s1", "cannot hold snapshot 'pool/a/fs@s1': tag already exists on this dataset\n", 1,
			func(c *CLI) error { return c.Hold(ctx, snap("s1"), "t") }, zfs.ErrHoldTagExists, "pool/a/fs@s1"},
		{"release absent", "release -- t pool/a/fs@s1", "cannot release hold from snapshot 'pool/a/fs@s1': no such tag on this dataset\n", 1,
			func(c *CLI) error { return c.Release(ctx, snap("s1"), "t") }, zfs.ErrHoldTagNotFound, "pool/a/fs@s1"},
		{"rollback newer", "rollback pool/a/fs@s1",
			"cannot rollback to 'pool/a/fs@s1': more recent snapshots or bookmarks exist\nuse '-r' to force deletion of the following snapshots and bookmarks:\npool/a/fs@s2\n", 1,
			func(c *CLI) error { return c.Rollback(ctx, snap("s1"), false) }, zfs.ErrNewerSnapshotsExist, "pool/a/fs@s1"},
		{"abort nothing", "recv -A pool/a/fs", "'pool/a/fs' does not have any resumable receive state to abort\n", 1,
			func(c *CLI) error { return c.AbortReceive(ctx, fs) }, zfs.ErrNoResumableState, "pool/a/fs"},
		{"placeholder parent", "create -o zrepl:placeholder=on -o mountpoint=none -o canmount=off pool/a/fs",
			"cannot create 'pool/a/fs': parent does not exist\n", 1,
			func(c *CLI) error { return c.CreatePlaceholder(ctx, fs, zfs.PlaceholderOptions{}) }, zfs.ErrDatasetNotExist, "pool/a/fs"},
		{"bookmark gone", "destroy pool/a/fs#b1", "bookmark 'pool/a/fs#b1' does not exist.\n", 1,
			func(c *CLI) error { return c.Destroy(ctx, []zfs.VersionRef{book("b1")}) }, zfs.ErrDatasetNotExist, "pool/a/fs#b1"},
		{"unknown", "snapshot pool/a/fs@s1", "internal error: out of memory\n", 2,
			func(c *CLI) error { return c.Snapshot(ctx, fs, "s1") }, 0, "pool/a/fs@s1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.on(tc.args, fakeRule{Stderr: tc.stderr, Exit: tc.status})
			e := zerr(t, tc.call(f.cli()), tc.kind)
			assert.Equal(t, tc.dataset, e.Dataset)
			assert.Equal(t, strings.TrimSpace(tc.stderr), e.Msg)
			assert.Equal(t, tc.status, e.ExitStatus)
			assert.Equal(t, strings.Fields(tc.args)[0], e.Op)
		})
	}
}

// TestSilentFailure: a failure without a word on stderr still says how
// zfs exited.
// TestUsageDropped: the usage text zfs prints after some errors is not
// part of the message.
func TestUsageDropped(t *testing.T) {
	f := newFake(t)
	f.on("bookmark pool/a/fs@gone pool/a/fs#b", fakeRule{Exit: 1, Stderr: "cannot open 'pool/a/fs@gone': dataset does not exist\n" +
		"usage:\n\tbookmark <snapshot|bookmark> <newbookmark>\n\nFor the property list, run: zfs set|get\n"})
	e := zerr(t, f.cli().Bookmark(ctx, snap("gone"), "b"), zfs.ErrDatasetNotExist)
	assert.Equal(t, "cannot open 'pool/a/fs@gone': dataset does not exist", e.Msg)
	assert.Equal(t, "", zfsMessage("usage:\n\tzfs ...\n"))
	assert.Equal(t, "x", zfsMessage(" x \n"))
}

func TestSilentFailure(t *testing.T) {
	f := newFake(t)
	f.on("snapshot pool/a/fs@s1", fakeRule{Exit: 3})
	e := zerr(t, f.cli().Snapshot(ctx, fs, "s1"), 0)
	assert.Equal(t, 3, e.ExitStatus)
	assert.Contains(t, e.Error(), "exit status 3")
}

func TestMissingBinary(t *testing.T) {
	c := New(Options{ZFSBinary: t.TempDir() + "/no-such-zfs"})
	err := c.Snapshot(ctx, fs, "s1")
	zerr(t, err, 0)
	var se *startError
	assert.ErrorAs(t, err, &se)
	// A batch that cannot even start is not retried name by name.
	err = c.Destroy(ctx, []zfs.VersionRef{snap("a"), snap("b")})
	assert.ErrorAs(t, err, &se)
	assert.Len(t, flatten(err), 1)
}

// TestLocale: zfs runs with LC_ALL=C, since kinds are scraped from the
// English messages.
func TestLocale(t *testing.T) {
	t.Setenv("LC_ALL", "de_DE.UTF-8")
	f := newFake(t)
	f.on("version", fakeRule{Env: "LC_ALL"})
	out, _, err := f.cli().run(ctx, "version", "", []string{"version"})
	require.NoError(t, err)
	assert.Equal(t, "C", string(out))
}

func TestDestroyBatchThenOneByOne(t *testing.T) {
	f := newFake(t)
	busy := "cannot destroy snapshot pool/a/fs@b: dataset is busy\n"
	f.on("destroy pool/a/fs@a,b,c", fakeRule{Stderr: busy, Exit: 1})
	f.on("destroy pool/a/fs@a", fakeRule{})
	f.on("destroy pool/a/fs@b", fakeRule{Stderr: busy, Exit: 1})
	f.on("destroy pool/a/fs@c", fakeRule{})
	f.on("destroy pool/a/fs#m", fakeRule{Stderr: "bookmark 'pool/a/fs#m' does not exist.\n", Exit: 1})
	f.on("destroy pool/a/fs#n", fakeRule{})
	err := f.cli().Destroy(ctx, []zfs.VersionRef{snap("a"), book("m"), snap("b"), snap("c"), snap("a"), book("n")})
	require.Error(t, err)
	assert.True(t, errors.Is(err, zfs.ErrDatasetBusy))
	assert.True(t, errors.Is(err, zfs.ErrDatasetNotExist))
	errs := flatten(err)
	require.Len(t, errs, 2)
	var datasets []string
	for _, e := range errs {
		var ze *zfs.Error
		require.ErrorAs(t, e, &ze)
		datasets = append(datasets, ze.Dataset)
	}
	assert.Equal(t, []string{"pool/a/fs@b", "pool/a/fs#m"}, datasets)
	assert.Equal(t, []string{
		"destroy pool/a/fs@a,b,c",
		"destroy pool/a/fs@a", "destroy pool/a/fs@b", "destroy pool/a/fs@c",
		"destroy pool/a/fs#m", "destroy pool/a/fs#n",
	}, f.commands())
}

func TestDestroyBatchesLongLists(t *testing.T) {
	f := newFake(t)
	var refs []zfs.VersionRef
	for i := range 10 {
		refs = append(refs, snap(fmt.Sprintf("snap%02d", i)))
	}
	// "pool/a/fs@" is 10 bytes, each name 6 plus a comma: 4 names fit in 38.
	f.on("destroy pool/a/fs@snap00,snap01,snap02,snap03", fakeRule{})
	f.on("destroy pool/a/fs@snap04,snap05,snap06,snap07", fakeRule{})
	f.on("destroy pool/a/fs@snap08,snap09", fakeRule{})
	c := New(Options{ZFSBinary: f.bin, MaxArgBytes: 38})
	require.NoError(t, c.Destroy(ctx, refs))
	assert.Len(t, f.calls(), 3)
}

func TestDestroyRefusesMixedInput(t *testing.T) {
	f := newFake(t)
	c := f.cli()
	other := zfs.SnapshotRef(zfs.MustDatasetPath("pool/other"), "a")
	zerr(t, c.Destroy(ctx, []zfs.VersionRef{snap("a"), other}), zfs.ErrInvalidName)
	zerr(t, c.Destroy(ctx, []zfs.VersionRef{snap("a"), {FS: fs, Kind: 0, Name: "x"}}), zfs.ErrInvalidName)
	require.NoError(t, c.Destroy(ctx, nil))
	assert.Empty(t, f.calls())
}

func TestHolds(t *testing.T) {
	f := newFake(t)
	f.on("holds -H pool/a/fs@s1 pool/a/fs@s2 pool/a/fs@s3", fakeRule{Stdout: "" +
		"pool/a/fs@s1\tzrepl_b\tWed Nov 25 05:57 2026\n" +
		"pool/a/fs@s1\tzrepl a\tWed Nov 25 05:58 2026\n" +
		"pool/a/fs@s3\tx\tWed Nov 25 05:59 2026\n"})
	got, err := f.cli().Holds(ctx, []zfs.VersionRef{snap("s1"), snap("s2"), snap("s3"), snap("s1")})
	require.NoError(t, err)
	assert.Equal(t, map[string][]string{"s1": {"zrepl a", "zrepl_b"}, "s2": {}, "s3": {"x"}}, got)

	got, err = f.cli().Holds(ctx, nil)
	require.NoError(t, err)
	assert.Empty(t, got)
	assert.Len(t, f.calls(), 1)
}

func TestHoldsBatchesAndRejectsStrangers(t *testing.T) {
	f := newFake(t)
	f.on("holds -H pool/a/fs@s1", fakeRule{Stdout: "pool/a/fs@s1\tt\tWed Nov 25 05:57 2026\n"})
	f.on("holds -H pool/a/fs@s2", fakeRule{Stdout: "pool/a/fs@s9\tt\tWed Nov 25 05:57 2026\n"})
	c := New(Options{ZFSBinary: f.bin, MaxArgBytes: 22})
	_, err := c.Holds(ctx, []zfs.VersionRef{snap("s1"), snap("s2")})
	zerr(t, err, 0)
	assert.Contains(t, err.Error(), "pool/a/fs@s9")
	assert.Equal(t, []string{"holds -H pool/a/fs@s1", "holds -H pool/a/fs@s2"}, f.commands())

	_, err = c.Holds(ctx, []zfs.VersionRef{book("b")})
	zerr(t, err, zfs.ErrInvalidName)
}

func TestContextDoneRunsNothing(t *testing.T) {
	f := newFake(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err := f.cli().Snapshot(cctx, fs, "s1")
	assert.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, f.calls())
}

// TestContextCancelKillsCommand: cancelling a running command kills zfs
// and reaps it.
func TestContextCancelKillsCommand(t *testing.T) {
	f := newFake(t)
	f.on("snapshot pool/a/fs@s1", fakeRule{Hang: true})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- f.cli().Snapshot(cctx, fs, "s1") }()
	pid := f.waitCalls(1)[0].Pid
	cancel()
	err := <-done
	assert.ErrorIs(t, err, context.Canceled)
	assert.True(t, gone(pid), "zfs child %d still exists", pid)
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
