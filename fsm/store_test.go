package fsm_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

func TestStoreIndexIsNeverZero(t *testing.T) {
	s := newFSM(t).Store()
	reads := map[string]func() uint64{
		"LastIndex":        s.LastIndex,
		"ServiceInstances": func() uint64 { i, _ := s.ServiceInstances(nil, "web"); return i },
		"Instance":         func() uint64 { i, _, _ := s.Instance(nil, "web", "web-1"); return i },
		"Instances":        func() uint64 { i, _ := s.Instances(nil); return i },
		"NodeInstances":    func() uint64 { i, _ := s.NodeInstances(nil, "s1"); return i },
		"Services":         func() uint64 { i, _, _ := s.Services(nil, "", "", 0); return i },
		"Checks":           func() uint64 { i, _ := s.Checks(nil, ""); return i },
		"service Checks":   func() uint64 { i, _ := s.Checks(nil, "web"); return i },
		"ChecksOwnedBy":    func() uint64 { i, _ := s.ChecksOwnedBy(nil, "s1"); return i },
		"Nodes":            func() uint64 { i, _ := s.Nodes(nil); return i },
		"Tokens":           func() uint64 { i, _ := s.Tokens(nil); return i },
		"ServiceHealth":    func() uint64 { i, _, _, _ := s.ServiceHealth(nil, "web"); return i },
	}
	for name, read := range reads {
		t.Run(name+" of an empty store is not 0", func(t *testing.T) {
			if got := read(); got == 0 {
				t.Errorf("index = 0")
			}
		})
	}
}

func TestReadIndexes(t *testing.T) {
	f := newFSM(t)
	applyAll(t, f, 1,
		fsmtest.Register(t, "a-1", "a"),
		fsmtest.Register(t, "b-1", "b"),
		fsmtest.Register(t, "a-2", "a"),
		fsmtest.Register(t, "b-2", "b"),
	)
	s := f.Store()
	t.Run("ServiceInstances is the service's ModifyIndex, not the latest write", func(t *testing.T) {
		if idx, insts := s.ServiceInstances(nil, "a"); idx != 3 || len(insts) != 2 {
			t.Errorf("ServiceInstances(a) = %d, %d instances; want 3, 2", idx, len(insts))
		}
		if idx, _ := s.ServiceInstances(nil, "b"); idx != 4 {
			t.Errorf("ServiceInstances(b) = %d, want 4", idx)
		}
	})
	t.Run("ServiceInstances returns the instances ordered by ID", func(t *testing.T) {
		_, insts := s.ServiceInstances(nil, "a")
		if len(insts) != 2 || insts[0].ID != "a-1" || insts[1].ID != "a-2" {
			t.Errorf("instances = %v", insts)
		}
	})
	t.Run("ServiceInstances after the last instance goes is the index of that deletion", func(t *testing.T) {
		applyAll(t, f, 5, fsmtest.Deregister(t, "a", "a-1"), fsmtest.Deregister(t, "a", "a-2"))
		idx, insts := s.ServiceInstances(nil, "a")
		if len(insts) != 0 || idx < 6 {
			t.Errorf("ServiceInstances(a) = %d, %v; want an index of at least 6 and no instances", idx, insts)
		}
		// A client that saw index 3 must see a larger one now, so that its
		// blocking query returns the empty result.
		if idx != 6 {
			t.Errorf("ServiceInstances(a) = %d, want 6, the deletion of its last instance", idx)
		}
	})
	t.Run("of a deleted service does not move for changes to other services", func(t *testing.T) {
		applyAll(t, f, 7, fsmtest.Register(t, "b-3", "b"), fsmtest.Deregister(t, "b", "b-1"))
		if idx, _ := s.ServiceInstances(nil, "a"); idx != 6 {
			t.Errorf("ServiceInstances(a) = %d, want still 6", idx)
		}
	})
	t.Run("of a service never registered is 1 whatever else changes", func(t *testing.T) {
		if idx, insts := s.ServiceInstances(nil, "never-registered"); idx != 1 || insts != nil {
			t.Errorf("ServiceInstances(never-registered) = %d, %v; want 1, none", idx, insts)
		}
	})
	t.Run("of a service that comes back is that of its new registration", func(t *testing.T) {
		applyAll(t, f, 9, fsmtest.Register(t, "a-3", "a"))
		if idx, insts := s.ServiceInstances(nil, "a"); idx != 9 || len(insts) != 1 {
			t.Errorf("ServiceInstances(a) = %d, %d instances; want 9, 1", idx, len(insts))
		}
		applyAll(t, f, 10, fsmtest.Deregister(t, "a", "a-3"))
		if idx, _ := s.ServiceInstances(nil, "a"); idx != 10 {
			t.Errorf("ServiceInstances(a) after a second deletion = %d, want 10", idx)
		}
	})
	t.Run("ServiceInstances and Instance keep apart services whose names extend each other", func(t *testing.T) {
		g := newFSM(t)
		applyAll(t, g, 1,
			fsmtest.Register(t, "x", "web", fsmtest.WithChecks(fsmtest.TTLCheck("ttl", ""))),
			fsmtest.Register(t, "x", "web-a", fsmtest.WithChecks(fsmtest.TTLCheck("ttl", ""))),
			fsmtest.Register(t, "y", "we"),
		)
		for svc, want := range map[string]uint64{"we": 3, "web": 1, "web-a": 2} {
			_, insts := g.Store().ServiceInstances(nil, svc)
			if len(insts) != 1 || insts[0].Service != svc || insts[0].CreateIndex != want {
				t.Errorf("ServiceInstances(%s) = %v, want only its instance of index %d", svc, insts, want)
			}
		}
		_, inst, checks := g.Store().Instance(nil, "web", "x")
		if inst == nil || inst.Service != "web" || len(checks) != 1 || checks[0].ID != "web:x:ttl" {
			t.Errorf("Instance(web, x) = %v with checks %v, want web's x with web:x:ttl only", inst, checks)
		}
		if _, inst, _ := g.Store().Instance(nil, "we", "x"); inst != nil {
			t.Errorf("Instance(we, x) = %+v, want none", inst.Clone())
		}
	})
	t.Run("Instance is the highest index of the instance and its checks", func(t *testing.T) {
		g := checkedFSM(t)
		fsmtest.MustApply(t, g, 7, ttlUpdate(t, t0+1, fsm.Passing, ""))
		fsmtest.MustApply(t, g, 9, fsmtest.AssignChecks(t, fsm.Assignment{Check: httpID, Owner: "s2"}))
		if idx, _, _ := g.Store().Instance(nil, "web", "web-1"); idx != 9 {
			t.Errorf("Instance index = %d, want 9 (the reassigned check)", idx)
		}
		if idx, inst, _ := g.Store().Instance(nil, "web", "web-9"); inst != nil || idx != 7 {
			t.Errorf("Instance(missing) = %d, %v; want the instances table index, 7", idx, inst)
		}
	})
}

