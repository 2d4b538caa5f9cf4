// Package netsim is a deterministic in-memory network for tests: named hosts,
// listeners and connections that satisfy net.Listener and net.Conn, links with
// latency, bandwidth and bounded buffers, faults (resets at a byte offset,
// stalls, half-open connections, partitions that heal, refused dials) that are
// set explicitly or generated from a seed, and a simulated process standing in
// for an `ssh` child process.
//
// netsim runs no goroutines of its own. Every delay is computed from the time
// a byte was written (its arrival time) and waited for by the blocked reader or
// writer with an ordinary timer, and every wake-up goes through channels. That
// makes it work inside a testing/synctest bubble, where hours of latencies,
// stalls and deadlines pass in virtual time. Create and use a Network inside a
// single bubble (or entirely outside of one): synctest forbids sharing its
// channels across the bubble boundary.
//
// The arrival-time model: a byte written at time t on a link departs when the
// link is free (bandwidth), arrives Latency (plus seeded Jitter) later, and is
// held back further while a stall window or a partition covers that moment.
// Bytes never overtake each other and travel in packets of a few KiB, each
// arriving with its last byte. Buffer bounds the bytes written but not yet
// read per direction; writers block when it is full and resume once a useful
// amount (half the buffer or a packet) is free.
//
// Determinism: arrival times depend only on when each byte was written, not
// on how writes were chunked or interleaved with reads at the same instant,
// so a test driven by virtual time replays the same way for the same seed.
// On links with neither latency nor bandwidth limit bytes arrive at the very
// instant they are written, and which goroutine runs first at that instant
// becomes visible; give links some latency where replays must match.
package netsim
