package health_test

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// flatFor is how long the steady-state test watches the checks (the
// issue asks for a minute): go test ./health -flat=10s for a quick run.
var flatFor = flag.Duration("flat", time.Minute, "how long TestSteadyState watches the checks for writes")

// A TTL check with no report turns critical on every node; custom metrics
// reported with heartbeats are visible in discovery, and coalesced; an
// instance critical for deregister_critical_after is removed by the leader,
// while one that recovered in time stays.
func TestTTLExpiryMetricsAndDeregisterCriticalAfter(t *testing.T) {
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) { cfg.MetricsPeriod = time.Second }))
	cl := c.Client(1)
	ctx := context.Background()
	ttlCheck := client.CheckDefinition{Name: "hb", TTL: client.Duration(time.Second), InitialStatus: "passing",
		DeregisterCriticalAfter: client.Duration(3 * time.Second)}
	register(t, cl, "jobs", "j1", &client.Registration{Address: "127.0.0.1", Port: 1, Checks: []client.CheckDefinition{ttlCheck}})
	register(t, cl, "jobs", "j2", &client.Registration{Address: "127.0.0.1", Port: 2, Checks: []client.CheckDefinition{ttlCheck}})

	// Metrics reach discovery on every node.
	agenttest.Retry503(t, "report", func() error {
		_, err := cl.ReportTTL(ctx, "jobs:j1:hb", "pass", &client.TTLUpdate{Output: "ok", Metrics: map[string]float64{"load": 0.4, "queue": 12}})
		return err
	})
	agenttest.Eventually(t, 30*time.Second, func() bool {
		for _, i := range running(c) {
			insts, _, err := c.Client(i).Instances(ctx, "jobs", &client.QueryOptions{Healthy: true})
			if err != nil {
				return false
			}
			found := false
			for _, in := range insts {
				found = found || (in.ID == "j1" && in.Metrics["load"] == 0.4 && in.Metrics["queue"] == 12)
			}
			if !found {
				return false
			}
		}
		return true
	}, "j1's metrics in discovery on every node")

	// A burst of reports with changing metrics is coalesced: at most one
	// write per second for the instance, the last values win.
	leader := c.Node(c.Leader()).Agent.Health()
	before := leader.Stats().MetricsWrites
	start := time.Now()
	for k := 0; k < 20; k++ {
		agenttest.Retry503(t, "report", func() error {
			_, err := cl.ReportTTL(ctx, "jobs:j1:hb", "pass", &client.TTLUpdate{Metrics: map[string]float64{"load": float64(k)}})
			return err
		})
	}
	waitInstance(t, c, 30*time.Second, "jobs", "j1", "with the last metrics", func(i *client.Instance) bool { return i.Metrics["load"] == 19 })
	writes := leader.Stats().MetricsWrites - before
	if limit := uint64(time.Since(start)/time.Second) + 1; writes > limit {
		t.Fatalf("%d metrics writes in %s for one instance (at most one per second: %d)", writes, time.Since(start), limit)
	}

	// j1 keeps reporting (no metrics) while j2 never reports: j2 turns
	// critical after its TTL on every node, then is deregistered.
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		for hbCtx.Err() == nil {
			_, _ = cl.ReportTTL(hbCtx, "jobs:j1:hb", "pass", nil)
			select {
			case <-hbCtx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	defer func() { stopHB(); <-hbDone }()
	waitInstance(t, c, 30*time.Second, "jobs", "j2", "critical (TTL expired)", hasStatus("critical"))
	inst, _, _ := cl.Instance(ctx, "jobs", "j2", nil)
	if len(inst.Checks) != 1 || inst.Checks[0].Output == "" || inst.Healthy {
		t.Fatalf("expired TTL check: %+v", inst.Checks)
	}
	agenttest.Eventually(t, 30*time.Second, func() bool {
		for _, i := range running(c) {
			if _, _, err := c.Client(i).Instance(ctx, "jobs", "j2", nil); !client.IsNotFound(err) {
				return false
			}
		}
		return true
	}, "j2 deregistered on every node after deregister_critical_after")

	// j1 fails and recovers before deregister_critical_after: it stays.
	stopHB()
	<-hbDone
	agenttest.Retry503(t, "fail", func() error { _, err := cl.ReportTTL(ctx, "jobs:j1:hb", "fail", nil); return err })
	waitInstance(t, c, 30*time.Second, "jobs", "j1", "critical", hasStatus("critical"))
	agenttest.Retry503(t, "pass", func() error { _, err := cl.ReportTTL(ctx, "jobs:j1:hb", "pass", nil); return err })
	waitInstance(t, c, 30*time.Second, "jobs", "j1", "passing", hasStatus("passing"))
	// The leader counts j2's deregistration once its write returns.
	agenttest.Eventually(t, 10*time.Second, func() bool { return leader.Stats().DeregisteredCritical >= 1 }, "the leader to count j2's deregistration")
	if st := leader.Stats(); st.DeregisteredCritical != 1 {
		t.Fatalf("%d instances deregistered as critical, want only j2", st.DeregisteredCritical)
	}
}

// Maintenance and draining take an instance out of healthy discovery on
// every node; draining deregisters it at its deadline unless cancelled.
func TestMaintenanceAndDraining(t *testing.T) {
	c := agenttest.New(t, 3)
	cl := c.Client(2)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		register(t, cl, "api", id, &client.Registration{Address: "127.0.0.1", Port: 80})
	}
	healthyEverywhere := func(want string) {
		t.Helper()
		agenttest.Eventually(t, 30*time.Second, func() bool {
			for _, i := range running(c) {
				if got := healthyIDs(t, c, i, "api"); fmt.Sprint(sortedKeys(got)) != want {
					return false
				}
			}
			return true
		}, "healthy=true to return "+want+" on every node")
	}
	maint := func(id string, m client.MaintenanceRequest) {
		t.Helper()
		agenttest.Retry503(t, "maintenance "+id, func() error { _, err := cl.Maintenance(ctx, "api", id, &m); return err })
	}
	healthyEverywhere("[a b c]")

	maint("a", client.MaintenanceRequest{Mode: client.ModeMaintenance, Reason: "kernel upgrade"})
	healthyEverywhere("[b c]")
	var inst *client.Instance
	agenttest.Retry503(t, "a consistent read of a", func() (err error) {
		inst, _, err = c.Client(0).Instance(ctx, "api", "a", &client.QueryOptions{Consistent: true})
		return err
	})
	if inst.Maintenance == nil || inst.Maintenance.Reason != "kernel upgrade" || inst.Status != "passing" {
		t.Fatalf("in maintenance: %+v", inst)
	}
	maint("a", client.MaintenanceRequest{Mode: client.ModeNone})
	healthyEverywhere("[a b c]")

	// b drains for 2s and is then deregistered; c's drain is cancelled in time.
	maint("b", client.MaintenanceRequest{Mode: client.ModeDrain, Deadline: client.Duration(2 * time.Second)})
	maint("c", client.MaintenanceRequest{Mode: client.ModeDrain, Deadline: client.Duration(5 * time.Second)})
	healthyEverywhere("[a]")
	maint("c", client.MaintenanceRequest{Mode: client.ModeNone})
	agenttest.Eventually(t, 30*time.Second, func() bool {
		for _, i := range running(c) {
			if _, _, err := c.Client(i).Instance(ctx, "api", "b", nil); !client.IsNotFound(err) {
				return false
			}
		}
		return true
	}, "b deregistered at its drain deadline on every node")
	healthyEverywhere("[a c]")
	// The leader counts the deregistration once its write returns, which
	// may be after every node (itself included) applied it.
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return c.Node(c.Leader()).Agent.Health().Stats().DeregisteredDrained >= 1
	}, "the leader to count b's deregistration")
	if st := c.Node(c.Leader()).Agent.Health().Stats(); st.DeregisteredDrained != 1 {
		t.Fatalf("%d drained instances deregistered, want 1 (b)", st.DeregisteredDrained)
	}

	// Bad requests are 400s with the field named.
	for name, m := range map[string]client.MaintenanceRequest{
		"mode":     {Mode: "off"},
		"deadline": {Mode: client.ModeDrain},
		"reason":   {Mode: client.ModeNone, Reason: "x"},
	} {
		_, err := cl.Maintenance(ctx, "api", "a", &m)
		var ce *client.Error
		if !asClientError(err, &ce) || ce.Status != 400 || ce.Field != name {
			t.Errorf("bad %s: %v", name, err)
		}
	}
}