// TestWatchSets checks that a read's watch set fires for the changes that
// concern it and only those. Watch channels are closed inside the commit of
// the write, so checking them right after Apply returns is exact; see fired.
func TestWatchSets(t *testing.T) {
	setup := func(t testing.TB) *fsm.FSM {
		f := newFSM(t)
		applyAll(t, f, 1,
			fsmtest.NodeUpdate(t, t0, fsmtest.Server("s1", fsm.NodeAlive)),
			fsmtest.Register(t, "a-1", "a", fsmtest.WithNode("s1"), fsmtest.WithChecks(fsmtest.TTLCheck("ttl", ""))),
			fsmtest.Register(t, "b-1", "b", fsmtest.WithChecks(fsmtest.TTLCheck("ttl", ""))),
		)
		return f
	}
	type read func(s *fsm.Store, ws memdb.WatchSet)
	serviceA := func(s *fsm.Store, ws memdb.WatchSet) { s.ServiceInstances(ws, "a") }
	instanceA := func(s *fsm.Store, ws memdb.WatchSet) { s.Instance(ws, "a", "a-1") }
	services := func(s *fsm.Store, ws memdb.WatchSet) { s.Services(ws, "", "", 0) }
	missing := func(s *fsm.Store, ws memdb.WatchSet) { s.ServiceInstances(ws, "c") }
	tests := []struct {
		name  string
		read  read
		cmd   func(t testing.TB) []byte
		fires bool
	}{
		{"a reader of service a is woken by a new instance of a", serviceA,
			func(t testing.TB) []byte { return fsmtest.Register(t, "a-2", "a") }, true},
		{"a reader of service a is woken by a re-registration in a", serviceA,
			func(t testing.TB) []byte {
				return fsmtest.Register(t, "a-1", "a", fsmtest.WithNode("s1"), fsmtest.WithAddress("10.0.0.2", 80), fsmtest.WithChecks(fsmtest.TTLCheck("ttl", "")))
			}, true},
		{"a reader of service a is woken by a check update in a", serviceA,
			func(t testing.TB) []byte { return ttlUpdateOf(t, "a", "a-1", fsm.Passing) }, true},
		{"a reader of service a is woken by maintenance in a", serviceA,
			func(t testing.TB) []byte { return fsmtest.Maintenance(t, "a", "a-1", fsm.ModeDrain) }, true},
		{"a reader of service a is woken by its node failing", serviceA,
			func(t testing.TB) []byte { return fsmtest.NodeUpdate(t, t0, fsmtest.Server("s1", fsm.NodeFailed)) }, true},
		{"a reader of service a is woken when a's last instance goes", serviceA,
			func(t testing.TB) []byte { return fsmtest.Deregister(t, "a", "a-1") }, true},
		{"a reader of service a is not woken by a new instance of b", serviceA,
			func(t testing.TB) []byte { return fsmtest.Register(t, "b-2", "b") }, false},
		{"a reader of service a is not woken by a new check output alone", serviceA,
			func(t testing.TB) []byte {
				return fsmtest.CheckUpdate(t, "", t0+2, fsm.CheckUpdate{Check: "a:a-1:ttl", Status: fsm.Critical, Output: "still down"})
			}, false},
		{"a reader of the service list is not woken by a new check output alone", services,
			func(t testing.TB) []byte {
				return fsmtest.CheckUpdate(t, "", t0+2, fsm.CheckUpdate{Check: "a:a-1:ttl", Status: fsm.Critical, Output: "still down"})
			}, false},
		{"a reader of an instance is woken by a new output of its check", instanceA,
			func(t testing.TB) []byte {
				return fsmtest.CheckUpdate(t, "", t0+2, fsm.CheckUpdate{Check: "a:a-1:ttl", Status: fsm.Critical, Output: "still down"})
			}, true},
		{"a reader of service a is not woken by a check update in b", serviceA,
			func(t testing.TB) []byte { return ttlUpdateOf(t, "b", "b-1", fsm.Passing) }, false},
		{"a reader of service a is not woken when b goes", serviceA,
			func(t testing.TB) []byte { return fsmtest.Deregister(t, "b", "b-1") }, false},
		{"a reader of service a is not woken by a token", serviceA,
			func(t testing.TB) []byte { return fsmtest.TokenSet(t, fsm.Token{Accessor: "x", SecretHash: "y"}) }, false},
		{"a reader of an instance is woken by a check reassignment", instanceA,
			func(t testing.TB) []byte {
				return fsmtest.AssignChecks(t, fsm.Assignment{Check: "a:a-1:ttl", Owner: "s1"})
			}, true},
		{"a reader of an instance is not woken by the same ID registered in another service", instanceA,
			func(t testing.TB) []byte {
				return fsmtest.Register(t, "a-1", "b", fsmtest.WithChecks(fsmtest.TTLCheck("ttl", "")))
			}, false},
		{"a reader of an instance is not woken by a check of the same ID in another service", instanceA,
			func(t testing.TB) []byte { return ttlUpdateOf(t, "b", "b-1", fsm.Passing) }, false},
		{"a reader of an instance is not woken by another instance", instanceA,
			func(t testing.TB) []byte { return fsmtest.Register(t, "b-1", "b", fsmtest.WithAddress("10.0.0.9", 1)) }, false},
		{"a reader of the service list is woken by a new service", services,
			func(t testing.TB) []byte { return fsmtest.Register(t, "c-1", "c") }, true},
		{"a reader of a service that does not exist is woken when it appears", missing,
			func(t testing.TB) []byte { return fsmtest.Register(t, "c-1", "c") }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			ws := memdb.NewWatchSet()
			tc.read(f.Store(), ws)
			if fired(ws) {
				t.Fatalf("watch set fired before any change")
			}
			fsmtest.MustApply(t, f, f.AppliedIndex()+1, tc.cmd(t))
			if got := fired(ws); got != tc.fires {
				t.Errorf("fired = %t, want %t", got, tc.fires)
			}
		})
	}

	t.Run("a reader blocked on a watch set is woken by a change it watches", func(t *testing.T) {
		f := setup(t)
		ws := memdb.NewWatchSet()
		idx, _ := f.Store().ServiceInstances(ws, "a")
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done <- ws.WatchCtx(ctx)
		}()
		fsmtest.MustApply(t, f, 4, fsmtest.Register(t, "b-2", "b"))
		fsmtest.MustApply(t, f, 5, fsmtest.Register(t, "a-2", "a"))
		if err := <-done; err != nil {
			t.Fatalf("reader not woken: %v", err)
		}
		if got, _ := f.Store().ServiceInstances(nil, "a"); got <= idx {
			t.Errorf("index after wake-up %d, want more than %d", got, idx)
		}
	})
	t.Run("a reader blocked on a watch set stays blocked through unrelated changes", func(t *testing.T) {
		f := setup(t)
		ws := memdb.NewWatchSet()
		f.Store().ServiceInstances(ws, "a")
		for i := range 20 {
			fsmtest.MustApply(t, f, uint64(4+i), fsmtest.Register(t, fmt.Sprintf("b-%d", i+2), "b"))
		}
		// The channels are closed synchronously on commit, so this bounded
		// wait is not how we synchronise: it exercises WatchSet.Watch itself,
		// and 50ms is ample for a select over already-closed channels.
		if timedOut := ws.Watch(time.After(50 * time.Millisecond)); !timedOut {
			t.Errorf("reader of a woken by changes to b")
		}
	})
}

