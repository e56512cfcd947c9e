package fsm_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// take returns the feed's IDs, sorted and without repeats, and whether the
// feed was complete.
func take(f *fsm.CheckFeed) ([]string, bool) {
	ids, complete := f.Take(nil)
	slices.Sort(ids)
	return slices.Compact(ids), complete
}

func ready(f *fsm.CheckFeed) bool {
	select {
	case <-f.Ready():
		return true
	default:
		return false
	}
}

func TestCheckFeedNamesEveryCommittedCheckChange(t *testing.T) {
	f := newFSM(t)
	feed := f.Store().WatchChecks()
	defer feed.Close()
	if !ready(feed) {
		t.Fatal("a new feed is not ready: its reader would not start with a full read")
	}
	if ids, complete := take(feed); complete || len(ids) != 0 {
		t.Fatalf("first Take = %v, complete %t; want nothing, incomplete", ids, complete)
	}
	ttlA, httpA := "web:web-1:ttl", "web:web-1:http"
	steps := []struct {
		name string
		cmd  []byte
		want []string // IDs the feed must name after the command
	}{
		{"a server joins", fsmtest.NodeUpdate(t, t0, fsmtest.Server("s1", fsm.NodeAlive)), nil},
		{"registered with two checks", fsmtest.Register(t, "web-1", "web", fsmtest.WithTime(t0), fsmtest.WithChecks(
			fsmtest.HTTPCheck("http", "http://127.0.0.1/health", ""), fsmtest.TTLCheck("ttl", ""))), []string{httpA, ttlA}},
		{"registered again unchanged", fsmtest.Register(t, "web-1", "web", fsmtest.WithTime(t0), fsmtest.WithChecks(
			fsmtest.HTTPCheck("http", "http://127.0.0.1/health", ""), fsmtest.TTLCheck("ttl", ""))), nil},
		{"an instance without checks", fsmtest.Register(t, "web-2", "web"), nil},
		{"a TTL report", fsmtest.CheckUpdate(t, "", t0+1, fsm.CheckUpdate{Check: ttlA, Status: fsm.Passing}), []string{ttlA}},
		{"a probe result", fsmtest.CheckUpdate(t, "s1", t0+2, fsm.CheckUpdate{Check: httpA, Status: fsm.Passing}), []string{httpA}},
		{"an owner moves", fsmtest.AssignChecks(t, fsm.Assignment{Check: httpA, Owner: "s2"}), []string{httpA}},
		{"one check redefined, one dropped", fsmtest.Register(t, "web-1", "web", fsmtest.WithTime(t0), fsmtest.WithChecks(
			fsmtest.TTLCheck("ttl", fsm.Warning))), []string{httpA, ttlA}},
		{"deregistered", fsmtest.Deregister(t, "web", "web-1"), []string{ttlA}},
	}
	for i, s := range steps {
		idx := uint64(i + 1)
		fsmtest.MustApply(t, f, idx, s.cmd)
		if got := ready(feed); got != (len(s.want) > 0) {
			t.Errorf("%s: ready = %t, want %t", s.name, got, len(s.want) > 0)
		}
		ids, complete := take(feed)
		if !complete || !slices.Equal(ids, s.want) {
			t.Errorf("%s: feed = %v (complete %t), want %v", s.name, ids, complete, s.want)
		}
		// The change is visible by the time the feed names it.
		for _, id := range ids {
			if c := f.Store().Check(nil, id); c != nil && c.ModifyIndex != idx {
				t.Errorf("%s: check %s read after the feed named it has ModifyIndex %d, want %d", s.name, id, c.ModifyIndex, idx)
			}
		}
	}
}

func TestCheckFeedLosesTrackOnRestoreAndOverflow(t *testing.T) {
	f := newFSM(t)
	feed := f.Store().WatchChecks()
	defer feed.Close()
	take(feed)
	idx := applyAll(t, f, 1, fsmtest.Register(t, "web-1", "web", fsmtest.WithChecks(fsmtest.TTLCheck("ttl", ""))))
	snap := persist(t, f)
	if ids, complete := take(feed); !complete || len(ids) != 1 {
		t.Fatalf("feed = %v (complete %t), want the one check", ids, complete)
	}

	restore(t, f, snap)
	if !ready(feed) {
		t.Error("a restore left the feed not ready")
	}
	if ids, complete := take(feed); complete || len(ids) != 0 {
		t.Errorf("after a restore the feed = %v (complete %t), want nothing and incomplete", ids, complete)
	}

	// More changes than the feed holds: dropped, and the reader told.
	defs := make([]fsm.CheckDefinition, 1000)
	for i := range defs {
		defs[i] = fsmtest.TTLCheck(fmt.Sprintf("c%d", i), "")
	}
	for i := 0; i*len(defs) <= fsm.MaxCheckFeedPending; i++ {
		idx++
		fsmtest.MustApply(t, f, idx, fsmtest.Register(t, fmt.Sprintf("big-%d", i), "big", fsmtest.WithChecks(defs...)))
	}
	if ids, complete := take(feed); complete || len(ids) != 0 {
		t.Errorf("after %d changes the feed = %d IDs (complete %t), want none and incomplete", fsm.MaxCheckFeedPending+1, len(ids), complete)
	}
	// And it follows again from there.
	idx++
	fsmtest.MustApply(t, f, idx, fsmtest.Deregister(t, "web", "web-1"))
	if ids, complete := take(feed); !complete || !slices.Equal(ids, []string{"web:web-1:ttl"}) {
		t.Errorf("after the overflow was taken the feed = %v (complete %t), want web:web-1:ttl", ids, complete)
	}

	ready(feed) // the token of the last change
	feed.Close()
	idx++
	fsmtest.MustApply(t, f, idx, fsmtest.Deregister(t, "big", "big-0"))
	if ids, _ := feed.Take(nil); len(ids) != 0 || ready(feed) {
		t.Errorf("a closed feed got %d IDs", len(ids))
	}
}

