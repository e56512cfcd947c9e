package agent

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
	"github.com/hashicorp/go-hclog"
)

func TestIdlePolicyDue(t *testing.T) {
	const mib = 1 << 20
	p := newIdlePolicy(2 * time.Second) // quiet: at most 2 MiB allocated in the period
	prev := memSample{allocs: 1000 * mib}
	for _, c := range []struct {
		name  string
		cur   memSample
		floor uint64
		want  bool
	}{
		{"quiet, holding twice the live heap", memSample{allocs: 1001 * mib, live: 60 * mib, held: 120 * mib}, 0, true},
		{"busy: allocating", memSample{allocs: 1003 * mib, live: 60 * mib, held: 120 * mib}, 0, false},
		{"quiet, grown little since the last release", memSample{allocs: 1000 * mib, live: 60 * mib, held: 74 * mib}, 60 * mib, false},
		{"quiet, grown a quarter of the live heap since the last release", memSample{allocs: 1000 * mib, live: 60 * mib, held: 76 * mib}, 60 * mib, true},
		{"quiet, a small heap", memSample{allocs: 1000 * mib, live: 2 * mib, held: 3 * mib}, 0, false},
		{"quiet, a small heap grown by less than 4 MiB", memSample{allocs: 1000 * mib, live: 2 * mib, held: 7 * mib}, 4 * mib, false},
		{"quiet, a small heap grown by 4 MiB", memSample{allocs: 1000 * mib, live: 2 * mib, held: 8 * mib}, 4 * mib, true},
		{"quiet, a big heap: a quarter of it is the threshold", memSample{allocs: 1000 * mib, live: 400 * mib, held: 490 * mib}, 400 * mib, false},
		{"quiet, a big heap grown beyond the quarter", memSample{allocs: 1000 * mib, live: 400 * mib, held: 510 * mib}, 400 * mib, true},
		// A collection that ended with the burst counted its floating
		// garbage as live: the growth since the floor still shows.
		{"quiet, the last collection's live heap near the heap held", memSample{allocs: 1000 * mib, live: 118 * mib, held: 120 * mib}, 40 * mib, true},
		{"held below the floor", memSample{allocs: 1000 * mib, live: 20 * mib, held: 30 * mib}, 39 * mib, false},
	} {
		if got := p.due(prev, c.cur, c.floor); got != c.want {
			t.Errorf("%s: due = %v, want %v", c.name, got, c.want)
		}
	}
	// After a release the heap held (including the spans live objects keep
	// part-used) is the floor: quiet ticks that follow do not collect again
	// until the heap has grown past it by the threshold.
	afterRelease := memSample{allocs: 1000 * mib, live: 29 * mib, held: 39 * mib}
	if p.due(prev, afterRelease, 39*mib) {
		t.Error("due again right after a release, with nothing more to return")
	}
	if !p.due(prev, memSample{allocs: 1001 * mib, live: 29 * mib, held: 48 * mib}, 39*mib) {
		t.Error("not due with 9 MiB held beyond the floor")
	}
	if q := newIdlePolicy(500 * time.Millisecond).quietBytes; q != idleAllocPerSecond/2 {
		t.Errorf("quiet bytes for 500ms = %d, want %d", q, idleAllocPerSecond/2)
	}
}

// TestAllocatingIsNotQuiet reads the real runtime around a real allocation
// burst: the policy must see it as busy.
func TestAllocatingIsNotQuiet(t *testing.T) {
	p := newIdlePolicy(100 * time.Millisecond)
	prev := readMemSample()
	var keep [][]byte
	for range 64 {
		keep = append(keep, make([]byte, 64<<10))
	}
	cur := readMemSample()
	runtime.KeepAlive(keep)
	if got := cur.allocs - prev.allocs; got < 4<<20 {
		t.Fatalf("allocs rose by %d bytes over a 4 MiB burst", got)
	}
	if p.due(prev, cur, 0) {
		t.Errorf("due after a 4 MiB burst within a 100ms policy (quiet below %d bytes)", p.quietBytes)
	}
}

func heapReleased() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestIdleReleaseReturnsTheHeap leaves 64 MiB of freed heap in this test
// process's runtime and waits for the idle releaser to give it back. The
// collector's own background scavenger is held off with a high GC
// percentage (it keeps what lies below the heap goal), so only the releaser
// can return it.
func TestIdleReleaseReturnsTheHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100000))
	var garbage [][]byte
	for range 1024 {
		garbage = append(garbage, make([]byte, 64<<10))
	}
	runtime.KeepAlive(garbage)
	garbage = nil
	runtime.GC() // frees the 64 MiB; the scavenger keeps it (below the goal)
	before := readMemSample()
	if before.held < before.live+48<<20 {
		t.Fatalf("precondition: held %d bytes, live %d: want 48 MiB or more held beyond live", before.held, before.live)
	}
	releasedBefore := heapReleased()

	h := startIdleRelease(50*time.Millisecond, hclog.NewNullLogger())
	defer h.close()
	wait.For(t, 30*time.Second, 10*time.Millisecond, func() (bool, string) {
		n := h.r.releases.Load()
		return n > 0, fmt.Sprintf("%d releases", n)
	})
	after := readMemSample()
	if got := heapReleased() - releasedBefore; got < 48<<20 {
		t.Errorf("released heap grew by %d bytes, want 48 MiB or more", got)
	}
	if after.held > after.live+16<<20 {
		t.Errorf("after the release: held %d bytes, live %d; want at most 16 MiB beyond live", after.held, after.live)
	}
	if got := h.r.released.Load(); got < 48<<20 {
		t.Errorf("released counter = %d bytes, want 48 MiB or more", got)
	}
}

// TestIdleReleaseIsSharedAndStops: the agents of one process share one
// releaser, the first sets its period, the last to leave stops it, and a
// zero period starts nothing.
func TestIdleReleaseIsSharedAndStops(t *testing.T) {
	if h := startIdleRelease(0, hclog.NewNullLogger()); h != nil {
		t.Fatalf("a zero period started a releaser")
	}
	a := startIdleRelease(time.Hour, hclog.NewNullLogger())
	b := startIdleRelease(time.Minute, hclog.NewNullLogger())
	if a.r != b.r || a.r.policy.period != time.Hour {
		t.Fatalf("two agents: releasers %p and %p, period %s; want one, of an hour", a.r, b.r, a.r.policy.period)
	}
	r := a.r
	a.close()
	a.close() // twice is harmless
	select {
	case <-r.done:
		t.Fatal("the releaser stopped while an agent still used it")
	default:
	}
	b.close()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the releaser did not stop when its last agent left")
	}
	idleMu.Lock()
	left := idleRel
	idleMu.Unlock()
	if left != nil {
		t.Fatal("the process still names a releaser")
	}
	var nilHandle *idleHandle
	nilHandle.close()
	if nilHandle.collectors() != nil {
		t.Error("a nil handle has collectors")
	}
}
