package fsm_test

import (
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/go-memdb"
)

func TestDrainingInstancesListsOnlyDrainingAndWakesOnlyForThem(t *testing.T) {
	f := newFSM(t)
	s := f.Store()
	for i, id := range []string{"a", "b", "c"} {
		fsmtest.MustApply(t, f, uint64(i+1), fsmtest.Register(t, id, "web"))
	}
	if got := s.DrainingInstances(nil); len(got) != 0 {
		t.Fatalf("no instance drains yet, got %d", len(got))
	}
	fsmtest.MustApply(t, f, 4, fsmtest.Maintenance(t, "web", "b", fsm.ModeDrain, func(r *fsm.MaintenanceRequest) { r.Deadline = 100 }))

	ws := memdb.NewWatchSet()
	got := s.DrainingInstances(ws)
	if len(got) != 1 || got[0].ID != "b" || got[0].Drain.Deadline != 100 {
		t.Fatalf("draining: %+v", got)
	}
	// A registration or an update of a non-draining instance wakes nobody.
	fsmtest.MustApply(t, f, 5, fsmtest.Register(t, "d", "web"))
	fsmtest.MustApply(t, f, 6, fsmtest.Register(t, "a", "web", fsmtest.WithAddress("10.0.0.9", 80)))
	if fired(ws) {
		t.Fatal("a change to non-draining instances woke the draining watcher")
	}
	// Another instance starting to drain does.
	fsmtest.MustApply(t, f, 7, fsmtest.Maintenance(t, "web", "c", fsm.ModeDrain))
	if !fired(ws) {
		t.Fatal("a new drain did not wake the draining watcher")
	}
	// Leaving drain and deregistering take instances out of the index.
	fsmtest.MustApply(t, f, 8, fsmtest.Maintenance(t, "web", "b", fsm.ModeNone))
	fsmtest.MustApply(t, f, 9, fsmtest.Deregister(t, "web", "c"))
	if got := s.DrainingInstances(nil); len(got) != 0 {
		t.Fatalf("after undrain and deregister: %+v", got)
	}
}
