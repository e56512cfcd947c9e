// Package fsm is Beacon's replicated catalog: the records (instances, checks,
// services, nodes, tokens), the commands that change them and their encoding
// (one type byte followed by a msgpack body), the raft.FSM that applies
// committed commands to a go-memdb store, and the snapshot format.
//
// Every command is idempotent (an upsert or delete by ID, or "set status to
// X"), so a retry after an unknown outcome is harmless. Apply is
// deterministic: it reads no clock, randomness, file or network; proposers
// put timestamps in commands. Reads take a memdb.WatchSet and return the
// index of their result, which is never 0, so blocking queries wake only the
// readers whose result changed. See DESIGN.md.
package fsm
