package fsm_test

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestAChecksMemoryIsItsRecord bounds what a check costs the catalog: the
// same 4,000 registrations with and without one HTTP check each (each its
// own target), the heap of each catalog measured after a full GC. A check
// is its record (160 bytes), its ID and target, and a slot in its service's
// check set; the definition, the other half of what a check declares, is
// shared by the checks that declare the same one. As a row of a go-memdb
// table with an ID and an owner index a check cost ~750 bytes; with its own
// definition in its record, ~400.
func TestAChecksMemoryIsItsRecord(t *testing.T) {
	const n = 4000
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	build := func(withCheck bool) (uint64, *fsm.FSM) {
		cmds := make([][]byte, n)
		for i := range cmds {
			id := fmt.Sprintf("i-%d", i)
			var opts []func(*fsm.RegisterRequest)
			if withCheck {
				opts = append(opts, fsmtest.WithChecks(fsmtest.HTTPCheck("http", fmt.Sprintf("http://127.0.0.1:%d/health", 10000+i), fsm.Passing)))
			}
			cmds[i] = fsmtest.Register(t, id, fmt.Sprintf("svc-%d", i%20), opts...)
		}
		before := heap()
		f := newFSM(t)
		fsmtest.MustApply(t, f, 1, fsmtest.NodeUpdate(t, 1, fsmtest.Server("s1", fsm.NodeAlive)))
		for i, c := range cmds {
			fsmtest.MustApply(t, f, uint64(i+2), c)
		}
		after := heap()
		runtime.KeepAlive(cmds)
		return after - before, f
	}
	plain, f1 := build(false)
	checked, f2 := build(true)
	if _, cs := f2.Store().Checks(nil, ""); len(cs) != n {
		t.Fatalf("%d checks, want %d", len(cs), n)
	}
	perCheck := (int64(checked) - int64(plain)) / n
	t.Logf("catalog of %d instances: %d bytes without checks, %d with one HTTP check each: %d bytes a check", n, plain, checked, perCheck)
	if perCheck > 330 {
		t.Fatalf("a check costs %d bytes of heap, want at most 330 (its record is 160)", perCheck)
	}
	runtime.KeepAlive(f1)
	runtime.KeepAlive(f2)
}

// TestChecksShareTheirDefinition: checks that declare the same definition
// (apart from the target) share one, through apply and through a snapshot
// restore; a check keeps its own target; a definition with headers is its
// check's own; and a re-registration that changes a definition gives the
// check a new one while the others keep theirs unchanged.
func TestChecksShareTheirDefinition(t *testing.T) {
	hdr := fsmtest.HTTPCheck("h", "http://127.0.0.1:7/x", fsm.Passing)
	hdr.Header = map[string][]string{"X-A": {"1"}}
	var cmds [][]byte
	for i := range 6 {
		cmds = append(cmds, fsmtest.Register(t, fmt.Sprintf("i-%d", i), "web", fsmtest.WithChecks(
			fsmtest.TTLCheck("ttl", fsm.Passing),
			fsmtest.HTTPCheck("http", fmt.Sprintf("http://127.0.0.1:%d/health", 8000+i), fsm.Passing),
			hdr,
		)))
	}
	f := newFSM(t)
	fsmtest.MustApply(t, f, 1, fsmtest.NodeUpdate(t, 1, fsmtest.Server("s1", fsm.NodeAlive)))
	applyAll(t, f, 2, cmds...)

	check := func(f *fsm.FSM, inst, name string) *fsm.Check {
		t.Helper()
		c := f.Store().Check(nil, fsm.CheckID("web", inst, name))
		if c == nil {
			t.Fatalf("no check %s of %s", name, inst)
		}
		return c
	}
	verify := func(f *fsm.FSM, how string) {
		t.Helper()
		for i := range 6 {
			inst := fmt.Sprintf("i-%d", i)
			ttl, http, h := check(f, inst, "ttl"), check(f, inst, "http"), check(f, inst, "h")
			if ttl.CheckDefinition != check(f, "i-0", "ttl").CheckDefinition || http.CheckDefinition != check(f, "i-0", "http").CheckDefinition {
				t.Errorf("%s: %s does not share the definitions of i-0's checks", how, inst)
			}
			if i > 0 && h.CheckDefinition == check(f, "i-0", "h").CheckDefinition {
				t.Errorf("%s: %s shares a definition with headers", how, inst)
			}
			if want := fmt.Sprintf("http://127.0.0.1:%d/health", 8000+i); http.Target != want || http.Definition().Target != want {
				t.Errorf("%s: %s's target %q (definition %q), want %q", how, inst, http.Target, http.Definition().Target, want)
			}
			if http.CheckDefinition.Target != "" {
				t.Errorf("%s: a shared definition holds the target %q", how, http.CheckDefinition.Target)
			}
			if h.Header["X-A"][0] != "1" || h.Target != "http://127.0.0.1:7/x" || ttl.TTL != 30e9 || http.Interval != 10e9 {
				t.Errorf("%s: %s's definitions read wrong: %+v %+v %+v", how, inst, ttl, http, h)
			}
		}
	}
	verify(f, "applied")
	r := newFSM(t)
	restore(t, r, persist(t, f))
	verify(r, "restored")
	if !bytes.Equal(persist(t, f), persist(t, r)) {
		t.Errorf("the restored FSM's snapshot differs from the original's")
	}

	// i-2 changes its TTL: it gets a definition of its own, the others
	// keep theirs, unchanged; an unchanged check keeps its record.
	before := check(f, "i-3", "http")
	applyAll(t, f, 100, fsmtest.Register(t, "i-2", "web", fsmtest.WithChecks(
		fsm.CheckDefinition{Name: "ttl", Type: fsm.CheckTTL, TTL: 60e9, InitialStatus: fsm.Passing},
		fsmtest.HTTPCheck("http", "http://127.0.0.1:8002/health", fsm.Passing),
		hdr,
	)))
	if c := check(f, "i-2", "ttl"); c.TTL != 60e9 || c.CheckDefinition == check(f, "i-0", "ttl").CheckDefinition {
		t.Errorf("the re-registered TTL check: TTL %d, shared with i-0's: %t", c.TTL, c.CheckDefinition == check(f, "i-0", "ttl").CheckDefinition)
	}
	for _, inst := range []string{"i-0", "i-1", "i-3"} {
		if c := check(f, inst, "ttl"); c.TTL != 30e9 {
			t.Errorf("%s's TTL became %d", inst, c.TTL)
		}
	}
	if check(f, "i-2", "http").CheckDefinition != before.CheckDefinition || check(f, "i-3", "http") != before {
		t.Errorf("an unchanged HTTP check lost its shared definition or its record")
	}
}
