package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// readBatcher shares one read index among the consistent reads that wait on
// this node at the same moment (ReadIndex batching). A read index is only
// good for the reads that began before it was asked for, so a read joins the
// request that has not been sent yet, never the one in flight: at most one
// request is in flight per node, and the reads that arrive meanwhile go
// together in the next. Under load a consistent read then costs a share of
// one leadership confirmation instead of one internal RPC and one quorum
// round each.
//
// Each read keeps its own deadline (ConsistentIndex: one Config.LeaderWait
// from its arrival), whatever the requests ahead of it do: a read that
// arrives while a request is stuck on a frozen leader gives up when its own
// budget ends, not after that request's budget and then its own.
type readBatcher struct {
	mu      sync.Mutex
	next    *readCall // gathering readers; sent when the one in flight ends
	sending bool      // a request is in flight
}

// readCall is one read index request and the readers that share it.
//
// Ownership, which the race detector holds us to: deadline is written by
// readers under readBatcher.mu while the call gathers, and read by the
// sender once it has taken the call (also under mu). idx and err are written
// by the sender only, before it closes done, and nothing writes the call
// after that; a reader reads them only after receiving from done, never on
// its timeout path.
type readCall struct {
	done     chan struct{}
	deadline time.Time // the latest deadline among the call's readers
	idx      uint64
	err      error
}

// readIndex returns a read index obtained after the call began. It returns
// when ctx ends or at deadline (context.DeadlineExceeded), whatever the
// request it joined is doing; deadline also bounds that request.
func (n *Node) readIndex(ctx context.Context, deadline time.Time) (uint64, error) {
	b := &n.reads
	b.mu.Lock()
	if b.next == nil {
		b.next = &readCall{done: make(chan struct{})}
	}
	c := b.next
	if deadline.After(c.deadline) {
		c.deadline = deadline
	}
	if !b.sending {
		b.sending = true
		b.next = nil
		go n.sendReadIndex(c, c.deadline)
	}
	b.mu.Unlock()
	// A timer of our own only when ctx does not end first anyway; a pooled
	// one (Stop then Reset never delivers a stale tick since Go 1.23).
	var expired <-chan time.Time
	if d, ok := ctx.Deadline(); !ok || d.After(deadline) {
		t := getTimer(time.Until(deadline))
		defer putTimer(t)
		expired = t.C
	}
	select {
	case <-c.done:
		// done was closed after idx and err were written.
		return c.idx, c.err
	case <-ctx.Done():
		// The call may still be running: do not touch its fields.
		return 0, ctx.Err()
	case <-expired:
		return 0, context.DeadlineExceeded
	}
}

var timers sync.Pool // of stopped *time.Timer

func getTimer(d time.Duration) *time.Timer {
	if t, ok := timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

func putTimer(t *time.Timer) {
	t.Stop()
	timers.Put(t)
}

// sendReadIndex obtains the read index of c from the leader, then of each
// batch gathered meanwhile, until none waits. It does not depend on any one
// reader's context (a reader that gives up does not fail the others); each
// request is bounded by the latest deadline of its readers, and a batch
// whose readers have all given up is not sent.
func (n *Node) sendReadIndex(c *readCall, deadline time.Time) {
	for c != nil {
		var idx uint64
		var err error
		if time.Until(deadline) <= 0 {
			err = fmt.Errorf("%w: the reads waiting for a read index gave up (leader-wait %s)", ErrNoLeader, n.cfg.LeaderWait)
		} else {
			// CallLeader gives up after LeaderWait without a leader (and
			// says ErrNoLeader), or at the deadline if sooner.
			ctx, cancel := context.WithDeadline(n.ctx, deadline)
			var resp []byte
			resp, err = n.CallLeader(ctx, opReadIndex, n.vouch())
			cancel()
			switch {
			case err == nil:
				if idx, err = parseIndex(resp); err != nil {
					err = fmt.Errorf("cluster: bad read index %q", resp)
				}
			case errors.Is(err, context.DeadlineExceeded) && n.ctx.Err() == nil:
				err = fmt.Errorf("%w: no read index within the leader-wait (%s)", ErrNoLeader, n.cfg.LeaderWait)
			}
			n.metrics.readIndexBatches.Inc()
		}
		c.idx, c.err = idx, err
		close(c.done) // c is not written after this
		b := &n.reads
		b.mu.Lock()
		c = b.next
		b.next = nil
		b.sending = c != nil
		if c != nil {
			deadline = c.deadline
		}
		b.mu.Unlock()
	}
}
