// Package pruner decides which snapshots of a filesystem to destroy and
// destroys them. Plan is a pure function of the snapshots, the keep rules
// and the time; Prune applies it to every filesystem of one side of a job
// (the daemon passes the sender or the receiver as a Target).
//
// A snapshot is destroyed only if no rule keeps it. Whatever the rules say,
// Plan never destroys a snapshot outside the policy's prefix, a held
// snapshot, the newest snapshot, or the newest replicated snapshot (the
// base of the next incremental send).
package pruner
