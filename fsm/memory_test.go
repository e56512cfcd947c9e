package fsm_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// benchRegistrations returns n registrations shaped like those of
// scripts/bench's memory phase: 100 services, two tags, one meta key, a
// version, no checks.
func benchRegistrations(tb testing.TB, n int) [][]byte {
	return benchRegistrationsWith(tb, n, false)
}

// benchRegistrationsWith is benchRegistrations; withCheck adds one HTTP
// check to every instance, probing its own address.
func benchRegistrationsWith(tb testing.TB, n int, withCheck bool) [][]byte {
	return benchRegistrationsOn(tb, n, withCheck, false)
}

// benchRegistrationsOn is benchRegistrationsWith; withNode registers each
// instance with one of three node names, as agents do through the Consul API.
func benchRegistrationsOn(tb testing.TB, n int, withCheck, withNode bool) [][]byte {
	tb.Helper()
	cmds := make([][]byte, n)
	for i := range n {
		cmds[i] = fsmtest.Register(tb, fmt.Sprintf("i-%d", 2_000_000+i), fmt.Sprintf("bench-%d", i%100), func(r *fsm.RegisterRequest) {
			r.Address = fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255)
			r.Port = 1024 + i%60000
			r.Tags = []string{"bench", "v1"}
			r.Meta = map[string]string{"zone": fmt.Sprintf("z%d", i%3)}
			r.Version = fmt.Sprintf("1.0.%d", i%10)
			r.Time = int64(i)
			if withNode {
				r.Node = fmt.Sprintf("node-%d", i%3)
			}
			if withCheck {
				r.Checks = []fsm.CheckDefinition{fsmtest.HTTPCheck("http", fmt.Sprintf("http://%s:%d/health", r.Address, r.Port), fsm.Passing)}
			}
		})
	}
	return cmds
}

