package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestWritesQueuedAtShutdownAreAnswered: writes waiting in the grouper when
// Raft shuts down, and writes that reach the grouper after it (a forwarded
// write arriving between raft.Shutdown and the RPC server's close), are all
// answered. With BatchApplyCh, raft.ApplyLog after Shutdown picks at random
// between refusing (ErrRaftShutdown) and putting the future in the buffered
// applyCh that nobody reads any more; such a future is never answered, its
// commit holds the grouper's only slot, and every write behind it waits
// forever (<-m.done ignores ctx).
func TestWritesQueuedAtShutdownAreAnswered(t *testing.T) {
	hc := newHeldCluster(t, func(_ int, c *Config) { c.LeaderWait = time.Second })
	n := hc.leader
	blocker := hc.hold(t)
	const queued = 4
	results := make(chan error, queued)
	for i := range queued {
		cmd := fsmtest.Register(t, fmt.Sprintf("at-shutdown-%d", i), "web")
		go func() {
			_, err := n.group.apply(context.Background(), [16]byte{0xa0, byte(i)}, 0, cmd)
			results <- err
		}()
	}
	hc.queued(t, queued)
	f := n.raft.Shutdown() // the leader loop is held in its log append
	hc.open()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for range queued {
		select {
		case err := <-results:
			t.Logf("queued write: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("a write queued at shutdown was never answered")
		}
	}
	for i := range 12 {
		cmd := fsmtest.Register(t, fmt.Sprintf("after-shutdown-%d", i), "web")
		done := make(chan error, 1)
		go func() {
			_, err := n.group.apply(context.Background(), [16]byte{0xb0, byte(i)}, 0, cmd)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("write %d after shutdown accepted", i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("write %d sent after raft shut down was never answered", i)
		}
	}
	// hold's blocking write retries until its LeaderWait ends (no leader).
	select {
	case <-blocker:
	case <-time.After(n.cfg.LeaderWait + 10*time.Second):
		t.Fatal("the blocking write was never answered")
	}
}

// TestWritesWaitingInTheGrouperAreAnsweredWhenTheNodeStops: hashicorp/raft
// does not answer the futures of committed entries its FSM had not applied
// when it shut down, so the node's shutdown answers the writes still
// waiting in the grouper (in flight or queued) with ErrUnknownOutcome
// rather than leave them, and the RPC handlers serving them, waiting for
// ever.
func TestWritesWaitingInTheGrouperAreAnsweredWhenTheNodeStops(t *testing.T) {
	hc := newHeldCluster(t, nil)
	n := hc.leader
	_ = hc.hold(t)
	const queued = 3
	results := make(chan error, queued)
	for i := range queued {
		cmd := fsmtest.Register(t, fmt.Sprintf("at-stop-%d", i), "web")
		go func() {
			_, err := n.group.apply(context.Background(), [16]byte{0xc0, byte(i)}, 0, cmd)
			results <- err
		}()
	}
	hc.queued(t, queued)
	n.group.stop() // as Node.stop does once Raft has shut down
	for range queued {
		select {
		case err := <-results:
			if !errors.Is(err, ErrUnknownOutcome) {
				t.Errorf("a write waiting at stop: %v, want ErrUnknownOutcome", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a write waiting at stop was never answered")
		}
	}
	if _, err := n.group.apply(context.Background(), [16]byte{0xc1}, 0, fsmtest.Register(t, "after-stop", "web")); !errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("a write after stop: %v, want ErrUnknownOutcome", err)
	}
	hc.open()
}
