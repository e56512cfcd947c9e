package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
)

// fsmCluster applies commands straight to a real FSM, as a one-node leader
// would, and routes the health RPC to the Health it belongs to.
type fsmCluster struct {
	f   *fsm.FSM
	h   *Health
	mu  sync.Mutex
	idx uint64
	// refuse, while set, fails writes of that command type, as an
	// election would.
	refuse fsm.MessageType
}

func (c *fsmCluster) Apply(ctx context.Context, cmd []byte) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse != 0 && fsm.MessageType(cmd[0]) == c.refuse {
		return 0, errors.New("test: no leader")
	}
	c.idx++
	res := c.f.Apply(&raft.Log{Index: c.idx, Term: 1, Type: raft.LogCommand, Data: cmd}).(fsm.ApplyResult)
	if res.Err != nil {
		return res.Index, res.Err
	}
	return res.Index, nil
}

func (c *fsmCluster) ApplyLeader(ctx context.Context, cmd []byte) (uint64, error) {
	return c.Apply(ctx, cmd)
}

func (c *fsmCluster) CallLeader(ctx context.Context, payload []byte) ([]byte, error) {
	return c.h.ServeRPC(ctx, payload)
}

func (c *fsmCluster) must(t *testing.T, typ fsm.MessageType, req any) {
	t.Helper()
	cmd, err := fsm.Encode(typ, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
}

func newTestHealth(t *testing.T, mutate func(*Config)) (*Health, *fsmCluster) {
	cfg := DefaultConfig()
	cfg.Node = "n1"
	cfg.Flap.Threshold = 0
	cfg.TTLGrace = 10 * time.Second
	cfg.MetricsPeriod = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	f := fsm.New(nil)
	cl := &fsmCluster{f: f}
	h, err := New(cfg, f, cl)
	if err != nil {
		t.Fatal(err)
	}
	cl.h = h
	cl.must(t, fsm.NodeUpdateType, &fsm.NodeUpdateRequest{Upserts: []fsm.NodeState{{Name: "n1", Role: fsm.RoleServer, Status: fsm.NodeAlive}}, Time: time.Now().UnixNano()})
	return h, cl
}

func registerTTL(t *testing.T, cl *fsmCluster, id string, ttl, deregisterAfter time.Duration) {
	cl.must(t, fsm.RegisterType, &fsm.RegisterRequest{ID: id, Service: "jobs", Address: "10.0.0.1", Port: 1, Time: time.Now().UnixNano(),
		Checks: []fsm.CheckDefinition{{Name: "hb", Type: fsm.CheckTTL, TTL: int64(ttl), InitialStatus: fsm.Passing, DeregisterCriticalAfter: int64(deregisterAfter)}}})
}

func status(h *Health, check string) fsm.Health {
	if c := h.store.Check(nil, check); c != nil {
		return c.Status
	}
	return ""
}

// lead runs the coordinator until the test's cleanup.
func lead(t *testing.T, h *Health) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Lead(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	synctest.Wait()
}

func TestANewLeaderGivesEveryTTLItsGraceThenExpiresIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, nil)
		registerTTL(t, cl, "j1", 30*time.Second, 0)
		lead(t, h)
		time.Sleep(39 * time.Second)
		synctest.Wait()
		if s := status(h, "jobs:j1:hb"); s != fsm.Passing {
			t.Fatalf("%s within TTL+grace (40s) after the leader started", s)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if s := status(h, "jobs:j1:hb"); s != fsm.Critical {
			t.Fatalf("%s after TTL+grace without a report", s)
		}
		if c := h.store.Check(nil, "jobs:j1:hb"); c.Output != "TTL expired: no report within 30s" {
			t.Fatalf("output %q", c.Output)
		}

		// A report revives it; from then on the TTL alone counts.
		if _, err := h.ReportTTL(context.Background(), "jobs:j1:hb", fsm.Passing, "back", nil); err != nil {
			t.Fatal(err)
		}
		if s := status(h, "jobs:j1:hb"); s != fsm.Passing {
			t.Fatalf("%s right after a pass report", s)
		}
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if s := status(h, "jobs:j1:hb"); s != fsm.Passing {
			t.Fatalf("%s within the TTL of the last report", s)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if s := status(h, "jobs:j1:hb"); s != fsm.Critical {
			t.Fatalf("%s a TTL after the last report", s)
		}
	})
}

func TestReportsThatChangeNothingWriteNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, nil)
		registerTTL(t, cl, "j1", 30*time.Second, 0)
		lead(t, h)
		// The first report gives the new check its first output: one write.
		if _, err := h.ReportTTL(context.Background(), "jobs:j1:hb", fsm.Passing, "first", nil); err != nil {
			t.Fatal(err)
		}
		before := cl.f.AppliedIndex()
		for i := 0; i < 20; i++ {
			if _, err := h.ReportTTL(context.Background(), "jobs:j1:hb", fsm.Passing, "output that changes "+time.Now().String(), nil); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		}
		if got := cl.f.AppliedIndex(); got != before {
			t.Fatalf("20 pass reports of a passing check wrote %d entries", got-before)
		}
		if _, err := h.ReportTTL(context.Background(), "jobs:j1:hb", fsm.Warning, "slow", nil); err != nil || status(h, "jobs:j1:hb") != fsm.Warning {
			t.Fatalf("warn report: %v, status %s", err, status(h, "jobs:j1:hb"))
		}
	})
}

func TestMetricsAreCoalescedPerInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, nil)
		registerTTL(t, cl, "j1", time.Minute, 0)
		lead(t, h)
		metrics := func() map[string]float64 {
			_, inst, _ := h.store.Instance(nil, "jobs", "j1")
			return inst.Metrics
		}
		report := func(load float64) {
			t.Helper()
			if _, err := h.ReportTTL(context.Background(), "jobs:j1:hb", fsm.Passing, "", map[string]float64{"load": load}); err != nil {
				t.Fatal(err)
			}
		}
		report(1) // the first report is written at once
		if m := metrics(); m["load"] != 1 || h.Stats().MetricsWrites != 1 {
			t.Fatalf("metrics %v after the first report (%d writes)", m, h.Stats().MetricsWrites)
		}
		for i := 2; i <= 5; i++ { // four more within the 5s period
			time.Sleep(time.Second)
			report(float64(i))
		}
		if m := metrics(); m["load"] != 1 {
			t.Fatalf("metrics %v written within the period", m)
		}
		time.Sleep(time.Second + time.Millisecond)
		synctest.Wait()
		if m := metrics(); m["load"] != 5 || h.Stats().MetricsWrites != 2 {
			t.Fatalf("metrics %v after the period (%d writes), want the last report in one more write", m, h.Stats().MetricsWrites)
		}
		time.Sleep(10 * time.Second)
		report(5) // unchanged: nothing to write
		synctest.Wait()
		if h.Stats().MetricsWrites != 2 {
			t.Fatalf("%d writes after an unchanged report", h.Stats().MetricsWrites)
		}
	})
}

func TestDeregisterCriticalAfterAndDrainDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, func(c *Config) { c.TTLGrace = 0 })
		registerTTL(t, cl, "gone", 10*time.Second, 20*time.Second)
		registerTTL(t, cl, "back", 10*time.Second, 20*time.Second)
		cl.must(t, fsm.RegisterType, &fsm.RegisterRequest{ID: "drained", Service: "jobs", Address: "10.0.0.1", Port: 3})
		cl.must(t, fsm.RegisterType, &fsm.RegisterRequest{ID: "kept", Service: "jobs", Address: "10.0.0.1", Port: 4})
		now := time.Now()
		cl.must(t, fsm.MaintenanceType, &fsm.MaintenanceRequest{Service: "jobs", ID: "drained", Mode: fsm.ModeDrain, Deadline: now.Add(15 * time.Second).UnixNano(), Time: now.UnixNano()})
		cl.must(t, fsm.MaintenanceType, &fsm.MaintenanceRequest{Service: "jobs", ID: "kept", Mode: fsm.ModeDrain, Deadline: now.Add(15 * time.Second).UnixNano(), Time: now.UnixNano()})
		lead(t, h)
		exists := func(id string) bool { _, inst, _ := h.store.Instance(nil, "jobs", id); return inst != nil }

		time.Sleep(11 * time.Second) // both TTLs expired at 10s
		synctest.Wait()
		if status(h, "jobs:gone:hb") != fsm.Critical || status(h, "jobs:back:hb") != fsm.Critical {
			t.Fatal("TTLs did not expire")
		}
		cl.must(t, fsm.MaintenanceType, &fsm.MaintenanceRequest{Service: "jobs", ID: "kept", Mode: fsm.ModeNone, Time: time.Now().UnixNano()})
		time.Sleep(5 * time.Second) // 16s: the drain deadline passed
		synctest.Wait()
		if exists("drained") || !exists("kept") {
			t.Fatalf("after the drain deadline: drained exists %v, kept (drain cancelled) exists %v", exists("drained"), exists("kept"))
		}
		if _, err := h.ReportTTL(context.Background(), "jobs:back:hb", fsm.Passing, "", nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Second) // 31s: gone has been critical for 21s
		synctest.Wait()
		if exists("gone") || !exists("back") {
			t.Fatalf("after deregister_critical_after: gone exists %v, back (recovered) exists %v", exists("gone"), exists("back"))
		}
		if st := h.Stats(); st.DeregisteredCritical != 1 || st.DeregisteredDrained != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestChecksAreAssignedToAliveServersAndMovedOffFailedOnes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, nil)
		cl.must(t, fsm.NodeUpdateType, &fsm.NodeUpdateRequest{Upserts: []fsm.NodeState{
			{Name: "n2", Role: fsm.RoleServer, Status: fsm.NodeAlive}, {Name: "n3", Role: fsm.RoleServer, Status: fsm.NodeAlive}}})
		for i := 0; i < 30; i++ {
			cl.must(t, fsm.RegisterType, &fsm.RegisterRequest{ID: "w" + string(rune('a'+i)), Service: "web", Address: "10.0.0.1", Port: 80,
				Checks: []fsm.CheckDefinition{{Name: "tcp", Type: fsm.CheckTCP, Target: "10.0.0.1:80", Interval: int64(time.Hour), Timeout: int64(time.Second)}}})
		}
		lead(t, h)
		owners := func() map[string]int {
			_, cs := h.store.Checks(nil, "web")
			m := map[string]int{}
			for _, c := range cs {
				m[c.Owner]++
			}
			return m
		}
		if m := owners(); len(m) != 3 || m[""] != 0 {
			t.Fatalf("owners %v, want the three servers", m)
		}
		before := owners()
		cl.must(t, fsm.NodeUpdateType, &fsm.NodeUpdateRequest{Upserts: []fsm.NodeState{{Name: "n2", Role: fsm.RoleServer, Status: fsm.NodeFailed}}})
		time.Sleep(time.Second)
		synctest.Wait()
		after := owners()
		if after["n2"] != 0 || after["n1"]+after["n3"] != 30 || after["n1"] < before["n1"] || after["n3"] < before["n3"] {
			t.Fatalf("owners %v after n2 failed (before %v): n2's checks must move, the others stay", after, before)
		}
	})
}