// A target that toggles on every probe is held flapping (visible in the
// API) instead of toggling, and the Raft writes it causes stay bounded.
func TestFlappingTargetIsHeldWithBoundedWrites(t *testing.T) {
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.FlapThreshold, cfg.FlapWindow = 4, 5*time.Second
		cfg.FlapHoldDown, cfg.FlapMaxHoldDown = time.Second, 4*time.Second
	}))
	tg := newTarget(t)
	cl := c.Client(0)
	const interval = 100 * time.Millisecond
	register(t, cl, "flappy", "f1", &client.Registration{Address: "127.0.0.1", Port: 1,
		Checks: []client.CheckDefinition{{Name: "http", HTTP: tg.url("/f1"), Interval: client.Duration(interval)}}})
	waitInstance(t, c, 30*time.Second, "flappy", "f1", "passing", hasStatus("passing"))
	tg.setToggle("/f1", true)
	agenttest.Eventually(t, 30*time.Second, func() bool {
		for _, i := range running(c) {
			if len(checksOf(t, c, i, client.CheckFilter{Status: "flapping"})) != 1 {
				return false
			}
		}
		return true
	}, "the check listed as flapping on every node")
	waitInstance(t, c, 10*time.Second, "flappy", "f1", "critical while flapping", hasStatus("critical"))

	// Over the next 60 probes (about 6s, 60 status changes at the target),
	// a few hold-down extensions are written, not 60 transitions.
	// The leader's log, which no replication lag shortens at either end.
	lc := c.Client(c.Leader())
	st, err := lc.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	from := time.Now()
	agenttest.Eventually(t, 60*time.Second, func() bool { return len(tg.since("/f1", from)) >= 60 }, "60 more probes")
	st2, err := lc.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if writes := st2.LastIndex - st.LastIndex; writes > 8 {
		t.Fatalf("%d Raft writes during 60 probes of a flapping target", writes)
	}
	var episodes uint64
	for _, i := range running(c) {
		episodes += c.Node(i).Agent.Health().Stats().FlapEpisodes
	}
	if episodes == 0 {
		t.Fatal("no flapping episode counted in the stats")
	}

	// It stops toggling: the hold-down ends and the check passes again.
	tg.setToggle("/f1", false)
	waitInstance(t, c, 60*time.Second, "flappy", "f1", "passing after calming down", func(i *client.Instance) bool {
		return i.Status == "passing" && len(i.Checks) == 1 && !i.Checks[0].Flapping
	})
}

