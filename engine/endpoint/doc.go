// Package endpoint is the sender and receiver side of replication on top of
// the ZFS interface: job identities, the holds and bookmarks a job owns
// (step holds, step bookmarks, replication cursors, last-received holds),
// and the idempotent ZFS operations the replication driver issues.
package endpoint
