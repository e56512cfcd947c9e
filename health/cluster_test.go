package health_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// tcpTarget accepts connections while up and records when it accepted them.
type tcpTarget struct {
	addr    string
	mu      sync.Mutex
	ln      net.Listener
	accepts []time.Time
	wg      sync.WaitGroup
}

// newTCPTarget starts a target on a port the kernel picks (no free port is
// looked up beforehand, so no other process can take it first).
func newTCPTarget(t *testing.T) *tcpTarget {
	tt := &tcpTarget{addr: "127.0.0.1:0"}
	tt.up(t)
	t.Cleanup(func() { tt.down() })
	return tt
}

// up listens on the target's address: the first time on port 0, then again
// on the port it had (the check's address is fixed), as a restarted service
// would.
func (tt *tcpTarget) up(t *testing.T) time.Time {
	ln, err := net.Listen("tcp", tt.addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", tt.addr, err)
	}
	tt.addr = ln.Addr().String()
	tt.mu.Lock()
	tt.ln = ln
	at := time.Now()
	tt.mu.Unlock()
	tt.wg.Add(1)
	go func() {
		defer tt.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tt.mu.Lock()
			tt.accepts = append(tt.accepts, time.Now())
			tt.mu.Unlock()
			c.Close()
		}
	}()
	return at
}

func (tt *tcpTarget) down() {
	tt.mu.Lock()
	ln := tt.ln
	tt.ln = nil
	tt.mu.Unlock()
	if ln != nil {
		ln.Close()
		tt.wg.Wait()
	}
}

func (tt *tcpTarget) count(from, to time.Time) int {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	n := 0
	for _, a := range tt.accepts {
		if !a.Before(from) && !a.After(to) {
			n++
		}
	}
	return n
}

// grpcTarget is a real gRPC server whose grpc.health.v1 service records
// every Check call.
type grpcTarget struct {
	healthpb.UnimplementedHealthServer
	addr    string
	mu      sync.Mutex
	serving bool
	probes  []probe
}

func newGRPCTarget(t *testing.T) *grpcTarget {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &grpcTarget{addr: ln.Addr().String(), serving: true}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, g)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return g
}

func (g *grpcTarget) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.probes = append(g.probes, probe{at: time.Now(), healthy: g.serving})
	if g.serving {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
}

func (g *grpcTarget) setServing(on bool) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.serving = on
	return time.Now()
}

func (g *grpcTarget) count(from, to time.Time, healthy bool) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, p := range g.probes {
		if !p.at.Before(from) && !p.at.After(to) && p.healthy == healthy {
			n++
		}
	}
	return n
}

const (
	failuresBeforeCritical = 3
	successesBeforePassing = 2
)