// In steady state a passing check writes nothing: the Raft index of every
// node stays flat while 100 instances are checked for a minute, and each
// check runs on exactly one node (counted at the target).
func TestSteadyStateWritesNothingAndRunsEachCheckOnce(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	tg := newTarget(t)
	const n = 100
	// Every 2 s with a 2 s timeout and three failures in a row, as a
	// production check would have, so that a stall of this shared test
	// machine is not a transition (500 ms failed checks at load 25 under
	// -race).
	const interval = 2 * time.Second
	for k := 0; k < n; k++ {
		id := fmt.Sprintf("s%03d", k)
		register(t, c.Client(k%3), "steady", id, &client.Registration{Address: "127.0.0.1", Port: 10000 + k,
			Checks: []client.CheckDefinition{{Name: "http", HTTP: tg.url("/" + id), Interval: client.Duration(interval), FailuresBeforeCritical: 3}}})
	}
	agenttest.Eventually(t, 2*time.Minute, func() bool {
		for _, i := range running(c) {
			if len(healthyIDs(t, c, i, "steady")) != n {
				return false
			}
		}
		return true
	}, "100 passing instances on every node")
	owners := map[string]int{}
	for _, ch := range checksOf(t, c, 0, client.CheckFilter{Service: "steady"}) {
		owners[ch.Owner]++
	}
	if len(owners) != 3 {
		t.Fatalf("checks are not spread over the 3 nodes: %v", owners)
	}
	t.Logf("checks per node: %v", owners)

	// What the property is about: steady checking writes no health record.
	// So the test compares the checks themselves (status, owner and the
	// index of their last write) over a window, not the Raft index: on this
	// shared, race-instrumented machine an election appends Raft entries
	// (a no-op, a barrier, the new leader's node-state reconcile) that have
	// nothing to do with health checking, and must not fail the test.
	//
	// A gossip false positive (a member marked failed, then alive) is
	// different: checks of a failed node are reassigned, which is a write
	// the health code makes on purpose, and a second runner may probe while
	// ownership moves. So a change of the catalog's nodes table restarts the
	// window, as often as it happens within an overall deadline. So does a
	// real transition: under heavy load a probe can time out three times in
	// a row, and the check then goes critical and back, with both
	// transitions in the instance's timeline. A check written with no
	// transition and no change of owner fails the test.
	type checkState struct {
		instance, status, owner string
		modify                  uint64
	}
	checks := func() map[string]checkState {
		out := map[string]checkState{}
		for _, ch := range checksOf(t, c, running(c)[0], client.CheckFilter{Service: "steady"}) {
			out[ch.ID] = checkState{ch.Instance, ch.Status, ch.Owner, ch.ModifyIndex}
		}
		return out
	}
	nodesIndex := func() uint64 {
		idx, _ := c.Node(running(c)[0]).Agent.Store().Nodes(nil)
		return idx
	}
	term := func() uint64 { return c.Node(running(c)[0]).Agent.Node().Status().Term }
	// disturbance sums what, on a loaded machine, legitimately writes a
	// check or lets two runners probe it: a probe that failed (a delayed
	// probe may time out; three in a row would turn the check critical and
	// back), and a check the leader gave a new owner (after a gossip false
	// positive, or a new leader's reconcile).
	type disturbance struct{ failed, moved, nodes uint64 }
	disturbed := func() disturbance {
		var d disturbance
		for _, i := range running(c) {
			st := c.Node(i).Agent.Health().Stats()
			d.failed += st.ProbesFailed
			d.moved += st.Reassignments
		}
		d.nodes = nodesIndex()
		return d
	}
	// sameIndex waits until every running node has applied the same Raft
	// index: a window started before a lagging node caught up would see the
	// catch-up as writes.
	sameIndex := func() {
		t.Helper()
		wait.For(t, 60*time.Second, 20*time.Millisecond, func() (bool, string) {
			var idx []uint64
			for _, i := range running(c) {
				idx = append(idx, c.Node(i).Agent.Node().Status().AppliedIndex)
			}
			return !slices.ContainsFunc(idx, func(x uint64) bool { return x != idx[0] }), fmt.Sprintf("applied indexes %v", idx)
		})
	}
	var from time.Time
	var start map[string]checkState
	overall := time.Now().Add(4**flatFor + 2*time.Minute)
	for attempt := 0; ; attempt++ {
		if time.Now().After(overall) {
			t.Fatalf("no window of %s without a failed probe, a moved check or a membership change within %s", *flatFor, 4**flatFor+2*time.Minute)
		}
		agenttest.Eventually(t, 2*time.Minute, func() bool {
			return len(healthyIDs(t, c, 0, "steady")) == n
		}, "every instance passing")
		sameIndex()
		before, termBefore := disturbed(), term()
		start, from = checks(), time.Now()
		// Sample until the window ends or something disturbs it.
		var now disturbance
		_ = wait.Poll(*flatFor, 100*time.Millisecond, func() (bool, string) {
			now = disturbed()
			return now != before, ""
		})
		if now != before {
			t.Logf("the window was disturbed after %s (probes failed %d -> %d, checks moved %d -> %d, nodes index %d -> %d); measuring again",
				time.Since(from).Round(time.Millisecond), before.failed, now.failed, before.moved, now.moved, before.nodes, now.nodes)
			continue
		}
		if tb := term(); tb != termBefore {
			t.Logf("elections during the window: term %d -> %d (allowed: they write no health record)", termBefore, tb)
		}
		// The node read may lag the leader by a moment; the catalog it
		// shows at the end must be the one it showed at the start.
		sameIndex()
		end := checks()
		if now = disturbed(); now != before {
			t.Logf("the window was disturbed at its end; measuring again")
			continue
		}
		var written []string
		transitioned := false
		for id, st := range start {
			if end[id] == st {
				continue
			}
			if end[id].owner != st.owner || transitionSince(t, c, running(c)[0], "steady", st.instance, from) {
				t.Logf("check %s moved or changed status during the window (%+v -> %+v): a write on purpose; measuring again", id, st, end[id])
				transitioned = true
				break
			}
			written = append(written, fmt.Sprintf("%s %+v -> %+v", id, st, end[id]))
		}
		if transitioned {
			continue
		}
		if len(written) > 0 {
			t.Fatalf("checks written during %s of steady checking, with no transition and no new owner: %v", time.Since(from).Round(time.Millisecond), written)
		}
		break
	}
	elapsed := time.Since(from)
	t.Logf("no check written for %s (%d checks)", elapsed.Round(time.Millisecond), len(start))
	maxProbes := int(elapsed/interval) + 1
	for k := 0; k < n; k++ {
		ps := tg.since(fmt.Sprintf("/s%03d", k), from)
		if len(ps) > maxProbes || len(ps) < maxProbes/4 {
			t.Fatalf("check s%03d probed %d times in %s (one runner: at most %d)", k, len(ps), elapsed, maxProbes)
		}
		for j := 1; j < len(ps); j++ {
			// One runner waits a full interval after each probe; two would
			// interleave.
			if gap := ps[j].at.Sub(ps[j-1].at); gap < interval-20*time.Millisecond {
				t.Fatalf("check s%03d probed twice within %s", k, gap)
			}
		}
	}
}

// transitionSince reports whether the instance's timeline, as node i has
// it, holds a transition at or after from.
func transitionSince(t *testing.T, c *agenttest.Cluster, i int, service, id string, from time.Time) bool {
	t.Helper()
	inst, _, err := c.Client(i).Instance(context.Background(), service, id, nil)
	if err != nil {
		t.Fatalf("reading %s/%s on node %d: %v", service, id, i, err)
	}
	for _, tr := range inst.Transitions {
		if !tr.Time.Before(from) {
			return true
		}
	}
	return false
}
