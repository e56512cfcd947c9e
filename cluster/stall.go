package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// defaultStallAfter is Config.StallAfter's default.
const defaultStallAfter = 5 * time.Second

// stallDetector notices a follower that hears from the leader but does not
// get its log: heartbeats arrive (so no election heals it), yet an index
// the leader had committed stays unapplied here for longer than
// Config.StallAfter. hashicorp/raft's pipelined replication could end up
// exactly so (see DESIGN.md, "Replication without pipelining"): heartbeats
// run on their own goroutine and a stuck replication goroutine never sends
// another entry.
//
// Heartbeats do not carry the leader's commit index, so the follower asks
// the leader for it (opLeaderCommit) once a second, remembers the first
// index it had not applied and when it saw it, and reports a stall once that
// index is still not applied StallAfter later.
//
// The same check finds the opposite: a follower whose applied index stays
// above the leader's commit index. A follower applies only what a leader
// committed, and a leader's commit index covers everything committed once
// it has committed an entry of its own term (milliseconds after its
// election), so an applied index above it for StallAfter means this server
// applied what the cluster never committed: a restore whose leader lost its
// leadership before any follower received it (docs/operations.md). Raft
// cannot take back an applied entry; the server is reported diverged until
// an operator replaces its data (or, as for a stall, until it leads or hears
// no leader: the check starts again then).
type stallDetector struct {
	mu       sync.Mutex
	target   uint64    // a leader commit index not applied here when seen
	since    time.Time // when target was seen
	stalled  bool
	ahead    time.Time // since when the applied index is above the leader's commit index
	diverged bool
	// divergedNow mirrors diverged for the API's read path (no lock).
	divergedNow atomic.Bool
	applied     uint64 // this node's applied index at the last check
	commit      uint64 // the leader's commit index at the last check
}

// observe records one check and reports whether the stall state changed.
func (s *stallDetector) observe(now time.Time, commit, applied uint64, after time.Duration) (changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied, s.commit = applied, commit
	was, wasDiverged := s.stalled, s.diverged
	if s.target != 0 && applied >= s.target {
		s.target, s.stalled = 0, false
	}
	if s.target == 0 && commit > applied {
		s.target, s.since = commit, now
	}
	if s.target != 0 && now.Sub(s.since) > after {
		s.stalled = true
	}
	switch {
	case s.diverged:
		// Latched until reset: the commit index passing the applied one
		// later does not make what this server applied committed.
	case applied <= commit:
		s.ahead = time.Time{}
	case s.ahead.IsZero():
		s.ahead = now
	case now.Sub(s.ahead) > after:
		s.diverged = true
	}
	s.divergedNow.Store(s.diverged)
	return s.stalled != was || s.diverged != wasDiverged
}

// reset forgets the state (this node leads, or hears no leader: not a
// replication stall).
func (s *stallDetector) reset() (changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.stalled || s.diverged
	s.target, s.stalled = 0, false
	s.ahead, s.diverged = time.Time{}, false
	s.divergedNow.Store(false)
	return was
}

// Diverged reports whether this follower has applied entries the cluster
// never committed (stallDetector): the API refuses catalog reads on it.
func (n *Node) Diverged() bool { return n.stall.divergedNow.Load() }

// ReplicationStalled reports whether this follower hears the leader but has
// not applied an index the leader committed more than Config.StallAfter
// ago, with a description for operators.
func (n *Node) ReplicationStalled() (bool, string) { return n.stall.ReplicationStalled() }

// ReplicationStalled is Node.ReplicationStalled.
func (s *stallDetector) ReplicationStalled() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.diverged {
		return true, fmt.Sprintf("replication diverged: applied index %d is above the leader's commit index %d (for at least %s while its heartbeats arrive): this server applied entries the cluster never committed (a restore whose leader lost its leadership before any follower received it); stop it, move its data dir away and start it with an empty one",
			s.applied, s.commit, time.Since(s.ahead).Round(time.Millisecond))
	}
	if !s.stalled {
		return false, ""
	}
	return true, fmt.Sprintf("replication stalled: applied index %d, the leader committed %d at least %s ago while its heartbeats arrive",
		s.applied, s.target, time.Since(s.since).Round(time.Millisecond))
}

// stallLoop runs the stall detector on a follower.
func (n *Node) stallLoop(ctx context.Context) {
	after := n.cfg.StallAfter
	if after <= 0 {
		after = defaultStallAfter
	}
	every := min(time.Second, after/4)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		addr, _ := n.raft.LeaderWithID()
		lc := n.raft.LastContact()
		if n.raft.State() != raft.Follower || addr == "" || lc.IsZero() || time.Since(lc) > n.cfg.HeartbeatTimeout {
			if n.stall.reset() {
				n.metrics.stalled.Set(0)
				n.logger.Info("replication stall over (this node leads or hears no leader)")
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, every)
		resp, err := n.pool.call(cctx, string(addr), opLeaderCommit, nil, every)
		cancel()
		if err != nil {
			continue
		}
		commit, err := parseIndex(resp)
		if err != nil {
			continue
		}
		if n.stall.observe(time.Now(), commit, n.raft.AppliedIndex(), after) {
			if stalled, msg := n.ReplicationStalled(); stalled {
				n.metrics.stalled.Set(1)
				n.metrics.stalls.Inc()
				n.logger.Error(msg, "leader", string(addr))
			} else {
				n.metrics.stalled.Set(0)
				n.logger.Info("replication stall over: caught up with the leader", "applied", n.raft.AppliedIndex())
			}
		}
	}
}