// Instance IDs are unique per service: the coordinator keeps the metrics
// and the deregistration decisions of jobs/j1 and cron/j1 apart.
func TestTheSameIDInTwoServicesIsTwoInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, func(c *Config) { c.TTLGrace = 0 })
		registerTTL(t, cl, "j1", 10*time.Second, 20*time.Second)
		cl.must(t, fsm.RegisterType, &fsm.RegisterRequest{ID: "j1", Service: "cron", Address: "10.0.0.2", Port: 2, Time: time.Now().UnixNano(),
			Checks: []fsm.CheckDefinition{{Name: "hb", Type: fsm.CheckTTL, TTL: int64(time.Minute), InitialStatus: fsm.Passing, DeregisterCriticalAfter: int64(20 * time.Second)}}})
		lead(t, h)
		instance := func(service string) *fsm.Instance { _, inst, _ := h.store.Instance(nil, service, "j1"); return inst }

		if _, err := h.ReportTTL(context.Background(), "cron:j1:hb", fsm.Passing, "", map[string]float64{"load": 3}); err != nil {
			t.Fatal(err)
		}
		if m := instance("cron").Metrics; m["load"] != 3 {
			t.Fatalf("cron/j1 metrics %v, want load 3", m)
		}
		if m := instance("jobs").Metrics; m != nil {
			t.Fatalf("jobs/j1 metrics %v, want none: the report was cron/j1's", m)
		}
		// jobs/j1 misses its 10s TTL and is critical from then on: it is
		// deregistered 20s later, while cron/j1 (TTL 1m, reported) stays.
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if instance("jobs") != nil || instance("cron") == nil {
			t.Fatalf("after deregister_critical_after: jobs/j1 %v, cron/j1 %v; want jobs/j1 gone and cron/j1 kept", instance("jobs"), instance("cron"))
		}
		if s := status(h, "cron:j1:hb"); s != fsm.Passing {
			t.Fatalf("cron:j1:hb is %s, want passing", s)
		}
	})
}

// A TTL check deregistered while the coordinator leads loses its timer at
// the next scan: its TTL never expires, nothing is written for it, and the
// checks that stay keep theirs.
func TestADeregisteredTTLCheckLosesItsTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, nil)
		registerTTL(t, cl, "j1", 30*time.Second, 0)
		registerTTL(t, cl, "j2", 30*time.Second, 0)
		lead(t, h)
		cl.must(t, fsm.DeregisterType, &fsm.DeregisterRequest{Service: "jobs", ID: "j1"})
		time.Sleep(time.Second) // past MinScanInterval: the scan that sees it gone
		synctest.Wait()
		time.Sleep(41 * time.Second) // past TTL + grace
		synctest.Wait()
		if n := h.stats.ttlExpiries.Load(); n != 1 {
			t.Fatalf("%d TTL expiries, want 1 (j2's alone)", n)
		}
		if s := status(h, "jobs:j2:hb"); s != fsm.Critical {
			t.Fatalf("j2 %s after TTL+grace without a report", s)
		}
	})
}

