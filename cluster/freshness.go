package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// never is what LastContact reports for a node that has no known-current
// moment: it never caught up with a leader since it started.
const never = time.Duration(1<<63 - 1)

// freshness tracks whether this node's catalog is known to be current, so
// that LastContact bounds how stale a local read may be, not only when a
// leader was last heard from. The two differ in ways the chaos suite
// (cluster/chaostest) measured:
//
//   - A restarted follower restores its last snapshot (or nothing) and
//     applies the rest of its log only when the leader's replication reaches
//     it, which trails the leader's heartbeats by seconds after the leader
//     backed off from the dead peer: for that long it answered an empty or
//     old catalog while heartbeats made its Last-Contact a few milliseconds.
//   - After a partition heals, heartbeats resume before the missing entries
//     arrive, with the same effect.
//   - A leader resuming from a pause (SIGSTOP, a VM freeze) still believes it
//     leads and answered Last-Contact 0 from its old state.
//
// So a node is "synced" only once it has proved it caught up: a follower by
// a read-index round trip to the leader (ConsistentIndex), a leader by a
// barrier entry it commits (resync). It falls out of sync when it goes longer
// than the heartbeat timeout without hearing from the leader (or, as leader,
// without confirming its leadership), or when its own loop stalled that long
// (the process was paused). While out of sync, LastContact counts from the
// last moment the node was known current (never, after a restart).
//
// A proof holds for the term it was made in: after any election the node
// proves itself again. Heartbeats from a new leader say nothing about
// whether its entries reached this node, and a leader deposed while paused
// first resumes as a leader, then hears the new term and becomes a
// follower that hears heartbeats at once while the new leader's
// replication to it is still backed off from the pause (the chaos suite
// caught exactly this: a leader paused 31 ms after its election finished
// its barrier after the pause and answered an empty catalog with
// Last-Contact 0 for half a second, then as a follower).
type freshness struct {
	mu sync.Mutex
	freshState
}

type freshState struct {
	synced   bool
	leader   bool      // the proof was made as leader (a barrier), not as follower
	term     uint64    // the Raft term the node was synced in
	syncedAt time.Time // last moment the catalog was known current
	tick     time.Time // last run of syncLoop
}

// LastContact is how long ago this node's catalog was last known to be
// current: 0 on a leader that holds its leadership, the time since the
// leader was last heard from on a follower that is caught up, the time since
// it fell behind otherwise, and a very large value on a node that has not
// caught up since it started.
func (n *Node) LastContact() time.Duration {
	n.fresh.mu.Lock()
	f := n.fresh.freshState
	n.fresh.mu.Unlock()
	return f.ageNow(time.Now, n.cfg.HeartbeatTimeout, n.raft)
}

// ageNow is age at the clock's reading taken after Raft's state is read.
// The other order let a heartbeat recorded between the two reads lie after
// "now": a caught-up follower's age came out negative, under any
// max_stale, and a max_stale=1ns read skipped the read index it needed
// (CI caught it once under -race: a write acknowledged on one follower
// missing from such a read on the other).
func (f freshState) ageNow(clock func() time.Time, heartbeatTimeout time.Duration, r raftView) time.Duration {
	v := raftAt{term: r.CurrentTerm(), state: r.State(), heard: r.LastContact()}
	return f.age(clock(), heartbeatTimeout, v)
}

// raftAt is Raft's view read at one moment.
type raftAt struct {
	term  uint64
	state raft.RaftState
	heard time.Time
}

func (r raftAt) CurrentTerm() uint64    { return r.term }
func (r raftAt) State() raft.RaftState  { return r.state }
func (r raftAt) LastContact() time.Time { return r.heard }

// raftView is what freshness reads from Raft (a *raft.Raft).
type raftView interface {
	CurrentTerm() uint64
	State() raft.RaftState
	LastContact() time.Time
}

// age is LastContact's answer at now for a node in state f.
func (f freshState) age(now time.Time, heartbeatTimeout time.Duration, r raftView) time.Duration {
	// A stale tick means this process itself stalled: what it knew before
	// may be out of date, whatever raft still believes. A new term means an
	// election this node has not proved itself current after. A leader's
	// proof says nothing once it steps down, which it may do without a new
	// term (hashicorp/raft keeps the term until the new leader's first RPC):
	// raft's last contact is then no measure of what it has applied.
	if f.synced && now.Sub(f.tick) <= heartbeatTimeout && r.CurrentTerm() == f.term && (r.State() == raft.Leader) == f.leader {
		if r.State() == raft.Leader {
			return 0
		}
		if lc := r.LastContact(); !lc.IsZero() {
			return now.Sub(lc)
		}
	}
	if f.syncedAt.IsZero() {
		return never
	}
	return now.Sub(f.syncedAt)
}