// The instance goes critical after exactly failures_before_critical failed
// probes and passing after exactly successes_before_passing good ones, as
// every node sees it. Exactness is measured at the target: the probes it
// served between the switch and the transition's time (the proposer's
// clock; the next probe starts an interval after the proposal).
func TestTargetsGoCriticalAfterExactlyTheThresholdAndRecoverOnEveryNode(t *testing.T) {
	c := agenttest.New(t, 3)
	cl := c.Client(0)
	const interval = 200 * time.Millisecond
	def := func(d client.CheckDefinition) client.CheckDefinition {
		d.Interval = client.Duration(interval)
		d.FailuresBeforeCritical, d.SuccessesBeforePassing = failuresBeforeCritical, successesBeforePassing
		return d
	}

	// exact drives one instance through failure and recovery. sick switches
	// the target and returns when; count counts the probes the target
	// served with the given health in [from, to].
	exact := func(t *testing.T, id, check string, sick func(bool) time.Time, count func(from, to time.Time, healthy bool) int) {
		waitInstance(t, c, 30*time.Second, "svc", id, "passing", hasStatus("passing"))
		at := sick(true)
		waitInstance(t, c, 30*time.Second, "svc", id, "critical", hasStatus("critical"))
		inst, _, err := cl.Instance(context.Background(), "svc", id, nil)
		if err != nil {
			t.Fatal(err)
		}
		tt, ok := transitionTo(inst, check, "critical")
		if !ok {
			t.Fatalf("no transition of %s to critical in %+v", check, inst.Transitions)
		}
		if n := count(at, tt, false); n != failuresBeforeCritical {
			t.Fatalf("critical after %d failed probes, want exactly %d", n, failuresBeforeCritical)
		}
		at = sick(false)
		waitInstance(t, c, 30*time.Second, "svc", id, "passing again", hasStatus("passing"))
		inst, _, _ = cl.Instance(context.Background(), "svc", id, nil)
		tt, _ = transitionTo(inst, check, "passing")
		if n := count(at, tt, true); n != successesBeforePassing {
			t.Fatalf("passing after %d good probes, want exactly %d", n, successesBeforePassing)
		}
		if inst.HealthySince == nil || inst.HealthySince.Before(at) {
			t.Fatalf("healthy_since %v not updated on recovery (recovered after %v)", inst.HealthySince, at)
		}
	}

	t.Run("HTTP", func(t *testing.T) {
		tg := newTarget(t)
		register(t, cl, "svc", "h1", &client.Registration{Address: "127.0.0.1", Port: 80,
			Checks: []client.CheckDefinition{def(client.CheckDefinition{Name: "web", HTTP: tg.url("/h1")})}})
		exact(t, "h1", "svc:h1:web",
			func(s bool) time.Time { return tg.setSick("/h1", s) },
			func(from, to time.Time, healthy bool) int { return tg.count("/h1", from, to, healthy) })
	})

	t.Run("gRPC", func(t *testing.T) {
		g := newGRPCTarget(t)
		register(t, cl, "svc", "g1", &client.Registration{Address: "127.0.0.1", Port: 80,
			Checks: []client.CheckDefinition{def(client.CheckDefinition{Name: "rpc", GRPC: g.addr})}})
		exact(t, "g1", "svc:g1:rpc", func(s bool) time.Time { return g.setServing(!s) }, g.count)
	})

	t.Run("TCP", func(t *testing.T) {
		tt := newTCPTarget(t)
		const tcpInterval = 400 * time.Millisecond
		d := def(client.CheckDefinition{Name: "port", TCP: tt.addr})
		d.Interval = client.Duration(tcpInterval)
		register(t, cl, "svc", "t1", &client.Registration{Address: "127.0.0.1", Port: 80, Checks: []client.CheckDefinition{d}})
		waitInstance(t, c, 30*time.Second, "svc", "t1", "passing", hasStatus("passing"))
		// A refused connection leaves no trace at the target, so only the
		// recovery is counted there (the unit tests count both ways).
		tt.down()
		waitInstance(t, c, 30*time.Second, "svc", "t1", "critical", hasStatus("critical"))
		at := tt.up(t)
		waitInstance(t, c, 30*time.Second, "svc", "t1", "passing again", hasStatus("passing"))
		inst, _, _ := cl.Instance(context.Background(), "svc", "t1", nil)
		tr, _ := transitionTo(inst, "svc:t1:port", "passing")
		// The accept loop may record a connection a moment after the
		// prober saw it open; the next probe is a full interval later.
		if n := tt.count(at, tr.Add(tcpInterval/2)); n != successesBeforePassing {
			t.Fatalf("passing after %d accepted connections, want exactly %d", n, successesBeforePassing)
		}
	})
}

