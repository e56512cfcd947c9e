package cluster

import (
	"context"
	"fmt"
	"sync"
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
type stallDetector struct {
	mu      sync.Mutex
	target  uint64    // a leader commit index not applied here when seen
	since   time.Time // when target was seen
	stalled bool
	applied uint64 // this node's applied index at the last check
	commit  uint64 // the leader's commit index at the last check
}

// observe records one check and reports whether the stall state changed.
func (s *stallDetector) observe(now time.Time, commit, applied uint64, after time.Duration) (changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied, s.commit = applied, commit
	was := s.stalled
	if s.target != 0 && applied >= s.target {
		s.target, s.stalled = 0, false
	}
	if s.target == 0 && commit > applied {
		s.target, s.since = commit, now
	}
	if s.target != 0 && now.Sub(s.since) > after {
		s.stalled = true
	}
	return s.stalled != was
}

// reset forgets the state (this node leads, or hears no leader: not a
// replication stall).
func (s *stallDetector) reset() (changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.stalled
	s.target, s.stalled = 0, false
	return was
}

// ReplicationStalled reports whether this follower hears the leader but has
// not applied an index the leader committed more than Config.StallAfter
// ago, or holds a restore the cluster never committed (Diverged), with a
// description for operators.
func (n *Node) ReplicationStalled() (bool, string) {
	if d, msg := n.divergedReport(); d {
		return true, msg
	}
	return n.stall.report()
}

// report is the stall half of ReplicationStalled.
func (s *stallDetector) report() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
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
		hears := n.raft.State() == raft.Follower && addr != "" && !lc.IsZero() && time.Since(lc) <= n.cfg.HeartbeatTimeout
		n.clearConflict()
		if hears {
			n.checkRestore(ctx, false, string(addr), every)
		} else {
			n.checkRestore(ctx, n.raft.State() == raft.Leader, "", every)
		}
		if !hears {
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
			if stalled, msg := n.stall.report(); stalled {
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