// After taking office the coordinator reads only the checks that changed:
// new TTL checks get timers, deregister_critical_after is enforced on
// checks registered later, a check left with a dead owner moves (and is
// retried when that write fails), while the full reads stay at one per
// change of the alive servers.
func TestScansReadOnlyTheChecksThatChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, func(c *Config) { c.TTLGrace = 0 })
		for i := range 200 {
			registerTTL(t, cl, fmt.Sprintf("old-%d", i), time.Hour, 0)
		}
		tcp := func(id string) *fsm.RegisterRequest {
			return &fsm.RegisterRequest{ID: id, Service: "web", Address: "127.0.0.1", Port: 80,
				Checks: []fsm.CheckDefinition{{Name: "tcp", Type: fsm.CheckTCP, Target: "127.0.0.1:80", Interval: int64(time.Hour), Timeout: int64(time.Second)}}}
		}
		cl.must(t, fsm.RegisterType, tcp("w1"))
		lead(t, h)
		if st := h.Stats(); st.FullScans != 1 || st.ScannedChecks != 201 {
			t.Fatalf("after taking office: %d full scans reading %d checks, want 1 reading 201", st.FullScans, st.ScannedChecks)
		}

		registerTTL(t, cl, "new", 10*time.Second, 20*time.Second)
		registerTTL(t, cl, "short", 10*time.Second, 0)
		cl.must(t, fsm.DeregisterType, &fsm.DeregisterRequest{Service: "jobs", ID: "short"})
		time.Sleep(11 * time.Second) // new's TTL ran out; short's did not count
		synctest.Wait()
		if s := status(h, "jobs:new:hb"); s != fsm.Critical {
			t.Fatalf("a TTL check registered after the leader took office is %s past its TTL, want critical", s)
		}
		if n := h.Stats().TTLExpiries; n != 1 {
			t.Fatalf("%d TTL expiries, want 1: the deregistered check's timer must go", n)
		}
		time.Sleep(21 * time.Second) // critical for 21s > deregister_critical_after
		synctest.Wait()
		if _, inst, _ := h.store.Instance(nil, "jobs", "new"); inst != nil {
			t.Fatal("an instance registered after the leader took office outlived deregister_critical_after")
		}

		// A check whose owner is not an alive server moves to one; when
		// that write fails it is retried.
		cl.mu.Lock()
		cl.refuse = fsm.AssignChecksType
		cl.mu.Unlock()
		cl.must(t, fsm.RegisterType, tcp("w2"))
		cmd, err := fsm.Encode(fsm.AssignChecksType, &fsm.AssignChecksRequest{Assignments: []fsm.Assignment{{Check: "web:w2:tcp", Owner: "gone"}}})
		if err != nil {
			t.Fatal(err)
		}
		cl.mu.Lock()
		cl.idx++
		cl.f.Apply(&raft.Log{Index: cl.idx, Term: 1, Type: raft.LogCommand, Data: cmd})
		cl.mu.Unlock()
		// The scan that tries the move runs within MinScanInterval, its
		// retry retryAfter later: look (and let writes through) between.
		time.Sleep(retryAfter / 2)
		synctest.Wait()
		if c := h.store.Check(nil, "web:w2:tcp"); c.Owner != "gone" {
			t.Fatalf("owner %q while assignments fail", c.Owner)
		}
		cl.mu.Lock()
		cl.refuse = 0
		cl.mu.Unlock()
		time.Sleep(2 * retryAfter)
		synctest.Wait()
		if c := h.store.Check(nil, "web:w2:tcp"); c.Owner != "n1" {
			t.Fatalf("owner %q after the failed assignment was retried, want n1", c.Owner)
		}
		st := h.Stats()
		if st.FullScans != 2 {
			t.Fatalf("%d full scans, want 2 (taking office, the retry)", st.FullScans)
		}
		// The retry reread all 201 + 1 checks; everything else read a few.
		if extra := st.ScannedChecks - 201 - 202; extra > 20 {
			t.Fatalf("scans read %d checks besides the two full reads, want a few: the ones that changed", extra)
		}

		// A server joining changes the alive set: every owner is
		// reconsidered.
		cl.must(t, fsm.NodeUpdateType, &fsm.NodeUpdateRequest{Upserts: []fsm.NodeState{{Name: "n2", Role: fsm.RoleServer, Status: fsm.NodeAlive}}})
		time.Sleep(time.Second)
		synctest.Wait()
		if st := h.Stats(); st.FullScans != 3 {
			t.Fatalf("%d full scans after a server joined, want 3", st.FullScans)
		}
	})
}

// snapshotSink keeps a snapshot's bytes.
type snapshotSink struct{ bytes.Buffer }

func (s *snapshotSink) ID() string    { return "test" }
func (s *snapshotSink) Close() error  { return nil }
func (s *snapshotSink) Cancel() error { return nil }

