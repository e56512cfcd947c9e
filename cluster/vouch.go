package cluster

import (
	"context"
	"encoding/binary"

	"github.com/hashicorp/raft"
)

// Vouched read indexes.
//
// A read index must bound every write acknowledged before the read began
// (and everything an earlier read returned). The leader's commit index
// does, provided no other leader existed when
// the read began; the usual proof is a quorum round after taking the index
// (VerifyLeader): a majority still in the leader's term means no newer
// leader had been elected. In a cluster of at most three voters, a read
// index asked by a follower that is a voter can skip that round: the
// follower's request itself is half of the proof.
//
// The follower F sends, with the request, the Raft term T it is in when it
// sends the batch (after every read of the batch began). The leader L
// answers without a round when it is leader in that same term T, has
// committed its ready barrier in T, and F and L together are a majority of
// its configuration (at most three voters, both of them voters). Why that is
// linearizable, with t_r the moment F read its term and t1 the moment L
// takes its commit index:
//
//   - A server moves to a higher term before it votes in it (hashicorp/raft
//     sets the term, then grants the vote), so at t_r F had voted in no term
//     above T. L is leader in T at t1 > t_r, so it had not moved past T
//     either. Any leader of a term above T needs the votes of a majority,
//     and every majority includes F or L (the others are at most one voter
//     of three, or two of four while a single-server change is in flight;
//     hashicorp/raft appends a configuration only once the previous one has
//     committed). So no leader newer than L existed at t_r.
//   - Every write acknowledged before t_r was therefore committed by L in T
//     or by a leader of an earlier term (committed before L's ready barrier
//     in T). L's commit index at t1 covers them all, and everything any
//     node had applied by then (see readIndexLocal: not the applied index).
//   - If F voted for a newer leader after t_r, L could no longer commit in
//     T (its majority needs F or that leader's voter), so every entry L's
//     index covers precedes the newer leader's first write: the read is
//     placed at the later of its arrival and L's last commit, before any
//     write it does not see. This holds however late the request arrives —
//     a leader resuming from a SIGSTOP included, the case that makes
//     VerifyLeader untrustworthy (readIndexLocal).
//
// The read then costs the follower's one RPC to the leader instead of that
// RPC plus a heartbeat round to every follower. Anything else — a larger
// cluster, a non-voter asking, a term that does not match (the request was
// re-sent to the next leader), a leader not yet ready in its term, an
// empty payload from an older node — takes the verified path, which is what
// every request took before.

// vouch is the payload of this node's read index request: its current
// Raft term and its server ID. Read it after every read of the batch began.
func (n *Node) vouch() []byte {
	return append(appendIndex(nil, n.raft.CurrentTerm()), n.cfg.NodeName...)
}

// parseVouch decodes a payload made by vouch. An empty or malformed one is
// not a vouch (ok false): the request takes the verified path.
func parseVouch(p []byte) (term uint64, id raft.ServerID, ok bool) {
	if len(p) < 2 || p[0] != 0 {
		return 0, "", false
	}
	term, k := binary.Uvarint(p[1:])
	if k <= 0 || term == 0 || 1+k >= len(p) {
		return 0, "", false
	}
	return term, raft.ServerID(p[1+k:]), true
}

// serveReadIndex serves a read index request with payload p on the leader:
// vouched by the asking voter when it can be, verified by a quorum round
// otherwise.
func (n *Node) serveReadIndex(ctx context.Context, p []byte) (uint64, error) {
	if err := n.waitLeaderReady(ctx); err != nil {
		return 0, err
	}
	if term, id, ok := parseVouch(p); ok {
		if idx, ok := n.readIndexVouched(term, id); ok {
			n.metrics.readIndexServed.WithLabelValues("vouched").Inc()
			return idx, nil
		}
	}
	idx, err := n.readIndexLocal(ctx)
	if err == nil {
		n.metrics.readIndexServed.WithLabelValues("verified").Inc()
	}
	return idx, err
}

// readIndexVouched returns this leader's commit index as a read index for
// voter id, which was in term when it sent the request, if the two make
// the proof of leadership that the file's comment describes; ok is false
// otherwise, and the caller verifies leadership instead.
func (n *Node) readIndexVouched(term uint64, id raft.ServerID) (idx uint64, ok bool) {
	if n.raft.CurrentTerm() != term || n.raft.State() != raft.Leader || n.readyTerm.Load() != term {
		return 0, false
	}
	cfg := n.raft.GetConfiguration()
	if cfg.Error() != nil || !vouchingQuorum(cfg.Configuration(), raft.ServerID(n.cfg.NodeName), id) {
		return 0, false
	}
	idx, err := n.readIndexAt(n.raft.CommitIndex())
	if err != nil {
		return 0, false
	}
	// Still leader in term after taking the index: the state read above
	// fell between two reads of the same term, so it was this term's.
	if n.raft.CurrentTerm() != term || n.raft.State() != raft.Leader {
		return 0, false
	}
	return idx, true
}

// vouchingQuorum reports whether leader and follower, both voters of cfg,
// are a majority of it and of any configuration one single-server change
// away: cfg has at most three voters.
func vouchingQuorum(cfg raft.Configuration, leader, follower raft.ServerID) bool {
	if leader == follower {
		return false
	}
	voters := 0
	var hasLeader, hasFollower bool
	for _, s := range cfg.Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		hasLeader = hasLeader || s.ID == leader
		hasFollower = hasFollower || s.ID == follower
	}
	return hasLeader && hasFollower && voters <= 3
}
