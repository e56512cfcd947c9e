// Tests from an independent review of the instance sets (16141f3): no
// defect was found; these pin down what a regression of the sets would break
// (copy-on-write isolation, agreement of the sets with the instances table,
// watches, restore of odd streams). Each was seen to fail against a
// deliberately broken copy: no Clone of a changed set, a stale row left in
// the instances table by putInstance, removeInstance or the restore's builder,
// and an Instance read that watches nothing.
package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// --- helpers (internal package: fsmtest would be an import cycle) ---

const rvT0 = int64(1_700_000_000_000_000_000)

func rvEnc(t testing.TB, typ MessageType, body any) []byte {
	t.Helper()
	b, err := Encode(typ, body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rvLog(i uint64, b []byte) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: b}
}

type rvFSM struct {
	t     testing.TB
	f     *FSM
	index uint64
}

func newRV(t testing.TB) *rvFSM { return &rvFSM{t: t, f: New(nil)} }

// batch applies cmds as one batch and fails on a rejection.
func (r *rvFSM) batch(cmds ...[]byte) {
	r.t.Helper()
	var logs []*raft.Log
	for _, c := range cmds {
		r.index++
		logs = append(logs, rvLog(r.index, c))
	}
	for i, res := range r.f.ApplyBatch(logs) {
		if ar, ok := res.(ApplyResult); ok && ar.Err != nil {
			r.t.Fatalf("entry %d rejected: %v", logs[i].Index, ar.Err)
		}
	}
}

func rvReg(t testing.TB, svc, id, node, addr string, checks ...CheckDefinition) []byte {
	return rvEnc(t, RegisterType, &RegisterRequest{ID: id, Service: svc, Node: node, Address: addr, Port: 80, Checks: checks, Time: rvT0})
}

func rvDereg(t testing.TB, svc, id string) []byte {
	return rvEnc(t, DeregisterType, &DeregisterRequest{Service: svc, ID: id, Time: rvT0})
}

func rvMaint(t testing.TB, svc, id, mode string) []byte {
	return rvEnc(t, MaintenanceType, &MaintenanceRequest{Service: svc, ID: id, Mode: mode, Reason: "r", Deadline: rvT0 + 1e9, Time: rvT0})
}

func rvNode(t testing.TB, name string, st NodeStatus) []byte {
	return rvEnc(t, NodeUpdateType, &NodeUpdateRequest{Upserts: []NodeState{{Name: name, Address: name + ":1", Role: RoleServer, Status: st}}, Time: rvT0})
}

func rvWatchFired(ws memdb.WatchSet) bool {
	for ch := range ws {
		select {
		case <-ch:
			return true
		default:
		}
	}
	return false
}