// The runner follows the check feed: checks assigned to this node start,
// checks moved away, deregistered or redefined as TTL checks stop, TTL
// checks never run here, and a snapshot restore (after which the feed cannot
// tell what changed) brings it back in line with every check it owns.
func TestTheRunnerFollowsTheChecksThisNodeOwns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, nil)
		tcp := func(id string) *fsm.RegisterRequest {
			// Interval 1h: the first probe comes at a random offset within
			// it, and the test's clock never gets that far.
			return &fsm.RegisterRequest{ID: id, Service: "web", Address: "127.0.0.1", Port: 80,
				Checks: []fsm.CheckDefinition{{Name: "tcp", Type: fsm.CheckTCP, Target: "127.0.0.1:80", Interval: int64(time.Hour), Timeout: int64(time.Second)}}}
		}
		cl.must(t, fsm.RegisterType, tcp("w1"))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); h.Run(ctx) }()
		defer func() { cancel(); <-done }()
		running := func(want int64, after string) {
			t.Helper()
			synctest.Wait()
			if n := h.Stats().RunningChecks; n != want {
				t.Fatalf("after %s: %d checks running, want %d", after, n, want)
			}
		}
		running(1, "starting with one check")
		cl.must(t, fsm.RegisterType, tcp("w2"))
		cl.must(t, fsm.RegisterType, tcp("w3"))
		registerTTL(t, cl, "j1", time.Minute, 0)
		running(3, "two more TCP checks and a TTL check")

		var snap snapshotSink
		s, err := cl.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Persist(&snap); err != nil {
			t.Fatal(err)
		}
		s.Release()

		cl.must(t, fsm.AssignChecksType, &fsm.AssignChecksRequest{Assignments: []fsm.Assignment{{Check: "web:w1:tcp", Owner: "n2"}}})
		running(2, "one check moved to n2")
		cl.must(t, fsm.DeregisterType, &fsm.DeregisterRequest{Service: "web", ID: "w2"})
		running(1, "one deregistered")
		cl.must(t, fsm.RegisterType, &fsm.RegisterRequest{ID: "w3", Service: "web", Address: "127.0.0.1", Port: 80,
			Checks: []fsm.CheckDefinition{{Name: "tcp", Type: fsm.CheckTTL, TTL: int64(time.Minute)}}})
		running(0, "the last one redefined as a TTL check")
		cl.must(t, fsm.AssignChecksType, &fsm.AssignChecksRequest{Assignments: []fsm.Assignment{{Check: "web:w1:tcp", Owner: "n1"}}})
		running(1, "the moved check assigned back")

		if err := cl.f.Restore(io.NopCloser(&snap.Buffer)); err != nil {
			t.Fatal(err)
		}
		running(3, "restoring the snapshot taken with three TCP checks")
	})
}

// A TTL check re-registered under the same name as another type loses its
// timer at the scan that sees it: the old TTL neither expires the new check
// nor writes for it (which the FSM would refuse: the new check has an owner).
func TestATTLCheckRedefinedAsAnotherTypeLosesItsTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, func(c *Config) { c.TTLGrace = 0 })
		registerTTL(t, cl, "j1", 10*time.Second, 0)
		registerTTL(t, cl, "j2", 10*time.Second, 0)
		lead(t, h)
		cl.must(t, fsm.RegisterType, &fsm.RegisterRequest{ID: "j1", Service: "jobs", Address: "127.0.0.1", Port: 1, Time: time.Now().UnixNano(),
			Checks: []fsm.CheckDefinition{{Name: "hb", Type: fsm.CheckTCP, Target: "127.0.0.1:1", Interval: int64(time.Hour), Timeout: int64(time.Second)}}})
		time.Sleep(30 * time.Second)
		synctest.Wait()
		st := h.Stats()
		if st.ProposalErrors != 0 {
			t.Fatalf("%d refused writes after a TTL check became a TCP check", st.ProposalErrors)
		}
		if st.TTLExpiries != 1 {
			t.Fatalf("%d TTL expiries, want 1 (j2's alone)", st.TTLExpiries)
		}
		if c := h.store.Check(nil, "jobs:j1:hb"); c.Type != fsm.CheckTCP || strings.HasPrefix(c.Output, "TTL expired") {
			t.Fatalf("the TCP check that replaced a TTL check: %s, %q", c.Type, c.Output)
		}
	})
}

