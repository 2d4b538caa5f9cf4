// Package scenarios is the whole-system simulator: property-based tests
// (pgregory.net/rapid state machines) that drive the real engine — snapper,
// replication driver, endpoints, rpc over the simulated network (netsim),
// pruner — between two simulated ZFS hosts (zfsmodel), with seeded faults,
// crashes and restarts, in virtual time (one testing/synctest bubble per
// history), and check the replication invariants after every action.
// Everything lives in its tests.
//
// Running it:
//
//	go test ./scenarios                                   # bounded budget (make test)
//	go test ./scenarios -run 'TestScenarios$' -rapid.seed=S   # replay a history
//	ZREPL_SCENARIOS_LONG=1 go test ./scenarios -run ScenarioLong  # long run
//
// A history's draws depend on its seed alone. Its outcome does too where
// one step runs at a time, which is every run but those with a resize
// fault: concurrent steps race, so such a history may not replay alike and
// rapid's shrinking may lose it; the first failure is always logged
// ("first failure (before shrinking)").
package scenarios