// rvCheckConsistent checks, in one read transaction, that the sets table and
// the instances table agree: every set record with a Drain is the
// very row of the instances table, every row of the instances table is the
// record in its set, no set row is empty, and the node sets and the
// draining index list exactly those records.
func rvCheckConsistent(t testing.TB, s *Store, when string) {
	t.Helper()
	tx := s.read(nil)
	inSets := map[[2]string]*Instance{}
	eachSet(tx, func(ss *serviceSet) bool {
		if ss.set.Len() == 0 {
			t.Fatalf("%s: empty set row for %q", when, ss.Service)
		}
		ss.set.Ascend(func(i *Instance) bool {
			if i.idKey != keyOf(i.ID) {
				t.Fatalf("%s: %s/%s is in its set under the key %x", when, i.Service, i.ID, i.idKey[:])
			}
			if i.Service != ss.Service {
				t.Fatalf("%s: %s/%s in the set of %s", when, i.Service, i.ID, ss.Service)
			}
			inSets[[2]string{i.Service, i.ID}] = i
			return true
		})
		return true
	})
	it, err := tx.Get(tableInstances, "id")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[[2]string]*Instance{}
	for o := it.Next(); o != nil; o = it.Next() {
		i := o.(*Instance)
		k := [2]string{i.Service, i.ID}
		rows[k] = i
		if inSets[k] != i {
			t.Fatalf("%s: instances table row %s/%s (node %q drain %v) is not the record in its set (%p vs %p)", when, i.Service, i.ID, i.Node, i.Drain, i, inSets[k])
		}
		if !indexed(i) {
			t.Fatalf("%s: instances table holds %s/%s without node or drain", when, i.Service, i.ID)
		}
	}
	for k, i := range inSets {
		if indexed(i) && rows[k] != i {
			t.Fatalf("%s: %s/%s has node %q / drain %v but is not (the same) row of the instances table", when, k[0], k[1], i.Node, i.Drain)
		}
	}
	// node sets: no empty row, every member current and on that node
	nit, err := tx.Get(tableNodeSets, "id")
	if err != nil {
		t.Fatal(err)
	}
	for o := nit.Next(); o != nil; o = nit.Next() {
		ns := o.(*nodeSet)
		if ns.set.Len() == 0 {
			t.Fatalf("%s: empty node set row for %s", when, ns.Node)
		}
		ns.set.Ascend(func(i *Instance) bool {
			if i.Node != ns.Node || inSets[[2]string{i.Service, i.ID}] != i {
				t.Fatalf("%s: node set of %s holds a stale or foreign %s/%s (node %q)", when, ns.Node, i.Service, i.ID, i.Node)
			}
			return true
		})
	}
	// node and draining indexes
	nodes := map[string]bool{}
	for _, i := range inSets {
		if i.Node != "" {
			nodes[i.Node] = true
		}
	}
	for n := range nodes {
		_, on := s.NodeInstances(nil, n)
		want := 0
		for _, i := range inSets {
			if i.Node == n {
				want++
			}
		}
		if len(on) != want {
			t.Fatalf("%s: NodeInstances(%s) = %d, want %d", when, n, len(on), want)
		}
		for _, i := range on {
			if i.Node != n || inSets[[2]string{i.Service, i.ID}] != i {
				t.Fatalf("%s: NodeInstances(%s) lists a stale %s/%s", when, n, i.Service, i.ID)
			}
		}
	}
	dr := s.DrainingInstances(nil)
	want := 0
	for _, i := range inSets {
		if i.Drain != nil {
			want++
		}
	}
	if len(dr) != want {
		t.Fatalf("%s: DrainingInstances = %d, want %d", when, len(dr), want)
	}
	for _, i := range dr {
		if inSets[[2]string{i.Service, i.ID}] != i {
			t.Fatalf("%s: DrainingInstances lists a stale %s/%s", when, i.Service, i.ID)
		}
	}
	// service records count what the sets hold
	sit, _ := tx.Get(tableServices, "id")
	svcs := map[string]int{}
	for o := sit.Next(); o != nil; o = sit.Next() {
		svcs[o.(*Service).Name] = o.(*Service).Instances
	}
	per := map[string]int{}
	for k := range inSets {
		per[k[0]]++
	}
	for n, c := range per {
		if svcs[n] != c {
			t.Fatalf("%s: service %s counts %d, set holds %d", when, n, svcs[n], c)
		}
	}
	for n := range svcs {
		if per[n] == 0 {
			t.Fatalf("%s: service %s has a record and no set", when, n)
		}
	}
	rvCheckCheckSets(t, s, tx, inSets, when)
	rvCheckRowCache(t, s, when)
	rvCheckServiceLists(t, s, when)
}

