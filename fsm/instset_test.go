package fsm_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestInstanceSetsFollowAModel applies random batches of registrations,
// re-registrations, deregistrations, node and drain changes over a few
// services and, after every batch, compares every read of the store with a
// plain map of what must be there. Versions read before a batch must not
// change after it: the sets are copy-on-write, and a committed one is never
// written again.
func TestInstanceSetsFollowAModel(t *testing.T) {
	f := fsm.New(nil)
	rng := rand.New(rand.NewPCG(1, 2))
	type key struct{ svc, id string }
	model := map[key]string{} // -> address
	nodeOf := map[key]string{}
	var index uint64
	type seen struct {
		svc   string
		insts []*fsm.Instance
		addrs []string
	}
	var earlier []seen
	for batch := range 300 {
		var logs []*raft.Log
		for range 1 + rng.IntN(80) {
			k := key{fmt.Sprintf("s%d", rng.IntN(4)), fmt.Sprintf("i%d", rng.IntN(300))}
			index++
			switch op := rng.IntN(10); {
			case op < 6:
				addr := fmt.Sprintf("127.0.%d.%d", batch%200, rng.IntN(250))
				node := ""
				if rng.IntN(3) == 0 {
					node = fmt.Sprintf("n%d", rng.IntN(3))
				}
				logs = append(logs, fsmtest.Log(index, fsmtest.Register(t, k.id, k.svc, fsmtest.WithAddress(addr, 80), fsmtest.WithNode(node))))
				model[k], nodeOf[k] = addr, node
			case op < 9:
				logs = append(logs, fsmtest.Log(index, fsmtest.Deregister(t, k.svc, k.id)))
				delete(model, k)
				delete(nodeOf, k)
			default:
				mode := fsm.ModeDrain
				if rng.IntN(2) == 0 {
					mode = fsm.ModeNone
				}
				logs = append(logs, fsmtest.Log(index, fsmtest.Maintenance(t, k.svc, k.id, mode)))
			}
		}
		// Keep what readers saw before this batch, to check it later.
		for s := range 4 {
			svc := fmt.Sprintf("s%d", s)
			_, insts := f.Store().ServiceInstances(nil, svc)
			var addrs []string
			for _, i := range insts {
				addrs = append(addrs, i.Address)
			}
			earlier = append(earlier, seen{svc, insts, addrs})
		}
		f.ApplyBatch(logs)

		_, all := f.Store().Instances(nil)
		if len(all) != len(model) {
			t.Fatalf("batch %d: %d instances, want %d", batch, len(all), len(model))
		}
		for i, inst := range all {
			k := key{inst.Service, inst.ID}
			if model[k] != inst.Address || nodeOf[k] != inst.Node {
				t.Fatalf("batch %d: %s/%s has address %q node %q, want %q %q", batch, k.svc, k.id, inst.Address, inst.Node, model[k], nodeOf[k])
			}
			if i > 0 && (all[i-1].Service > inst.Service || all[i-1].Service == inst.Service && all[i-1].ID >= inst.ID) {
				t.Fatalf("batch %d: instances out of order at %d", batch, i)
			}
			if _, got, _ := f.Store().Instance(nil, k.svc, k.id); got != inst {
				t.Fatalf("batch %d: Instance(%s, %s) is not the listed record", batch, k.svc, k.id)
			}
		}
		for s := range 4 {
			svc := fmt.Sprintf("s%d", s)
			_, insts := f.Store().ServiceInstances(nil, svc)
			var want []string
			for k := range model {
				if k.svc == svc {
					want = append(want, k.id)
				}
			}
			slices.Sort(want)
			var got []string
			for _, i := range insts {
				got = append(got, i.ID)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("batch %d: %s lists %v, want %v", batch, svc, got, want)
			}
			_, summaries, _ := f.Store().ServiceSummaries(nil, svc, "", 1, nil)
			if len(want) > 0 && (len(summaries) != 1 || summaries[0].Instances != len(want)) {
				t.Fatalf("batch %d: summary of %s: %+v, want %d instances", batch, svc, summaries, len(want))
			}
		}
		for n := range 3 {
			node := fmt.Sprintf("n%d", n)
			_, on := f.Store().NodeInstances(nil, node)
			want := 0
			for k := range model {
				if nodeOf[k] == node {
					want++
				}
			}
			if len(on) != want {
				t.Fatalf("batch %d: %d instances on %s, want %d", batch, len(on), node, want)
			}
		}
		for _, inst := range f.Store().DrainingInstances(nil) {
			if inst.Drain == nil {
				t.Fatalf("batch %d: %s/%s listed as draining without a drain", batch, inst.Service, inst.ID)
			}
			if _, cur, _ := f.Store().Instance(nil, inst.Service, inst.ID); cur != inst {
				t.Fatalf("batch %d: draining list holds a stale record of %s/%s", batch, inst.Service, inst.ID)
			}
		}
	}
	for _, e := range earlier {
		for i, inst := range e.insts {
			if inst.Address != e.addrs[i] {
				t.Fatalf("a record read earlier changed: %s/%s", e.svc, inst.ID)
			}
		}
		if i := slices.IndexFunc(e.insts, func(x *fsm.Instance) bool { return x.Service != e.svc }); i >= 0 {
			t.Fatalf("an earlier read of %s holds %s", e.svc, e.insts[i].Service)
		}
	}
}

// TestInstanceSetReadersDuringWrites reads one service's instances from
// several goroutines while batches register and deregister in it (run with
// -race): every read is sorted without duplicates, and at the end the
// service's record counts what its set holds.
func TestInstanceSetReadersDuringWrites(t *testing.T) {
	f := fsm.New(nil)
	const ids = 2000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				_, insts := f.Store().ServiceInstances(nil, "web")
				for i := 1; i < len(insts); i++ {
					if insts[i-1].ID >= insts[i].ID {
						errs <- fmt.Errorf("reader %d, read %d: %q before %q", r, n, insts[i-1].ID, insts[i].ID)
						return
					}
				}
				if len(insts) > 0 {
					// A lookup in the current version finds the instance or
					// none (deregistered since), never another one.
					want := insts[len(insts)/2].ID
					if _, one, _ := f.Store().Instance(nil, "web", want); one != nil && one.ID != want {
						errs <- fmt.Errorf("reader %d: looked up %q, got %q", r, want, one.ID)
						return
					}
				}
			}
		}()
	}
	var index uint64
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		var logs []*raft.Log
		for range 64 {
			index++
			id := fmt.Sprintf("i%05d", rng.IntN(ids))
			if rng.IntN(3) == 0 {
				logs = append(logs, fsmtest.Log(index, fsmtest.Deregister(t, "web", id)))
			} else {
				logs = append(logs, fsmtest.Log(index, fsmtest.Register(t, id, "web", fsmtest.WithAddress("127.0.0.1", int(index%60000)+1))))
			}
		}
		f.ApplyBatch(logs)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	_, insts := f.Store().ServiceInstances(nil, "web")
	_, svcs, _ := f.Store().Services(nil, "web", "", 1)
	if len(svcs) != 1 || svcs[0].Instances != len(insts) {
		t.Fatalf("service record counts %+v, the set holds %d", svcs, len(insts))
	}
}
