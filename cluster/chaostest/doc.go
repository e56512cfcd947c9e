// Package chaostest is a Jepsen-style fault harness for Beacon and the suite
// built on it. It drives the built `beacon` binary the way a user would: real
// processes, the HTTP API and nothing else (it must not import the cluster
// or fsm internals; scripts/depcheck.sh keeps it that way).
//
// The pieces, each usable on its own:
//
//   - Network: one network namespace per node, joined by a bridge that lives
//     in a namespace of its own, and a veth link from the test's namespace so
//     the workload reaches every node. Partitions are nftables DROP rules
//     between node addresses only, inside the isolated node's namespace, so
//     clients can still talk to an isolated old leader (the stale-read trap).
//   - Node and Cluster: `beacon agent` processes bound to their namespace's
//     address; SIGKILL and restart with the same data dir, SIGSTOP/SIGCONT,
//     status polling, leader discovery, recovery measurement.
//   - Workload and History: concurrent clients that register, re-register,
//     deregister and read (default and ?consistent) a small set of instance
//     ids so operations collide; every operation is recorded with its invoke
//     and complete times, the node it went to, and an outcome of ok, fail or
//     unknown (timeouts, dropped connections, 503 unknown_outcome).
//   - Nemesis: a seeded schedule of faults (kill the leader, kill a follower,
//     pause the leader, isolate the leader, isolate a follower), each healed
//     after a while.
//   - Checkers: linearizability of the consistent history (porcupine, one
//     model per instance id), lost acknowledged writes, at most one leader
//     per term, monotonic default reads per node, honest Last-Contact on
//     isolated nodes, and recovery time after each heal.
//
// Run and Soak put them together; chaos_test.go runs them. See docs/chaos.md.
// Everything here needs root (network namespaces, nftables); on a machine
// without it the tests skip with a message, except under CI=true, where
// they fail.
package chaostest