// rvCheckCheckSets checks the check sets: no empty row, every check in the
// row of its service under its CheckID, of an instance that is in the sets,
// found by ID and among its instance's checks, and the list of all checks
// in ID order with each check once.
func rvCheckCheckSets(t testing.TB, s *Store, tx *memdb.Txn, inSets map[[2]string]*Instance, when string) {
	t.Helper()
	it, err := tx.Get(tableCheckSets, "id")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for o := it.Next(); o != nil; o = it.Next() {
		row := o.(*checkSetRow)
		if row.set.Len() == 0 {
			t.Fatalf("%s: empty check set row for %q", when, row.Service)
		}
		row.set.Ascend(func(c *Check) bool {
			n++
			if c.Service != row.Service || c.ID != CheckID(c.Service, c.Instance, c.Name) {
				t.Fatalf("%s: check %q (service %q, instance %q, name %q) in the check set of %q", when, c.ID, c.Service, c.Instance, c.Name, row.Service)
			}
			if inSets[[2]string{c.Service, c.Instance}] == nil {
				t.Fatalf("%s: check %q of %s/%s, which is not registered", when, c.ID, c.Service, c.Instance)
			}
			if c.CheckDefinition == nil || c.CheckDefinition.Target != "" || c.CheckDefinition.Name != c.Name {
				t.Fatalf("%s: check %q holds definition %+v (shared ones have no target)", when, c.ID, c.CheckDefinition)
			}
			if got := s.Check(nil, c.ID); got != c {
				t.Fatalf("%s: Check(%q) = %p, want the record in its set %p", when, c.ID, got, c)
			}
			if _, _, own := s.Instance(nil, c.Service, c.Instance); !slices.Contains(own, c) {
				t.Fatalf("%s: check %q is not among its instance's checks", when, c.ID)
			}
			return true
		})
	}
	_, all := s.Checks(nil, "")
	if len(all) != n || !slices.IsSortedFunc(all, func(a, b *Check) int { return strings.Compare(a.ID, b.ID) }) {
		t.Fatalf("%s: Checks lists %d checks (sorted by ID: %v), the sets hold %d", when, len(all), slices.IsSortedFunc(all, func(a, b *Check) int { return strings.Compare(a.ID, b.ID) }), n)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].ID == all[i].ID {
			t.Fatalf("%s: check %q listed twice", when, all[i].ID)
		}
	}
}

// rvCheckRowCache checks that every row the writer's cache remembers is
// the committed row of its table (rowCache): the very set of the sets and
// nodesets tables, the very record of the services table.
func rvCheckRowCache(t testing.TB, s *Store, when string) {
	t.Helper()
	st := s.cur.Load()
	tx := st.db.Txn(false)
	if len(st.rows.pending) != 0 {
		t.Fatalf("%s: %d rows pending after a commit", when, len(st.rows.pending))
	}
	for _, c := range []struct {
		t     setTable[*Instance]
		cache map[string]*instanceSet
	}{{serviceSets, st.rows.sets}, {nodeSets, st.rows.nodes}} {
		for k, set := range c.cache {
			if got := c.t.of(tx, nil, k); got != set {
				t.Fatalf("%s: the writer's cache holds a set of %s %q that is not the committed one (%p, committed %p)", when, c.t.name, k, set, got)
			}
		}
	}
	for k, set := range st.rows.checks {
		if got := checkSetOf(tx, nil, k); got != set {
			t.Fatalf("%s: the writer's cache holds a check set of %q that is not the committed one (%p, committed %p)", when, k, set, got)
		}
	}
	for k, svc := range st.rows.services {
		raw, _ := lookupUnique(tx, tableServices, "id", k)
		if got, _ := raw.(*Service); got != svc {
			t.Fatalf("%s: the writer's cache holds a record of service %q that is not the committed one (%+v, committed %+v)", when, k, svc, got)
		}
	}
}

// rvCheckServiceLists checks that every service record's cached list
// (Store.ServiceList) is its current set, then fills the cache of every
// record: a later batch that changed a set without writing a new record
// would leave a stale list in place, which the next check finds.
func rvCheckServiceLists(t testing.TB, s *Store, when string) {
	t.Helper()
	tx := s.read(nil)
	it, err := tx.Get(tableServices, "id")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	st := s.cur.Load()
	for o := it.Next(); o != nil; o = it.Next() {
		svc := o.(*Service)
		names = append(names, svc.Name)
		// The record holds its current set, and it is the record readers
		// find without a transaction.
		if svc.set != setOf(tx, nil, svc.Name) {
			t.Fatalf("%s: the record of service %q (at %d) does not hold its current set", when, svc.Name, svc.ModifyIndex)
		}
		if v, ok := st.services.Load(svc.Name); !ok || v.(*Service) != svc {
			t.Fatalf("%s: the published record of service %q is %v, not the committed one (at %d)", when, svc.Name, v, svc.ModifyIndex)
		}
		l := svc.list.Load()
		if l == nil {
			continue
		}
		set := setOf(tx, nil, svc.Name)
		if l.set != set || !slices.Equal(l.Instances, appendSet(nil, set)) {
			t.Fatalf("%s: the cached list of service %q (record at %d) is not its current set", when, svc.Name, svc.ModifyIndex)
		}
	}
	published := 0
	st.services.Range(func(k, _ any) bool {
		published++
		if !slices.Contains(names, k.(string)) {
			t.Fatalf("%s: service %q is published but has no record", when, k)
		}
		return true
	})
	if published != len(names) {
		t.Fatalf("%s: %d services published, %d records", when, published, len(names))
	}
	for _, name := range names {
		idx, l := s.ServiceList(nil, name)
		if l == nil || len(l.Instances) == 0 || idx == 0 {
			t.Fatalf("%s: service %q has a record but ServiceList gives %d, %v", when, name, idx, l)
		}
		if _, copied := s.ServiceInstances(nil, name); !slices.Equal(copied, l.Instances) {
			t.Fatalf("%s: ServiceInstances and ServiceList of %q differ", when, name)
		}
	}
}

