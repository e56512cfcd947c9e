package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// A consistent read waits at most one leader-wait from its arrival, also
// when it arrives while another read's request is in flight to a leader
// that does not answer: it does not sit out that request's budget and then
// its own. (Before this was fixed, a read arriving just after another waited
// for both: 7.7s with a 4s budget.) Here the follower is cut from the leader
// and from the other follower, so no leader can be elected and every read
// ends with 503 no_leader at its own deadline; once the others are back,
// consistent reads succeed again.
func TestConsistentReadsArrivingWhileAReadIndexIsInFlightWaitOneLeaderWait(t *testing.T) {
	const budget = 4 * time.Second
	tn := newTestNodes(t, 3, func(_ int, c *Config) { c.LeaderWait = budget })
	l := tn.waitForLeader(30 * time.Second)
	f := tn.other(l)
	n := tn.nodes[f]
	// A read that succeeds (retried through a load-induced election): a
	// connection to the leader exists from here.
	var err error
	eventually(t, 60*time.Second, func() bool {
		_, err = n.ConsistentIndex(context.Background())
		return err == nil
	}, "a first consistent read")
	var resumes []func()
	for i := range tn.nodes {
		if i != f {
			resumes = append(resumes, tn.pause(i))
		}
	}

	type result struct {
		name string
		took time.Duration
		err  error
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	read := func(name string) {
		defer wg.Done()
		start := time.Now()
		_, err := n.ConsistentIndex(context.Background())
		mu.Lock()
		results = append(results, result{name, time.Since(start), err})
		mu.Unlock()
	}
	inFlight := func() bool {
		n.reads.mu.Lock()
		defer n.reads.mu.Unlock()
		return n.reads.sending
	}
	// The first read sends a request to the frozen leader...
	wg.Add(1)
	go read("first")
	eventually(t, 10*time.Second, inFlight, "the first read's request in flight")
	// ... and these arrive while it is in flight: they wait for the next
	// request, which can only be sent once the first one gives up.
	for _, name := range []string{"second", "third", "fourth"} {
		wg.Add(1)
		go read(name)
	}
	wg.Wait()

	limit := budget + 2*time.Second // slack for a loaded machine
	for _, r := range results {
		t.Logf("%s read: %v after %s (budget %s)", r.name, r.err, r.took, budget)
		if r.took > limit {
			t.Errorf("the %s read waited %s; its budget is %s", r.name, r.took, budget)
		}
		if r.err != nil && !errors.Is(r.err, ErrNoLeader) && !errors.Is(r.err, ErrUnknownOutcome) {
			t.Errorf("the %s read failed with %v, want no_leader", r.name, r.err)
		}
	}

	for _, r := range resumes {
		r()
	}
	tn.waitForLeader(60 * time.Second)
	eventually(t, 60*time.Second, func() bool {
		_, err = n.ConsistentIndex(context.Background())
		return err == nil
	}, "a consistent read once the cluster is whole again")
}
