// Package health runs Beacon's health checks and coordinates them from the
// leader.
//
// Every agent runs a Runner: it probes the checks the catalog says it owns
// (HTTP, TCP, gRPC), applies each check's thresholds and flapping policy, and
// proposes a status change through Raft only when the debounced status
// changes, so steady checking writes nothing. The leader runs a Coordinator
// (as a leader task): it assigns checks to live nodes by rendezvous hashing
// and moves them when gossip reports a node failed or left, keeps the TTL
// timers, coalesces the custom metrics that TTL reports carry, and enforces
// deregister_critical_after and draining deadlines. TTL reports reach the
// leader through the cluster's internal RPC from whichever node received
// them.
//
// The package imports only fsm; what it needs from the cluster it declares
// as the Cluster interface, which cmd satisfies with *cluster.Node. See
// DESIGN.md for the flows and the trade-offs.
package health
