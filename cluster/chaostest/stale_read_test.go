package chaostest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/cluster/chaostest"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

const staleService = "stale"

// startCluster starts a 3-node cluster of real processes for one test and
// stops it when the test ends, printing the agents' logs if it failed.
func startCluster(t *testing.T) *chaostest.Cluster {
	t.Helper()
	chaostest.RequireNetns(t)
	e := env(t)
	bin := chaostest.Binary(t, e)
	dir := t.TempDir()
	c, err := chaostest.StartCluster(context.Background(), chaostest.Options{Binary: bin, Dir: dir})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("log of %s:\n%s", n.Name, tail(n.LogPath(), 60))
			}
		}
	})
	return c
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	wait.Until(t, timeout, what, cond)
}

// register writes value through node i, retrying 503s (an election) for up
// to 30 s: registration is idempotent.
func register(t *testing.T, c *chaostest.Cluster, i int, id, value string) {
	t.Helper()
	what := fmt.Sprintf("register %s=%s through %s", id, value, c.Nodes[i].Name)
	wait.For(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Client(i).Register(ctx, staleService, id, &client.Registration{Address: "192.0.2.1", Port: 80, Meta: map[string]string{"v": value}})
		cancel()
		if err == nil {
			return true, ""
		}
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable {
			t.Fatalf("%s: %v", what, err)
		}
		return false, fmt.Sprintf("%s: %v", what, err)
	})
}

type readResult struct {
	value string
	meta  *client.QueryMeta
	err   error
}

func read(c *chaostest.Cluster, i int, id string, q *client.QueryOptions, timeout time.Duration) readResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	inst, meta, err := c.Client(i).Instance(ctx, staleService, id, q)
	r := readResult{meta: meta, err: err}
	if inst != nil {
		r.value = inst.Meta["v"]
	}
	return r
}

// newLeaderAmong waits until a node other than old leads, with a term above
// oldTerm, and the remaining nodes (all but old) agree on it.
func newLeaderAmong(t *testing.T, c *chaostest.Cluster, old int, oldTerm uint64) int {
	t.Helper()
	leader := -1
	waitFor(t, 30*time.Second, "a new leader among the majority", func() bool {
		sts := c.Statuses(context.Background(), time.Second)
		leader = -1
		for i, st := range sts {
			if i != old && st != nil && st.State == "Leader" && st.Term > oldTerm {
				leader = i
			}
		}
		if leader < 0 {
			return false
		}
		for i, st := range sts {
			if i != old && (st == nil || st.Leader != c.Nodes[leader].Name) {
				return false
			}
		}
		return true
	})
	return leader
}

func statusOf(err error) int {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status
	}
	return 0
}