// frozen is what a read transaction saw of every set, to check later that it
// did not change.
type frozen struct {
	tx     *memdb.Txn
	sets   map[string][]*Instance
	checks []*Check
	defs   []CheckDefinition // each check's definition as it was (shared ones must not change)
}

func freeze(s *Store) frozen {
	tx := s.read(nil)
	f := frozen{tx: tx, sets: map[string][]*Instance{}}
	eachSet(tx, func(ss *serviceSet) bool {
		f.sets[ss.Service] = appendSet(nil, ss.set)
		return true
	})
	eachCheck(tx, func(c *Check) bool {
		f.checks = append(f.checks, c)
		f.defs = append(f.defs, c.Definition())
		return true
	})
	return f
}

func (f frozen) verify(t testing.TB, when string) {
	t.Helper()
	var checks []*Check
	eachCheck(f.tx, func(c *Check) bool {
		checks = append(checks, c)
		return true
	})
	if !slices.Equal(checks, f.checks) {
		t.Fatalf("%s: the checks changed under a reader: %d, had %d", when, len(checks), len(f.checks))
	}
	for i, c := range checks {
		if d := c.Definition(); !d.Equal(&f.defs[i]) || len(d.Header) != len(f.defs[i].Header) {
			t.Fatalf("%s: the definition of check %q changed under a reader: %+v, had %+v", when, c.ID, d, f.defs[i])
		}
	}
	n := 0
	eachSet(f.tx, func(ss *serviceSet) bool {
		n++
		got := appendSet(nil, ss.set)
		want := f.sets[ss.Service]
		if len(got) != len(want) || ss.set.Len() != len(want) {
			t.Fatalf("%s: set of %s changed under a reader: %d items (Len %d), had %d", when, ss.Service, len(got), ss.set.Len(), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: set of %s changed under a reader at %d: %s, had %s", when, ss.Service, i, got[i].ID, want[i].ID)
			}
		}
		return true
	})
	if n != len(f.sets) {
		t.Fatalf("%s: reader sees %d sets, had %d", when, n, len(f.sets))
	}
}

