// Package scenarios is the whole-system simulator: property-based tests
// (pgregory.net/rapid state machines) that drive the real engine — snapper,
// replication driver, endpoints, rpc over the simulated network (netsim),
// pruner — between two simulated ZFS hosts (zfsmodel), with seeded faults,
// crashes and restarts, in virtual time (one testing/synctest bubble per
// history), and check the replication invariants after every action.
// Everything lives in its tests.
//
// The world: a sender host with three filesystems (one an encryption
// root) and one outside every job's filter, a receiver host, and three
// job pairs sending the same filesystems: two push jobs into a sink (one
// of them sending plain into an encrypted receiver root) and a pull job
// from a source job. Actions snapshot, destroy, prune both sides, roll the
// receiver back, load and unload keys, replicate (a quarter of the runs
// over simulated ssh processes) with one of the faults (connection
// resets, partitions, cut streams, failing ZFS calls, resizes, crashes of
// either host, keepalive misconfiguration, ssh exiting with 255), and ask
// the source for sends with forged resume tokens.
//
// Running it:
//
//	go test ./scenarios                                   # bounded budget (make test)
//	go test ./scenarios -run 'TestScenarios$' -rapid.seed=S   # replay a history
//	ZREPL_SCENARIOS_LONG=1 go test ./scenarios -run ScenarioLong  # long run
//
// A failure logs the first failing history, then rapid shrinks it to a
// short action history on the same kind of failure and prints it with
// its seed.
//
// A history's draws depend on its seed alone, and so does its outcome,
// also where several steps run at once (runs with a resize fault): the
// driver carries out its decisions concurrently, and the sequencer gives
// its calls to sender and receiver, and its reads of received streams,
// one turn at a time, in an order fixed by what they are, at instants
// when everything else waits (see sequencer_test.go). TestReplayResize
// checks that such histories replay exactly.
//
// TestTraceFailfile prints every run of a failing history from rapid's
// fail file; found_test.go keeps the engine issues the simulator found as
// short scripted tests (a known issue names the exception it needs here
// until it is fixed).
package scenarios
