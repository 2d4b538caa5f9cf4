// Package zfs is the leaf of the project: the small ZFS interface the
// replication engine is written against, the value types that cross it
// (dataset paths, versions, send and receive arguments), name validation
// and the error kinds both implementations (zfsmodel, zfsreal) report.
//
// It imports nothing of ours, so the engine, the in-memory model and the
// real CLI-backed implementation can all depend on it.
package zfs
