package fsm_test

import (
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// A graceful leave recorded for a node's incarnation sticks: an update of
// the same incarnation, or of an earlier one, that says otherwise (the leader's gossip view, which
// may still show the node alive, or failed) changes nothing, while another
// incarnation (the node started again) replaces the record as any update
// does.
func TestADepartureSticksForItsIncarnation(t *testing.T) {
	f := fsm.New(nil)
	apply := func(idx uint64, at int64, st fsm.NodeState) {
		t.Helper()
		res := fsmtest.Apply(t, f, idx, fsmtest.NodeUpdate(t, at, st))
		if res.Err != nil {
			t.Fatalf("apply at %d: %v", idx, res.Err)
		}
	}
	alive := fsm.NodeState{Name: "s1", Address: "s1:8750", Role: fsm.RoleServer, Status: fsm.NodeAlive, Incarnation: 7}
	apply(1, 100, alive)
	departed := alive
	departed.Status, departed.Departed = fsm.NodeLeft, true
	apply(2, 200, departed)

	apply(3, 300, alive)
	// A view of an earlier run (gossip that has not heard of the restart
	// whose run then left) changes nothing either.
	stale := alive
	stale.Incarnation = 6
	apply(4, 350, stale)
	failed := alive
	failed.Status = fsm.NodeFailed
	apply(5, 400, failed)
	n := f.Store().Node("s1")
	if n.Status != fsm.NodeLeft || !n.Departed || n.ModifyIndex != 2 || n.Since != 200 || !n.DepartedIn(7) {
		t.Fatalf("after updates of the departed incarnation: %+v, want left as recorded at index 2", *n)
	}

	again := alive
	again.Incarnation = 8
	apply(6, 500, again)
	n = f.Store().Node("s1")
	if n.Status != fsm.NodeAlive || n.Departed || n.Incarnation != 8 || n.ModifyIndex != 6 || n.DepartedIn(8) {
		t.Fatalf("after the node came back with another incarnation: %+v, want alive", *n)
	}

	// Incarnation 0 (a release before incarnations) is never taken for a
	// departure.
	if (&fsm.Node{Departed: true}).DepartedIn(0) {
		t.Fatal("a departure without an incarnation matched incarnation 0")
	}
}
