package health_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// A passing HTTP check re-registered with another interval keeps its
// state: its instance never leaves healthy discovery on any node, no
// transition is recorded, and the owner's runner takes the new interval
// without starting the check over (a long interval stops the probes, a
// short one brings them back). Re-registering with another URL does start
// the check anew from its initial status. (Any change of a check setting
// used to reset it to initial_status: critical until the next probe, up to
// one interval, docs/health.md "Re-registering".)
func TestReRegisterWithNewSettingsKeepsCheckState(t *testing.T) {
	c := agenttest.New(t, 3)
	cl := c.Client(0)
	ctx := context.Background()
	tg := newTarget(t)
	reg := func(path string, interval time.Duration) uint64 {
		return agenttest.Register(t, cl, "web", "w1", &client.Registration{Address: "127.0.0.1", Port: 80, Checks: []client.CheckDefinition{{
			Name: "http", HTTP: tg.url(path), Interval: client.Duration(interval), Timeout: client.Duration(100 * time.Millisecond),
		}}})
	}
	reg("/h", 200*time.Millisecond)
	waitInstance(t, c, 30*time.Second, "web", "w1", "passing", hasStatus("passing"))
	before, _, err := cl.Instance(ctx, "web", "w1", nil)
	if err != nil {
		t.Fatal(err)
	}

	// Poll healthy discovery on every node for the whole change.
	var missing atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, i := range running(c) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				insts, _, err := c.Client(i).Instances(ctx, "web", &client.QueryOptions{Healthy: true})
				if err == nil && len(insts) == 0 {
					missing.CompareAndSwap(nil, fmt.Sprintf("node %d at %s", i, time.Now().Format(time.StampMilli)))
				}
			}
		}()
	}
	stopPolling := func() {
		close(stop)
		wg.Wait()
		if m := missing.Load(); m != nil {
			t.Fatalf("w1 left healthy discovery on %s while its target answered 200", m)
		}
	}

	// A long interval: the state stays, and the probes stop (the one
	// scheduled and one in flight may still run).
	idx := reg("/h", time.Hour)
	c.WaitForIndex(idx)
	changed := time.Now()
	waitInstance(t, c, 30*time.Second, "web", "w1", "with the new interval", func(i *client.Instance) bool {
		return len(i.Checks) == 1 && time.Duration(i.Checks[0].Interval) == time.Hour
	})
	after, _, err := cl.Instance(ctx, "web", "w1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := after.Checks[0]
	if ch.Status != "passing" || ch.Output == "" || ch.CreateIndex != before.Checks[0].CreateIndex || !ch.StatusSince.Equal(before.Checks[0].StatusSince) {
		t.Fatalf("check after the re-registration: %+v; want the passing check of index %d as it was", ch, before.Checks[0].CreateIndex)
	}
	if len(after.Transitions) != len(before.Transitions) {
		t.Fatalf("transitions %+v after the re-registration, want %+v", after.Transitions, before.Transitions)
	}
	// Probes after the change: at most the one scheduled and one in flight
	// (a restarted check would probe within the first second).
	// An absence is seen over a window: two seconds, ten intervals of the
	// old setting. (A slow scheduler only makes fewer probes.)
	<-time.After(2 * time.Second)
	if n := len(tg.since("/h", changed)); n > 2 {
		t.Fatalf("%d probes within %s of setting a one-hour interval", n, time.Since(changed))
	}

	// A short interval again: the probe scheduled an hour out comes now.
	back := time.Now()
	c.WaitForIndex(reg("/h", 200*time.Millisecond))
	agenttest.Eventually(t, 30*time.Second, func() bool { return len(tg.since("/h", back)) >= 3 }, "probes at the short interval again")
	stopPolling()
	if inst, _, err := cl.Instance(ctx, "web", "w1", nil); err != nil || len(inst.Transitions) != len(before.Transitions) {
		t.Fatalf("transitions after the interval changes: %+v (%v), want %+v", inst.Transitions, err, before.Transitions)
	}

	// Another URL is another target: the check starts from its initial
	// status (critical), recorded as a registration, then passes.
	c.WaitForIndex(reg("/other", 200*time.Millisecond))
	inst, _, err := cl.Instance(ctx, "web", "w1", nil)
	if err != nil {
		t.Fatal(err)
	}
	last := inst.Transitions[len(inst.Transitions)-1]
	if last.Check != "registration" || last.From != "passing" || last.To != "critical" {
		t.Fatalf("last transition after a new target: %+v, want registration passing -> critical", last)
	}
	waitInstance(t, c, 30*time.Second, "web", "w1", "passing at the new target", hasStatus("passing"))
}

// A TTL check re-registered with another TTL keeps its status and output,
// and its timer is re-armed with the new TTL: it expires after the new
// one, not the old.
func TestReRegisterWithNewTTLRearmsTimer(t *testing.T) {
	c := agenttest.New(t, 3)
	cl := c.Client(1)
	ctx := context.Background()
	reg := func(ttl time.Duration) uint64 {
		return agenttest.Register(t, cl, "jobs", "j1", &client.Registration{Address: "127.0.0.1", Port: 1, Checks: []client.CheckDefinition{{
			Name: "hb", TTL: client.Duration(ttl),
		}}})
	}
	reg(time.Hour)
	agenttest.Retry503(t, "report", func() error {
		_, err := cl.ReportTTL(ctx, "jobs:j1:hb", "pass", &client.TTLUpdate{Output: "alive"})
		return err
	})
	waitInstance(t, c, 30*time.Second, "jobs", "j1", "passing", hasStatus("passing"))

	reg(2 * time.Second)
	// Read on the node that took the registration: it has applied it.
	inst, _, err := cl.Instance(ctx, "jobs", "j1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ch := inst.Checks[0]; ch.Status != "passing" || ch.Output != "alive" || time.Duration(ch.TTL) != 2*time.Second {
		t.Fatalf("check after the re-registration: %+v; want passing with output alive and the new TTL", ch)
	}
	waitInstance(t, c, 30*time.Second, "jobs", "j1", "critical once the new TTL ran out", func(i *client.Instance) bool {
		return i.Status == "critical" && len(i.Checks) == 1 && strings.Contains(i.Checks[0].Output, "TTL expired")
	})
}
