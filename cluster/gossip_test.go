package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// TestGossipWithAPeerThatCompresses: this release sends gossip
// uncompressed, a release before it compressed every message. A cluster
// with one node of each kind must agree on membership (the push/pull of
// the join, probes, acks), and the compressing node's graceful leave (its
// leave announcement over TCP and memberlist's own leave broadcast) must
// reach the others as a leave, not a failure.
func TestGossipWithAPeerThatCompresses(t *testing.T) {
	tn := newTestNodes(t, 3, func(i int, c *Config) { c.compressGossipForTest = i == 1 })
	eventually(t, 30*time.Second, func() bool {
		for _, n := range tn.nodes {
			alive := 0
			for _, m := range n.Members() {
				if m.Status == fsm.NodeAlive {
					alive++
				}
			}
			if alive != 3 {
				return false
			}
		}
		return true
	}, "every node to see three alive members")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tn.nodes[1].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	leaver := tn.nodes[1].Name()
	eventually(t, 30*time.Second, func() bool {
		for _, i := range []int{0, 2} {
			found := false
			for _, m := range tn.nodes[i].Members() {
				if m.Name == leaver {
					found = true
					if m.Status != fsm.NodeLeft {
						return false
					}
				}
			}
			if !found {
				return false
			}
		}
		return true
	}, "the nodes that do not compress to record the compressing node's leave")
}
