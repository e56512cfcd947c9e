package cluster

import (
	"context"
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
	hc := newHeldCluster(t, nil)
	n := hc.leader
	hc.hold(t)
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
	time.Sleep(n.cfg.LeaderWait + time.Second)
}
