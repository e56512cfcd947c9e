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

// TestALoneSurvivorDeclaresItsPeersFailedWithoutConfirmations: when both
// of its peers die, a node of a 3-node cluster has nobody to confirm its
// suspicions. memberlist would then hold each suspicion for
// SuspicionMaxTimeoutMult (6) times the suspicion timeout (5.4 s with the
// defaults) unless the multiplier is 1 (gossip.go); a suspicion must still
// last the whole suspicion timeout, the stall a live node survives.
func TestALoneSurvivorDeclaresItsPeersFailedWithoutConfirmations(t *testing.T) {
	tn := newTestNodes(t, 3, nil)
	cfg := DefaultConfig()
	suspicion := time.Duration(cfg.SuspicionMult) * cfg.ProbeInterval // log10(3) < 1: no scaling
	stretched := 6 * suspicion                                        // memberlist's default SuspicionMaxTimeoutMult
	eventually(t, 30*time.Second, func() bool {
		alive := 0
		for _, m := range tn.nodes[0].Members() {
			if m.Status == fsm.NodeAlive {
				alive++
			}
		}
		return alive == 3
	}, "node1 to see three alive members")

	// Both peers stop answering gossip at once, as a crash would (no leave).
	t0 := time.Now()
	for _, i := range []int{1, 2} {
		if err := tn.nodes[i].gossip.ml.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	failedAt := map[string]time.Duration{}
	eventually(t, 30*time.Second, func() bool {
		for _, m := range tn.nodes[0].Members() {
			if m.Status == fsm.NodeFailed {
				if _, ok := failedAt[m.Name]; !ok {
					failedAt[m.Name] = time.Since(t0)
				}
			}
		}
		return len(failedAt) == 2
	}, "node1 to report both peers failed")
	for name, d := range failedAt {
		t.Logf("%s reported failed %s after its gossip stopped", name, d.Round(time.Millisecond))
		if d < suspicion {
			t.Errorf("%s reported failed after %s, before a whole suspicion (%s)", name, d, suspicion)
		}
		if d >= stretched {
			t.Errorf("%s reported failed after %s: its suspicion was stretched to %s as if awaiting a confirmation", name, d, stretched)
		}
	}
}
