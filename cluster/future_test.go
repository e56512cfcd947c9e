package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/raft"
)

// TestAWaitOnRaftEndsWhenTheNodeStops: a VerifyLeader queued while the
// leader's loop is held in a log append, with Raft shut down before the loop
// took it, is never answered by hashicorp/raft (its loop exits on the state
// change without reading verifyCh again). await must still return once the
// node stops, and the node's Shutdown must not wait for it (before the fix a
// ReadIndex RPC handler waiting on such a VerifyLeader kept Shutdown
// "closing connections" until it gave up).
func TestAWaitOnRaftEndsWhenTheNodeStops(t *testing.T) {
	hc := newHeldCluster(t, nil)
	n := hc.leader
	blocker := hc.hold(t)
	if n.raft.State() != raft.Leader {
		t.Skip("leadership moved while the log was held (a loaded machine); nothing to check")
	}
	// A VerifyLeader queues in verifyCh (buffered) behind the held loop. A
	// Barrier could not: its channel is unbuffered, it times out enqueuing.
	f := n.raft.VerifyLeader()
	answer := make(chan error, 1)
	go func() { answer <- n.await(f) }()
	sf := n.raft.Shutdown()
	hc.open()
	if err := sf.Error(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-blocker:
	case <-time.After(n.cfg.LeaderWait + 10*time.Second):
		t.Fatal("the held write was never answered")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case err := <-answer:
		if err == nil {
			t.Error("VerifyLeader succeeded on a node whose Raft shut down")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a wait on a future Raft never answered outlived the node's shutdown")
	}
}

// TestBindShutdownReachesRaftsFutures pins the field await relies on: every
// kind of future the node waits on must take the stopping channel, and one
// answered already (raft's errorFuture) is left alone. A hashicorp/raft
// upgrade that renames or drops deferError.ShutdownCh fails here.
func TestBindShutdownReachesRaftsFutures(t *testing.T) {
	tn := newTestNodes(t, 1, nil)
	n := tn.nodes[tn.waitForLeader(30*time.Second)]
	eventually(t, 10*time.Second, n.leaderReady.Load, "leader ready")
	futures := map[string]raft.Future{
		"Apply":        n.raft.Apply(fsmtest.Register(t, "bind", "web"), 10*time.Second),
		"Barrier":      n.raft.Barrier(10 * time.Second),
		"VerifyLeader": n.raft.VerifyLeader(),
		"RemoveServer": n.raft.RemoveServer("nobody", 0, 10*time.Second),
	}
	for what, f := range futures {
		ch := make(chan struct{})
		if !bindShutdown(f, ch) {
			t.Errorf("%s (%T): ShutdownCh not reachable", what, f)
		}
		if bindShutdown(f, make(chan struct{})) {
			t.Errorf("%s: a bound ShutdownCh was replaced", what)
		}
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrRaftShutdown) {
			t.Logf("%s: %v", what, err)
		}
	}
	if bindShutdown(nil, make(chan struct{})) {
		t.Error("a nil future was bound")
	}
	// Once Raft has stopped, a Barrier answers at once with an errorFuture
	// (a value; its apply channel is unbuffered, so the closed shutdown
	// channel is the only ready case): nothing to bind. (A VerifyLeader may
	// still be queued then: its channel is buffered and Go's select picks
	// at random, and nothing answers it; await's case.)
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	f := n.raft.Barrier(0)
	if bindShutdown(f, make(chan struct{})) {
		t.Errorf("an answered future (%T) was bound", f)
	}
	if !errors.Is(f.Error(), raft.ErrRaftShutdown) {
		t.Errorf("a barrier after shutdown: %v", f.Error())
	}
}

// BenchmarkBindShutdown: what await adds to a wait (once per group entry
// on the write path, once per read index).
func BenchmarkBindShutdown(b *testing.B) {
	ch := make(chan struct{})
	for b.Loop() {
		f := raft.Future(&benchFuture{})
		bindShutdown(f, ch)
	}
}

// benchFuture has the shape of raft's futures: an embedded struct with an
// exported ShutdownCh.
type benchFuture struct{ benchDeferError }

type benchDeferError struct {
	err        error
	ShutdownCh chan struct{}
}

func (f *benchFuture) Error() error { return f.err }
