// Package daemon runs every job of a config: it builds each job's
// endpoints and transports, serves sinks and sources, runs active jobs,
// answers the control socket (status, signals, holds) and exports
// Prometheus metrics. The ZFS backend and its persistence are chosen by the
// caller (cmd/zrepl), so the engine never imports a particular backend.
package daemon