// TestReportsKeepOneTimerPerCheck: a TTL check reported every few seconds
// keeps one entry in the leader's timer heap (it used to gain one per report
// until that report's deadline passed), never expires while reported, and
// expires a TTL after its last report once the reports stop.
func TestReportsKeepOneTimerPerCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, nil)
		const n = 20
		ids := make([]string, n)
		for i := range ids {
			registerTTL(t, cl, fmt.Sprintf("j%d", i), 30*time.Second, 0)
			ids[i] = fmt.Sprintf("jobs:j%d:hb", i)
		}
		lead(t, h)
		if got := h.Stats().TTLTimers; got != n {
			t.Fatalf("%d timers after taking office, want %d", got, n)
		}
		most := int64(0)
		for round := 0; round < 40; round++ { // 80 s of reports, 2 s apart
			for _, id := range ids {
				if _, err := h.ReportTTL(context.Background(), id, fsm.Passing, "ok", nil); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(2 * time.Second)
			synctest.Wait()
			most = max(most, h.Stats().TTLTimers)
			for _, id := range ids {
				if s := status(h, id); s != fsm.Passing {
					t.Fatalf("round %d: %s is %s while reported every 2s (TTL 30s)", round, id, s)
				}
			}
		}
		// The first report moves each deadline earlier than the one armed
		// with the new leader's grace, whose entry waits for its time: two
		// entries per check at most, one once that time has passed.
		if most > 2*n {
			t.Errorf("the timer heap held up to %d entries for %d checks", most, n)
		}
		if got := h.Stats().TTLTimers; got != n {
			t.Errorf("%d timers after 80s of reports, want %d", got, n)
		}
		if e := h.Stats().TTLExpiries; e != 0 {
			t.Fatalf("%d expiries while reported", e)
		}
		// The last reports were 2s ago: 27s more is within their TTL.
		time.Sleep(27 * time.Second)
		synctest.Wait()
		for _, id := range ids {
			if s := status(h, id); s != fsm.Passing {
				t.Fatalf("%s is %s 29s after its last report (TTL 30s)", id, s)
			}
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		for _, id := range ids {
			if s := status(h, id); s != fsm.Critical {
				t.Fatalf("%s is %s 31s after its last report (TTL 30s)", id, s)
			}
		}
		if e := h.Stats().TTLExpiries; e != n {
			t.Errorf("%d expiries, want %d", e, n)
		}
		// Expired and unreported: nothing left queued until a report.
		if got := h.Stats().TTLTimers; got != 0 {
			t.Errorf("%d timers after every check expired, want 0", got)
		}
		if _, err := h.ReportTTL(context.Background(), ids[0], fsm.Passing, "back", nil); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := h.Stats().TTLTimers; got != 1 {
			t.Errorf("%d timers after one expired check was reported again, want 1", got)
		}
	})
}

// flapTestPolicy is a flap policy short enough for synctest runs.
var flapTestPolicy = FlapPolicy{Threshold: 3, Window: time.Minute, HoldDown: 20 * time.Second, MaxHoldDown: 2 * time.Minute}

func TestACalmTTLCheckHoldsNoTracker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, func(c *Config) { c.Flap = flapTestPolicy })
		const n = 50
		ids := make([]string, n)
		for i := range ids {
			registerTTL(t, cl, fmt.Sprintf("j%d", i), time.Hour, 0)
			ids[i] = fmt.Sprintf("jobs:j%d:hb", i)
		}
		lead(t, h)
		for _, id := range ids {
			if _, err := h.ReportTTL(context.Background(), id, fsm.Passing, "ok", nil); err != nil {
				t.Fatal(err)
			}
		}
		// Each first report wrote the check's first output, then left
		// nothing the catalog does not hold.
		for _, id := range ids {
			if c := h.store.Check(nil, id); c.Status != fsm.Passing || c.Output != "ok" {
				t.Fatalf("%s: %s %q after a pass report", id, c.Status, c.Output)
			}
		}
		if got := h.Stats().TTLTrackers; got != 0 {
			t.Fatalf("%d trackers held for %d calm checks", got, n)
		}

		// A status change stays held while it is inside the flap window...
		if _, err := h.ReportTTL(context.Background(), ids[0], fsm.Critical, "down", nil); err != nil {
			t.Fatal(err)
		}
		if got := h.Stats().TTLTrackers; got != 1 || status(h, ids[0]) != fsm.Critical {
			t.Fatalf("after a fail report: %d trackers held, status %s; want 1, critical", got, status(h, ids[0]))
		}
		time.Sleep(flapTestPolicy.Window)
		synctest.Wait()
		if got := h.Stats().TTLTrackers; got != 1 {
			t.Fatalf("%d trackers held while the change is inside the flap window", got)
		}
		// ...and is dropped by the next look after it left it.
		time.Sleep(settleEvery + time.Second)
		synctest.Wait()
		if got := h.Stats().TTLTrackers; got != 0 {
			t.Fatalf("%d trackers held %s after the last change", got, flapTestPolicy.Window+settleEvery+time.Second)
		}
		if c := h.store.Check(nil, ids[0]); c.Status != fsm.Critical || c.Output != "down" {
			t.Fatalf("dropping the tracker changed the check: %s %q", c.Status, c.Output)
		}

		// Three changes within the window, the first made by a tracker
		// built anew from the catalog: flapping, as without the drop.
		for _, s := range []fsm.Health{fsm.Passing, fsm.Critical} {
			if _, err := h.ReportTTL(context.Background(), ids[1], fsm.Critical, "down", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := h.ReportTTL(context.Background(), ids[1], s, "x", nil); err != nil {
				t.Fatal(err)
			}
		}
		if c := h.store.Check(nil, ids[1]); !c.Flapping {
			t.Fatalf("three changes within the window did not flap %s: %+v", ids[1], c)
		}
		if got := h.Stats().TTLTrackers; got != 1 {
			t.Fatalf("%d trackers held with one check flapping, want 1", got)
		}
	})
}