// TestCheckFeedMissesNoChange applies random batches of registrations (with
// checks), check updates, owner moves and deregistrations, grouped and not,
// and compares the checks before and after each batch: every check added,
// removed or replaced must be named by the feed.
func TestCheckFeedMissesNoChange(t *testing.T) {
	f := newFSM(t)
	feed := f.Store().WatchChecks()
	defer feed.Close()
	take(feed)
	rng := rand.New(rand.NewPCG(7, 18))
	idx := applyAll(t, f, 1, fsmtest.NodeUpdate(t, t0, fsmtest.Server("s1", fsm.NodeAlive), fsmtest.Server("s2", fsm.NodeAlive)))
	snapshot := func() map[string]*fsm.Check {
		_, cs := f.Store().Checks(nil, "")
		m := make(map[string]*fsm.Check, len(cs))
		for _, c := range cs {
			m[c.ID] = c
		}
		return m
	}
	names := []string{"a", "b", "c"}
	randomCmd := func() []byte {
		inst := fmt.Sprintf("i-%d", rng.IntN(20))
		svc := fmt.Sprintf("svc-%d", rng.IntN(3))
		switch rng.IntN(5) {
		case 0, 1:
			var defs []fsm.CheckDefinition
			for _, n := range names {
				switch rng.IntN(3) {
				case 0:
					defs = append(defs, fsmtest.TTLCheck(n, ""))
				case 1:
					defs = append(defs, fsmtest.HTTPCheck(n, fmt.Sprintf("http://127.0.0.1:%d/", 8000+rng.IntN(2)), ""))
				}
			}
			return fsmtest.Register(t, inst, svc, fsmtest.WithChecks(defs...))
		case 2:
			status := []fsm.Health{fsm.Passing, fsm.Warning, fsm.Critical}[rng.IntN(3)]
			owner := []string{"", "s1", "s2"}[rng.IntN(3)]
			return fsmtest.CheckUpdate(t, owner, t0+int64(rng.IntN(100)), fsm.CheckUpdate{Check: fsm.CheckID(svc, inst, names[rng.IntN(3)]), Status: status})
		case 3:
			return fsmtest.AssignChecks(t, fsm.Assignment{Check: fsm.CheckID(svc, inst, names[rng.IntN(3)]), Owner: []string{"s1", "s2"}[rng.IntN(2)]})
		default:
			return fsmtest.Deregister(t, svc, inst)
		}
	}
	changes := 0
	for range 300 {
		before := snapshot()
		var logs []*raft.Log
		for range 1 + rng.IntN(6) {
			idx++
			if rng.IntN(4) == 0 {
				logs = append(logs, fsmtest.Log(idx, groupOf(randomCmd(), randomCmd(), randomCmd())))
			} else {
				logs = append(logs, fsmtest.Log(idx, randomCmd()))
			}
		}
		f.ApplyBatch(logs)
		after := snapshot()
		ids, complete := take(feed)
		if !complete {
			t.Fatal("the feed lost track")
		}
		var changed []string
		for id, c := range after {
			if before[id] != c {
				changed = append(changed, id)
			}
		}
		for id := range before {
			if after[id] == nil {
				changed = append(changed, id)
			}
		}
		changes += len(changed)
		for _, id := range changed {
			if _, ok := slices.BinarySearch(ids, id); !ok {
				t.Fatalf("check %s changed in a batch but the feed named only %v", id, ids)
			}
		}
	}
	if changes < 300 {
		t.Fatalf("only %d check changes in 300 batches: the generator is off", changes)
	}
}

// Reading a check without a watch set must not leave a watch channel on its
// node in the tree: the leader reads a check per TTL report and the runner
// one per probe, and 100,000 channels cost ~13 MB.
func TestCheckLookupsWithoutAWatchSetKeepNothing(t *testing.T) {
	f := newFSM(t)
	const n = 2000
	defs := make([]fsm.CheckDefinition, 10)
	for i := range defs {
		defs[i] = fsmtest.TTLCheck(fmt.Sprintf("c%d", i), "")
	}
	var ids []string
	for i := range n / len(defs) {
		id := fmt.Sprintf("i-%d", i)
		fsmtest.MustApply(t, f, uint64(i+1), fsmtest.Register(t, id, "web", fsmtest.WithChecks(defs...)))
		for _, d := range defs {
			ids = append(ids, fsm.CheckID("web", id, d.Name))
		}
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	for _, id := range ids {
		if f.Store().Check(nil, id) == nil {
			t.Fatalf("check %s not found", id)
		}
	}
	after := heap()
	runtime.KeepAlive(f)
	// A channel is 96 bytes: n of them would be 192 KB.
	if grew := int64(after) - int64(before); grew > n*24 {
		t.Fatalf("reading %d checks grew the heap by %d bytes: a watch channel per lookup?", n, grew)
	}
}
