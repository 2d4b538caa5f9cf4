// Package zfstest is the conformance suite of the zfs.ZFS interface: one set
// of behaviour cases, written once, that every implementation must pass.
// zfsmodel's tests run it against the in-memory model; platform tests run it
// against real ZFS in a VM. Cases assert error kinds and, where the real
// OpenZFS 2.1 text is known, the exact message.
//
// The suite only uses what a real harness can provide: it creates its own
// filesystems below a per-case root, writes data, and compares snapshot
// content through Harness.Checksum.
//
// Error Op values the suite expects: "snapshot", "bookmark", "destroy",
// "rollback", "hold", "release", "send", "recv".
package zfstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// Harness is what the suite needs beyond zfs.ZFS.
type Harness interface {
	ZFS() zfs.ZFS
	// NewRoot returns an existing, empty, unencrypted filesystem private to
	// one test case (real ZFS: pool/case-N).
	NewRoot(t *testing.T) zfs.DatasetPath
	// CreateFilesystem creates fs; encrypted makes it a new encryption
	// root with its key loaded. The harness knows the key of every
	// encryption root it created, also after a raw send elsewhere.
	CreateFilesystem(ctx context.Context, fs zfs.DatasetPath, encrypted bool) error
	// WriteData changes fs's content: about size bytes derived from seed.
	// It also works on received filesystems (real ZFS: mount them first,
	// the suite's receives do not mount).
	WriteData(ctx context.Context, fs zfs.DatasetPath, seed int64, size int) error
	// Checksum is a digest of a snapshot's content: equal for equal content.
	Checksum(ctx context.Context, snapshot zfs.VersionRef) (string, error)
	// LoadKey loads the key of an encryption root, also of one received
	// raw (real ZFS: its keylocation is not received, so pass it).
	LoadKey(ctx context.Context, encryptionRoot zfs.DatasetPath) error
	// UnloadKey unloads it (real ZFS: unmount first).
	UnloadKey(ctx context.Context, encryptionRoot zfs.DatasetPath) error
	// Property is a property's value on fs and its source as `zfs get -o
	// value,source` gives them: "local", "received", "inherited", or "-"
	// with value "" where fs does not have it.
	Property(ctx context.Context, fs zfs.DatasetPath, name string) (value, source string, err error)
	// NewPool creates and imports another, empty pool and returns its root
	// filesystem and a function that destroys the pool; the harness also
	// destroys it when the case ends, if the case did not.
	NewPool(t *testing.T) (root zfs.DatasetPath, destroy func() error)
}

// Releaser is implemented by a harness that knows which OpenZFS release
// line it runs ("2.1", "2.3"): real ZFS from `zfs version`, zfsmodel the line
// it imitates. Cases whose outcome differs between lines expect that line's
// behaviour; a harness without it is taken to be the newest line.
type Releaser interface {
	OpenZFSRelease() string
}

// Newest is the release line a harness without Releaser is taken to run.
const Newest = "2.3"

type testCase struct {
	name string
	run  func(e *env)
	// serial: the case looks beyond its own root (the pool list, the
	// whole pool), so it runs alone, before the others.
	serial bool
}

// cases is filled by the init functions of the case files.
var cases []testCase

func register(name string, run func(e *env)) {
	cases = append(cases, testCase{name: name, run: run})
}

func registerSerial(name string, run func(e *env)) {
	cases = append(cases, testCase{name: name, run: run, serial: true})
}

// CaseNames lists the cases in the order they are registered.
func CaseNames() []string {
	out := make([]string, len(cases))
	for i, c := range cases {
		out[i] = c.name
	}
	return out
}

// Run runs every case as a subtest, each with a harness from newHarness,
// and reports how many ran. The cases run in parallel (up to
// -test.parallel), each in its own root: a case runs one zfs command at a
// time, and in platformtest's VM the suite takes half as long on its two
// CPUs. Serial cases run first, one at a time.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	ran := 0
	for _, c := range cases {
		ok := t.Run(c.name, func(t *testing.T) {
			if !c.serial {
				t.Parallel()
			}
			h := newHarness(t)
			e := &env{t: t, h: h, z: h.ZFS(), ctx: context.Background()}
			e.root = h.NewRoot(t)
			c.run(e)
		})
		ran++
		_ = ok
	}
	if ran != len(cases) {
		t.Fatalf("zfstest: ran %d of %d cases", ran, len(cases))
	}
	t.Logf("zfstest: ran %d cases", ran)
}