// markSynced records that the catalog is current as of at, by a proof
// (a barrier, a leadership check, a read index) begun at at in term. A proof
// that took longer than the heartbeat timeout may span a stall of this
// process (a SIGSTOP while it was in flight): it still shows the catalog
// current as of at, but not that this node still holds what it held then
// (still leads, still hears the leader), so the node's own loop is not
// taken as live (tick stays at at): LastContact counts from at, and
// syncLoop proves again at its next tick.
func (n *Node) markSynced(at time.Time, term uint64, leader bool) {
	n.fresh.mu.Lock()
	n.fresh.proved(time.Now(), at, term, leader, n.cfg.HeartbeatTimeout)
	n.fresh.mu.Unlock()
}

// proved records, at now, a proof begun at at in term, made as leader or
// as follower (see markSynced).
func (f *freshState) proved(now, at time.Time, term uint64, leader bool, heartbeatTimeout time.Duration) {
	f.synced, f.leader, f.term, f.syncedAt, f.tick = true, leader, term, at, now
	if now.Sub(at) > heartbeatTimeout {
		f.tick = at
	}
}

// syncLoop maintains n.fresh (see freshness). It ticks often enough that a
// node that just learned of a leader proves itself current within a few
// tens of milliseconds (one read-index round trip), and that a stall of
// the process is noticed well within the heartbeat timeout.
func (n *Node) syncLoop(ctx context.Context) {
	every := max(n.cfg.HeartbeatTimeout/20, 5*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		leader := n.raft.State() == raft.Leader
		term := n.raft.CurrentTerm()
		n.fresh.mu.Lock()
		stalled := now.Sub(n.fresh.tick) > n.cfg.HeartbeatTimeout
		n.fresh.tick = now
		if n.fresh.synced {
			lc := n.raft.LastContact()
			switch {
			case stalled, term != n.fresh.term, leader != n.fresh.leader:
				n.fresh.synced = false
			case leader && n.leaderReady.Load():
				n.fresh.syncedAt = now
			case !leader && !lc.IsZero() && now.Sub(lc) <= n.cfg.HeartbeatTimeout:
				n.fresh.syncedAt = lc
			default:
				n.fresh.synced = false
			}
		}
		synced := n.fresh.synced
		n.fresh.mu.Unlock()
		if synced || !n.KnownLeader() && !leader {
			continue
		}
		start := time.Now()
		if n.resync(ctx, leader) {
			n.markSynced(start, term, leader)
		}
	}
}

// resync proves this node current: a leader commits and applies a barrier
// entry; a follower obtains a read index from the leader and applies up to
// it.
//
// The leader's proof is a barrier, not VerifyLeader: hashicorp/raft counts
// for a verification any successful heartbeat answer that arrives after the
// verification was registered, including the answer to a heartbeat sent
// before this process was paused. A leader resuming from a SIGSTOP could so
// "verify" a leadership its followers had already moved past, then step
// down while still in the old term and report a Last-Contact of a few
// milliseconds from a catalog seconds old (the chaos suite caught it: seed
// 684473574, pause-leader at 31 ms). A barrier entry appended after the
// proof began commits only once a quorum has accepted it in this term. A
// cluster of one has no follower to answer late, and appends nothing for
// the proof.
func (n *Node) resync(ctx context.Context, leader bool) bool {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LeaderWait)
	defer cancel()
	if leader {
		if !n.leaderReady.Load() {
			return false
		}
		var err error
		if n.hasOtherServers() {
			err = n.await(n.raft.Barrier(n.cfg.LeaderWait))
		} else {
			err = n.await(n.raft.VerifyLeader())
		}
		return err == nil && n.leaderReady.Load()
	}
	_, err := n.ConsistentIndex(ctx)
	return err == nil
}

// provenLeader reports whether this node leads and has proved it with a
// committed barrier in its current term, with no stall of its own since
// (its loop ran within half a heartbeat timeout). readIndexLocal trusts
// VerifyLeader only then: after a stall, a verification may have counted
// heartbeat answers sent before it.
func (n *Node) provenLeader() bool {
	n.fresh.mu.Lock()
	f := n.fresh.freshState
	n.fresh.mu.Unlock()
	return f.provenLeader(time.Now(), n.cfg.HeartbeatTimeout, n.raft)
}

// provenLeader is Node.provenLeader's rule for a node in state f at now.
func (f freshState) provenLeader(now time.Time, heartbeatTimeout time.Duration, r raftView) bool {
	return f.synced && f.leader && now.Sub(f.tick) <= heartbeatTimeout/2 &&
		r.CurrentTerm() == f.term && r.State() == raft.Leader
}
