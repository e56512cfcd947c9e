package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// onceCalls tracks the forwarded writes (opApplyOnce) this node is applying
// right now, by request id, so that a re-send of a write whose first attempt
// is still on its way into this leader's log waits for that attempt instead
// of appending the write a second time.
//
// The log search of a re-send (findRequest) finds an earlier attempt only
// once Raft has stored it; before that the attempt waits in Raft's apply
// queue, behind the fsync of the batch before it. A follower re-sends when
// it stops waiting for an answer (the leader it sent to flickered out of its
// view, the connection broke) although the leader goes on with the first
// attempt. Likely what the chaos suite once saw after a follower restarted:
// one registration at two indexes five apart (seed 83144166).
type onceCalls struct {
	mu sync.Mutex
	m  map[[16]byte]*onceCall
	// waiting counts re-sends waiting for an earlier attempt (tests).
	waiting int
}

// onceCall is one attempt being applied; done is closed once idx and err
// are set.
type onceCall struct {
	done chan struct{}
	idx  uint64
	err  error
}

// begin registers an attempt for id. If another attempt of id is being
// applied here, it waits for that one and returns its result with
// mine == nil (unless that attempt ended without an outcome, its context
// gone: then this one goes on as the attempt). Otherwise mine is this
// attempt's registration, to be ended with end.
func (o *onceCalls) begin(ctx context.Context, id [16]byte) (mine *onceCall, idx uint64, err error) {
	for {
		o.mu.Lock()
		if o.m == nil {
			o.m = map[[16]byte]*onceCall{}
		}
		c, busy := o.m[id]
		if !busy {
			c = &onceCall{done: make(chan struct{})}
			o.m[id] = c
			o.mu.Unlock()
			return c, 0, nil
		}
		o.waiting++
		o.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
		}
		o.mu.Lock()
		o.waiting--
		o.mu.Unlock()
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("%w: an earlier attempt of this write is still being applied: %v", ErrUnknownOutcome, ctx.Err())
		}
		if !errors.Is(c.err, context.Canceled) && !errors.Is(c.err, context.DeadlineExceeded) {
			return nil, c.idx, c.err
		}
	}
}

// end records c's result and unregisters it.
func (o *onceCalls) end(id [16]byte, c *onceCall, idx uint64, err error) {
	o.mu.Lock()
	delete(o.m, id)
	o.mu.Unlock()
	c.idx, c.err = idx, err
	close(c.done)
}

// waiters reports how many re-sends wait for an earlier attempt.
func (o *onceCalls) waiters() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.waiting
}
