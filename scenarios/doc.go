// Package scenarios is the whole-system simulator: property-based tests
// (pgregory.net/rapid state machines) that drive the real engine — snapper,
// replication driver, endpoints, rpc over the simulated network (netsim),
// pruner — between two simulated ZFS hosts (zfsmodel), with seeded faults,
// crashes and restarts, in virtual time, and check the replication
// invariants after every action. Everything lives in its tests.
package scenarios
