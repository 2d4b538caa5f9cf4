// Package replication drives a replication run: it lists both sides, asks
// the planner for steps, runs them through the step queue (at most N at
// once, N changeable while the run goes on), confirms each step on both
// sides, and retries attempts after temporary failures. The sender and
// receiver are interfaces, so the same driver runs over in-process
// endpoints, the wire protocol or a simulated network; time and backoff
// come from the caller.
package replication
