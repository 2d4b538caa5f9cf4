package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/logging"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsreal"
)

// backend is the ZFS a config asks for, and how to save it.
type backend struct {
	zfs zfs.ZFS
	// saver saves the model's state (nil for the real backend or a model
	// without state dir).
	saver *modelSaver
	// persist saves the model's state (nil for the real backend or a
	// model without state dir).
	persist func() error
	// demo writes some data into a filesystem (model only): the daemon's
	// ZFS does so before each snapshot (demoZFS).
	demo func(fs zfs.DatasetPath) error
	// checkpointEvery is how many bytes of a resumable receive the model
	// takes between saves of its state (0: none; the real backend and a
	// model without state dir have none).
	checkpointEvery int64
}

const modelStateFile = "model.json"

// openBackend opens the configured backend. The model backend loads its
// state from global.model_state_dir; on the first start it creates the
// pools and filesystems the config names, so that the quickstart works
// out of the box.
func openBackend(cfg *config.Config, log *slog.Logger, readOnly bool) (*backend, error) {
	if cfg.Global.ZFSBackend != config.BackendModel {
		return &backend{zfs: zfsreal.New(zfsreal.Options{})}, nil
	}
	// No seed: the model's GUIDs are random, as a pool's are, so that a
	// state that went back in time never hands out a GUID twice.
	opts := zfsmodel.Options{Clock: time.Now}
	var m *zfsmodel.Model
	dir := cfg.Global.ModelStateDir
	// Set once the Durable exists, before any receive can run.
	var durable atomic.Pointer[daemon.Durable]
	if dir != "" && !readOnly {
		opts.CheckpointEvery = cfg.Global.ModelCheckpointEvery
		// Called on the receiving goroutine without the model's lock,
		// so the save (which locks the model to encode it) can run; it
		// joins the Durable's group commit like any change.
		opts.OnCheckpoint = func() {
			if d := durable.Load(); d != nil {
				if err := d.Checkpoint(); err != nil {
					log.Warn("model backend: saving a receive's checkpoint failed; a kill now loses what it received since the last save", "err", err)
				}
			}
		}
	}
	path := filepath.Join(dir, modelStateFile)
	if dir != "" {
		if p := daemon.StateDirProblem(dir, modelStateFile); p != "" {
			log.Warn("model backend: model_state_dir is not private: any user who can write there can change the model's pools, snapshots and holds (chmod go-w)", "problem", p)
		}
		f, err := os.Open(path)
		switch {
		case err == nil:
			m, err = zfsmodel.Load(f, opts)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("model state %s: %w", path, err)
			}
			log.Info("model backend: loaded state", "path", path)
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("model state: %w", err)
		}
	}
	if m == nil {
		m = zfsmodel.New(opts)
		if err := seedModel(m, cfg); err != nil {
			return nil, err
		}
		log.Info("model backend: created the pools and filesystems the config names", "roots", fmt.Sprint(daemon.ConfigRoots(cfg)))
	}
	b := &backend{zfs: m, checkpointEvery: opts.CheckpointEvery}
	if dir != "" && !readOnly {
		s := &modelSaver{m: m, dir: dir}
		b.saver, b.persist = s, s.save
		// Every change is saved before the call returns, so a kill -9
		// keeps what the daemon did, as a real pool would.
		d := daemon.NewDurable(m, s.save)
		durable.Store(d)
		b.zfs = d
		if err := s.save(); err != nil {
			return nil, fmt.Errorf("model state: %w", err)
		}
	}
	var seed atomic.Int64
	b.demo = func(fs zfs.DatasetPath) error { return m.WriteData(fs, seed.Add(1), 4) }
	return b, nil
}

// seedModel creates every root the config names (filter roots, root_fs)
// and its pool.
func seedModel(m *zfsmodel.Model, cfg *config.Config) error {
	for _, root := range daemon.ConfigRoots(cfg) {
		pool := root
		for p, ok := root.Parent(); ok; p, ok = p.Parent() {
			pool = p
		}
		if err := m.CreatePool(pool.String()); err != nil && !errors.Is(err, zfs.ErrDatasetExists) {
			return err
		}
		if root == pool {
			continue
		}
		if err := m.CreateFilesystem(root, zfsmodel.FSOptions{Parents: true}); err != nil && !errors.Is(err, zfs.ErrDatasetExists) {
			return err
		}
	}
	return nil
}

// modelSaver saves a model under dir, one save at a time: two saves
// racing could rename an older state over a newer one.
type modelSaver struct {
	m   *zfsmodel.Model
	dir string
	mu  sync.Mutex
}

func (s *modelSaver) save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return saveModel(s.m, s.dir)
}

// saveModel writes the state atomically and durably (daemon.SaveFile): a
// crash or power loss leaves the old or the new state, never half of one.
func saveModel(m *zfsmodel.Model, dir string) error {
	// Encode first: the model is locked while it encodes, and file IO
	// under that lock would stall every other call on the model.
	var buf bytes.Buffer
	if err := m.Save(&buf); err != nil {
		return err
	}
	return daemon.SaveFile(dir, modelStateFile, buf.Bytes())
}

// newLogger builds the logger of the config's outlets (engine/logging),
// stdout being w.
func newLogger(cfg *config.Config, w io.Writer) (*slog.Logger, *logging.Handler, error) {
	h, err := logging.New(cfg.Global.Logging, logging.Stdout{W: w, Terminal: isTerminal(w)})
	if err != nil {
		return nil, nil, err
	}
	return slog.New(h), h, nil
}
