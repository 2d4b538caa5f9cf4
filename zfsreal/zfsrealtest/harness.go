// Package zfsrealtest runs the zfs.ZFS conformance suite (engine/zfs/zfstest)
// against zfsreal on a real ZFS host: a throwaway pool on a sparse file and
// a zfstest.Harness on it. It needs root, the ZFS kernel module and the
// zfs/zpool tools; Usable says whether they are there.
package zfsrealtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/zfstest"
	"zrepl.dev/zrepl/zfsreal"
)

// Usable says why real ZFS cannot be used here, or "" if it can.
func Usable() string {
	var why []string
	if _, err := os.Stat("/dev/zfs"); err != nil {
		why = append(why, "no /dev/zfs")
	}
	for _, bin := range []string{"zfs", "zpool"} {
		if _, err := exec.LookPath(bin); err != nil {
			why = append(why, "no "+bin+" on PATH")
		}
	}
	if os.Geteuid() != 0 {
		why = append(why, "not root")
	}
	return strings.Join(why, "; ")
}

// run runs a command and returns its trimmed stdout, or an error with its
// stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

var poolSeq atomic.Int64

// Pool is a throwaway zpool on a sparse file below t.TempDir(), destroyed
// when the test ends; its datasets mount below an altroot in that
// directory.
type Pool struct {
	Name string
	Dir  string
}