// env is one case's world and its helpers; helpers fail the test on
// unexpected errors.
type env struct {
	t    *testing.T
	h    Harness
	z    zfs.ZFS
	ctx  context.Context
	root zfs.DatasetPath
}

const dataSize = 384 << 10

func (e *env) path(rel string) zfs.DatasetPath {
	e.t.Helper()
	p, err := e.root.Join(rel)
	if err != nil {
		e.t.Fatalf("path %q: %v", rel, err)
	}
	return p
}

func (e *env) create(rel string, encrypted bool) zfs.DatasetPath {
	e.t.Helper()
	p := e.path(rel)
	if err := e.h.CreateFilesystem(e.ctx, p, encrypted); err != nil {
		e.t.Fatalf("create %s: %v", p, err)
	}
	return p
}

func (e *env) write(fs zfs.DatasetPath, seed int64) {
	e.t.Helper()
	if err := e.h.WriteData(e.ctx, fs, seed, dataSize); err != nil {
		e.t.Fatalf("write %s: %v", fs, err)
	}
}

func (e *env) snap(fs zfs.DatasetPath, name string) zfs.FilesystemVersion {
	e.t.Helper()
	if err := e.z.Snapshot(e.ctx, fs, name); err != nil {
		e.t.Fatalf("snapshot %s@%s: %v", fs, name, err)
	}
	return e.version(fs, zfs.Snapshot, name)
}

func (e *env) bookmark(from zfs.VersionRef, name string) zfs.FilesystemVersion {
	e.t.Helper()
	if err := e.z.Bookmark(e.ctx, from, name); err != nil {
		e.t.Fatalf("bookmark %s -> #%s: %v", from, name, err)
	}
	return e.version(from.FS, zfs.Bookmark, name)
}

func (e *env) versions(fs zfs.DatasetPath) []zfs.FilesystemVersion {
	e.t.Helper()
	vs, err := e.z.ListVersions(e.ctx, fs)
	if err != nil {
		e.t.Fatalf("list versions of %s: %v", fs, err)
	}
	return vs
}

func (e *env) version(fs zfs.DatasetPath, kind zfs.VersionKind, name string) zfs.FilesystemVersion {
	e.t.Helper()
	for _, v := range e.versions(fs) {
		if v.Kind == kind && v.Name == name {
			return v
		}
	}
	e.t.Fatalf("%s%s%s not listed", fs, kind.Delimiter(), name)
	return zfs.FilesystemVersion{}
}

// relNames lists the versions of fs as "@a", "#b", in listing order.
func (e *env) relNames(fs zfs.DatasetPath) []string {
	e.t.Helper()
	var out []string
	for _, v := range e.versions(fs) {
		out = append(out, v.RelName())
	}
	return out
}

func (e *env) info(fs zfs.DatasetPath) (zfs.FilesystemInfo, bool) {
	e.t.Helper()
	infos, err := e.z.ListFilesystems(e.ctx, e.root)
	if err != nil {
		e.t.Fatalf("list filesystems: %v", err)
	}
	for _, fi := range infos {
		if fi.Path == fs {
			return fi, true
		}
	}
	return zfs.FilesystemInfo{}, false
}

func (e *env) mustInfo(fs zfs.DatasetPath) zfs.FilesystemInfo {
	e.t.Helper()
	fi, ok := e.info(fs)
	if !ok {
		e.t.Fatalf("%s is not listed", fs)
	}
	return fi
}

func (e *env) checksum(ref zfs.VersionRef) string {
	e.t.Helper()
	c, err := e.h.Checksum(e.ctx, ref)
	if err != nil {
		e.t.Fatalf("checksum %s: %v", ref, err)
	}
	return c
}

func (e *env) sameContent(a, b zfs.VersionRef) {
	e.t.Helper()
	if ca, cb := e.checksum(a), e.checksum(b); ca != cb {
		e.t.Errorf("content of %s (%s) differs from %s (%s)", a, ca, b, cb)
	}
}

// release is the harness's OpenZFS release line (see Releaser).
func (e *env) release() string {
	if r, ok := e.h.(Releaser); ok {
		return r.OpenZFSRelease()
	}
	return Newest
}