// When the node that owns checks is killed, gossip marks it failed, its
// checks move to live nodes and keep running (a target that dies afterwards
// is still detected), and instances registered with node = the dead node
// turn critical; when the node comes back they recover through their checks.
func TestKilledOwnersChecksAreReassignedAndKeepDetecting(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	tg := newTarget(t)
	const n = 9
	for k := 0; k < n; k++ {
		id := fmt.Sprintf("w%d", k)
		register(t, c.Client(0), "web", id, &client.Registration{Address: "127.0.0.1", Port: 8000 + k,
			Checks: []client.CheckDefinition{{Name: "http", HTTP: tg.url("/" + id), Interval: client.Duration(300 * time.Millisecond)}}})
	}
	for k := 0; k < n; k++ {
		waitInstance(t, c, 30*time.Second, "web", fmt.Sprintf("w%d", k), "passing", hasStatus("passing"))
	}
	// Kill a follower that owns checks (the leader is covered by the TTL failover test).
	owned := map[string][]string{}
	for _, ch := range checksOf(t, c, 0, client.CheckFilter{Service: "web"}) {
		owned[ch.Owner] = append(owned[ch.Owner], ch.Instance)
	}
	victim := -1
	for i, nd := range c.Nodes() {
		if i != c.Leader() && len(owned[nd.Name]) > 0 {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no follower owns a check: %v", owned)
	}
	name := c.Node(victim).Name
	moved := owned[name]
	register(t, c.Client(c.Leader()), "db", "db-on-victim", &client.Registration{Address: "127.0.0.1", Port: 5432, Node: name})
	waitInstance(t, c, 30*time.Second, "db", "db-on-victim", "passing", hasStatus("passing"))

	c.Stop(victim)
	survivor := running(c)[0]
	agenttest.Eventually(t, 30*time.Second, func() bool {
		for _, ch := range checksOf(t, c, survivor, client.CheckFilter{Service: "web"}) {
			if ch.Owner == name || ch.Owner == "" {
				return false
			}
		}
		return true
	}, "every check of the killed node owned by a live node")
	// A late proposal from the old owner is refused.
	stale, err := fsm.Encode(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Node: name, Time: time.Now().UnixNano(),
		Updates: []fsm.CheckUpdate{{Check: "web:" + moved[0] + ":http", Status: fsm.Critical, Output: "stale"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Node(survivor).Agent.Node().Apply(context.Background(), stale); !errors.Is(err, fsm.ErrNotOwner) {
		t.Fatalf("a proposal from the old owner: %v, want ErrNotOwner", err)
	}
	waitInstance(t, c, 30*time.Second, "db", "db-on-victim", "critical (its node failed)", func(i *client.Instance) bool {
		return i.Status == "critical" && i.NodeFailed
	})

	// The moved checks keep running on their new owners...
	since := time.Now()
	agenttest.Eventually(t, 30*time.Second, func() bool {
		for _, id := range moved {
			if len(tg.since("/"+id, since)) < 2 {
				return false
			}
		}
		return true
	}, "the moved checks to be probed again")
	// ...and a target that dies now is still detected, on every live node.
	tg.setSick("/"+moved[0], true)
	waitInstance(t, c, 30*time.Second, "web", moved[0], "critical after the reassignment", hasStatus("critical"))

	// The node comes back: its instance recovers.
	c.Restart(victim)
	waitInstance(t, c, 60*time.Second, "db", "db-on-victim", "passing again", func(i *client.Instance) bool {
		return i.Status == "passing" && !i.NodeFailed
	})
}

// A leader failover while TTL instances report normally flips none of them
// to critical: the new leader re-arms every TTL timer with a grace period.
func TestLeaderFailoverDoesNotExpireHeartbeatingTTLInstances(t *testing.T) {
	const ttl = 2 * time.Second
	const every = 400 * time.Millisecond
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) { cfg.TTLGrace = 3 * time.Second }))
	c.WaitForVoters(3)
	var addrs []string
	for _, nd := range c.Nodes() {
		addrs = append(addrs, nd.HTTPAddr())
	}
	const n = 8
	for k := 0; k < n; k++ {
		register(t, c.Client(k%3), "ttl", fmt.Sprintf("t%d", k), &client.Registration{Address: "127.0.0.1", Port: 9000 + k,
			Checks: []client.CheckDefinition{{Name: "hb", TTL: client.Duration(ttl), InitialStatus: "passing"}}})
	}

	// Each instance reports every 400ms through a client that knows every
	// node, retrying while there is no leader, as a real service would.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	okAfter := make([]int, n) // successful reports after the failover
	var failedOver bool
	defer func() { cancel(); wg.Wait() }()
	for k := 0; k < n; k++ {
		cl, err := client.New(client.Config{Addresses: addrs, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				_, err := cl.ReportTTL(ctx, fmt.Sprintf("ttl:t%d:hb", k), "pass", &client.TTLUpdate{Output: "ok"})
				if err == nil {
					mu.Lock()
					if failedOver {
						okAfter[k]++
					}
					mu.Unlock()
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}(k)
	}
	agenttest.Eventually(t, 30*time.Second, func() bool {
		st := c.Node(c.Leader()).Agent.Health().Stats()
		return st.TTLReports >= 2*n
	}, "every instance to report")

	old := c.Leader()
	c.Stop(old)
	newLeader := c.WaitForLeader()
	mu.Lock()
	failedOver = true
	mu.Unlock()
	// Wait until every instance has reported for longer than a TTL plus the
	// grace after the failover (with one report per 400ms).
	need := int((ttl+3*time.Second)/every) + 3
	agenttest.Eventually(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range okAfter {
			if v < need {
				return false
			}
		}
		return true
	}, fmt.Sprintf("%d reports per instance after the failover", need))
	for _, i := range running(c) {
		for k := 0; k < n; k++ {
			inst, _, err := c.Client(i).Instance(context.Background(), "ttl", fmt.Sprintf("t%d", k), nil)
			if err != nil {
				t.Fatal(err)
			}
			if inst.Status != "passing" {
				t.Errorf("node %d: %s is %s", i, inst.ID, inst.Status)
			}
			for _, tr := range inst.Transitions {
				if tr.To == "critical" {
					t.Errorf("node %d: %s went critical at %s: %q", i, inst.ID, tr.Time, tr.Output)
				}
			}
		}
	}
	if st := c.Node(newLeader).Agent.Health().Stats(); st.TTLExpiries != 0 {
		t.Errorf("the new leader expired %d TTLs", st.TTLExpiries)
	}
}