func TestAFailedTTLWriteKeepsItsTrackerUntilTheRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, nil)
		registerTTL(t, cl, "j1", time.Hour, 0)
		lead(t, h)
		cl.mu.Lock()
		cl.refuse = fsm.CheckUpdateType
		cl.mu.Unlock()
		if _, err := h.ReportTTL(context.Background(), "jobs:j1:hb", fsm.Critical, "down", nil); err == nil {
			t.Fatal("a report whose write failed answered no error")
		}
		if got := h.Stats().TTLTrackers; got != 1 {
			t.Fatalf("%d trackers held after a failed write, want 1", got)
		}
		time.Sleep(2 * settleEvery) // the looks in between drop nothing
		synctest.Wait()
		if got := h.Stats().TTLTrackers; got != 1 || status(h, "jobs:j1:hb") != fsm.Passing {
			t.Fatalf("while writes fail: %d trackers held, status %s", got, status(h, "jobs:j1:hb"))
		}
		cl.mu.Lock()
		cl.refuse = 0
		cl.mu.Unlock()
		time.Sleep(retryAfter + time.Second)
		synctest.Wait()
		if c := h.store.Check(nil, "jobs:j1:hb"); c.Status != fsm.Critical || c.Output != "down" {
			t.Fatalf("the retry wrote %s %q, want critical \"down\"", c.Status, c.Output)
		}
		if got := h.Stats().TTLTrackers; got != 0 {
			t.Fatalf("%d trackers held once the retry wrote the change", got)
		}
	})
}

// TestDroppedTrackersDecideAsKeptOnes drives random TTL reports, in calm
// spells and storms, through the leader (which drops a check's tracker once
// it holds nothing the catalog does not) and through one tracker that is
// never dropped, applied to a copy of the check as the FSM would: after
// every report the catalog must hold what the kept tracker decided.
func TestDroppedTrackersDecideAsKeptOnes(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { droppedTrackersDecideAsKeptOnes(t, seed) })
	}
}

func droppedTrackersDecideAsKeptOnes(t *testing.T, seed uint64) {
	synctest.Test(t, func(t *testing.T) {
		h, cl := newTestHealth(t, func(c *Config) { c.Flap = flapTestPolicy })
		registerTTL(t, cl, "j1", 24*time.Hour, 0)
		const id = "jobs:j1:hb"
		lead(t, h)
		model := *h.store.Check(nil, id)
		policy := flapTestPolicy
		ref := newTracker(&model, &policy, false)
		rng := rand.New(rand.NewPCG(seed, 7))
		drops, settledAtOnce := 0, 0
		held := int64(0)
		statuses := []fsm.Health{fsm.Passing, fsm.Passing, fsm.Passing, fsm.Critical, fsm.Warning}
		for step := 0; step < 600; step++ {
			if rng.IntN(4) == 0 {
				time.Sleep(time.Duration(30+rng.IntN(200)) * time.Second) // a calm spell
			} else {
				time.Sleep(time.Duration(rng.IntN(8000)) * time.Millisecond)
			}
			synctest.Wait()
			if now := h.Stats().TTLTrackers; now < held {
				drops++
			}
			// The leader ends (or extends) a hold-down when it is due,
			// with no report: so does the model, at the same instants.
			for ref.flapping && ref.flapUntil <= time.Now().UnixNano() {
				ref.tick(time.Unix(0, ref.flapUntil))
				if ref.needsWrite(&model) {
					apply(&model, ref.update(id, h.cfg.MaxOutput))
				}
			}
			s := statuses[rng.IntN(len(statuses))]
			out := fmt.Sprintf("r%d", step)
			if _, err := h.ReportTTL(context.Background(), id, s, out, nil); err != nil {
				t.Fatal(err)
			}
			held = h.Stats().TTLTrackers
			if held == 0 {
				settledAtOnce++
			}
			ref.observe(time.Now(), Result{Status: s, Output: out})
			if ref.needsWrite(&model) {
				u := ref.update(id, h.cfg.MaxOutput)
				apply(&model, u)
			}
			got := h.store.Check(nil, id)
			if got.Status != model.Status || got.Flapping != model.Flapping || got.FlapUntil != model.FlapUntil ||
				got.FlapLevel != model.FlapLevel || got.Output != model.Output {
				t.Fatalf("step %d (%s): the leader wrote %s flapping=%v until=%d level=%d %q; a kept tracker %s flapping=%v until=%d level=%d %q",
					step, s, got.Status, got.Flapping, got.FlapUntil, got.FlapLevel, got.Output,
					model.Status, model.Flapping, model.FlapUntil, model.FlapLevel, model.Output)
			}
		}
		if drops == 0 || settledAtOnce == 0 {
			t.Fatalf("trackers dropped between reports %d times, at a report %d times: the test compared too little", drops, settledAtOnce)
		}
		t.Logf("600 reports: the tracker dropped between reports %d times, at the report %d times", drops, settledAtOnce)
	})
}

