package health_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// flapUntil waits until the instance's only check is held flapping on
// every node and returns the end of its hold-down.
func flapUntil(t *testing.T, c *agenttest.Cluster, service, id string) time.Time {
	t.Helper()
	waitInstance(t, c, 30*time.Second, service, id, "held flapping", func(i *client.Instance) bool {
		return i.Status == "critical" && len(i.Checks) == 1 && i.Checks[0].Flapping && i.Checks[0].FlapUntil != nil
	})
	inst, _, err := c.Client(0).Instance(context.Background(), service, id, nil)
	if err != nil || len(inst.Checks) != 1 || inst.Checks[0].FlapUntil == nil {
		t.Fatalf("reading the flapping check: %v %+v", err, inst)
	}
	return *inst.Checks[0].FlapUntil
}

// A TTL check made to flap, then reported passing once, is passing on
// every node once its hold-down ends, with no further report: the leader
// ends the hold-down on time. (It stayed critical and flapping until the
// next report, here five minutes of TTL away.)
func TestAFlappingTTLCheckPassesAtTheEndOfItsHoldDown(t *testing.T) {
	// The window is shorter than the hold-down, so the hold-down ends at
	// its first end rather than being extended.
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.FlapThreshold, cfg.FlapWindow = 3, 5*time.Second
		cfg.FlapHoldDown, cfg.FlapMaxHoldDown = 12*time.Second, 12*time.Second
	}))
	cl := c.Client(1)
	ctx := context.Background()
	register(t, cl, "fl", "fl-1", &client.Registration{Address: "127.0.0.1", Port: 1,
		Checks: []client.CheckDefinition{{Name: "hb", TTL: client.Duration(5 * time.Minute), InitialStatus: "passing"}}})
	const check = "fl:fl-1:hb"
	term := func() uint64 {
		st, err := c.Client(c.Leader()).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Term
	}
	before := term()
	report := func(s string) {
		agenttest.Retry503(t, s, func() error { _, err := cl.ReportTTL(ctx, check, s, &client.TTLUpdate{Output: s}); return err })
	}
	for _, s := range []string{"fail", "pass", "fail"} {
		report(s)
	}
	until := flapUntil(t, c, "fl", "fl-1")
	report("pass")

	waitInstance(t, c, 30*time.Second, "fl", "fl-1", "out of its hold-down, with no report since", func(i *client.Instance) bool {
		return len(i.Checks) == 1 && !i.Checks[0].Flapping
	})
	inst, _, err := c.Client(2).Instance(ctx, "fl", "fl-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if after := term(); after != before {
		// A new leader knows only the results written, the last of them
		// critical (docs/health.md); it ended the hold-down all the same.
		t.Logf("the leader changed (term %d, then %d): the check ended its hold-down %s", before, after, inst.Checks[0].Status)
		return
	}
	if ck := inst.Checks[0]; ck.Status != "passing" || ck.Output != "pass" || inst.Status != "passing" {
		t.Fatalf("after the hold-down: check %s %q, instance %s; want the pass reported during it", ck.Status, ck.Output, inst.Status)
	}
	if since := inst.Checks[0].StatusSince; since.Before(until) {
		t.Fatalf("passing since %s, before the hold-down's end %s", since, until)
	}
}

// scriptedTarget answers its first probe 500, its second 200, and lets
// every later probe hang until the prober gives up (its timeout).
type scriptedTarget struct {
	srv     *httptest.Server
	mu      sync.Mutex
	probes  int
	release chan struct{}
}

func newScriptedTarget(t *testing.T) *scriptedTarget {
	tg := &scriptedTarget{release: make(chan struct{})}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.mu.Lock()
		tg.probes++
		n := tg.probes
		tg.mu.Unlock()
		switch n {
		case 1:
			w.WriteHeader(http.StatusInternalServerError)
		case 2:
		default:
			select {
			case <-r.Context().Done():
			case <-tg.release:
			}
			return
		}
		fmt.Fprintf(w, "probe %d", n)
	}))
	t.Cleanup(tg.srv.Close)
	t.Cleanup(func() { close(tg.release) }) // before Close, which waits for the handlers
	return tg
}

// An HTTP check made to flap, whose last result passed, becomes passing
// when its hold-down ends, though its next probe is still hanging then: the
// owner ends the hold-down on time with the latest result, not with the
// result of the probe in flight (here a timeout, two seconds later).
func TestAFlappingHTTPCheckPassesAtTheEndOfItsHoldDown(t *testing.T) {
	// Probes 5s apart (after one ends). Two changes (500, then 200) 5s
	// apart fall within the 6.5s window: held flapping at the second, F,
	// until F+8s, when neither is in the window any more, so it ends. The
	// third probe starts at F+5s and hangs until its timeout at F+10s.
	const interval = 5 * time.Second
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.FlapThreshold, cfg.FlapWindow = 2, 6500*time.Millisecond
		cfg.FlapHoldDown, cfg.FlapMaxHoldDown = 8*time.Second, 8*time.Second
	}))
	tg := newScriptedTarget(t)
	register(t, c.Client(0), "fh", "fh-1", &client.Registration{Address: "127.0.0.1", Port: 1,
		Checks: []client.CheckDefinition{{Name: "http", HTTP: tg.srv.URL + "/health", Interval: client.Duration(interval),
			Timeout: client.Duration(interval), InitialStatus: "passing"}}})
	const check = "fh:fh-1:http"
	until := flapUntil(t, c, "fh", "fh-1")

	// The transition to passing stays in the instance's history when the
	// hanging probe's timeout makes the check critical again.
	agenttest.Eventually(t, 30*time.Second, func() bool {
		for _, i := range running(c) {
			inst, _, err := c.Client(i).Instance(context.Background(), "fh", "fh-1", nil)
			if err != nil {
				return false
			}
			if at, ok := transitionTo(inst, check, "passing"); !ok || at.Before(until) {
				return false
			}
		}
		return true
	}, "the check passing from the end of its hold-down on every node")
}
