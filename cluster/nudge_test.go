package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest"
	dto "github.com/prometheus/client_model/go"
)

// The nudge's delay counts from the latest completed write: a write that
// completes while an earlier one waits pushes the decision back, so a
// sequential writer whose next request comes within the delay never meets a
// barrier in its way; a write that nothing follows is nudged once the delay
// has passed.
func TestNudgeIsDueADelayAfterTheLatestWrite(t *testing.T) {
	const d = 2 * time.Millisecond
	c := newCommitNudge()
	t0 := time.Now()
	if w, last := c.due(t0, d); w != 0 || last != 0 {
		t.Fatalf("nothing pending: due = %v, %d; want 0, 0", w, last)
	}

	c.note(10)
	at := c.at
	if w, last := c.due(at.Add(d/2), d); w != d/2 || last != 0 {
		t.Fatalf("half the delay after the write: due = %v, %d; want %v, 0", w, last, d/2)
	}
	// A later write completes: the decision waits a full delay after it.
	c.note(12)
	at2 := c.at
	if w, _ := c.due(at2.Add(d/4), d); w != d-d/4 {
		t.Fatalf("after a second write: wait %v; want %v", w, d-d/4)
	}
	// An earlier index noted late does not lower the pending one.
	c.note(11)
	at3 := c.at
	if w, last := c.due(at3.Add(d), d); w != 0 || last != 12 {
		t.Fatalf("a delay after the latest write: due = %v, %d; want 0, 12", w, last)
	}
	if w, last := c.due(at3.Add(2*d), d); w != 0 || last != 0 {
		t.Fatalf("after the decision nothing is pending: due = %v, %d", w, last)
	}
	select {
	case <-c.kick:
	default:
		t.Fatal("note did not kick the loop")
	}
}

// A cluster of one has no follower to tell of a commit: the nudger decides
// on the write and appends no barrier.
func TestNoNudgeInAClusterOfOne(t *testing.T) {
	tn := newTestNodes(t, 1, nil)
	n := tn.nodes[tn.waitForLeader(30*time.Second)]
	eventually(t, 10*time.Second, n.leaderReady.Load, "leader ready")
	if n.hasOtherServers() {
		t.Fatal("a cluster of one reports other servers")
	}
	// Each write is noted (before Apply returns), then decided on once the
	// delay has passed. The loop takes one write at a time: once it has
	// decided on the second write, it has finished with the first (and the
	// barrier it must not have appended for it, with its count).
	for _, id := range []string{"alone", "alone-2"} {
		if _, err := n.Apply(context.Background(), fsmtest.Register(t, id, "web")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() bool {
			n.nudge.mu.Lock()
			defer n.nudge.mu.Unlock()
			return n.nudge.last == 0
		}, "the nudger's decision on "+id)
	}
	var m dto.Metric
	if err := n.metrics.nudges.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 0 {
		t.Fatalf("%v barriers appended in a cluster of one", got)
	}
}
