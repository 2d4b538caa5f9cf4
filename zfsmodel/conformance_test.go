package zfsmodel_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/zfstest"
	"zrepl.dev/zrepl/zfsmodel"
)

// harness adapts a Model to the conformance suite.
type harness struct {
	m     *zfsmodel.Model
	n     int
	pools int
}

func newHarness(t *testing.T) zfstest.Harness {
	m := zfsmodel.New(zfsmodel.Options{Seed: 42})
	if err := m.CreatePool("pool"); err != nil {
		t.Fatal(err)
	}
	return &harness{m: m}
}

func (h *harness) ZFS() zfs.ZFS { return h.m }

func (h *harness) OpenZFSRelease() string { return string(h.m.Imitates()) }

func (h *harness) NewRoot(t *testing.T) zfs.DatasetPath {
	h.n++
	p := zfs.MustDatasetPath(fmt.Sprintf("pool/case-%d", h.n))
	if err := h.m.CreateFilesystem(p, zfsmodel.FSOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *harness) CreateFilesystem(ctx context.Context, fs zfs.DatasetPath, encrypted bool) error {
	return h.m.CreateFilesystem(fs, zfsmodel.FSOptions{Encrypted: encrypted})
}

func (h *harness) WriteData(ctx context.Context, fs zfs.DatasetPath, seed int64, size int) error {
	return h.m.WriteData(fs, seed, (size+zfsmodel.BlockSize-1)/zfsmodel.BlockSize)
}

func (h *harness) Checksum(ctx context.Context, s zfs.VersionRef) (string, error) {
	return h.m.Checksum(s)
}

// NewPool creates pool<n>; the model is dropped with the case, so there
// is nothing to clean up.
func (h *harness) NewPool(t *testing.T) (zfs.DatasetPath, func() error) {
	h.pools++
	name := fmt.Sprintf("pool%d", h.pools+1)
	if err := h.m.CreatePool(name); err != nil {
		t.Fatal(err)
	}
	return zfs.MustDatasetPath(name), func() error { return h.m.DestroyPool(name) }
}

func (h *harness) Property(ctx context.Context, fs zfs.DatasetPath, name string) (string, string, error) {
	v, src := h.m.Property(fs, name)
	return v, src, nil
}

func (h *harness) LoadKey(ctx context.Context, fs zfs.DatasetPath) error   { return h.m.LoadKey(fs) }
func (h *harness) UnloadKey(ctx context.Context, fs zfs.DatasetPath) error { return h.m.UnloadKey(fs) }

func TestConformance(t *testing.T) {
	zfstest.Run(t, newHarness)
}

// Every line the model imitates passes the suite, each with that line's
// expectations where the lines differ.
func TestConformanceEachRelease(t *testing.T) {
	for _, r := range zfsmodel.Releases {
		t.Run(string(r), func(t *testing.T) {
			zfstest.Run(t, func(t *testing.T) zfstest.Harness {
				m := zfsmodel.New(zfsmodel.Options{Seed: 42, Imitate: r})
				if err := m.CreatePool("pool"); err != nil {
					t.Fatal(err)
				}
				return &harness{m: m}
			})
		})
	}
}

// The suite again with a checkpoint (and a save) after every record of a
// resumable receive: checkpoints change nothing a caller can see.
func TestConformanceWithCheckpoints(t *testing.T) {
	zfstest.Run(t, func(t *testing.T) zfstest.Harness {
		var m *zfsmodel.Model
		m = zfsmodel.New(zfsmodel.Options{Seed: 42, CheckpointEvery: 1, OnCheckpoint: func() {
			if err := m.Save(io.Discard); err != nil {
				t.Error(err)
			}
		}})
		if err := m.CreatePool("pool"); err != nil {
			t.Fatal(err)
		}
		return &harness{m: m}
	})
}

func TestConformanceCaseNames(t *testing.T) {
	names := zfstest.CaseNames()
	if len(names) < 25 {
		t.Fatalf("only %d cases: %v", len(names), names)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("case %q registered twice", n)
		}
		seen[n] = true
	}
}