// TestReviewSetsRandomConsistencyAndIsolation: random batches of every
// command that writes an instance; after each batch the tables agree, and
// every earlier read version is unchanged.
func TestReviewSetsRandomConsistencyAndIsolation(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := newRV(t)
			rng := rand.New(rand.NewPCG(seed, 99))
			var old []frozen
			nodeState := map[string]NodeStatus{}
			for batch := range 200 {
				var cmds [][]byte
				for range 1 + rng.IntN(60) {
					svc := fmt.Sprintf("s%d", rng.IntN(3))
					id := fmt.Sprintf("i%d", rng.IntN(80))
					node := ""
					if rng.IntN(2) == 0 {
						node = fmt.Sprintf("n%d", rng.IntN(3))
					}
					switch op := rng.IntN(20); {
					case op < 8:
						var checks []CheckDefinition
						if rng.IntN(2) == 0 {
							checks = append(checks, CheckDefinition{Name: "ttl", Type: CheckTTL, TTL: 1e9})
						}
						cmds = append(cmds, rvReg(t, svc, id, node, fmt.Sprintf("10.0.%d.%d", batch%250, rng.IntN(250)), checks...))
					case op < 12:
						cmds = append(cmds, rvDereg(t, svc, id))
					case op < 15:
						mode := []string{ModeNone, ModeDrain, ModeMaintenance}[rng.IntN(3)]
						b, _ := Encode(MaintenanceType, &MaintenanceRequest{Service: svc, ID: id, Mode: mode, Deadline: rvT0, Time: rvT0})
						cmds = append(cmds, b)
					case op < 17:
						n := fmt.Sprintf("n%d", rng.IntN(3))
						st := []NodeStatus{NodeAlive, NodeFailed, NodeLeft}[rng.IntN(3)]
						nodeState[n] = st
						cmds = append(cmds, rvNode(t, n, st))
					case op < 18:
						st := []Health{Passing, Critical, Warning}[rng.IntN(3)]
						cmds = append(cmds, rvEnc(t, CheckUpdateType, &CheckUpdateRequest{Updates: []CheckUpdate{{Check: CheckID(svc, id, "ttl"), Status: st}}, Time: rvT0}))
					case op < 19:
						cmds = append(cmds, rvEnc(t, MetricsType, &MetricsRequest{Updates: []InstanceMetrics{{Service: svc, Instance: id, Metrics: map[string]float64{"x": float64(rng.IntN(5))}}}}))
					default:
						// delete everything of svc, then re-add some, in one batch
						for k := range 80 {
							cmds = append(cmds, rvDereg(t, svc, fmt.Sprintf("i%d", k)))
						}
						for range rng.IntN(5) {
							cmds = append(cmds, rvReg(t, svc, fmt.Sprintf("i%d", rng.IntN(80)), node, "x"))
						}
					}
				}
				old = append(old, freeze(r.f.Store()))
				// MaintenanceType may be rejected (not found): apply without failing
				var logs []*raft.Log
				for _, c := range cmds {
					r.index++
					logs = append(logs, rvLog(r.index, c))
				}
				r.f.ApplyBatch(logs)
				rvCheckConsistent(t, r.f.Store(), fmt.Sprintf("seed %d batch %d", seed, batch))
				for i, fz := range old {
					fz.verify(t, fmt.Sprintf("seed %d batch %d, version %d", seed, batch, i))
				}
			}
			// restore round trip keeps consistency and the stream
			var a bytes.Buffer
			snap, _ := r.f.Snapshot()
			if err := snap.(*snapshot).write(&a); err != nil {
				t.Fatal(err)
			}
			g := New(nil)
			if err := g.Restore(nopCloser{bytes.NewReader(a.Bytes())}); err != nil {
				t.Fatal(err)
			}
			rvCheckConsistent(t, g.Store(), "restored")
			var b bytes.Buffer
			snap2, _ := g.Snapshot()
			if err := snap2.(*snapshot).write(&b); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Fatalf("stream after restore differs")
			}
			// The restored generation's writer starts a cache of its own.
			for batch := range 20 {
				var logs []*raft.Log
				for range 1 + rng.IntN(30) {
					r.index++
					svc := fmt.Sprintf("s%d", rng.IntN(3))
					id := fmt.Sprintf("i%d", rng.IntN(80))
					c := rvReg(t, svc, id, fmt.Sprintf("n%d", rng.IntN(3)), "y")
					if rng.IntN(2) == 0 {
						c = rvDereg(t, svc, id)
					}
					logs = append(logs, rvLog(r.index, c))
				}
				g.ApplyBatch(logs)
				rvCheckConsistent(t, g.Store(), fmt.Sprintf("restored, batch %d", batch))
			}
		})
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// --- watches ---

func TestReviewInstanceWatchServiceNotYetRegistered(t *testing.T) {
	for _, pre := range [][]string{nil, {"a"}, {"web"}, {"web2"}, {"we"}, {"a", "z"}} {
		t.Run(fmt.Sprint(pre), func(t *testing.T) {
			r := newRV(t)
			for _, p := range pre {
				r.batch(rvReg(t, p, "x", "", "1"))
			}
			ws := memdb.NewWatchSet()
			if _, inst, _ := r.f.Store().Instance(ws, "web", "web-1"); inst != nil {
				t.Fatal("present")
			}
			r.batch(rvReg(t, "web", "web-1", "", "1"))
			if !rvWatchFired(ws) {
				t.Fatalf("Instance watch of web/web-1 did not fire when it was registered")
			}
		})
	}
}

