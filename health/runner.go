package health

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// Run probes the checks this node owns until ctx ends. It follows the
// catalog's check feed (fsm.CheckFeed), so a check assigned to this node
// starts at once and one taken away stops at once, and each change costs a
// read of the checks it names, not of every check the node owns. Each check
// has its own goroutine: the first probe comes at a random offset within
// the interval (so checks spread out), then one every interval after the
// previous probe ended.
func (h *Health) Run(ctx context.Context) {
	type running struct {
		create uint64
		def    *fsm.CheckDefinition // without its target
		cancel context.CancelFunc
		done   chan struct{}
		// redef hands the goroutine the check redefined in place (same
		// CreateIndex: its state kept), latest first.
		redef chan *fsm.Check
	}
	checks := map[string]*running{}
	stop := func(id string) {
		r := checks[id]
		if r == nil {
			return
		}
		r.cancel()
		<-r.done
		delete(checks, id)
		h.stats.running.Add(-1)
	}
	defer func() {
		for id := range checks {
			stop(id)
		}
	}()
	// start runs c unless it runs already. A check redefined with its
	// state kept (the same CreateIndex: a re-registration that changed a
	// setting but not the target, fsm.Check.SameTarget) goes on with its
	// tracker and takes the new definition; a new check (a new
	// CreateIndex: a changed target) starts anew.
	start := func(c *fsm.Check) {
		if r := checks[c.ID]; r != nil {
			if r.create == c.CreateIndex {
				if !sameDefinition(r.def, c.CheckDefinition) {
					r.def = c.CheckDefinition
					select {
					case <-r.redef: // superseded
					default:
					}
					r.redef <- c
				}
				return
			}
			stop(c.ID) // a new check under the same ID
		}
		cctx, cancel := context.WithCancel(ctx)
		r := &running{create: c.CreateIndex, def: c.CheckDefinition, cancel: cancel, done: make(chan struct{}), redef: make(chan *fsm.Check, 1)}
		checks[c.ID] = r
		h.stats.running.Add(1)
		go func(c *fsm.Check) {
			defer close(r.done)
			h.runCheck(cctx, c, r.redef)
		}(c)
	}
	feed := h.store.WatchChecks()
	defer feed.Close()
	var ids []string
	for {
		var complete bool
		ids, complete = feed.Take(ids)
		if complete {
			for _, id := range ids {
				c := h.store.Check(nil, id)
				if c == nil || c.Owner != h.cfg.Node || c.Type == fsm.CheckTTL {
					stop(id)
					continue
				}
				start(c)
			}
		} else {
			// The first time, and whenever the feed lost track: every
			// check this node owns.
			_, owned := h.store.ChecksOwnedBy(nil, h.cfg.Node)
			seen := make(map[string]bool, len(owned))
			for _, c := range owned {
				if c.Type == fsm.CheckTTL {
					continue
				}
				seen[c.ID] = true
				start(c)
			}
			for id := range checks {
				if !seen[id] {
					stop(id)
				}
			}
		}
		clear(ids)
		select {
		case <-ctx.Done():
			return
		case <-feed.Ready():
		}
	}
}

// runCheck probes c until ctx ends and proposes its debounced state. While
// c is held flapping it also wakes when the hold-down ends, between probes
// or during one (probe), so the check takes its latest result then rather
// than at the next probe's end, up to an interval later.
//
// A definition received on redef (the check re-registered with another
// interval, timeout, thresholds...: its state kept) applies from then on:
// the tracker keeps its status, counters and flap state and judges the
// next results by the new thresholds, and the probe already scheduled is
// kept unless the new interval brings it sooner.
func (h *Health) runCheck(ctx context.Context, c *fsm.Check, redef <-chan *fsm.Check) {
	interval := checkInterval(c)
	t := newTracker(c, &h.cfg.Flap, true)
	next := time.Now().Add(rand.N(interval)) // the next probe
	timer := time.NewTimer(untilWake(t, next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-redef:
			c = n
			t.redefine(c)
			interval = checkInterval(c)
			if soonest := time.Now().Add(interval); soonest.Before(next) {
				next = soonest
			}
			timer.Reset(untilWake(t, next))
			continue
		case <-timer.C:
		}
		if t.flapping && time.Now().UnixNano() >= t.flapUntil {
			h.endHoldDown(ctx, c, t)
		}
		if time.Now().Before(next) {
			timer.Reset(untilWake(t, next))
			continue
		}
		start := time.Now()
		addr := ""
		if inst, _ := h.store.CurrentInstance(c.Service, c.Instance); inst != nil {
			addr = inst.Address
		}
		res := h.probe(ctx, c, addr, t)
		if ctx.Err() != nil {
			return // stopped mid-probe: the result means nothing
		}
		h.metrics.probed(c.Type, res.Status, time.Since(start))
		h.stats.probes.Add(1)
		if res.Status != fsm.Passing {
			h.stats.probesFailed.Add(1)
		}
		now := time.Now()
		if _, started := t.observe(now, res); started {
			h.stats.flapEpisodes.Add(1)
			h.logger.Warn("check is flapping", "check", c.ID, "until", t.flapUntilTime().Format(time.RFC3339), "level", t.flapLevel)
		}
		cur := h.store.Check(nil, c.ID)
		if cur == nil || cur.Owner != h.cfg.Node || cur.CreateIndex != c.CreateIndex {
			return // deregistered, redefined or moved: the watch stops us
		}
		if t.needsWrite(cur) {
			h.propose(ctx, cur, t, now)
		}
		next = time.Now().Add(interval)
		timer.Reset(untilWake(t, next))
	}
}