// holdDownTestPolicy ends a hold-down at its first end: the changes that
// started it have left the window by then.
var holdDownTestPolicy = FlapPolicy{Threshold: 3, Window: 10 * time.Second, HoldDown: 20 * time.Second, MaxHoldDown: 2 * time.Minute}

// flapTTL reports fail, pass, fail to check id: three changes, so it is
// held flapping (critical). It returns the end of the hold-down.
func flapTTL(t *testing.T, h *Health, id string) time.Time {
	t.Helper()
	for _, s := range []fsm.Health{fsm.Critical, fsm.Passing, fsm.Critical} {
		if _, err := h.ReportTTL(context.Background(), id, s, string(s), nil); err != nil {
			t.Fatal(err)
		}
	}
	c := h.store.Check(nil, id)
	if !c.Flapping || c.Status != fsm.Critical {
		t.Fatalf("three changes did not hold %s flapping: %+v", id, c)
	}
	return time.Unix(0, c.FlapUntil)
}

// A TTL check held flapping takes its latest result at the end of the
// hold-down, written by the leader with no report needed: the pass
// reported during the hold-down, or critical if its TTL expired meanwhile.
// (The leader used to end a hold-down only with the next report or expiry.)
func TestAHoldDownEndsWithTheLatestTTLResultWithoutAReport(t *testing.T) {
	t.Run("the last report passed within its TTL", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, cl := newTestHealth(t, func(c *Config) { c.Flap = holdDownTestPolicy })
			registerTTL(t, cl, "j1", time.Hour, 0)
			const id = "jobs:j1:hb"
			lead(t, h)
			until := flapTTL(t, h, id)
			if _, err := h.ReportTTL(context.Background(), id, fsm.Passing, "back", nil); err != nil {
				t.Fatal(err)
			}
			// Held: the pass is kept by the leader, not written yet.
			if c := h.store.Check(nil, id); !c.Flapping || c.Status != fsm.Critical {
				t.Fatalf("a pass during the hold-down was written: %+v", c)
			}
			time.Sleep(time.Until(until) - time.Millisecond)
			synctest.Wait()
			if c := h.store.Check(nil, id); !c.Flapping {
				t.Fatalf("the hold-down ended before its end %s: %+v", until, c)
			}
			time.Sleep(time.Millisecond)
			synctest.Wait()
			c := h.store.Check(nil, id)
			if c.Flapping || c.FlapUntil != 0 || c.Status != fsm.Passing || c.Output != "back" {
				t.Fatalf("at the end of the hold-down, with no report since the pass: %s flapping=%v until=%d %q; want passing \"back\"",
					c.Status, c.Flapping, c.FlapUntil, c.Output)
			}
			if got := time.Unix(0, c.StatusSince); !got.Equal(until) {
				t.Fatalf("passing since %s, want the hold-down's end %s", got, until)
			}
		})
	})
	t.Run("its TTL expired during the hold-down", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, cl := newTestHealth(t, func(c *Config) { c.Flap = holdDownTestPolicy })
			registerTTL(t, cl, "j1", 15*time.Second, 0) // expires 5s before the hold-down's end
			const id = "jobs:j1:hb"
			lead(t, h)
			until := flapTTL(t, h, id)
			if _, err := h.ReportTTL(context.Background(), id, fsm.Passing, "back", nil); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(until) + time.Second)
			synctest.Wait()
			c := h.store.Check(nil, id)
			if c.Flapping || c.Status != fsm.Critical || !strings.HasPrefix(c.Output, "TTL expired") {
				t.Fatalf("after the hold-down, the TTL expired within it: %s flapping=%v %q; want critical, expired", c.Status, c.Flapping, c.Output)
			}
		})
	})
	t.Run("a new leader ends a hold-down the old one started", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, cl := newTestHealth(t, func(c *Config) { c.Flap = holdDownTestPolicy })
			registerTTL(t, cl, "j1", time.Hour, 0)
			const id = "jobs:j1:hb"
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); h.Lead(ctx) }()
			synctest.Wait()
			until := flapTTL(t, h, id)
			cancel()
			<-done
			lead(t, h)
			time.Sleep(time.Until(until))
			synctest.Wait()
			// The new leader knows the results as written (the last,
			// critical, started the hold-down).
			if c := h.store.Check(nil, id); c.Flapping || c.Status != fsm.Critical {
				t.Fatalf("at the end of the hold-down under a new leader: %s flapping=%v; want critical, not flapping", c.Status, c.Flapping)
			}
		})
	})
}
