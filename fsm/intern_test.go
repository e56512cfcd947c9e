package fsm_test

import (
	"slices"
	"testing"
	"unsafe"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/go-memdb"
)

func checkIDs(checks []*fsm.Check) []string {
	var out []string
	for _, c := range checks {
		out = append(out, c.ID)
	}
	return out
}

// TestChecksOfNamesWithColons: checks have no index by service or instance;
// a prefix scan of their IDs (SERVICE:INSTANCE:NAME) finds them. The API
// refuses ':' in names, but the catalog must not hand one instance another's
// checks when a log entry or an old snapshot has one: "a"/"b:c"/"x" and
// "a:b"/"c"/"y" share the prefix "a:b:c:", and "a"/"b"/"z" the prefix "a:b:".
func TestChecksOfNamesWithColons(t *testing.T) {
	f := newFSM(t)
	ttl := func(name string) func(*fsm.RegisterRequest) {
		return fsmtest.WithChecks(fsmtest.TTLCheck(name, fsm.Passing))
	}
	next := applyAll(t, f, 1,
		fsmtest.Register(t, "b:c", "a", ttl("x")),
		fsmtest.Register(t, "c", "a:b", ttl("y")),
		fsmtest.Register(t, "b", "a", ttl("z")),
		fsmtest.Register(t, "d", "a:b:c", ttl("w")),
	) + 1
	want := map[[2]string][]string{
		{"a", "b:c"}:   {"a:b:c:x"},
		{"a:b", "c"}:   {"a:b:c:y"},
		{"a", "b"}:     {"a:b:z"},
		{"a:b:c", "d"}: {"a:b:c:d:w"},
	}
	for k, ids := range want {
		if _, got := instance(t, f, k[0], k[1]); !slices.Equal(checkIDs(got), ids) {
			t.Errorf("checks of %s/%s = %v, want %v", k[0], k[1], checkIDs(got), ids)
		}
	}
	for svc, ids := range map[string][]string{"a": {"a:b:c:x", "a:b:z"}, "a:b": {"a:b:c:y"}, "a:b:c": {"a:b:c:d:w"}} {
		if _, got := f.Store().Checks(nil, svc); !slices.Equal(checkIDs(got), ids) {
			t.Errorf("Checks(%q) = %v, want %v", svc, checkIDs(got), ids)
		}
		if _, _, got, _ := f.Store().ServiceHealth(nil, svc); !slices.Equal(checkIDs(got), ids) {
			t.Errorf("ServiceHealth(%q) checks = %v, want %v", svc, checkIDs(got), ids)
		}
	}
	// Replacing and deleting an instance's checks touches its own only.
	next = applyAll(t, f, next,
		fsmtest.Register(t, "c", "a:b"), // no checks any more
		fsmtest.Deregister(t, "a", "b"),
	) + 1
	if _, got := f.Store().Checks(nil, ""); !slices.Equal(checkIDs(got), []string{"a:b:c:d:w", "a:b:c:x"}) {
		t.Errorf("checks left = %v, want a:b:c:d:w and a:b:c:x", checkIDs(got))
	}
	applyAll(t, f, next, fsmtest.Deregister(t, "a", "b:c"))
	if _, got := f.Store().Checks(nil, ""); !slices.Equal(checkIDs(got), []string{"a:b:c:d:w"}) {
		t.Errorf("checks left = %v, want a:b:c:d:w", checkIDs(got))
	}
}

// TestCheckIDsSharedByColonServices: with ':' in names two services can
// hold checks with one ID ("a"/"b:c"/"x" and "a:b"/"c"/"x" are both
// a:b:c:x). Each service keeps its own; the ID names the check of the
// shorter service name; a snapshot holding both restores (a lookup by ID
// across services took one for the other and refused the stream as a
// duplicate); and a watch on a check found in a longer service's set wakes
// when it changes.
func TestCheckIDsSharedByColonServices(t *testing.T) {
	ttl := func(name string) func(*fsm.RegisterRequest) {
		return fsmtest.WithChecks(fsmtest.TTLCheck(name, fsm.Passing))
	}
	f := newFSM(t)
	next := applyAll(t, f, 1,
		fsmtest.Register(t, "b:c", "a", ttl("x")),
		fsmtest.Register(t, "c", "a:b", ttl("x")),
		fsmtest.Register(t, "d", "a:b", ttl("y")),
	) + 1
	if c := f.Store().Check(nil, "a:b:c:x"); c == nil || c.Service != "a" {
		t.Fatalf("Check(a:b:c:x) = %+v, want service a's", c)
	}
	for svc, want := range map[string][]string{"a": {"a:b:c:x"}, "a:b": {"a:b:c:x", "a:b:d:y"}} {
		if _, got := f.Store().Checks(nil, svc); !slices.Equal(checkIDs(got), want) {
			t.Errorf("Checks(%q) = %v, want %v", svc, checkIDs(got), want)
		}
	}
	g := newFSM(t)
	restore(t, g, persist(t, f))
	if _, got := g.Store().Checks(nil, ""); len(got) != 3 {
		t.Fatalf("restored %d checks, want 3 (%v)", len(got), checkIDs(got))
	}

	ws := memdb.NewWatchSet()
	if f.Store().Check(ws, "a:b:d:y") == nil {
		t.Fatal("Check(a:b:d:y) not found")
	}
	applyAll(t, f, next, fsmtest.Deregister(t, "a:b", "d"))
	if !fired(ws) {
		t.Fatal("a watch on a:b:d:y (in the set of a:b) did not wake when it was deleted")
	}
}

