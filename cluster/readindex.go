package cluster

import (
	"context"
	"fmt"
	"sync"
)

// readBatcher shares one read index among the consistent reads that wait on
// this node at the same moment (ReadIndex batching). A read index is only
// good for the reads that began before it was asked for, so a read joins the
// request that has not been sent yet, never the one in flight: at most one
// request is in flight per node, and the reads that arrive meanwhile go
// together in the next. Under load a consistent read then costs a share of
// one leadership confirmation instead of one internal RPC and one quorum
// round each.
type readBatcher struct {
	mu      sync.Mutex
	next    *readCall // gathering readers; sent when the one in flight ends
	sending bool      // a request is in flight
}

// readCall is one read index request and the readers that share it.
type readCall struct {
	done chan struct{}
	idx  uint64
	err  error
}

// readIndex returns a read index obtained after the call began.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	b := &n.reads
	b.mu.Lock()
	if b.next == nil {
		b.next = &readCall{done: make(chan struct{})}
	}
	c := b.next
	if !b.sending {
		b.sending = true
		b.next = nil
		go n.sendReadIndex(c)
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.idx, c.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// sendReadIndex obtains the read index of c from the leader, then of each
// batch gathered meanwhile, until none waits. It does not depend on any one
// reader's context: a reader that gives up does not fail the others.
func (n *Node) sendReadIndex(c *readCall) {
	for c != nil {
		// CallLeader gives up after LeaderWait without a leader (and says
		// ErrNoLeader); this bound only keeps a lost RPC from holding the
		// batch forever.
		ctx, cancel := context.WithTimeout(n.ctx, 2*n.cfg.LeaderWait)
		resp, err := n.CallLeader(ctx, opReadIndex, nil)
		cancel()
		if err == nil {
			c.idx, err = parseIndex(resp)
			if err != nil {
				err = fmt.Errorf("cluster: bad read index %q", resp)
			}
		}
		c.err = err
		n.metrics.readIndexBatches.Inc()
		close(c.done)
		b := &n.reads
		b.mu.Lock()
		c = b.next
		b.next = nil
		b.sending = c != nil
		b.mu.Unlock()
	}
}