// sameDefinition reports whether two checks' definitions (shared, without
// their targets) are equal.
func sameDefinition(a, b *fsm.CheckDefinition) bool {
	return a == b || (a != nil && b != nil && a.Equal(b))
}

// checkInterval is c's probe interval (10 s when it has none).
func checkInterval(c *fsm.Check) time.Duration {
	if c.Interval <= 0 {
		return 10 * time.Second
	}
	return time.Duration(c.Interval)
}

// untilWake is how long runCheck sleeps: until the next probe, or the end
// of t's hold-down if that comes first.
func untilWake(t *tracker, next time.Time) time.Duration {
	d := time.Until(next)
	if t.flapping {
		d = min(d, time.Until(t.flapUntilTime()))
	}
	return max(d, 0)
}

// probe probes c once. While c is held flapping the probe runs in a
// goroutine of its own, and a hold-down that ends before the probe does is
// ended on time with the results before it: a target that hangs would
// otherwise keep its check held for up to the probe's timeout, and end
// the hold-down with that probe's result instead of the latest one. The
// goroutine ends with the probe (ctx cancels it); probe waits for it.
func (h *Health) probe(ctx context.Context, c *fsm.Check, addr string, t *tracker) Result {
	if !t.flapping {
		return h.prober.ProbeFor(ctx, c, addr)
	}
	done := make(chan Result, 1)
	go func() { done <- h.prober.ProbeFor(ctx, c, addr) }()
	for t.flapping {
		end := time.NewTimer(time.Until(t.flapUntilTime()))
		select {
		case res := <-done:
			end.Stop()
			return res
		case <-end.C:
			h.endHoldDown(ctx, c, t)
		}
	}
	return <-done
}

// endHoldDown ends t's hold-down, which is due (or extends it, with too
// many changes in the last window), and proposes c's new state: the
// latest result's status, with no probe needed.
func (h *Health) endHoldDown(ctx context.Context, c *fsm.Check, t *tracker) {
	now := time.Now()
	t.tick(now)
	cur := h.store.Check(nil, c.ID)
	if cur != nil && cur.Owner == h.cfg.Node && cur.CreateIndex == c.CreateIndex && t.needsWrite(cur) {
		h.propose(ctx, cur, t, now)
	}
}

// propose replicates the tracker's state of check cur. A failure is only
// logged: the next probe compares again and retries.
func (h *Health) propose(ctx context.Context, cur *fsm.Check, t *tracker, now time.Time) {
	u := t.update(cur.ID, h.cfg.MaxOutput)
	cmd, err := fsm.Encode(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Node: h.cfg.Node, Updates: []fsm.CheckUpdate{u}, Time: now.UnixNano()})
	if err != nil {
		h.logger.Error("cannot encode check update", "check", cur.ID, "error", err)
		return
	}
	h.stats.proposals.Add(1)
	if _, err := h.cl.Apply(ctx, cmd); err != nil {
		h.stats.proposalErrors.Add(1)
		h.logger.Debug("check update not applied", "check", cur.ID, "error", err)
		return
	}
	if u.Status != cur.Status || u.Flapping != cur.Flapping {
		h.logger.Info("check status changed", "check", cur.ID, "from", cur.Status, "to", u.Status, "flapping", u.Flapping)
	}
}