// TestReviewConcurrentReadersSnapshotsAndWrites: readers (list, lookup,
// summaries, snapshot stream, archive) run while batches register, drain,
// fail nodes and empty and refill services; each reader walks its version
// twice and must see the same thing both times (run with -race).
func TestReviewConcurrentReadersSnapshotsAndWrites(t *testing.T) {
	r := newRV(t)
	stop := make(chan struct{})
	errs := make(chan error, 16)
	done := make(chan struct{})
	const readers = 6
	for g := range readers {
		go func() {
			defer func() { done <- struct{}{} }()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				s := r.f.Store()
				switch g % 3 {
				case 0:
					fz := freeze(s)
					for i := 0; i < 3; i++ {
						ok := true
						eachSet(fz.tx, func(ss *serviceSet) bool {
							got := appendSet(nil, ss.set)
							want := fz.sets[ss.Service]
							if len(got) != len(want) {
								ok = false
							}
							for k := range got {
								if k < len(want) && got[k] != want[k] {
									ok = false
								}
								if k > 0 && got[k-1].ID >= got[k].ID {
									ok = false
								}
							}
							return true
						})
						if !ok {
							errs <- fmt.Errorf("reader %d: a version changed while read", g)
							return
						}
					}
				case 1:
					snap, _ := r.f.Snapshot()
					var a, b bytes.Buffer
					if err := snap.(*snapshot).write(&a); err != nil {
						errs <- err
						return
					}
					if err := snap.(*snapshot).write(&b); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(a.Bytes(), b.Bytes()) {
						errs <- fmt.Errorf("reader %d: a snapshot's stream changed while written", g)
						return
					}
				case 2:
					for _, svc := range []string{"s0", "s1", "s2"} {
						_, insts := s.ServiceInstances(nil, svc)
						for _, i := range insts {
							if _, one, _ := s.Instance(nil, svc, i.ID); one != nil && one.ID != i.ID {
								errs <- fmt.Errorf("looked up %s, got %s", i.ID, one.ID)
								return
							}
						}
						s.ServiceSummaries(nil, "", "", 0, nil)
						s.NodeInstances(nil, "n1")
						s.DrainingInstances(nil)
					}
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for batch := range 150 {
		var cmds [][]byte
		for range 1 + rng.IntN(100) {
			svc := fmt.Sprintf("s%d", rng.IntN(3))
			id := fmt.Sprintf("i%03d", rng.IntN(200))
			switch op := rng.IntN(10); {
			case op < 5:
				node := ""
				if rng.IntN(2) == 0 {
					node = "n1"
				}
				cmds = append(cmds, rvReg(t, svc, id, node, fmt.Sprint(batch)))
			case op < 8:
				cmds = append(cmds, rvDereg(t, svc, id))
			case op < 9:
				cmds = append(cmds, rvNode(t, "n1", []NodeStatus{NodeAlive, NodeFailed}[rng.IntN(2)]))
			default:
				for k := range 200 {
					cmds = append(cmds, rvDereg(t, svc, fmt.Sprintf("i%03d", k)))
				}
			}
		}
		r.batch(cmds...)
	}
	close(stop)
	for range readers {
		<-done
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// TestReviewWatchesFollowNodeAndDrainChanges: the node sets, the draining
// index (kept only for draining instances) and the per-service set row wake
// their readers for every change of what they return.
func TestReviewWatchesFollowNodeAndDrainChanges(t *testing.T) {
	type step struct {
		name  string
		read  func(s *Store, ws memdb.WatchSet)
		cmd   func(t testing.TB) []byte
		fires bool
	}
	onN1 := func(s *Store, ws memdb.WatchSet) { s.NodeInstances(ws, "n1") }
	draining := func(s *Store, ws memdb.WatchSet) { s.DrainingInstances(ws) }
	absent := func(s *Store, ws memdb.WatchSet) { s.Instance(ws, "web", "new") }
	for _, tc := range []step{
		{"an instance gains node n1", onN1, func(t testing.TB) []byte { return rvReg(t, "web", "plain", "n1", "1") }, true},
		{"an instance leaves node n1", onN1, func(t testing.TB) []byte { return rvReg(t, "web", "on1", "", "1") }, true},
		{"an instance moves from n1 to n2", onN1, func(t testing.TB) []byte { return rvReg(t, "web", "on1", "n2", "1") }, true},
		{"an instance on n1 is deregistered", onN1, func(t testing.TB) []byte { return rvDereg(t, "web", "on1") }, true},
		{"an instance on n1 changes", onN1, func(t testing.TB) []byte { return rvReg(t, "web", "on1", "n1", "2") }, true},
		{"n1 fails", onN1, func(t testing.TB) []byte { return rvNode(t, "n1", NodeFailed) }, true},
		{"an instance starts draining", draining, func(t testing.TB) []byte { return rvMaint(t, "web", "plain", ModeDrain) }, true},
		{"a draining instance stops", draining, func(t testing.TB) []byte { return rvMaint(t, "web", "drn", ModeNone) }, true},
		{"a draining instance is deregistered", draining, func(t testing.TB) []byte { return rvDereg(t, "web", "drn") }, true},
		{"a draining instance is re-registered with a node", draining, func(t testing.TB) []byte { return rvReg(t, "web", "drn", "n2", "1") }, true},
		{"an absent instance of an existing service is registered", absent, func(t testing.TB) []byte { return rvReg(t, "web", "new", "", "1") }, true},
		{"an absent instance is registered with a node", absent, func(t testing.TB) []byte { return rvReg(t, "web", "new", "n1", "1") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRV(t)
			r.batch(rvNode(t, "n1", NodeAlive), rvNode(t, "n2", NodeAlive),
				rvReg(t, "web", "plain", "", "1"), rvReg(t, "web", "on1", "n1", "1"),
				rvReg(t, "web", "drn", "", "1"), rvMaint(t, "web", "drn", ModeDrain))
			ws := memdb.NewWatchSet()
			tc.read(r.f.Store(), ws)
			r.batch(tc.cmd(t))
			if got := rvWatchFired(ws); got != tc.fires {
				t.Fatalf("fired = %v, want %v", got, tc.fires)
			}
			rvCheckConsistent(t, r.f.Store(), tc.name)
		})
	}
}

func rvStream(t *testing.T, recs []any) []byte {
	var out, rec []byte
	enc := codec.NewEncoderBytes(&rec, msgpackHandle)
	if err := enc.Encode(snapshotHeader{Version: SnapshotVersion, Index: 100}); err != nil {
		t.Fatal(err)
	}
	out = append(out, rec...)
	for _, r := range recs {
		switch o := r.(type) {
		case *Instance:
			out = appendInstance(mpUint(out, uint64(recordInstance)), o)
		case *Check:
			out = appendCheck(mpUint(out, uint64(recordCheck)), o)
		default:
			kind := map[string]byte{"*fsm.Service": recordService, "*fsm.Node": recordNode, "*fsm.indexEntry": recordIndex}[fmt.Sprintf("%T", r)]
			rec = rec[:0]
			enc.ResetBytes(&rec)
			if err := enc.Encode(r); err != nil {
				t.Fatal(err)
			}
			out = append(mpUint(out, uint64(kind)), rec...)
		}
	}
	return mpUint(out, uint64(recordEnd))
}

// TestReviewRestoreOddStreams: duplicate instance records (the last wins,
// also in the node and draining indexes), records out of order (a check
// before its instance, services after their instances, services out of
// order) and an instance whose service record is missing restore as they
// did before the sets (the same streams gave the same reads and the same
// re-written stream on 16141f3^), and the tables agree.
func TestReviewRestoreOddStreams(t *testing.T) {
	dr := &Drain{Deadline: 5, Since: 1}
	stream := rvStream(t, []any{
		&Check{ID: "web:i1:ttl", Service: "web", Instance: "i1", CheckDefinition: &CheckDefinition{Name: "ttl", Type: CheckTTL}, Status: Passing},
		&Instance{Service: "web", ID: "i1", Node: "n1", Status: Passing, ModifyIndex: 2},
		&Instance{Service: "web", ID: "i1", Status: Passing, ModifyIndex: 3},
		&Instance{Service: "web", ID: "i2", Status: Passing, ModifyIndex: 2},
		&Instance{Service: "web", ID: "i2", Node: "n2", Drain: dr, Status: Passing, ModifyIndex: 4},
		&Instance{Service: "web", ID: "i3", Node: "n1", Status: Passing, ModifyIndex: 2},
		&Instance{Service: "web", ID: "i3", Node: "n2", Status: Passing, ModifyIndex: 5},
		&Instance{Service: "a", ID: "i1", Drain: dr, Status: Passing, ModifyIndex: 3},
		&Instance{Service: "ghost", ID: "g1", Node: "n1", Status: Passing, ModifyIndex: 2},
		&Service{Name: "web", Instances: 3, CreateIndex: 1, ModifyIndex: 5},
		&Service{Name: "a", Instances: 1, CreateIndex: 1, ModifyIndex: 3},
		&Node{Name: "n1", Status: NodeAlive}, &Node{Name: "n2", Status: NodeAlive},
		&indexEntry{Key: tableInstances, Value: 5},
	})
	f := New(nil)
	if err := f.Restore(nopCloser{bytes.NewReader(stream)}); err != nil {
		t.Fatal(err)
	}
	s := f.Store()
	ids := func(insts []*Instance) (out []string) {
		for _, i := range insts {
			out = append(out, i.Service+"/"+i.ID)
		}
		return out
	}
	check := func(what string, got []*Instance, want ...string) {
		t.Helper()
		if g := fmt.Sprint(ids(got)); g != fmt.Sprint(want) {
			t.Errorf("%s = %s, want %v", what, g, want)
		}
	}
	_, all := s.Instances(nil)
	check("Instances", all, "a/i1", "ghost/g1", "web/i1", "web/i2", "web/i3")
	_, on1 := s.NodeInstances(nil, "n1")
	check("NodeInstances(n1)", on1, "ghost/g1")
	_, on2 := s.NodeInstances(nil, "n2")
	check("NodeInstances(n2)", on2, "web/i2", "web/i3")
	check("DrainingInstances", s.DrainingInstances(nil), "a/i1", "web/i2")
	_, ghost := s.ServiceInstances(nil, "ghost")
	check("ServiceInstances(ghost)", ghost)
	if _, g, _ := s.Instance(nil, "ghost", "g1"); g == nil {
		t.Errorf("Instance(ghost, g1) = nil")
	}
	if _, i1, checks := s.Instance(nil, "web", "i1"); i1 == nil || len(checks) != 1 {
		t.Errorf("Instance(web, i1) = %v with %d checks", i1, len(checks))
	}
	rvCheckConsistentSets(t, s)
	// failing n1 reaches ghost/g1 only, never the stale n1 record of web/i1
	r := &rvFSM{t: t, f: f, index: 100}
	r.batch(rvNode(t, "n1", NodeFailed))
	if _, i1, _ := s.Instance(nil, "web", "i1"); i1.NodeFailed {
		t.Errorf("web/i1 (no node after the duplicate) marked as on a failed node")
	}
	if _, g, _ := s.Instance(nil, "ghost", "g1"); !g.NodeFailed {
		t.Errorf("ghost/g1 not marked as on a failed node")
	}
	rvCheckConsistentSets(t, s)
}

// rvCheckConsistentSets is rvCheckConsistent without the service counts (a
// restored stream may lack service records).
func rvCheckConsistentSets(t testing.TB, s *Store) {
	t.Helper()
	tx := s.read(nil)
	inSets := map[[2]string]*Instance{}
	eachSet(tx, func(ss *serviceSet) bool {
		ss.set.Ascend(func(i *Instance) bool { inSets[[2]string{i.Service, i.ID}] = i; return true })
		return true
	})
	it, _ := tx.Get(tableInstances, "id")
	n := 0
	for o := it.Next(); o != nil; o = it.Next() {
		i := o.(*Instance)
		n++
		if inSets[[2]string{i.Service, i.ID}] != i || !indexed(i) {
			t.Fatalf("stale instances row %s/%s", i.Service, i.ID)
		}
	}
	want := 0
	for _, i := range inSets {
		if indexed(i) {
			want++
		}
	}
	if n != want {
		t.Fatalf("instances table holds %d rows, want %d", n, want)
	}
}