// applyBatches applies cmds from index first in batches of 64, as Raft
// hands a busy FSM its committed entries.
func applyBatches(f *fsm.FSM, first uint64, cmds [][]byte) {
	const batch = 64
	logs := make([]*raft.Log, 0, batch)
	for i, c := range cmds {
		logs = append(logs, &raft.Log{Index: first + uint64(i), Type: raft.LogCommand, Data: c})
		if len(logs) == batch || i == len(cmds)-1 {
			f.ApplyBatch(logs)
			logs = logs[:0]
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCatalogMemory reports the live heap of a catalog of 10,000
// instances (B/instance and MB), the figure behind the RSS target of
// docs/benchmarks.md. Run it with -benchtime=1x:
//
//	go test -run '^$' -bench CatalogMemory -benchtime 1x ./fsm/
func BenchmarkCatalogMemory(b *testing.B) {
	const n = 10_000
	cmds := benchRegistrations(b, n)
	var perInstance float64
	for range b.N {
		before := heapInUse()
		f := fsm.New(nil)
		applyBatches(f, 1, cmds)
		after := heapInUse()
		if _, insts := f.Store().Instances(nil); len(insts) != n {
			b.Fatalf("%d instances, want %d", len(insts), n)
		}
		perInstance = float64(after-before) / n
		runtime.KeepAlive(f)
	}
	b.ReportMetric(perInstance, "B/instance")
	b.ReportMetric(perInstance*n/(1<<20), "MB/10k")
}

// catalogShapes are the catalogs the 100k benchmarks build: the
// bench's registrations without checks, with one HTTP check each, and
// without checks but with a node (as agents register through the Consul API).
var catalogShapes = []struct {
	name        string
	check, node bool
}{{"no-checks", false, false}, {"http-check", true, false}, {"no-checks-with-node", false, true}}

// BenchmarkCatalogMemory100k reports the live heap per instance of a
// catalog of 100,000 instances (the size issue 18's memory target names),
// without checks and with one HTTP check per instance, after a full GC:
//
//	go test -run '^$' -bench CatalogMemory100k -benchtime 1x ./fsm/
func BenchmarkCatalogMemory100k(b *testing.B) {
	const n = 100_000
	for _, tc := range catalogShapes {
		b.Run(tc.name, func(b *testing.B) {
			cmds := benchRegistrationsOn(b, n, tc.check, tc.node)
			var perInstance float64
			for range b.N {
				// Three servers alive to own the checks, as in a cluster.
				f := fsm.New(nil)
				fsmtest.MustApply(b, f, 1, fsmtest.NodeUpdate(b, 1,
					fsmtest.Server("s1", fsm.NodeAlive), fsmtest.Server("s2", fsm.NodeAlive), fsmtest.Server("s3", fsm.NodeAlive)))
				before := heapInUse()
				applyBatches(f, 2, cmds)
				after := heapInUse()
				if _, insts := f.Store().Instances(nil); len(insts) != n {
					b.Fatalf("%d instances, want %d", len(insts), n)
				}
				perInstance = float64(after-before) / n
				runtime.KeepAlive(f)
			}
			b.ReportMetric(perInstance, "B/instance")
			b.ReportMetric(perInstance*n/(1<<20), "MB/100k")
		})
	}
	// The same catalog after every instance was read once by ID
	// (Store.Instance, the API's GET of one instance): go-memdb asks the
	// radix tree for the watch channel of every lookup, so each instance
	// read this way carries a channel until it is next replaced. The worst
	// case of the lazy channels (fsm/third_party/go-immutable-radix).
	b.Run("no-checks-each-read", func(b *testing.B) {
		f := fsm.New(nil)
		applyBatches(f, 1, benchRegistrations(b, n))
		var perInstance float64
		for range b.N {
			before := heapInUse()
			for i := range n {
				if _, inst, _ := f.Store().Instance(nil, fmt.Sprintf("bench-%d", i%100), fmt.Sprintf("i-%d", 2_000_000+i)); inst == nil {
					b.Fatalf("instance %d missing", i)
				}
			}
			after := heapInUse()
			perInstance = float64(after-before) / n
		}
		runtime.KeepAlive(f)
		b.ReportMetric(perInstance, "B/instance-added")
	})
	// The same catalog restored from a snapshot: a follower that installs
	// one, or a restart, must be as compact as the node that applied it.
	b.Run("no-checks-restored", func(b *testing.B) {
		f := fsm.New(nil)
		applyBatches(f, 1, benchRegistrations(b, n))
		snap := persist(b, f)
		f = nil
		var perInstance float64
		for range b.N {
			g := fsm.New(nil)
			before := heapInUse()
			restore(b, g, snap)
			after := heapInUse()
			if _, insts := g.Store().Instances(nil); len(insts) != n {
				b.Fatalf("%d instances, want %d", len(insts), n)
			}
			perInstance = float64(after-before) / n
			runtime.KeepAlive(g)
		}
		runtime.KeepAlive(snap)
		b.ReportMetric(perInstance, "B/instance")
		b.ReportMetric(perInstance*n/(1<<20), "MB/100k")
	})
}

// BenchmarkApplyRegister measures the FSM's cost of one new registration
// (allocations per op include its share of the batch's commit).
func BenchmarkApplyRegister(b *testing.B) {
	cmds := benchRegistrations(b, b.N)
	f := fsm.New(nil)
	b.ReportAllocs()
	b.ResetTimer()
	applyBatches(f, 1, cmds)
}

// BenchmarkLookupLargeCatalog looks instances up by service and ID
// (Store.CurrentInstance, as the unchanged-registration check and the health
// checker do) in a catalog of 200,000 instances in 100 services, in an
// order that defeats the caches: a lookup costs what it costs in a large
// catalog, the cache misses included.
func BenchmarkLookupLargeCatalog(b *testing.B) {
	const n = 200_000
	f := fsm.New(nil)
	applyBatches(f, 1, benchRegistrations(b, n))
	s := f.Store()
	keys := make([][2]string, 1<<16)
	x := uint64(88172645463325252)
	for i := range keys {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		k := int(x % n)
		keys[i] = [2]string{fmt.Sprintf("bench-%d", k%100), fmt.Sprintf("i-%d", 2_000_000+k)}
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		k := keys[i&(len(keys)-1)]
		if inst, _ := s.CurrentInstance(k[0], k[1]); inst == nil {
			b.Fatalf("%s/%s not found", k[0], k[1])
		}
		i++
	}
}

// BenchmarkApplyRegisterWithCheck is BenchmarkApplyRegister for
// registrations that carry one HTTP check, as Consul-API agents send them.
func BenchmarkApplyRegisterWithCheck(b *testing.B) {
	cmds := benchRegistrationsWith(b, b.N, true)
	f := fsm.New(nil)
	b.ReportAllocs()
	b.ResetTimer()
	applyBatches(f, 1, cmds)
}
