// Package job runs one configured zrepl job: the periodic cycle of an
// active job (snapshot, replicate, prune the sender and the receiver) and
// the bookkeeping a daemon reports about it (state, progress, last error).
// Everything that touches the outside world — the ZFS backend, the other
// side of the replication, the snapshotter, the pruning rules, the clock —
// is handed in, so tests run jobs on zfsmodel in virtual time.
package job