func ttlUpdateOf(t testing.TB, service, inst string, s fsm.Health) []byte {
	t.Helper()
	return fsmtest.CheckUpdate(t, "", t0+1, fsm.CheckUpdate{Check: fsm.CheckID(service, inst, "ttl"), Status: s})
}

func TestServicesPagination(t *testing.T) {
	names := []string{"api", "web", "web-a", "web-b", "web.c", "webz", "worker", "x"}
	f := newFSM(t)
	var cmds [][]byte
	for _, n := range slices.Backward(names) {
		cmds = append(cmds, fsmtest.Register(t, n+"-1", n))
	}
	applyAll(t, f, 1, cmds...)
	s := f.Store()

	for _, prefix := range []string{"", "w", "web", "web-", "x", "zzz"} {
		var want []string
		for _, n := range names {
			if len(n) >= len(prefix) && n[:len(prefix)] == prefix {
				want = append(want, n)
			}
		}
		for _, limit := range []int{0, 1, 2, 3, len(names)} {
			t.Run(fmt.Sprintf("pages of %d with prefix %q walk every service once", limit, prefix), func(t *testing.T) {
				var got []string
				after := ""
				for page := 0; ; page++ {
					if page > len(names)+1 {
						t.Fatalf("pagination does not end: %v", got)
					}
					idx, svcs, more := s.Services(nil, prefix, after, limit)
					if idx != uint64(len(names)) {
						t.Errorf("index = %d, want %d", idx, len(names))
					}
					if limit > 0 && len(svcs) > limit {
						t.Fatalf("page of %d, limit %d", len(svcs), limit)
					}
					for _, sv := range svcs {
						got = append(got, sv.Name)
					}
					if !more {
						break
					}
					if len(svcs) == 0 {
						t.Fatalf("empty page says more follow")
					}
					after = svcs[len(svcs)-1].Name
				}
				if !slices.Equal(got, want) {
					t.Errorf("walked %q, want %q", got, want)
				}
			})
		}
	}
	t.Run("a page that ends exactly at the last match says no more follow", func(t *testing.T) {
		_, svcs, more := s.Services(nil, "web-", "", 2)
		if len(svcs) != 2 || more {
			t.Errorf("got %d services, more = %t; want 2, false", len(svcs), more)
		}
	})
	t.Run("after a name before the prefix starts at the prefix", func(t *testing.T) {
		_, svcs, _ := s.Services(nil, "web", "api", 1)
		if len(svcs) != 1 || svcs[0].Name != "web" {
			t.Errorf("got %v, want web", svcs)
		}
	})
	t.Run("after a name past the prefix returns nothing", func(t *testing.T) {
		if _, svcs, more := s.Services(nil, "web", "x", 0); len(svcs) != 0 || more {
			t.Errorf("got %v, %t; want nothing", svcs, more)
		}
	})
}

