package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/go-hclog"
)

// A consistent read that begins after another one ended never misses what
// the earlier one returned. The read index used to be the leader's applied
// index, which lags its commit index while its FSM catches up; followers
// apply what is committed, so a read on F could return a write w2 that the
// leader had not applied yet, and a read on G begun after it got a read
// index below w2 and missed it (found by a review of the vouched read
// indexes: it failed every run, vouched or verified alike). Here the
// leader's and G's FSM goroutines stall, as a GC pause or CPU starvation
// would, while w2 commits and F applies it; a read on F sees w2 and ends;
// then a read on G must wait until it has applied w2 (released once G's read
// index was served) and see it.
//
// Three voters take the vouched path, four the verified one; both must wait.
func TestAReadNeverMissesWhatAnEarlierReadSaw(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	for _, size := range []int{3, 4} {
		t.Run(fmt.Sprintf("%d voters", size), func(t *testing.T) { readNeverMissesWhatAnEarlierReadSaw(t, size) })
	}
}

func readNeverMissesWhatAnEarlierReadSaw(t *testing.T, size int) {
	armed := make([]atomic.Bool, size)
	held := make([]chan struct{}, size)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }

	for i := range size {
		held[i] = make(chan struct{})
	}
	tn := newTestNodesFSM(t, size, func(_ int, c *Config) {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: c.NodeName, Level: hclog.Warn, Output: testWriter{t}})
	}, func(i int, f *fsm.FSM) {
		f.SetObserver(func(a fsm.Applied) {
			if a.Type == fsm.RegisterType && armed[i].CompareAndSwap(true, false) {
				close(held[i])
				<-release // this node's FSM goroutine stalls here
			}
		})
	})
	t.Cleanup(free) // runs before the nodes shut down
	l := tn.waitForLeader(30 * time.Second)
	eventually(t, 30*time.Second, func() bool {
		f := tn.nodes[l].raft.GetConfiguration()
		return f.Error() == nil && len(f.Configuration().Servers) == size
	}, "every node a voter")
	fi, gi := (l+1)%size, (l+2)%size
	leader, F, G := tn.nodes[l], tn.nodes[fi], tn.nodes[gi]
	if _, err := leader.Apply(context.Background(), fsmtest.Register(t, "w0", "web")); err != nil {
		t.Skipf("warm-up write: %v", err)
	}
	eventually(t, 10*time.Second, func() bool {
		a := leader.fsm.AppliedIndex()
		return F.fsm.AppliedIndex() == a && G.fsm.AppliedIndex() == a
	}, "all nodes applied the warm-up write")

	// The leader's and G's FSMs stall on the next registration, w1.
	armed[l].Store(true)
	armed[gi].Store(true)
	go func() { _, _ = leader.Apply(context.Background(), fsmtest.Register(t, "w1", "web")) }()
	for _, i := range []int{l, gi} {
		select {
		case <-held[i]:
		case <-time.After(10 * time.Second):
			t.Fatalf("node %d never applied w1", i)
		}
	}
	if la, ga := leader.fsm.AppliedIndex(), G.fsm.AppliedIndex(); la > ga {
		t.Skipf("batches differ (leader applied %d, G %d)", la, ga)
	}
	// w2 commits (leader + F) and F applies it; the leader's FSM has not.
	// It goes to Raft directly (ApplyLeader): through Apply it would queue
	// in the leader's group commit behind w1, which is not answered until
	// the leader's FSM applies it.
	go func() { _, _ = leader.ApplyLeader(context.Background(), fsmtest.Register(t, "w2", "web")) }()
	eventually(t, 10*time.Second, func() bool {
		_, inst, _ := tn.fsms[fi].Store().Instance(nil, "web", "w2")
		return inst != nil
	}, "F applied w2")

	// R0: a consistent read on F sees w2 and ends.
	if _, err := F.ConsistentIndex(context.Background()); err != nil {
		t.Fatalf("R0 on F: %v", err)
	}
	if _, inst, _ := tn.fsms[fi].Store().Instance(nil, "web", "w2"); inst == nil {
		t.Fatal("R0 on F does not see w2")
	}
	// R1: begins after R0 ended, on G. Its read index must cover w2, so it
	// waits for G to apply w2: the stalls end once the leader served G's
	// read index. (With the applied index it returned at once, without w2.)
	served := func() float64 { return servedValue(t, leader, "vouched") + servedValue(t, leader, "verified") }
	served0 := servedValue(t, leader, "vouched")
	before := served()
	type result struct {
		idx uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		idx, err := G.ConsistentIndex(context.Background())
		// What R1 reads is G's catalog at the moment it may read.
		_, inst, _ := tn.fsms[gi].Store().Instance(nil, "web", "w2")
		if err == nil && inst == nil {
			err = fmt.Errorf("stale read: R1 on G (read index %d; leader commit %d) misses w2, which R0 on F saw before R1 began",
				idx, leader.raft.CommitIndex())
		}
		done <- result{idx, err}
	}()
	eventually(t, 10*time.Second, func() bool { return served() > before }, "the leader served R1's read index")
	how := "verified"
	if servedValue(t, leader, "vouched") > served0 {
		how = "vouched"
	}
	if want := map[int]string{3: "vouched", 4: "verified"}[size]; how != want {
		t.Errorf("R1's read index was %s, want %s with %d voters", how, want, size)
	}
	free()
	select {
	case r := <-done:
		if r.err != nil {
			t.Errorf("R1 on G (%s read index): %v", how, r.err)
		} else {
			t.Logf("R1 on G: read index %d (%s) covers w2", r.idx, how)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("R1 on G did not finish")
	}
}
