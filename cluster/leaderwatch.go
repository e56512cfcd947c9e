package cluster

import (
	"github.com/hashicorp/raft"
)

// watchLeader follows Raft's leader observations so that requests waiting
// on a leader (CallLeader) react to a change at once rather than at their
// next poll. Raft reports a change when a follower stops hearing from the
// leader (it becomes a candidate and the leader is unknown) and when a new
// leader is elected.
func (n *Node) watchLeader() {
	ch := make(chan raft.Observation, 16)
	n.leaderObs = raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.leaderObs)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-ch:
				n.signalLeaderChange()
			case <-n.ctx.Done():
				return
			}
		}
	}()
}

// leaderChanged returns a channel closed at the next leader change.
func (n *Node) leaderChanged() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderCh
}

// signalLeaderChange wakes everything waiting on leaderChanged.
func (n *Node) signalLeaderChange() {
	n.leaderMu.Lock()
	close(n.leaderCh)
	n.leaderCh = make(chan struct{})
	n.leaderMu.Unlock()
}