// TestPartitionedOldLeader is issue 4's stale-read test: once the leader is
// cut off from the majority and the majority has moved on, ?consistent on
// the old leader fails instead of answering from its stale state, while a
// default read answers locally, with the stale value, and says how stale
// it is in X-Beacon-Last-Contact, a value that grows while the partition
// lasts. Clients still reach the old leader: only node-to-node traffic is
// cut.
func TestPartitionedOldLeader(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	old, err := c.WaitForLeader(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, old, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	register(t, c, old, "s1", "v1")
	waitFor(t, 10*time.Second, "v1 on every node", func() bool {
		for i := range c.Nodes {
			if r := read(c, i, "s1", nil, time.Second); r.err != nil || r.value != "v1" {
				return false
			}
		}
		return true
	})

	if err := c.Net.Isolate(old); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	leader := newLeaderAmong(t, c, old, st.Term)
	register(t, c, leader, "s1", "v2")

	t.Run("a consistent read on the old leader fails rather than answer v1", func(t *testing.T) {
		r := read(c, old, "s1", &client.QueryOptions{Consistent: true}, 15*time.Second)
		if r.err == nil {
			t.Fatalf("?consistent on the partitioned old leader answered %q; want an error", r.value)
		}
		if s := statusOf(r.err); s != http.StatusServiceUnavailable {
			t.Fatalf("?consistent on the partitioned old leader: %v; want HTTP 503", r.err)
		}
	})
	t.Run("a max_stale read on the old leader fails rather than answer v1", func(t *testing.T) {
		r := read(c, old, "s1", &client.QueryOptions{MaxStale: time.Second}, 15*time.Second)
		if r.err == nil {
			t.Fatalf("?max_stale=1s on the partitioned old leader answered %q; want an error", r.value)
		}
	})
	t.Run("a default read on the old leader answers v1 locally with a Last-Contact that shows its staleness", func(t *testing.T) {
		since := time.Since(cut)
		r := read(c, old, "s1", nil, 5*time.Second)
		if r.err != nil {
			t.Fatalf("default read on the old leader: %v", r.err)
		}
		if r.value != "v1" {
			t.Fatalf("default read on the partitioned old leader answered %q; want the stale v1", r.value)
		}
		lc := r.meta.LastContact
		t.Logf("default read %s after the cut: Last-Contact %s, Known-Leader %v", since.Round(time.Millisecond), lc, r.meta.KnownLeader)
		if lc >= 0 && lc < since-500*time.Millisecond {
			t.Fatalf("X-Beacon-Last-Contact %s understates the %s since the partition", lc, since)
		}
		if lc >= 0 {
			// It grows while the partition lasts.
			waitFor(t, 15*time.Second, "Last-Contact to grow by 1s", func() bool {
				r2 := read(c, old, "s1", nil, 5*time.Second)
				return r2.err == nil && r2.meta.LastContact >= lc+time.Second
			})
		}
	})
	t.Run("the same reads on a node of the majority answer v2", func(t *testing.T) {
		for _, q := range []*client.QueryOptions{nil, {Consistent: true}} {
			r := read(c, leader, "s1", q, 5*time.Second)
			if r.err != nil || r.value != "v2" {
				t.Fatalf("read %+v on the new leader: %q, %v; want v2", q, r.value, r.err)
			}
		}
	})

	if err := c.Net.Unblock(old); err != nil {
		t.Fatal(err)
	}
	t.Run("after healing the old leader catches up and reports fresh contact", func(t *testing.T) {
		waitFor(t, 30*time.Second, "v2 on the old leader", func() bool {
			r := read(c, old, "s1", nil, time.Second)
			return r.err == nil && r.value == "v2" && r.meta.LastContact >= 0 && r.meta.LastContact < time.Second
		})
		if r := read(c, old, "s1", &client.QueryOptions{Consistent: true}, 10*time.Second); r.err != nil || r.value != "v2" {
			t.Fatalf("?consistent on the healed old leader: %q, %v; want v2", r.value, r.err)
		}
	})
}

// TestPausedOldLeader is the classic stale-read trap: the leader is frozen
// (SIGSTOP), the others elect a new leader and accept a write, and reads
// queued at the frozen node are served the moment it resumes, while it
// still believes it leads. ?consistent must not return the old value.
func TestPausedOldLeader(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	old, err := c.WaitForLeader(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, old, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	register(t, c, old, "p1", "v1")
	waitFor(t, 10*time.Second, "v1 on every node", func() bool {
		for i := range c.Nodes {
			if r := read(c, i, "p1", nil, time.Second); r.err != nil || r.value != "v1" {
				return false
			}
		}
		return true
	})
	if err := c.Nodes[old].Pause(); err != nil {
		t.Fatal(err)
	}
	leader := newLeaderAmong(t, c, old, st.Term)
	register(t, c, leader, "p1", "v2")
	v2Acked := time.Now()

	// Queue reads at the frozen node: the kernel accepts the connections
	// and buffers the requests; the agent reads them when it resumes.
	consistent := make(chan readResult, 4)
	local := make(chan readResult, 4)
	for k := 0; k < 4; k++ {
		go func() { consistent <- read(c, old, "p1", &client.QueryOptions{Consistent: true}, 20*time.Second) }()
		go func() { local <- read(c, old, "p1", nil, 20*time.Second) }()
	}
	// Give the requests time to reach the frozen node's socket buffers; if
	// one arrives after the resume, it tests a little less, not wrongly.
	time.Sleep(300 * time.Millisecond)
	resumed := time.Now()
	if err := c.Nodes[old].Resume(); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 4; k++ {
		r := <-consistent
		if r.err == nil && r.value != "v2" {
			t.Errorf("?consistent queued at the paused old leader answered %q after resuming; want v2 or an error", r.value)
		}
		t.Logf("queued ?consistent: value %q, error %v", r.value, r.err)
	}
	for k := 0; k < 4; k++ {
		r := <-local
		if r.err != nil {
			t.Logf("queued default read: error %v", r.err)
			continue
		}
		// A default read may be stale, but then it says so: answered after
		// the resume, its v1 was at least resumed-v2Acked old, and
		// Last-Contact may not claim less (or says -1, never). The node
		// last proved itself current before the pause; neither raft still
		// believing it leads nor the new leader's heartbeats arriving at
		// once make it current again.
		t.Logf("queued default read: value %q, Last-Contact %s, Known-Leader %v", r.value, r.meta.LastContact, r.meta.KnownLeader)
		if floor := resumed.Sub(v2Acked) - 5*time.Millisecond; r.value == "v1" && r.meta.LastContact >= 0 && r.meta.LastContact < floor {
			t.Errorf("queued default read answered the old value v1 with Last-Contact %s; it was at least %s stale", r.meta.LastContact, floor)
		}
	}
}

// TestRestartedFollowerSaysItIsBehind restarts a follower that missed
// writes: until it has caught up, its default reads must say they may be
// stale (Last-Contact -1, "never current since start") rather than answer an
// old or empty catalog with the few milliseconds since the leader's last
// heartbeat, and /readyz must not report it ready.
func TestRestartedFollowerSaysItIsBehind(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	leader, err := c.WaitForLeader(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := (leader + 1) % len(c.Nodes)
	register(t, c, leader, "r0", "v0")
	waitFor(t, 10*time.Second, "r0 on the follower", func() bool {
		r := read(c, f, "r0", nil, time.Second)
		return r.err == nil && r.value == "v0"
	})
	if err := c.Nodes[f].Kill(); err != nil {
		t.Fatal(err)
	}
	// Writes the follower misses, over a few seconds, so that the leader
	// backs off from the dead peer.
	var last uint64
	for k := 0; k < 40; k++ {
		register(t, c, leader, "r1", "v"+time.Now().Format("150405.000"))
		st, err := c.Status(ctx, leader, time.Second)
		if err == nil {
			last = st.AppliedIndex
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.Restart(ctx, f); err != nil {
		t.Fatal(err)
	}
	var sawBehind bool
	wait.For(t, 30*time.Second, 20*time.Millisecond, func() (bool, string) {
		// Readiness first: a node that says it is ready must then answer
		// at least what the leader had before the restart.
		ready := readyz(c, f)
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, meta, err := c.Client(f).Instances(rctx, staleService, nil)
		cancel()
		if err != nil {
			return false, fmt.Sprintf("the restarted follower's read: %v", err)
		}
		if meta.Index < last {
			sawBehind = true
			if ready {
				t.Fatalf("restarted follower said ready, then answered index %d < %d", meta.Index, last)
			}
			if meta.LastContact >= 0 {
				t.Fatalf("restarted follower answered index %d (< %d, the leader's before the restart) with Last-Contact %s, Known-Leader %v: it claims to be current",
					meta.Index, last, meta.LastContact, meta.KnownLeader)
			}
			return false, fmt.Sprintf("the restarted follower answers index %d, want %d (caught up)", meta.Index, last)
		}
		return true, ""
	})
	t.Logf("saw the follower behind before it caught up: %v", sawBehind)
}

// readyz reports whether node i answers GET /readyz with 200.
func readyz(c *chaostest.Cluster, i int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Nodes[i].HTTPAddr()+"/readyz", nil)
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
