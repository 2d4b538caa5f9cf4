// Package hooks runs a job's snapshot hooks (snapshotting.hooks) around the
// snapshot of each filesystem, as zrepl v0.7 does:
//
//   - The hooks that match the filesystem run their pre_snapshot edge in
//     config order, then the snapshot is taken, then the post_snapshot
//     edges run in reverse order, like a stack.
//   - A failing pre edge of a hook with err_is_fatal stops there: no
//     further pre edge runs and no snapshot is taken. Without err_is_fatal
//     the failure is reported and everything else goes on.
//   - The post edge of every hook whose pre edge succeeded runs, whatever
//     happened after it: a later fatal failure, a failed snapshot, or the
//     daemon stopping (post edges run with the caller's values but without
//     its cancellation, bounded by their own timeout). The post edge of a
//     hook whose pre edge failed does not run.
//   - Every edge runs under the hook's timeout (default 30s).
//
// The types:
//
//   - command runs an executable (no arguments) with the daemon's
//     environment plus ZREPL_HOOKTYPE (pre_snapshot or post_snapshot),
//     ZREPL_FS, ZREPL_SNAPNAME, ZREPL_DRYRUN (empty: the daemon never dry
//     runs) and ZREPL_TIMEOUT (the timeout in whole seconds). It runs in a
//     process group of its own, and at its timeout the whole group is
//     killed. Stdout lines are logged at info, stderr lines at warn, both
//     bounded per run; the tail of both is kept in the Result.
//   - postgres-checkpoint connects with its DSN (jackc/pgx, libpq's
//     keyword/value or URL syntax) and runs CHECKPOINT before the
//     snapshot; it has no post edge.
//   - mysql-lock-tables connects with its DSN (go-sql-driver/mysql) and
//     runs FLUSH TABLES WITH READ LOCK before the snapshot; the same
//     connection runs UNLOCK TABLES after it and is closed, so the lock is
//     also released if the unlock fails or the daemon dies in between.
//     The server's lock_wait_timeout is set to the hook's timeout, so a
//     lock that cannot be had in time is given up by the server too and
//     does not keep blocking the database's writers.
//
// DSNs never appear in logs, errors or status: hooks are named by type and
// command path or server address.
package hooks