func TestApplyBatch(t *testing.T) {
	f := newFSM(t)
	const n = 200
	var logs []*raft.Log
	for i := range n {
		idx := uint64(10 + 2*i) // gaps, as Raft's own entries leave
		var data []byte
		switch {
		case i == 50:
			// A rejected command in the middle of the batch: i-0 was
			// registered at index 10.
			data = fsmtest.Deregister(t, "s", "i-0", func(r *fsm.DeregisterRequest) { r.IfIndex = 1 })
		case i%10 == 9:
			data = fsmtest.Deregister(t, "s", fmt.Sprintf("i-%d", i-1))
		default:
			data = fsmtest.Register(t, fmt.Sprintf("i-%d", i), "s")
		}
		logs = append(logs, fsmtest.Log(idx, data))
	}
	logs = append(logs, &raft.Log{Index: 10 + 2*n, Type: raft.LogConfiguration})
	out := f.ApplyBatch(logs)
	if len(out) != len(logs) {
		t.Fatalf("%d results for %d logs", len(out), len(logs))
	}
	for i, r := range out[:n] {
		res, ok := r.(fsm.ApplyResult)
		if !ok {
			t.Fatalf("result %d is %T", i, r)
		}
		if res.Index != logs[i].Index {
			t.Errorf("result %d has index %d, want %d", i, res.Index, logs[i].Index)
		}
		if wantErr := i == 50; (res.Err != nil) != wantErr {
			t.Errorf("result %d: error %v", i, res.Err)
		}
		if i == 50 && !errors.Is(res.Err, fsm.ErrConflict) {
			t.Errorf("result 50: %v, want a conflict", res.Err)
		}
	}
	if got, want := f.AppliedIndex(), logs[len(logs)-1].Index; got != want {
		t.Errorf("AppliedIndex = %d, want %d", got, want)
	}
	_, insts := f.Store().ServiceInstances(nil, "s")
	if want := n - 1 - 2*(n/10); len(insts) != want {
		t.Errorf("%d instances, want %d", len(insts), want)
	}
	for _, inst := range insts {
		var i int
		fmt.Sscanf(inst.ID, "i-%d", &i)
		if want := uint64(10 + 2*i); inst.CreateIndex != want || inst.ModifyIndex != want {
			t.Errorf("%s at %d/%d, want %d", inst.ID, inst.CreateIndex, inst.ModifyIndex, want)
		}
	}
	if svc := service(f, "s"); svc.Instances != len(insts) || svc.ModifyIndex != logs[n-1].Index {
		t.Errorf("service = %+v, want %d instances modified at %d", svc, len(insts), logs[n-1].Index)
	}
	if service(f, "other") != nil {
		t.Errorf("the rejected command created its service")
	}
}

