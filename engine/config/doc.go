// Package config parses and validates the zrepl daemon's YAML configuration.
//
// The keys and shapes follow zrepl's documented configuration (global
// logging and monitoring, jobs of type push, sink, pull, source and snap,
// their transports, filesystem filters, snapshotting, pruning rules and
// send/recv/replication options), so an existing zrepl config keeps working.
// One key is ours: global.zfs_backend selects the real zfs CLI or the
// in-memory model.
//
// Parse never stops at the first problem: like `zrepl configcheck`, it
// returns an *Errors listing every problem it found, each with the YAML
// path and line it concerns. Unknown keys are errors, because a misspelt
// optional key would otherwise silently fall back to a default.
//
// No key is accepted and ignored. The key registry (keys.go) lists every
// key the parser reads with what the daemon does with it: applied,
// partially (values the daemon does not implement are refused, naming
// the key and line), inert (accepted with a warning in Config.Warnings,
// only where zrepl accepts and ignores the key too) or structure (a
// section). The parser cannot read a key the registry lacks.
package config
