package cluster

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestServersBoundsAServerThatDoesNotAnswer pauses a follower's cluster
// traffic (connections stay open, nothing answers, as with a paused
// process): asked through another server, it is listed with "no answer
// within" the bound, the others with their own views, and the call
// returns after about the bound rather than hanging.
func TestServersBoundsAServerThatDoesNotAnswer(t *testing.T) {
	tn := newTestNodes(t, 3, nil)
	leader := tn.waitForLeader(30 * time.Second)
	paused := tn.other(leader)
	asker := tn.other(paused)
	// Every server answers first (so the paused one has an open
	// connection from the asker, as a paused process would).
	eventually(t, 30*time.Second, func() bool {
		// A node that has not yet received the cluster's configuration
		// from the leader knows no servers (seen at load 25).
		views := tn.nodes[asker].Servers(context.Background(), 2*time.Second)
		if len(views) != 3 {
			return false
		}
		for _, v := range views {
			if v.Err != nil || v.View.LastContact == Never {
				return false
			}
		}
		return true
	}, "every server answering, caught up")
	tn.pause(paused)

	const bound = 500 * time.Millisecond
	start := time.Now()
	views := tn.nodes[asker].Servers(context.Background(), bound)
	took := time.Since(start)
	if len(views) != 3 {
		t.Fatalf("%d servers: %+v", len(views), views)
	}
	for _, v := range views {
		if v.ID != tn.nodes[paused].Name() {
			if v.Err != nil || v.View.Term == 0 {
				t.Errorf("%s: %+v", v.ID, v)
			}
			continue
		}
		if v.Err == nil || v.Err.Error() != "no answer within 500ms" {
			t.Errorf("the paused %s: error %v, want no answer within 500ms", v.ID, v.Err)
		}
		if v.Took < bound {
			t.Errorf("the paused %s failed after %v, before the bound", v.ID, v.Took)
		}
	}
	t.Logf("the call returned after %v (bound %v per server)", took, bound)
	// The caller's own context still wins over the bound.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, v := range tn.nodes[asker].Servers(ctx, time.Minute) {
		if v.ID == tn.nodes[paused].Name() && (v.Err == nil || strings.Contains(v.Err.Error(), "no answer within")) {
			t.Errorf("a cancelled call reports %v for the paused server", v.Err)
		}
	}
}