func TestApplyBatchEqualsOneByOne(t *testing.T) {
	var data [][]byte
	data = append(data,
		fsmtest.NodeUpdate(t, t0, fsmtest.Server("s1", fsm.NodeAlive), fsmtest.Server("s2", fsm.NodeAlive)),
		fsmtest.Register(t, "web-1", "web", fsmtest.WithNode("s1"), fsmtest.WithChecks(fsmtest.HTTPCheck("http", "http://x/", ""), fsmtest.TTLCheck("ttl", ""))),
		fsmtest.Register(t, "web-2", "web", fsmtest.WithNode("s2")),
		fsmtest.CheckUpdate(t, "", t0+1, fsm.CheckUpdate{Check: ttlID, Status: fsm.Passing}),
		fsmtest.NodeUpdate(t, t0+2, fsmtest.Server("s2", fsm.NodeFailed)),
		fsmtest.Maintenance(t, "web", "web-1", fsm.ModeMaintenance),
		fsmtest.Deregister(t, "web", "web-2"),
		fsmtest.Metrics(t, t0+3, fsm.InstanceMetrics{Service: "web", Instance: "web-1", Metrics: map[string]float64{"rps": 10}}),
		fsmtest.TokenSet(t, fsm.Token{Accessor: "a", SecretHash: "h"}),
	)
	data = append(data,
		// Entries on sets committed by an earlier batch when the store is
		// split below: looked up, then changed, in one batch.
		fsmtest.Register(t, "web-1", "web", fsmtest.WithNode("s2"), fsmtest.WithAddress("127.0.0.9", 81)),
		fsmtest.Register(t, "web-3", "web", fsmtest.WithNode("s1")),
		fsmtest.NodeUpdate(t, t0+4, fsmtest.Server("s1", fsm.NodeFailed)),
		fsmtest.Register(t, "api-1", "api", fsmtest.WithNode("s1")),
		fsmtest.Deregister(t, "web", "web-3"),
		fsmtest.Deregister(t, "web", "web-1"),
		fsmtest.Register(t, "web-4", "web"),
	)
	var logs []*raft.Log
	one := newFSM(t)
	for i, d := range data {
		fsmtest.MustApply(t, one, uint64(i+1), d)
		logs = append(logs, fsmtest.Log(uint64(i+1), d))
	}
	want := dumpStore(one.Store())
	// The whole log as one batch, and as two batches split at every entry.
	for split := 0; split < len(logs); split++ {
		batch := newFSM(t)
		if split > 0 {
			batch.ApplyBatch(logs[:split])
		}
		batch.ApplyBatch(logs[split:])
		assertSameStore(t, want, dumpStore(batch.Store()))
	}
}

