package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// nudgeDelay is how long the leader waits, after a write commits, for a
// later entry to carry the new commit index to the followers before it
// appends a barrier to do it.
const nudgeDelay = time.Millisecond

// commitNudge tells followers promptly that a write committed.
//
// A follower learns the leader's commit index only from an AppendEntries
// request, and hashicorp/raft sends one for new entries, or, when no entries
// flow, after CommitTimeout (10-20 ms); heartbeats do not carry it. So a
// write acknowledged by the leader was invisible on the followers for up to
// 20 ms, longer than a client takes to ask another node: `beacon register`
// through the leader followed by `beacon discover` on a follower missed the
// instance every time, and a write forwarded by a follower at low load waited
// that long for the follower's own apply. A shorter CommitTimeout costs CPU
// while the cluster is idle (2 ms: the leader at 12% of a core instead of 5%).
//
// Instead, once a write has committed and been applied on the leader, the
// nudger waits nudgeDelay; if no entry has been appended since, it appends a
// raft barrier, whose AppendEntries carries the commit index. Under load the
// next writes mostly carry it (64 clients: one barrier per ~55 writes); an
// idle cluster appends nothing. Barriers never reach the FSM, so indexes that clients see do not
// move.
type commitNudge struct {
	mu   sync.Mutex
	last uint64        // the log's last index when a write completed; 0: none pending
	kick chan struct{} // capacity 1
}

func newCommitNudge() *commitNudge { return &commitNudge{kick: make(chan struct{}, 1)} }

// note records that a write completed while the log ended at lastIndex.
func (c *commitNudge) note(lastIndex uint64) {
	c.mu.Lock()
	c.last = max(c.last, lastIndex)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *commitNudge) take() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.last
	c.last = 0
	return l
}

// nudgeLoop appends a barrier when a completed write's commit index would
// otherwise reach the followers only after CommitTimeout. One barrier at a
// time: writes that complete meanwhile are covered by the next decision.
func (n *Node) nudgeLoop(ctx context.Context) {
	t := time.NewTimer(nudgeDelay)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.nudge.kick:
		}
		t.Reset(nudgeDelay)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		last := n.nudge.take()
		// An entry appended after the write committed is replicated with
		// the commit index already.
		if last == 0 || n.raft.LastIndex() > last || n.raft.State() != raft.Leader {
			continue
		}
		n.metrics.nudges.Inc()
		// Waits for the barrier's commit, bounded by leadership: a leader
		// that loses its quorum steps down and fails it.
		_ = n.raft.Barrier(n.cfg.LeaderWait).Error()
	}
}