// TestRepeatedValuesAreShared: instances registered with the same service,
// tags, meta and version share them (one copy in memory), after apply, after
// a health change and after a snapshot restore, and changing one instance
// leaves the others as they were.
func TestRepeatedValuesAreShared(t *testing.T) {
	reg := func(id string, tags []string, zone string) []byte {
		return fsmtest.Register(t, id, "cache", func(r *fsm.RegisterRequest) {
			r.Address, r.Port, r.Tags, r.Meta, r.Version = "10.0.0.1", 6379, tags, meta("zone", zone, "tier", "hot"), "7.2.4"
			r.Checks = []fsm.CheckDefinition{fsmtest.TTLCheck("ttl", fsm.Passing)}
		})
	}
	f := newFSM(t)
	next := applyAll(t, f, 1,
		fsmtest.NodeUpdate(t, t0, fsmtest.Server("s1", fsm.NodeAlive)),
		reg("c-1", []string{"redis", "primary"}, "a"),
		reg("c-2", []string{"redis", "primary"}, "a"),
		reg("c-3", []string{"redis", "primary"}, "a"),
		fsmtest.CheckUpdate(t, "", t0+1, fsm.CheckUpdate{Check: "cache:c-2:ttl", Status: fsm.Critical}),
	) + 1
	assertShared := func(f *fsm.FSM, ids ...string) {
		t.Helper()
		first, firstChecks := instance(t, f, "cache", ids[0])
		for _, id := range ids[1:] {
			inst, checks := instance(t, f, "cache", id)
			if unsafe.SliceData(inst.Tags) != unsafe.SliceData(first.Tags) {
				t.Errorf("%s and %s hold their own tags", ids[0], id)
			}
			if unsafe.SliceData(inst.Meta) != unsafe.SliceData(first.Meta) {
				t.Errorf("%s and %s hold their own meta", ids[0], id)
			}
			for name, pair := range map[string][2]string{
				"service": {inst.Service, first.Service}, "version": {inst.Version, first.Version},
				"check name": {checks[0].Name, firstChecks[0].Name}, "check service": {checks[0].Service, first.Service},
				"check instance": {checks[0].Instance, inst.ID},
			} {
				if unsafe.StringData(pair[0]) != unsafe.StringData(pair[1]) {
					t.Errorf("%s: %s %q is not shared", id, name, pair[0])
				}
			}
		}
	}
	// c-2 went critical (a new version of the record): it still shares.
	if inst, _ := instance(t, f, "cache", "c-2"); inst.Status != fsm.Critical {
		t.Fatalf("c-2 is %s, want critical", inst.Status)
	}
	assertShared(f, "c-1", "c-2", "c-3")
	g := newFSM(t)
	restore(t, g, persist(t, f))
	assertSameStore(t, dumpStore(f.Store()), dumpStore(g.Store()))
	assertShared(g, "c-1", "c-2", "c-3")

	for _, h := range []*fsm.FSM{f, g} {
		applyAll(t, h, next, reg("c-2", []string{"redis", "replica"}, "b"))
		two, _ := instance(t, h, "cache", "c-2")
		if !slices.Equal(two.Tags, []string{"redis", "replica"}) || two.MetaMap()["zone"] != "b" {
			t.Errorf("c-2 = %v %v, want its new tags and meta", two.Tags, two.Meta)
		}
		for _, id := range []string{"c-1", "c-3"} {
			inst, _ := instance(t, h, "cache", id)
			if !slices.Equal(inst.Tags, []string{"redis", "primary"}) || inst.MetaMap()["zone"] != "a" {
				t.Errorf("%s = %v %v, changed with c-2", id, inst.Tags, inst.Meta)
			}
		}
		assertShared(h, "c-1", "c-3")
	}
	assertSameStore(t, dumpStore(f.Store()), dumpStore(g.Store()))
}

// TestInstanceFitsItsSizeClass: an Instance is allocated in Go's 256-byte
// size class; a field more (or a bool put between two words) moves every
// instance of the catalog to the 288-byte class.
func TestInstanceFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(fsm.Instance{}); n > 256 {
		t.Errorf("fsm.Instance is %d bytes, more than the 256-byte size class", n)
	}
}