func TestWaitForIndex(t *testing.T) {
	t.Run("returns at once for an index already applied", func(t *testing.T) {
		f := newFSM(t)
		applyAll(t, f, 1, fsmtest.Register(t, "web-1", "web"))
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // it must not even look at ctx
		if err := f.WaitForIndex(ctx, 1); err != nil {
			t.Errorf("WaitForIndex = %v", err)
		}
	})
	t.Run("returns when a later batch passes the index", func(t *testing.T) {
		f := newFSM(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- f.WaitForIndex(ctx, 5) }()
		fsmtest.MustApply(t, f, 3, fsmtest.Register(t, "web-1", "web"))
		f.ApplyBatch([]*raft.Log{
			fsmtest.Log(4, fsmtest.Register(t, "web-2", "web")),
			fsmtest.Log(7, fsmtest.Register(t, "web-3", "web")),
		})
		if err := <-done; err != nil {
			t.Fatalf("WaitForIndex = %v, want nil", err)
		}
	})
	t.Run("returns when a restore passes the index", func(t *testing.T) {
		src := newFSM(t)
		applyAll(t, src, 1, fsmtest.Register(t, "web-1", "web"), fsmtest.Register(t, "web-2", "web"))
		snap := persist(t, src)
		f := newFSM(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- f.WaitForIndex(ctx, 2) }()
		restore(t, f, snap)
		if err := <-done; err != nil {
			t.Fatalf("WaitForIndex = %v, want nil", err)
		}
	})
	t.Run("gives up when its context ends", func(t *testing.T) {
		f := newFSM(t)
		applyAll(t, f, 1, fsmtest.Register(t, "web-1", "web"))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := f.WaitForIndex(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitForIndex = %v, want %v", err, context.DeadlineExceeded)
		}
	})
}

