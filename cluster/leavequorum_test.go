package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestALeaveThatWouldCostTheQuorumIsRefused: with one of three servers
// dead, a leave of a healthy one would leave two voters, one of them dead:
// no quorum, no writes until the dead one returns. It is refused with a
// conflict naming the dead server, and the cluster goes on taking writes.
func TestALeaveThatWouldCostTheQuorumIsRefused(t *testing.T) {
	tn := newTestNodes(t, 3, nil)
	dead := tn.other(tn.waitForLeader(30 * time.Second)) // a follower
	if err := tn.nodes[dead].Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	leaving := tn.other(dead)
	eventually(t, 15*time.Second, func() bool {
		m, ok := tn.nodes[leaving].gossip.member(tn.nodes[dead].Name())
		return ok && m.Status != fsm.NodeAlive
	}, "the leaving server's gossip seeing the dead one down")

	err := tn.nodes[leaving].Leave(context.Background())
	if !errors.Is(err, fsm.ErrConflict) {
		t.Fatalf("leave with a voter down: %v; want a refusal (a conflict)", err)
	}
	if s := tn.nodes[leaving].raftServers(); len(s) != 3 {
		t.Fatalf("after the refused leave the configuration is %v, want the 3 servers", s)
	}
	if tn.nodes[leaving].left.Load() {
		t.Fatal("a refused leave marked the server as left")
	}
	if _, err := tn.nodes[leaving].Apply(context.Background(), fsmtest.Register(t, "after", "web")); err != nil {
		t.Fatalf("a write after the refused leave: %v", err)
	}
}