// NewPool creates a pool of size bytes (sparse: only what is written
// costs space).
func NewPool(t testing.TB, size int64) *Pool {
	t.Helper()
	dir := t.TempDir()
	p := &Pool{Name: fmt.Sprintf("zrt%d_%d", os.Getpid(), poolSeq.Add(1)), Dir: dir}
	vdev := filepath.Join(dir, "vdev")
	f, err := os.Create(vdev)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := run(ctx, "zpool", "create", "-f", "-R", filepath.Join(dir, "mnt"), p.Name, vdev); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := run(ctx, "zpool", "destroy", "-f", p.Name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// Harness is zfstest.Harness on a pool. Every encryption root it creates
// uses one passphrase, kept in a key file, so it can load the key of any
// root, also of one received raw from another.
type Harness struct {
	z       *zfsreal.CLI
	pool    *Pool
	keyFile string
	seq     atomic.Int64

	releaseOnce sync.Once
	release     string
	// clonesMu: cases run in parallel, and the first checksum of each
	// would create the clones' parent.
	clonesMu sync.Mutex
}

var _ zfstest.Harness = (*Harness)(nil)

// NewHarness returns a harness on pool using z.
func NewHarness(t testing.TB, pool *Pool, z *zfsreal.CLI) *Harness {
	t.Helper()
	h := &Harness{z: z, pool: pool, keyFile: filepath.Join(pool.Dir, "key")}
	if err := os.WriteFile(h.keyFile, []byte("zrepl-conformance-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *Harness) ZFS() zfs.ZFS { return h.z }

// OpenZFSRelease is the line of the running kernel module ("2.1", "2.3"),
// from zfs version's second line (zfs-kmod-2.3.9-...); the suite expects
// that line's behaviour where the lines differ.
func (h *Harness) OpenZFSRelease() string {
	h.releaseOnce.Do(func() { h.release = Release() })
	return h.release
}

// Release is the OpenZFS release line ("2.1", "2.3") of the loaded kernel
// module, or "" when zfs version does not say.
func Release() string {
	out, err := run(context.Background(), "zfs", "version")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "zfs-kmod-"); ok {
			if f := strings.SplitN(v, ".", 3); len(f) >= 2 {
				return f[0] + "." + f[1]
			}
		}
	}
	return ""
}

// Version is zfs version's output on one line ("zfs-2.3.9-0+deb13u1
// zfs-kmod-2.3.9-0+deb13u1"), or the error.
func Version() string {
	out, err := run(context.Background(), "zfs", "version")
	if err != nil {
		return err.Error()
	}
	return strings.Join(strings.Fields(out), " ")
}

// NewRoot creates pool/case-N and destroys it when the case ends, so the
// pool does not fill up over a run.
func (h *Harness) NewRoot(t *testing.T) zfs.DatasetPath {
	t.Helper()
	root := zfs.MustDatasetPath(fmt.Sprintf("%s/case-%d", h.pool.Name, h.seq.Add(1)))
	ctx := context.Background()
	if _, err := run(ctx, "zfs", "create", root.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Held snapshots cannot be destroyed: release every hold first.
		if err := releaseAll(ctx, root.String()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if _, err := run(ctx, "zfs", "destroy", "-R", "-f", root.String()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return root
}

// releaseAll releases every user hold on the snapshots below root.
func releaseAll(ctx context.Context, root string) error {
	snaps, err := run(ctx, "zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", root)
	if err != nil || snaps == "" {
		return err
	}
	for _, snap := range strings.Split(snaps, "\n") {
		holds, err := run(ctx, "zfs", "holds", "-H", snap)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(holds, "\n") {
			if f := strings.Split(line, "\t"); len(f) == 3 {
				if _, err := run(ctx, "zfs", "release", "--", f[1], snap); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (h *Harness) CreateFilesystem(ctx context.Context, fs zfs.DatasetPath, encrypted bool) error {
	args := []string{"create"}
	if encrypted {
		args = append(args, "-o", "encryption=on", "-o", "keyformat=passphrase", "-o", "keylocation=file://"+h.keyFile)
	}
	_, err := run(ctx, "zfs", append(args, fs.String())...)
	return err
}

// mounted mounts fs if it is not and returns its mountpoint. Received
// filesystems arrive unmounted (recv -u).
func (h *Harness) mounted(ctx context.Context, fs string) (string, error) {
	out, err := run(ctx, "zfs", "get", "-H", "-o", "value", "mounted,mountpoint", fs)
	if err != nil {
		return "", err
	}
	vals := strings.Split(out, "\n")
	if len(vals) != 2 {
		return "", fmt.Errorf("zfs get mounted,mountpoint %s: %q", fs, out)
	}
	if vals[0] != "yes" {
		if _, err := run(ctx, "zfs", "mount", fs); err != nil {
			return "", err
		}
	}
	return vals[1], nil
}

// WriteData replaces the file "data" in fs by size bytes drawn from seed.
func (h *Harness) WriteData(ctx context.Context, fs zfs.DatasetPath, seed int64, size int) error {
	mnt, err := h.mounted(ctx, fs.String())
	if err != nil {
		return err
	}
	b := make([]byte, size)
	x := uint64(seed)*0x9e3779b97f4a7c15 + 1
	for i := range b {
		// xorshift64: deterministic, cheap, and incompressible enough.
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return os.WriteFile(filepath.Join(mnt, "data"), b, 0o644)
}

// Checksum hashes the names and contents of the files in a snapshot, read
// through a temporary clone (which needs no snapshot automount).
func (h *Harness) Checksum(ctx context.Context, snapshot zfs.VersionRef) (string, error) {
	if snapshot.Kind != zfs.Snapshot {
		return "", fmt.Errorf("checksum of %s: not a snapshot", snapshot)
	}
	clones, err := h.clonesParent(ctx)
	if err != nil {
		return "", err
	}
	clone := fmt.Sprintf("%s/c%d", clones, h.seq.Add(1))
	dir := filepath.Join(h.pool.Dir, "clones", filepath.Base(clone))
	if _, err := run(ctx, "zfs", "clone", "-o", "mountpoint="+dir, snapshot.String(), clone); err != nil {
		return "", err
	}
	defer func() { _, _ = run(context.Background(), "zfs", "destroy", "-f", clone) }()
	mnt, err := h.mounted(ctx, clone)
	if err != nil {
		return "", err
	}
	return hashTree(mnt)
}

// clonesParent returns the filesystem the checksum clones go below,
// creating it the first time.
func (h *Harness) clonesParent(ctx context.Context) (string, error) {
	h.clonesMu.Lock()
	defer h.clonesMu.Unlock()
	clones := h.pool.Name + "/zfsrealtest-clones"
	if _, err := run(ctx, "zfs", "list", "-H", "-o", "name", clones); err != nil {
		if _, err := run(ctx, "zfs", "create", "-o", "mountpoint=none", clones); err != nil {
			return "", err
		}
	}
	return clones, nil
}

func hashTree(dir string) (string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".zfs" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	h := sha256.New()
	for _, p := range files {
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s\x00", rel)
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// NewPool creates another pool of 128 MiB (sparse) below the case's temp
// directory. destroy is zpool destroy -f; the case's cleanup runs it unless
// the case did.
func (h *Harness) NewPool(t *testing.T) (zfs.DatasetPath, func() error) {
	t.Helper()
	dir := t.TempDir()
	name := fmt.Sprintf("zrt%d_%d", os.Getpid(), poolSeq.Add(1))
	vdev := filepath.Join(dir, "vdev")
	if err := os.WriteFile(vdev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vdev, 128<<20); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := run(ctx, "zpool", "create", "-f", "-R", filepath.Join(dir, "mnt"), name, vdev); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var derr error
	destroy := func() error {
		once.Do(func() { _, derr = run(ctx, "zpool", "destroy", "-f", name) })
		return derr
	}
	t.Cleanup(func() {
		if err := destroy(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return zfs.MustDatasetPath(name), destroy
}

// Property asks zfs get; "inherited from X" becomes "inherited".
func (h *Harness) Property(ctx context.Context, fs zfs.DatasetPath, name string) (string, string, error) {
	out, err := run(ctx, "zfs", "get", "-H", "-p", "-o", "value,source", name, fs.String())
	if err != nil {
		return "", "", err
	}
	value, source, ok := strings.Cut(out, "\t")
	if !ok {
		return "", "", fmt.Errorf("zfs get %s %s: unexpected output %q", name, fs, out)
	}
	switch {
	case source == "-":
		return "", "-", nil
	case strings.HasPrefix(source, "inherited"):
		source = "inherited"
	}
	return value, source, nil
}

func (h *Harness) LoadKey(ctx context.Context, root zfs.DatasetPath) error {
	_, err := run(ctx, "zfs", "load-key", "-L", "file://"+h.keyFile, root.String())
	return err
}

// UnloadKey unmounts root first: a mounted filesystem keeps its key busy.
func (h *Harness) UnloadKey(ctx context.Context, root zfs.DatasetPath) error {
	out, err := run(ctx, "zfs", "get", "-H", "-o", "value", "mounted", root.String())
	if err != nil {
		return err
	}
	if out == "yes" {
		if _, err := run(ctx, "zfs", "unmount", root.String()); err != nil {
			return err
		}
	}
	_, err = run(ctx, "zfs", "unload-key", root.String())
	return err
}

// Run runs the conformance suite against zfsreal on a fresh pool, or
// skips (fails, with mustRun) where real ZFS is not usable.
func Run(t *testing.T, mustRun bool) {
	t.Helper()
	if why := Usable(); why != "" {
		if mustRun {
			t.Fatalf("real ZFS required but not usable: %s", why)
		}
		t.Skipf("real ZFS not usable (%s)", why)
	}
	pool := NewPool(t, 1<<30)
	z := zfsreal.New(zfsreal.Options{})
	h := NewHarness(t, pool, z)
	t.Logf("OpenZFS %s (release line %s)", Version(), h.OpenZFSRelease())
	zfstest.Run(t, func(t *testing.T) zfstest.Harness { return h })
}
