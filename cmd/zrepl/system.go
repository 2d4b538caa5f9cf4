package main

import (
	"io"
	"log/slog"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/logging"
)

// system is what the daemon command builds of a config: its logging, its
// backend and the daemon with every job.
type system struct {
	log     *slog.Logger
	outlets *logging.Handler
	backend *backend
	daemon  *daemon.Daemon
}

// buildSystem builds the daemon of cfg; logs go to stdout unless the
// config's outlets say otherwise.
func buildSystem(cfg *config.Config, stdout io.Writer) (*system, error) {
	log, outlets, err := newLogger(cfg, stdout)
	if err != nil {
		return nil, err
	}
	b, err := openBackend(cfg, log, false)
	if err != nil {
		outlets.Close()
		return nil, err
	}
	z := b.zfs
	if b.demo != nil {
		z = demoZFS{ZFS: z, write: b.demo, log: log}
	}
	d, err := daemon.New(daemon.Options{Config: cfg, ZFS: z, Log: log, Persist: b.persist, Version: version})
	if err != nil {
		outlets.Close()
		return nil, err
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w.In(""))
	}
	return &system{log: log, outlets: outlets, backend: b, daemon: d}, nil
}

// close stops the log outlets' senders.
func (s *system) close() { s.outlets.Close() }
