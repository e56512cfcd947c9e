package fsm_test

import (
	"errors"
	"maps"
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// catalogRegister returns a CatalogRegisterType command for external node
// node at addr with, unless svc is "", one instance svc-1 of service svc
// on it.
func catalogRegister(t testing.TB, node, addr, svc string, opts ...func(*fsm.CatalogRegisterRequest)) []byte {
	t.Helper()
	req := fsm.CatalogRegisterRequest{Node: node, Address: addr, Time: t0}
	if svc != "" {
		req.Service = &fsm.RegisterRequest{ID: svc + "-1", Service: svc, Address: addr, Port: 5432, Weight: 1, Node: node, Time: t0}
	}
	for _, o := range opts {
		o(&req)
	}
	return fsmtest.Encode(t, fsm.CatalogRegisterType, &req)
}

func catalogDeregister(t testing.TB, node, check string) []byte {
	t.Helper()
	return fsmtest.Encode(t, fsm.CatalogDeregisterType, &fsm.CatalogDeregisterRequest{Node: node, Check: check, Time: t0})
}

// populateExternal is populate with an external node that has tagged
// addresses and meta, and an instance on it, and a server that departed
// (left gracefully) in its incarnation: the node fields populate's
// fixtures predate.
func populateExternal(t testing.TB) *fsm.FSM {
	t.Helper()
	f := populate(t)
	departed := fsmtest.Server("s3", fsm.NodeLeft)
	departed.Incarnation, departed.Departed = 9, true
	fsmtest.MustApply(t, f, f.AppliedIndex()+1, fsmtest.NodeUpdate(t, t0+8, departed))
	fsmtest.MustApply(t, f, f.AppliedIndex()+1, catalogRegister(t, "ext-db", "10.0.0.5", "db", func(r *fsm.CatalogRegisterRequest) {
		r.TaggedAddresses = map[string]string{"lan": "10.0.0.5", "wan": "198.51.100.5"}
		r.Meta = map[string]string{"external-node": "true"}
	}))
	return f
}

func TestCatalogRegisterCreatesAnExternalNodeWithItsInstance(t *testing.T) {
	f := newFSM(t)
	fsmtest.MustApply(t, f, 1, fsmtest.NodeUpdate(t, t0, fsmtest.Server("s1", fsm.NodeAlive)))
	res := fsmtest.MustApply(t, f, 2, catalogRegister(t, "ext-db", "10.0.0.5", "db", func(r *fsm.CatalogRegisterRequest) {
		r.Meta = map[string]string{"external-node": "true"}
	}))
	if res.Index != 2 {
		t.Fatalf("result index %d, want 2", res.Index)
	}
	n := f.Store().Node("ext-db")
	if n == nil || !n.External() || n.Address != "10.0.0.5" || n.Status != fsm.NodeAlive || n.Meta["external-node"] != "true" || n.CreateIndex != 2 {
		t.Fatalf("node %+v", n)
	}
	_, insts := f.Store().NodeInstances(nil, "ext-db")
	if len(insts) != 1 || insts[0].ID != "db-1" || insts[0].NodeFailed || insts[0].Status != fsm.Passing {
		t.Fatalf("instances on ext-db: %+v", insts)
	}

	t.Run("an identical registration changes nothing and answers the earlier index", func(t *testing.T) {
		res := fsmtest.MustApply(t, f, 3, catalogRegister(t, "ext-db", "10.0.0.5", "db", func(r *fsm.CatalogRegisterRequest) {
			r.Meta = map[string]string{"external-node": "true"}
		}))
		if res.Index != 2 || f.Store().Node("ext-db").ModifyIndex != 2 {
			t.Fatalf("result index %d, node %+v; want both at 2", res.Index, f.Store().Node("ext-db"))
		}
	})
	t.Run("a new address replaces the node's record and keeps its creation index", func(t *testing.T) {
		fsmtest.MustApply(t, f, 4, catalogRegister(t, "ext-db", "10.0.0.6", ""))
		n := f.Store().Node("ext-db")
		if n.Address != "10.0.0.6" || n.Meta != nil || n.CreateIndex != 2 || n.ModifyIndex != 4 {
			t.Fatalf("node %+v", n)
		}
	})
	t.Run("SkipNodeUpdate leaves an existing node as it is", func(t *testing.T) {
		fsmtest.MustApply(t, f, 5, catalogRegister(t, "ext-db", "10.9.9.9", "", func(r *fsm.CatalogRegisterRequest) { r.SkipNodeUpdate = true }))
		if n := f.Store().Node("ext-db"); n.Address != "10.0.0.6" || n.ModifyIndex != 4 {
			t.Fatalf("node %+v", n)
		}
	})
	t.Run("a member's node is refused, and nothing is written", func(t *testing.T) {
		res := fsmtest.Apply(t, f, 6, catalogRegister(t, "s1", "10.0.0.7", "cache"))
		if res.Err == nil || !errors.Is(res.Err, fsm.ErrConflict) {
			t.Fatalf("err %v, want a conflict", res.Err)
		}
		if n := f.Store().Node("s1"); n.External() || n.Address != "s1:8751" {
			t.Fatalf("member's node changed: %+v", n)
		}
		if inst, _ := f.Store().CurrentInstance("cache", "cache-1"); inst != nil {
			t.Fatalf("instance registered: %+v", inst)
		}
	})
	t.Run("a node without an address, a bad name or an instance on another node is refused", func(t *testing.T) {
		for name, cmd := range map[string][]byte{
			"no address":         catalogRegister(t, "ext-new", "", ""),
			"an address removed": catalogRegister(t, "ext-db", "", ""),
			"bad name":           catalogRegister(t, "ext db", "10.0.0.8", ""),
			"other node":         catalogRegister(t, "ext-x", "10.0.0.8", "x", func(r *fsm.CatalogRegisterRequest) { r.Service.Node = "ext-y" }),
		} {
			if res := fsmtest.Apply(t, f, 7, cmd); !errors.Is(res.Err, fsm.ErrInvalid) {
				t.Errorf("%s: err %v, want invalid", name, res.Err)
			}
		}
		if f.Store().Node("ext-new") != nil || f.Store().Node("ext-x") != nil {
			t.Errorf("a refused registration created a node")
		}
	})
}

func TestCatalogDeregisterRemovesANodeOrOneCheck(t *testing.T) {
	f := newFSM(t)
	applyAll(t, f, 1,
		fsmtest.NodeUpdate(t, t0, fsmtest.Server("s1", fsm.NodeAlive)),
		catalogRegister(t, "ext-db", "10.0.0.5", "db", func(r *fsm.CatalogRegisterRequest) {
			r.Service.Checks = []fsm.CheckDefinition{fsmtest.TTLCheck("a", fsm.Passing), fsmtest.TTLCheck("b", fsm.Critical)}
		}),
		// A second instance on the node, registered natively.
		fsmtest.Register(t, "cache-1", "cache", fsmtest.WithNode("ext-db"), fsmtest.WithAddress("10.0.0.5", 6379)),
		fsmtest.Register(t, "web-1", "web", fsmtest.WithNode("s1"), fsmtest.WithAddress("10.0.0.1", 80)),
	)
	next := f.AppliedIndex() + 1
	inst, _ := f.Store().CurrentInstance("db", "db-1")
	if inst.Status != fsm.Critical {
		t.Fatalf("db-1 %s, want critical", inst.Status)
	}

	// One check: the instance's status follows the checks that remain.
	fsmtest.MustApply(t, f, next, catalogDeregister(t, "ext-db", fsm.CheckID("db", "db-1", "b")))
	inst, checks := f.Store().CurrentInstance("db", "db-1")
	if len(checks) != 1 || checks[0].Name != "a" || inst.Status != fsm.Passing {
		t.Fatalf("after check deregistration: %s with %d checks", inst.Status, len(checks))
	}
	// A check named on another node is not touched.
	fsmtest.MustApply(t, f, next+1, catalogDeregister(t, "s1", fsm.CheckID("db", "db-1", "a")))
	if _, checks := f.Store().CurrentInstance("db", "db-1"); len(checks) != 1 {
		t.Fatalf("check on ext-db removed through node s1")
	}

	// A member's node is refused.
	if res := fsmtest.Apply(t, f, next+2, catalogDeregister(t, "s1", "")); !errors.Is(res.Err, fsm.ErrConflict) {
		t.Fatalf("deregistering a member: %v, want a conflict", res.Err)
	}
	if inst, _ := f.Store().CurrentInstance("web", "web-1"); inst == nil || f.Store().Node("s1") == nil {
		t.Fatalf("member's node or instance removed")
	}

	// The whole node: every instance on it goes, with its checks.
	fsmtest.MustApply(t, f, next+3, catalogDeregister(t, "ext-db", ""))
	if f.Store().Node("ext-db") != nil {
		t.Fatalf("node still there")
	}
	if _, insts := f.Store().NodeInstances(nil, "ext-db"); len(insts) != 0 {
		t.Fatalf("instances left on ext-db: %d", len(insts))
	}
	if _, cs := f.Store().Checks(nil, ""); len(cs) != 0 {
		t.Fatalf("checks left: %d", len(cs))
	}
	if _, svcs, _ := f.Store().Services(nil, "", "", 0); len(svcs) != 1 || svcs[0].Name != "web" {
		t.Fatalf("services %+v, want web only", svcs)
	}
	// Deregistering what is gone is no error.
	fsmtest.MustApply(t, f, next+4, catalogDeregister(t, "ext-db", ""))
}

func TestExternalNodesSurviveSnapshotAndRestore(t *testing.T) {
	src := populateExternal(t)
	dst := newFSM(t)
	restore(t, dst, persist(t, src))
	assertSameStore(t, dumpStore(src.Store()), dumpStore(dst.Store()))
	n := dst.Store().Node("ext-db")
	if n == nil || !n.External() || !maps.Equal(n.TaggedAddresses, map[string]string{"lan": "10.0.0.5", "wan": "198.51.100.5"}) {
		t.Fatalf("restored node %+v", n)
	}
	// The restored catalog goes on as the original: the node can go.
	next := src.AppliedIndex() + 1
	for _, f := range []*fsm.FSM{src, dst} {
		fsmtest.MustApply(t, f, next, catalogDeregister(t, "ext-db", ""))
	}
	assertSameStore(t, dumpStore(src.Store()), dumpStore(dst.Store()))
	if dst.Store().Node("ext-db") != nil {
		t.Fatal("node not removed after restore")
	}
}