// TestConcurrentReads runs blocking readers against a stream of writes, for
// the race detector, and checks that every reader sees the final state.
func TestConcurrentReads(t *testing.T) {
	f := newFSM(t)
	const writes = 300
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := fmt.Sprintf("s%d", r%2)
			var last uint64
			for {
				ws := memdb.NewWatchSet()
				idx, insts := f.Store().ServiceInstances(ws, svc)
				if idx < last {
					errs <- fmt.Errorf("reader %d: index went back from %d to %d", r, last, idx)
					return
				}
				last = idx
				for _, i := range insts {
					_ = i.Encoded(func(i *fsm.Instance) []byte { return []byte(i.ID) })
				}
				if len(insts) == writes/2 {
					return
				}
				if err := ws.WatchCtx(ctx); err != nil {
					errs <- fmt.Errorf("reader %d: stuck at %d instances: %w", r, len(insts), err)
					return
				}
			}
		}()
	}
	for i := range writes {
		fsmtest.MustApply(t, f, uint64(i+1), fsmtest.Register(t, fmt.Sprintf("i-%d", i), fmt.Sprintf("s%d", i%2)))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestServiceSummariesIndex(t *testing.T) {
	f := newFSM(t)
	applyAll(t, f, 1,
		fsmtest.Register(t, "a-1", "a"), // 1
		fsmtest.Register(t, "b-1", "b"), // 2
		fsmtest.Register(t, "c-1", "c"), // 3
		fsmtest.Register(t, "d-1", "d"), // 4
		fsmtest.Register(t, "e-1", "e"), // 5
	)
	s := f.Store()
	page := func(after string) (uint64, []string, bool) {
		idx, sums, more := s.ServiceSummaries(nil, "", after, 2, nil)
		var names []string
		for _, sum := range sums {
			names = append(names, sum.Name)
		}
		return idx, names, more
	}
	t.Run("is the highest index among the services the page covers", func(t *testing.T) {
		idx, names, more := page("")
		// a and b, plus c, which shows that more follow.
		if idx != 3 || !slices.Equal(names, []string{"a", "b"}) || !more {
			t.Errorf("page = %d %v %t, want 3 [a b] true", idx, names, more)
		}
		if idx, _, _ := page("b"); idx != 5 {
			t.Errorf("second page index = %d, want 5", idx)
		}
	})
	t.Run("does not move for a change to a service on a later page", func(t *testing.T) {
		applyAll(t, f, 6, fsmtest.Register(t, "e-2", "e"), fsmtest.Register(t, "z-1", "z"))
		if idx, _, _ := page(""); idx != 3 {
			t.Errorf("first page index = %d, want still 3", idx)
		}
	})
	t.Run("moves when a service of the page is deleted", func(t *testing.T) {
		applyAll(t, f, 8, fsmtest.Deregister(t, "b", "b-1"))
		idx, names, _ := page("")
		if idx != 8 || !slices.Equal(names, []string{"a", "c"}) {
			t.Errorf("first page = %d %v, want 8 [a c]", idx, names)
		}
	})
	t.Run("of a prefix with no services left is its last deletion", func(t *testing.T) {
		applyAll(t, f, 9, fsmtest.Deregister(t, "z", "z-1"))
		if idx, sums, _ := s.ServiceSummaries(nil, "z", "", 0, nil); idx != 9 || len(sums) != 0 {
			t.Errorf("ServiceSummaries(z) = %d %v, want 9 and nothing", idx, sums)
		}
		if idx, _, _ := s.ServiceSummaries(nil, "y", "", 0, nil); idx != 1 {
			t.Errorf("ServiceSummaries(y) = %d, want 1", idx)
		}
	})
}

func TestServiceHealthIndexFollowsChecksAndNodesAndNeverGoesBack(t *testing.T) {
	f := newFSM(t)
	s := f.Store()
	fsmtest.MustApply(t, f, 1, fsmtest.NodeUpdate(t, 1, fsmtest.Server("s1", fsm.NodeAlive)))
	fsmtest.MustApply(t, f, 2, fsmtest.Register(t, "web-1", "web", fsmtest.WithNode("s1"), fsmtest.WithChecks(fsmtest.TTLCheck("ttl", fsm.Critical))))
	fsmtest.MustApply(t, f, 3, fsmtest.Register(t, "db-1", "db"))
	idx, insts, checks, nodes := s.ServiceHealth(nil, "web")
	if idx != 2 || len(insts) != 1 || len(checks) != 1 || len(nodes) != 1 {
		t.Fatalf("index %d, %d instances, %d checks, %d nodes", idx, len(insts), len(checks), len(nodes))
	}
	// An output-only change moves the check, not the service: the index
	// still moves, since the answer shows the output.
	ws := memdb.NewWatchSet()
	s.ServiceHealth(ws, "web")
	fsmtest.MustApply(t, f, 4, fsmtest.CheckUpdate(t, "", 1, fsm.CheckUpdate{Check: fsm.CheckID("web", "web-1", "ttl"), Status: fsm.Critical, Output: "x"}))
	if ws.Watch(time.After(5 * time.Second)) {
		t.Fatal("an output change did not fire the watch")
	}
	if idx, _, _, _ := s.ServiceHealth(nil, "web"); idx != 4 {
		t.Fatalf("after output change: %d", idx)
	}
	// Another service's change does not move it; a node change does.
	fsmtest.MustApply(t, f, 5, fsmtest.Register(t, "db-2", "db"))
	if idx, _, _, _ := s.ServiceHealth(nil, "web"); idx != 4 {
		t.Fatalf("after another service changed: %d", idx)
	}
	fsmtest.MustApply(t, f, 6, fsmtest.NodeUpdate(t, 2, fsmtest.Server("s1", fsm.NodeFailed)))
	if idx, _, _, _ := s.ServiceHealth(nil, "web"); idx != 6 {
		t.Fatalf("after node failed: %d", idx)
	}
	fsmtest.MustApply(t, f, 7, fsmtest.Deregister(t, "web", "web-1"))
	if idx, insts, checks, _ := s.ServiceHealth(nil, "web"); idx != 7 || len(insts) != 0 || len(checks) != 0 {
		t.Fatalf("after deregister: %d %d %d", idx, len(insts), len(checks))
	}
}

// CurrentInstance answers as Instance does, without the index: the same
// record and checks for an instance that is there, nil for one that is not
// (another ID of the service, another service, an empty key).
func TestCurrentInstanceAnswersAsInstance(t *testing.T) {
	f := newFSM(t)
	applyAll(t, f, 1,
		fsmtest.Register(t, "web-1", "web", fsmtest.WithChecks(fsmtest.TTLCheck("ttl", ""))),
		fsmtest.Register(t, "web-2", "web"),
	)
	s := f.Store()
	for _, k := range [][2]string{{"web", "web-1"}, {"web", "web-2"}, {"web", "web-3"}, {"api", "web-1"}, {"", "web-1"}, {"web", ""}} {
		_, want, wantChecks := s.Instance(nil, k[0], k[1])
		got, gotChecks := s.CurrentInstance(k[0], k[1])
		if got != want || len(gotChecks) != len(wantChecks) {
			t.Fatalf("CurrentInstance(%q, %q) = %v with %d checks; Instance has %v with %d", k[0], k[1], got, len(gotChecks), want, len(wantChecks))
		}
		for i := range gotChecks {
			if gotChecks[i] != wantChecks[i] {
				t.Fatalf("CurrentInstance(%q, %q): check %d differs", k[0], k[1], i)
			}
		}
	}
	if got, checks := s.CurrentInstance("web", "web-1"); got == nil || len(checks) != 1 {
		t.Fatalf("CurrentInstance(web, web-1) = %v with %d checks, want the instance with its one check", got, len(checks))
	}
}

// CurrentInstance never goes back behind an apply that returned: while a
// writer registers web-1, web-2, ... and deregisters web-(k-2) after web-k,
// a reader finds the instance the writer last reported registered (unless
// it was deregistered before the read ended) and never one it reported
// deregistered, whether it asks through the committed records (no
// transaction) or falls back to go-memdb.
func TestCurrentInstanceNeverGoesBack(t *testing.T) {
	f := newFSM(t)
	s := f.Store()
	fsmtest.MustApply(t, f, 1, fsmtest.Register(t, "web-0", "web"))
	// registered and deregistered: the last k whose apply returned;
	// deregistering: the last k whose deregistration began (a read may see
	// it applied before deregistered says so).
	var registered, deregistered, deregistering atomic.Int64
	registered.Store(0)
	deregistered.Store(-1)
	deregistering.Store(-1)
	const n = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		idx := uint64(2)
		apply := func(cmd []byte) bool {
			if res := fsmtest.Apply(t, f, idx, cmd); res.Err != nil {
				t.Errorf("apply at %d: %v", idx, res.Err)
				return false
			}
			idx++
			return true
		}
		for k := 1; k <= n; k++ {
			if !apply(fsmtest.Register(t, fmt.Sprintf("web-%d", k), "web")) {
				return
			}
			registered.Store(int64(k))
			if k >= 2 {
				deregistering.Store(int64(k - 2))
				if !apply(fsmtest.Deregister(t, "web", fmt.Sprintf("web-%d", k-2))) {
					return
				}
				deregistered.Store(int64(k - 2))
			}
		}
	}()
	for reads := 0; ; reads++ {
		select {
		case <-done:
			if reads == 0 {
				t.Fatal("no read ran while the writer did")
			}
			return
		default:
		}
		d, r := deregistered.Load(), registered.Load()
		// web-r may be deregistered during the read: only a miss that
		// ended before its deregistration began is wrong.
		if inst, _ := s.CurrentInstance("web", fmt.Sprintf("web-%d", r)); inst == nil && deregistering.Load() < r {
			t.Errorf("web-%d, registered before the read, not found", r)
			<-done
			return
		}
		if d >= 0 {
			if inst, _ := s.CurrentInstance("web", fmt.Sprintf("web-%d", d)); inst != nil {
				t.Errorf("web-%d, deregistered before the read, found", d)
				<-done
				return
			}
		}
	}
}