// heldDestroyMsg is zfs destroy's text for a held snapshot: 2.1.11 says
// busy; 2.3.2 and 2.3.9 name the holds command.
func (e *env) heldDestroyMsg(snap zfs.VersionRef) string {
	if e.release() == "2.1" {
		return fmt.Sprintf("cannot destroy snapshot %s: dataset is busy", snap)
	}
	return fmt.Sprintf("cannot destroy snapshot %s: it's being held. Run 'zfs holds -r %s' to see holders.", snap, snap)
}

// cutReader ends a stream with EOF after n bytes, like `head -c n`.
type cutReader struct {
	r io.Reader
	n int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	k, err := c.r.Read(p)
	c.n -= int64(k)
	return k, err
}

// transfer sends args into target. cut > 0 ends the stream after cut
// bytes. Send errors, also those that surface only while reading or
// closing the stream (real zfs reports them on exit), come back as sendErr.
func (e *env) transfer(args zfs.SendArgs, target zfs.DatasetPath, opts zfs.RecvOptions, cut int64) (sendErr, recvErr error) {
	e.t.Helper()
	stream, err := e.z.Send(e.ctx, args)
	if err != nil {
		return err, nil
	}
	var r io.Reader = stream
	if cut > 0 {
		r = &cutReader{r: stream, n: cut}
	}
	recvErr = e.z.Receive(e.ctx, target, r, opts)
	if cerr := stream.Close(); cerr != nil && cut == 0 {
		sendErr = cerr
	}
	return sendErr, recvErr
}

func (e *env) mustTransfer(args zfs.SendArgs, target zfs.DatasetPath, opts zfs.RecvOptions) {
	e.t.Helper()
	sErr, rErr := e.transfer(args, target, opts, 0)
	if sErr != nil || rErr != nil {
		e.t.Fatalf("transfer %s %v -> %s: send: %v, recv: %v", args.FS, args.To.Name, target, sErr, rErr)
	}
}

func full(fs zfs.DatasetPath, to zfs.FilesystemVersion) zfs.SendArgs {
	return zfs.SendArgs{FS: fs, To: to}
}

func incr(fs zfs.DatasetPath, from, to zfs.FilesystemVersion) zfs.SendArgs {
	return zfs.SendArgs{FS: fs, From: &from, To: to}
}

// wantErr asserts err is a *zfs.Error of kind with the given op and
// dataset (when non-empty) and message: exact, or a prefix when msg ends
// in "…".
func (e *env) wantErr(err error, kind zfs.Kind, op, dataset, msg string) {
	e.t.Helper()
	if err == nil {
		e.t.Fatalf("want error %v (%q), got nil", kind, msg)
	}
	if !errors.Is(err, kind) {
		e.t.Fatalf("want error of kind %q, got %v", kind, err)
	}
	var ze *zfs.Error
	if !errors.As(err, &ze) {
		e.t.Fatalf("want a *zfs.Error, got %T %v", err, err)
	}
	// For a joined error pick the *zfs.Error of the wanted kind.
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, sub := range j.Unwrap() {
			var s *zfs.Error
			if errors.As(sub, &s) && s.Kind == kind {
				ze = s
				break
			}
		}
	}
	if op != "" && ze.Op != op {
		e.t.Errorf("error op = %q, want %q (%v)", ze.Op, op, err)
	}
	if dataset != "" && ze.Dataset != dataset {
		e.t.Errorf("error dataset = %q, want %q (%v)", ze.Dataset, dataset, err)
	}
	if p, ok := strings.CutSuffix(msg, "…"); ok {
		if !strings.HasPrefix(ze.Msg, p) {
			e.t.Errorf("error message = %q, want prefix %q", ze.Msg, p)
		}
	} else if msg != "" && ze.Msg != msg {
		e.t.Errorf("error message = %q, want %q", ze.Msg, msg)
	}
}

func (e *env) noErr(err error, what string, args ...any) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}

// token returns fs's resume token decoded, failing if there is none.
func (e *env) token(fs zfs.DatasetPath) (string, resumetoken.Token) {
	e.t.Helper()
	fi := e.mustInfo(fs)
	if fi.ReceiveResumeToken == "" {
		e.t.Fatalf("%s has no receive_resume_token", fs)
	}
	tok, err := resumetoken.Decode(fi.ReceiveResumeToken)
	if err != nil {
		e.t.Fatalf("decode token of %s: %v", fs, err)
	}
	return fi.ReceiveResumeToken, tok
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
