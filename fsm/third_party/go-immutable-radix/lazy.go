package iradix

import "sync/atomic"

// This file is not part of hashicorp/go-immutable-radix v1.3.1: Beacon's
// copy makes the mutation channels of nodes and leaves when a watcher first
// asks for one, instead of one per node and one per leaf as they are made.
// A go-memdb catalog of 100,000 instances held about 2.5 channels (96 bytes
// each) per instance that nobody watched. See README.beacon.md.

// lazyCh is a node's or a leaf's mutation channel. It holds nothing until a
// watcher asks for the channel (get) or the node is replaced (close). A
// replaced node that nobody watched gets the shared closed channel, without
// an allocation; one that is watched has its own channel closed. Safe for
// concurrent use: readers call get on nodes of committed trees while the
// single writer's Notify closes the nodes it replaced.
type lazyCh struct{ p atomic.Pointer[watchCh] }

// watchCh is a channel made for a watcher, closed at most once.
type watchCh struct {
	ch     chan struct{}
	closed atomic.Bool
}

// closedWatch is the channel of every replaced node nobody watched.
var closedWatch = func() *watchCh {
	w := &watchCh{ch: make(chan struct{})}
	close(w.ch)
	w.closed.Store(true)
	return w
}()

// get returns the channel, making it if nobody has yet. After close it
// returns a closed channel.
func (l *lazyCh) get() chan struct{} {
	if w := l.p.Load(); w != nil {
		return w.ch
	}
	w := &watchCh{ch: make(chan struct{})}
	if l.p.CompareAndSwap(nil, w) {
		return w.ch
	}
	return l.p.Load().ch
}

// close closes the channel, if one was made, or else gives the node the
// shared closed one, so that every later get returns a closed channel.
// Closing twice is a no-op.
func (l *lazyCh) close() {
	for {
		w := l.p.Load()
		if w == nil {
			if l.p.CompareAndSwap(nil, closedWatch) {
				return
			}
			continue // a watcher made one meanwhile: close it
		}
		if w.closed.CompareAndSwap(false, true) {
			close(w.ch)
		}
		return
	}
}
