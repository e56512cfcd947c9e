package fsm_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestAChecksMemoryIsItsRecord bounds what a check costs the catalog beyond
// its record: the same 4,000 registrations with and without one HTTP check
// each, the heap of each catalog measured after a full GC. A check is its
// record (320 bytes), its ID and target, and a slot in its service's check
// set; as a row of a go-memdb table with an ID and an owner index it cost
// ~750 bytes (two radix-tree leaves with their nodes, edges and keys).
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
	if perCheck > 560 {
		t.Fatalf("a check costs %d bytes of heap, want at most 560 (its record is 320)", perCheck)
	}
	runtime.KeepAlive(f1)
	runtime.KeepAlive(f2)
}
