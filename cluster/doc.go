// Package cluster runs one Beacon server's membership in the cluster: Raft
// (raft-boltdb/v2 log and stable store, file snapshots, a TCP transport),
// memberlist gossip, bootstrap by --bootstrap-expect, join with retries and
// periodic rejoin, the leader loop that keeps the Raft configuration and the
// catalog's node table in line with gossip, and the write path: Apply
// forwards a command to the leader over an internal RPC that shares the Raft
// port, and returns once the local catalog has applied it. See DESIGN.md.
package cluster
