package zfstest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/zfstest"
	"zrepl.dev/zrepl/zfsmodel"
)

// modelHarness runs the suite on zfsmodel, with z wrapping the model.
type modelHarness struct {
	m     *zfsmodel.Model
	z     zfs.ZFS
	pools int
}

func (h *modelHarness) ZFS() zfs.ZFS { return h.z }
func (h *modelHarness) NewRoot(t *testing.T) zfs.DatasetPath {
	p := zfs.MustDatasetPath("pool/case")
	if err := h.m.CreateFilesystem(p, zfsmodel.FSOptions{Parents: true}); err != nil {
		t.Fatal(err)
	}
	return p
}
func (h *modelHarness) CreateFilesystem(_ context.Context, fs zfs.DatasetPath, enc bool) error {
	return h.m.CreateFilesystem(fs, zfsmodel.FSOptions{Encrypted: enc})
}
func (h *modelHarness) WriteData(_ context.Context, fs zfs.DatasetPath, seed int64, size int) error {
	return h.m.WriteData(fs, seed, (size+zfsmodel.BlockSize-1)/zfsmodel.BlockSize)
}
func (h *modelHarness) Checksum(_ context.Context, s zfs.VersionRef) (string, error) {
	return h.m.Checksum(s)
}

// NewPool creates pool<n>; the model is dropped with the case, so there
// is nothing to clean up.
func (h *modelHarness) NewPool(t *testing.T) (zfs.DatasetPath, func() error) {
	h.pools++
	name := fmt.Sprintf("pool%d", h.pools+1)
	if err := h.m.CreatePool(name); err != nil {
		t.Fatal(err)
	}
	return zfs.MustDatasetPath(name), func() error { return h.m.DestroyPool(name) }
}

func (h *modelHarness) Property(_ context.Context, fs zfs.DatasetPath, name string) (string, string, error) {
	v, src := h.m.Property(fs, name)
	return v, src, nil
}

func (h *modelHarness) LoadKey(_ context.Context, fs zfs.DatasetPath) error { return h.m.LoadKey(fs) }
func (h *modelHarness) UnloadKey(_ context.Context, fs zfs.DatasetPath) error {
	return h.m.UnloadKey(fs)
}

// mutant is the model with one deliberate deviation.
type mutant struct {
	zfs.ZFS
	kind string
}

func (m mutant) Hold(ctx context.Context, s zfs.VersionRef, tag string) error {
	err := m.ZFS.Hold(ctx, s, tag)
	var ze *zfs.Error
	if m.kind == "holdmsg" && errors.As(err, &ze) {
		c := *ze
		c.Msg = strings.Replace(c.Msg, "tag already exists", "tag exists", 1)
		return &c
	}
	return err
}

func (m mutant) ListVersions(ctx context.Context, fs zfs.DatasetPath) ([]zfs.FilesystemVersion, error) {
	vs, err := m.ZFS.ListVersions(ctx, fs)
	if m.kind == "bookmarkguid" {
		for i := range vs {
			if vs[i].Kind == zfs.Bookmark {
				vs[i].GUID++
			}
		}
	}
	return vs, err
}

func (m mutant) Receive(ctx context.Context, fs zfs.DatasetPath, r io.Reader, o zfs.RecvOptions) error {
	switch m.kind {
	case "noforce":
		o.ForceRollback = false
	case "noresume":
		o.Resumable = false
	}
	return m.ZFS.Receive(ctx, fs, r, o)
}

func (m mutant) SendSize(ctx context.Context, a zfs.SendArgs) (int64, error) {
	n, err := m.ZFS.SendSize(ctx, a)
	if m.kind == "sizeoff" {
		n *= 3
	}
	return n, err
}

// Rollback with destroyNewer discards partial receive state first, as an
// implementation might that treats the state as in the way.
func (m mutant) Rollback(ctx context.Context, s zfs.VersionRef, destroyNewer bool) error {
	if m.kind == "rollbackaborts" && destroyNewer {
		_ = m.ZFS.AbortReceive(ctx, s.FS)
	}
	return m.ZFS.Rollback(ctx, s, destroyNewer)
}

func (m mutant) ListPools(ctx context.Context) ([]zfs.DatasetPath, error) {
	ps, err := m.ZFS.ListPools(ctx)
	if m.kind == "poolsreversed" {
		slices.Reverse(ps)
	}
	return ps, err
}

// CreatePlaceholder ignores EncryptionOff, as it did before the option.
func (m mutant) CreatePlaceholder(ctx context.Context, fs zfs.DatasetPath, o zfs.PlaceholderOptions) error {
	if m.kind == "placeholderinherits" {
		o.EncryptionOff = false
	}
	return m.ZFS.CreatePlaceholder(ctx, fs, o)
}

// TestMutantChild runs the suite against the mutant named by
// $ZFSTEST_MUTANT; TestSuiteCatchesMutants runs it in a subprocess.
func TestMutantChild(t *testing.T) {
	kind := os.Getenv("ZFSTEST_MUTANT")
	if kind == "" {
		t.Skip("only run as a subprocess of TestSuiteCatchesMutants")
	}
	zfstest.Run(t, func(t *testing.T) zfstest.Harness {
		m := zfsmodel.New(zfsmodel.Options{Seed: 1})
		if err := m.CreatePool("pool"); err != nil {
			t.Fatal(err)
		}
		return &modelHarness{m: m, z: mutant{ZFS: m, kind: kind}}
	})
}

// TestSuiteCatchesMutants checks that the suite fails implementations that
// deviate from the contract, in the case that covers the deviation, and
// passes the unmodified model.
func TestSuiteCatchesMutants(t *testing.T) {
	if os.Getenv("ZFSTEST_MUTANT") != "" {
		t.Skip("child process")
	}
	for _, c := range []struct{ mutant, failingCase string }{
		{"none", ""},
		{"holdmsg", "HoldTwice"},
		{"bookmarkguid", "BookmarkKeepsGUIDAndTXG"},
		{"noforce", "DestinationModified"},
		{"noresume", "ResumableFullReceive"},
		{"sizeoff", "SendSizeEstimate"},
		{"rollbackaborts", "RollbackUnderPartialReceive"},
		{"poolsreversed", "ListPools"},
		{"placeholderinherits", "PlaceholderEncryption"},
	} {
		t.Run(c.mutant, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMutantChild$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "ZFSTEST_MUTANT="+c.mutant)
			out, err := cmd.CombinedOutput()
			passed := err == nil
			if c.failingCase == "" {
				if !passed {
					t.Fatalf("suite fails the unmodified model:\n%s", out)
				}
				if want := fmt.Sprintf("ran %d cases", len(zfstest.CaseNames())); !strings.Contains(string(out), want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
				return
			}
			if passed {
				t.Fatalf("suite passes mutant %s", c.mutant)
			}
			if want := "--- FAIL: TestMutantChild/" + c.failingCase + " "; !strings.Contains(string(out), want) {
				t.Errorf("mutant %s: want %q in the output:\n%s", c.mutant, want, out)
			}
		})
	}
}
