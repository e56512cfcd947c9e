package health

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-memdb"
)

// maxBatch bounds the entries of one assignment command and the TTL reports
// handled together.
const maxBatch = 512

// retryAfter is how long the coordinator waits before retrying a write that
// failed (an election, a full apply queue).
const retryAfter = time.Second

// coordinator is the leader's side of health checking. One goroutine (run)
// owns all its state; TTL reports arrive on reqs.
type coordinator struct {
	h    *Health
	ctx  context.Context
	reqs chan *ttlRequest

	ttl    map[string]*ttlState // by check ID
	timers ttlHeap
	// holds are the ends of the TTL checks' flapping hold-downs, at Unix
	// nanoseconds as the trackers keep them: an entry each time a held
	// tracker's hold-down starts or is extended (queueHoldDown), none
	// for a check not flapping. An entry whose tracker is gone or no
	// longer ends its hold-down then is skipped when popped.
	holds ttlHeap
	// held names the TTL checks whose state holds a tracker (every one
	// that does, and, until the next settle, some that no longer do).
	// A tracker is dropped once it holds nothing the catalog does not
	// (tracker.settled); settleAt is when the held ones are next looked at
	// (zero: none held).
	held     map[string]struct{}
	settleAt time.Time
	metrics  map[instanceKey]*metricState
	// waiting are the metrics states with a report waiting to be written,
	// so that the loop's turns look at those alone.
	waiting map[instanceKey]*metricState

	scanAt   time.Time // when the next scan is due (zero: none)
	lastScan time.Time
	retryAt  time.Time // when failed TTL writes are retried (zero: none)
	// deadline is the earliest deregister_critical_after or drain deadline.
	deadline time.Time
	first    bool
	// aliveKey names the alive servers the owners were last computed for.
	aliveKey string
	// scans counts full scans; a TTL state not seen by the latest is
	// dropped.
	scans uint64
	// feed names the checks changed since the last scan; ids is its
	// buffer.
	feed *fsm.CheckFeed
	ids  []string
	// rescan makes the next scan read every check.
	rescan bool
	// critical are the critical checks with deregister_critical_after, by
	// ID: when their instance is due to go.
	critical map[string]criticalDue
	// epoch is when the coordinator started: TTL deadlines are kept as
	// mono times, nanoseconds since it on the monotonic clock.
	epoch time.Time
	// metricsSwept is when the metrics state was last swept.
	metricsSwept time.Time
}

// mono returns t as a mono time (at least 1, so that 0 can mean none).
func (c *coordinator) mono(t time.Time) int64 { return max(int64(t.Sub(c.epoch)), 1) }

type criticalDue struct {
	at   time.Time
	inst instanceKey
}

// ttlState is the leader's timer of one TTL check. The leader keeps one per
// TTL check in the catalog, so it is kept small: its deadline is a mono
// time, and it holds a tracker only while the check's results hold
// something the catalog does not (a write to make, a status change inside
// the flap window, a flapping episode): a report or expiry makes one from
// the catalog's check, and it is dropped once settled.
type ttlState struct {
	create   uint64
	ttl      time.Duration
	deadline int64    // mono time; 0 once expired, until the next report
	tr       *tracker // nil unless held (coordinator.held)
	seen     uint64   // the last full scan that listed the check
	// queued is the time of the state's one entry in the timer heap (0:
	// none). A report that moves the deadline later leaves that entry
	// where it is; when it comes due it is queued again at the deadline.
	// So a check reported every few seconds keeps one entry, not one per
	// report until each report's deadline passes.
	queued int64
}

// stillFor reports whether st is the timer of ch: ch exists, is a TTL
// check, and is the definition st was armed for.
func (st *ttlState) stillFor(ch *fsm.Check) bool {
	return ch != nil && ch.Type == fsm.CheckTTL && ch.CreateIndex == st.create
}

// instanceKey names an instance: IDs are unique within a service only.
type instanceKey struct{ service, id string }

func (k instanceKey) less(o instanceKey) bool {
	return k.service < o.service || (k.service == o.service && k.id < o.id)
}

type metricState struct {
	written time.Time          // when this leader last replicated the instance's metrics
	pending map[string]float64 // latest unreplicated report, nil if none
}

type ttlRequest struct {
	report ttlReport
	at     time.Time
	resp   chan ttlReply
}

type ttlReply struct {
	index uint64
	// wrote is set on the one reply (of a batch) whose check the index's
	// command changed; the others changed nothing (heartbeats).
	wrote bool
	err   error
}

// ttlHeap orders TTL deadlines (and, in coordinator.holds, the ends of
// hold-downs). An entry whose check is gone or redefined,
// or that is no longer its state's queued one, is skipped when popped
// (lazy deletion); one that comes due before its state's deadline (moved by
// reports since) is queued again at the deadline.
type ttlEntry struct {
	at    int64 // mono time (in holds: Unix nanoseconds)
	check string
}
type ttlHeap []ttlEntry

func (h ttlHeap) Len() int           { return len(h) }
func (h ttlHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h ttlHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ttlHeap) Push(x any)        { *h = append(*h, x.(ttlEntry)) }
func (h *ttlHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// Lead runs the coordinator until ctx ends. Register it as a leader task:
// it assigns checks to live nodes, runs TTL timers (re-armed with
// Config.TTLGrace when it starts), coalesces custom metrics and enforces
// deregister_critical_after and draining deadlines.
func (h *Health) Lead(ctx context.Context) {
	c := &coordinator{
		h: h, ctx: ctx, reqs: make(chan *ttlRequest, maxBatch),
		ttl: map[string]*ttlState{}, held: map[string]struct{}{}, metrics: map[instanceKey]*metricState{}, waiting: map[instanceKey]*metricState{}, first: true,
		critical: map[string]criticalDue{}, feed: h.store.WatchChecks(), epoch: time.Now(),
	}
	defer c.feed.Close()
	h.setCoordinator(c)
	defer h.setCoordinator(nil)
	h.logger.Info("health coordinator started")
	c.run()
}

func (c *coordinator) run() {
	h := c.h
	var wake <-chan error
	watch := newWatcher(c.ctx)
	defer watch.stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer h.stats.ttlTimers.Store(0)
	defer h.stats.ttlTrackers.Store(0)
	c.scanAt = time.Now()
	for {
		now := time.Now()
		if !c.scanAt.IsZero() && !now.Before(c.scanAt) {
			wake = watch.watch(c.scan(now))
			c.lastScan = now
		}
		c.expire(now)
		c.endHoldDowns(now)
		c.flushMetrics(now, nil)
		if !c.retryAt.IsZero() && !now.Before(c.retryAt) {
			c.retryAt = time.Time{}
			c.syncTTL(now)
		}
		if !c.settleAt.IsZero() && !now.Before(c.settleAt) {
			c.settleAt = now.Add(settleEvery)
			c.settle(c.heldIDs(), now)
		}
		if !c.deadline.IsZero() && !now.Before(c.deadline) && c.scanAt.IsZero() {
			c.scanAt = now
			continue
		}
		h.stats.ttlTimers.Store(int64(len(c.timers)))
		timer.Reset(max(time.Until(c.nextWake()), 0))
		select {
		case <-c.ctx.Done():
			h.logger.Info("health coordinator stopped")
			return
		case <-wake:
			wake = nil
			if c.scanAt.IsZero() {
				c.scanAt = c.lastScan.Add(h.cfg.MinScanInterval)
			}
		case <-c.feed.Ready():
			if c.scanAt.IsZero() {
				c.scanAt = c.lastScan.Add(h.cfg.MinScanInterval)
			}
		case r := <-c.reqs:
			batch := []*ttlRequest{r}
		drain:
			for len(batch) < maxBatch {
				select {
				case r := <-c.reqs:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			c.handleReports(batch)
		case <-timer.C:
		}
	}
}

// metricsSweepEvery is how often a scan drops the metrics state of
// instances gone.
const metricsSweepEvery = time.Minute

// sweepMetrics drops the metrics state of instances no longer registered.
func (c *coordinator) sweepMetrics(now time.Time) {
	c.metricsSwept = now
	for k := range c.metrics {
		if inst, _ := c.h.store.CurrentInstance(k.service, k.id); inst == nil {
			c.dropMetrics(k)
		}
	}
}

// nextWake is the earliest time something is due.
func (c *coordinator) nextWake() time.Time {
	next := time.Now().Add(time.Hour)
	consider := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	consider(c.scanAt)
	consider(c.retryAt)
	consider(c.settleAt)
	consider(c.deadline)
	if len(c.timers) > 0 {
		consider(c.epoch.Add(time.Duration(c.timers[0].at)))
	}
	if len(c.holds) > 0 {
		consider(time.Unix(0, c.holds[0].at))
	}
	for _, m := range c.waiting {
		consider(m.written.Add(c.h.cfg.MetricsPeriod))
	}
	return next
}

// scan brings the coordinator in line with the catalog: check owners, TTL
// timers, deregistration deadlines. It reads only the checks the feed says
// changed since the last scan, and every check when it must: on taking
// office, when the set of alive servers changed (owners move), when the feed
// lost track, or after a failed assignment. Each registration with a check
// would otherwise cost a read of every check (a scan per MinScanInterval
// while checks change): at 100,000 checks a third of the leader's CPU. It
// returns the watch set to wait on: the nodes and the draining instances;
// the checks come through the feed.
func (c *coordinator) scan(now time.Time) memdb.WatchSet {
	h := c.h
	c.scanAt = time.Time{}
	ws := memdb.NewWatchSet()
	_, nodes := h.store.Nodes(ws)
	drains := h.store.DrainingInstances(ws)
	var complete bool
	c.ids, complete = c.feed.Take(c.ids)

	var alive []string
	isAlive := map[string]bool{}
	for _, n := range nodes {
		if n.Status == fsm.NodeAlive && n.Role == fsm.RoleServer {
			alive = append(alive, n.Name)
			isAlive[n.Name] = true
		}
	}
	// Owners are recomputed for every check only when the set of alive
	// servers changed (rendezvous hashing moves just the checks whose best
	// node came or went); otherwise only checks without a live owner move.
	aliveKey := strings.Join(alive, "\x00")
	rebalance := aliveKey != c.aliveKey
	c.aliveKey = aliveKey

	var assign []fsm.Assignment
	consider := func(ch *fsm.Check) {
		if ch.Type == fsm.CheckTTL {
			c.armTTL(ch, now)
		} else {
			// A TTL check redefined as another type under the same
			// name loses its timer.
			delete(c.ttl, ch.ID)
			if len(alive) > 0 && (rebalance || !isAlive[ch.Owner]) {
				if want := fsm.PickOwner(ch.ID, alive); want != ch.Owner {
					assign = append(assign, fsm.Assignment{Check: ch.ID, Owner: want})
				}
			}
		}
		if ch.DeregisterCriticalAfter > 0 && ch.Status == fsm.Critical {
			c.critical[ch.ID] = criticalDue{
				at:   time.Unix(0, ch.StatusSince).Add(time.Duration(ch.DeregisterCriticalAfter)),
				inst: instanceKey{ch.Service, ch.Instance},
			}
		} else {
			delete(c.critical, ch.ID)
		}
	}
	if full := c.first || rebalance || !complete || c.rescan; full {
		c.rescan = false
		h.stats.fullScans.Add(1)
		_, checks := h.store.Checks(nil, "")
		h.stats.scannedChecks.Add(uint64(len(checks)))
		// Each TTL check listed marks its state with this scan's number;
		// the states left unmarked are of checks gone. (A set of the IDs
		// seen, built anew each scan, cost a map insert per TTL check.)
		c.scans++
		clear(c.critical)
		for _, ch := range checks {
			consider(ch)
		}
		for id, st := range c.ttl {
			if st.seen != c.scans {
				delete(c.ttl, id)
			}
		}
		c.sweepMetrics(now)
	} else {
		slices.Sort(c.ids)
		c.ids = slices.Compact(c.ids)
		h.stats.scannedChecks.Add(uint64(len(c.ids)))
		for _, id := range c.ids {
			if ch := h.store.Check(nil, id); ch != nil {
				consider(ch)
				continue
			}
			delete(c.ttl, id)
			delete(c.critical, id)
			if service, instance, ok := fsm.SplitCheckID(id); ok {
				k := instanceKey{service, instance}
				if _, ok := c.metrics[k]; ok {
					if inst, _ := h.store.CurrentInstance(service, instance); inst == nil {
						c.dropMetrics(k)
					}
				}
			}
		}
	}
	clear(c.ids)
	if now.Sub(c.metricsSwept) >= metricsSweepEvery {
		// An instance can go without a check of its going (re-registered
		// without its TTL check, then deregistered): its metrics state is
		// dropped here at the latest.
		c.sweepMetrics(now)
	}

	deregister := map[instanceKey]string{} // instance -> why
	c.deadline = time.Time{}
	due := func(at time.Time, inst instanceKey, why string) {
		if !now.Before(at) {
			deregister[inst] = why
		} else if c.deadline.IsZero() || at.Before(c.deadline) {
			c.deadline = at
		}
	}
	for _, d := range c.critical {
		due(d.at, d.inst, "critical")
	}
	for _, i := range drains {
		due(time.Unix(0, i.Drain.Deadline), instanceKey{i.Service, i.ID}, "drained")
	}
	c.first = false

	for len(assign) > 0 {
		n := min(len(assign), maxBatch)
		if _, err := c.apply(fsm.AssignChecksType, &fsm.AssignChecksRequest{Assignments: assign[:n]}); err != nil {
			h.logger.Warn("cannot assign checks", "error", err)
			c.scanAt = now.Add(retryAfter)
			// The checks left unassigned came from the feed, which
			// will not name them again: the retry reads every check.
			c.rescan = true
			break
		}
		h.stats.reassignments.Add(uint64(n))
		h.logger.Debug("assigned checks", "count", n)
		assign = assign[n:]
	}
	keys := make([]instanceKey, 0, len(deregister))
	for k := range deregister {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	for _, k := range keys {
		inst, _ := h.store.CurrentInstance(k.service, k.id)
		if inst == nil {
			continue
		}
		_, err := c.apply(fsm.DeregisterType, &fsm.DeregisterRequest{Service: k.service, ID: k.id, IfIndex: inst.ModifyIndex, Time: now.UnixNano()})
		switch {
		case err == nil:
			h.logger.Info("deregistered instance", "service", k.service, "instance", k.id, "reason", deregister[k])
			if deregister[k] == "drained" {
				h.stats.deregisteredDrained.Add(1)
			} else {
				h.stats.deregisteredCritical.Add(1)
			}
		case errors.Is(err, fsm.ErrConflict):
			// It changed since we looked (recovered, drain cancelled): the
			// watch brings us back with fresh state.
		default:
			h.logger.Warn("cannot deregister instance", "service", k.service, "instance", k.id, "error", err)
			c.scanAt = now.Add(retryAfter)
		}
	}
	return ws
}

// armTTL creates the timer state of a TTL check the coordinator has not
// seen yet (or that was redefined). On the first scan after taking office
// every timer gets Config.TTLGrace on top of its TTL: the new leader does
// not know when the last reports arrived. A check held flapping (by the
// previous leader) gets a tracker from the catalog at once, so that its
// hold-down ends on time with no report.
//
// A check whose TTL changed in place (re-registered with another ttl: the
// same CreateIndex, its status kept) keeps its state and tracker, and its
// timer is re-armed with the new TTL from now, unless it has expired
// already (then its next report arms it).
func (c *coordinator) armTTL(ch *fsm.Check, now time.Time) {
	if st := c.ttl[ch.ID]; st != nil && st.create == ch.CreateIndex {
		st.seen = c.scans
		if ttl := time.Duration(ch.TTL); ttl != st.ttl {
			st.ttl = ttl
			if st.deadline != 0 {
				st.deadline = c.mono(now.Add(ttl))
				c.queue(st, ch.ID)
			}
		}
		return
	}
	ttl := time.Duration(ch.TTL)
	st := &ttlState{create: ch.CreateIndex, ttl: ttl, deadline: c.mono(now.Add(ttl)), seen: c.scans}
	if c.first {
		st.deadline = c.mono(now.Add(ttl + c.h.cfg.TTLGrace))
	}
	c.ttl[ch.ID] = st
	c.queue(st, ch.ID)
	if ch.Flapping {
		c.hold(st, ch)
	}
}

// queue gives st an entry in the timer heap at its deadline, unless it has
// one due no later.
func (c *coordinator) queue(st *ttlState, id string) {
	if st.queued != 0 && st.queued <= st.deadline {
		return
	}
	heap.Push(&c.timers, ttlEntry{at: st.deadline, check: id})
	st.queued = st.deadline
}

// expire marks TTL checks whose deadline passed as critical.
func (c *coordinator) expire(now time.Time) {
	var touched []string
	for m := c.mono(now); len(c.timers) > 0 && c.timers[0].at <= m; {
		e := heap.Pop(&c.timers).(ttlEntry)
		st := c.ttl[e.check]
		if st == nil || st.queued != e.at {
			continue // the check is gone or redefined, or the entry superseded
		}
		st.queued = 0
		if st.deadline == 0 {
			continue // expired already, and not reported since
		}
		if st.deadline > m {
			c.queue(st, e.check) // reports moved the deadline: wait on
			continue
		}
		if st.tr == nil {
			ch := c.h.store.Check(nil, e.check)
			if !st.stillFor(ch) {
				// Gone or redefined since the last scan: the
				// next scan arms what is there now.
				delete(c.ttl, e.check)
				continue
			}
			c.hold(st, ch)
		}
		st.deadline = 0
		c.h.stats.ttlExpiries.Add(1)
		c.observe(st, e.check, now, Result{Status: fsm.Critical, Output: fmt.Sprintf("TTL expired: no report within %s", st.ttl)})
		touched = append(touched, e.check)
	}
	if len(touched) > 0 {
		if _, err := c.writeTTL(touched, now); err == nil {
			c.settle(touched, now)
		}
	}
}

// observe feeds the result r of TTL check id to st's tracker, and queues
// the end of a hold-down the result started or extended.
func (c *coordinator) observe(st *ttlState, id string, now time.Time, r Result) {
	until := st.tr.flapUntil
	if _, started := st.tr.observe(now, r); started {
		c.h.stats.flapEpisodes.Add(1)
	}
	c.queueHoldDown(st, id, until)
}

// queueHoldDown queues the end of the hold-down of st's tracker, if it is
// flapping and its hold-down no longer ends at before (queued already).
func (c *coordinator) queueHoldDown(st *ttlState, id string, before int64) {
	if st.tr.flapping && st.tr.flapUntil != before {
		heap.Push(&c.holds, ttlEntry{at: st.tr.flapUntil, check: id})
	}
}

// endHoldDowns ends the hold-downs due by now (or extends those with too
// many changes in the last window) and writes the checks: a TTL check held
// flapping takes its latest result when the hold-down ends, critical if its
// TTL expired meanwhile (expire ran first), without waiting for a report.
// Until this, a hold-down ended only with the next report or expiry,
// minutes late for a check whose last report passed within a long TTL.
func (c *coordinator) endHoldDowns(now time.Time) {
	var touched []string
	for n := now.UnixNano(); len(c.holds) > 0 && c.holds[0].at <= n; {
		e := heap.Pop(&c.holds).(ttlEntry)
		st := c.ttl[e.check]
		if st == nil || st.tr == nil || !st.tr.flapping || st.tr.flapUntil != e.at {
			continue // gone, or the hold-down ended or moved since
		}
		st.tr.tick(now)
		c.queueHoldDown(st, e.check, e.at)
		touched = append(touched, e.check)
	}
	if len(touched) > 0 {
		if _, err := c.writeTTL(touched, now); err == nil {
			c.settle(touched, now)
		}
	}
}

// settleEvery is how often the leader looks at the TTL trackers it holds,
// to drop those settled since (a status change has left the flap window).
const settleEvery = 30 * time.Second

// hold gives st a tracker made from its check ch (and queues the end of
// its hold-down if ch is flapping).
func (c *coordinator) hold(st *ttlState, ch *fsm.Check) {
	st.tr = newTracker(ch, &c.h.cfg.Flap, false)
	c.queueHoldDown(st, ch.ID, 0)
	c.held[ch.ID] = struct{}{}
	c.h.stats.ttlTrackers.Store(int64(len(c.held)))
	if c.settleAt.IsZero() {
		c.settleAt = time.Now().Add(settleEvery)
	}
}

// settle drops the trackers of the given TTL checks that hold nothing the
// catalog does not. With 100,000 TTL checks reported, a tracker each held
// ~11 MB of the leader's heap (with its allocation's share of the collector's
// headroom, more of its RSS); a calm check needs none.
func (c *coordinator) settle(ids []string, now time.Time) {
	for _, id := range ids {
		st := c.ttl[id]
		if st == nil || st.tr == nil {
			delete(c.held, id)
			continue
		}
		if cur := c.h.store.Check(nil, id); st.stillFor(cur) && st.tr.settled(cur, now) {
			st.tr = nil
			delete(c.held, id)
		}
	}
	c.h.stats.ttlTrackers.Store(int64(len(c.held)))
	if len(c.held) == 0 {
		c.settleAt = time.Time{}
		if len(ids) > maxBatch {
			// A map keeps its size: after many checks changed at once
			// (a mass expiry), let the table go.
			c.held = map[string]struct{}{}
		}
	}
}

// heldIDs returns the IDs of the held TTL checks.
func (c *coordinator) heldIDs() []string {
	ids := make([]string, 0, len(c.held))
	for id := range c.held {
		ids = append(ids, id)
	}
	return ids
}

// writeTTL replicates the tracker state of the given TTL checks where it
// differs from the catalog, in one command, and returns its index (or the
// highest ModifyIndex of the checks when nothing needed writing).
func (c *coordinator) writeTTL(ids []string, now time.Time) (uint64, error) {
	idx, _, err := c.writeTTLChecks(ids, now)
	return idx, err
}

// writeTTLChecks is writeTTL that also returns the checks it wrote.
func (c *coordinator) writeTTLChecks(ids []string, now time.Time) (uint64, map[string]bool, error) {
	var updates []fsm.CheckUpdate
	var idx uint64
	for _, id := range ids {
		st := c.ttl[id]
		if st == nil || st.tr == nil {
			continue // gone, or neither reported nor expired: nothing to write
		}
		cur := c.h.store.Check(nil, id)
		if !st.stillFor(cur) {
			continue // gone or redefined: the next scan sorts it out
		}
		idx = max(idx, cur.ModifyIndex)
		if st.tr.flapping && !cur.Flapping {
			c.h.logger.Warn("check is flapping", "check", id, "until", st.tr.flapUntilTime().Format(time.RFC3339))
		}
		if st.tr.needsWrite(cur) {
			updates = append(updates, st.tr.update(id, c.h.cfg.MaxOutput))
		}
	}
	if len(updates) == 0 {
		return idx, nil, nil
	}
	c.h.stats.proposals.Add(uint64(len(updates)))
	widx, err := c.apply(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Updates: updates, Time: now.UnixNano()})
	if err != nil {
		c.h.stats.proposalErrors.Add(uint64(len(updates)))
		c.h.logger.Warn("cannot update ttl checks", "count", len(updates), "error", err)
		c.retryAt = now.Add(retryAfter)
		return 0, nil, err
	}
	wrote := make(map[string]bool, len(updates))
	for _, u := range updates {
		wrote[u.Check] = true
	}
	return widx, wrote, nil
}

// syncTTL retries the writes of every TTL check whose state differs (only
// a held check's can).
func (c *coordinator) syncTTL(now time.Time) {
	ids := c.heldIDs()
	sort.Strings(ids)
	for len(ids) > 0 {
		n := min(len(ids), maxBatch)
		if _, err := c.writeTTL(ids[:n], now); err != nil {
			return
		}
		c.settle(ids[:n], now)
		ids = ids[n:]
	}
}

// handleReports applies a batch of TTL reports: it moves their deadlines,
// feeds their trackers and writes what changed in one command, then answers
// every report with the index a reader must reach to see its effect.
func (c *coordinator) handleReports(batch []*ttlRequest) {
	h := c.h
	now := time.Now()
	var ids []string
	touched := map[string]bool{}
	var ok []*ttlRequest
	var metricsDue []instanceKey
	for _, r := range batch {
		ch := h.store.Check(nil, r.report.Check)
		switch {
		case ch == nil:
			r.resp <- ttlReply{err: &fsm.RejectError{Kind: fsm.ErrNotFound, Msg: fmt.Sprintf("check %q is not registered", r.report.Check)}}
			continue
		case ch.Type != fsm.CheckTTL:
			r.resp <- ttlReply{err: &fsm.RejectError{Kind: fsm.ErrInvalid, Msg: fmt.Sprintf("check %q is a %s check, not a ttl check", ch.ID, ch.Type)}}
			continue
		}
		h.stats.ttlReports.Add(1)
		c.armTTL(ch, now)
		st := c.ttl[ch.ID]
		if st.tr == nil {
			c.hold(st, ch)
		}
		st.deadline = c.mono(now.Add(st.ttl))
		c.queue(st, ch.ID)
		c.observe(st, ch.ID, now, Result{Status: r.report.Status, Output: r.report.Output})
		if !touched[ch.ID] {
			touched[ch.ID] = true
			ids = append(ids, ch.ID)
		}
		if k := (instanceKey{ch.Service, ch.Instance}); r.report.Metrics != nil && c.noteMetrics(k, r.report.Metrics, now) {
			metricsDue = append(metricsDue, k)
		}
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		return
	}
	idx, wrote, err := c.writeTTLChecks(ids, now)
	if err == nil {
		c.settle(ids, now)
	}
	if err == nil && len(metricsDue) > 0 {
		var midx uint64
		midx, err = c.flushMetrics(now, metricsDue)
		idx = max(idx, midx)
	}
	for _, r := range ok {
		// Only the first report of a written check is answered "wrote", so
		// the write is audited once however many reports it carried.
		w := err == nil && wrote[r.report.Check]
		delete(wrote, r.report.Check)
		r.resp <- ttlReply{index: idx, wrote: w, err: err}
	}
}

// noteMetrics records an instance's reported metrics. It reports whether
// they should be written now (they changed and the instance's period has
// passed); otherwise they wait for flushMetrics.
func (c *coordinator) noteMetrics(inst instanceKey, m map[string]float64, now time.Time) bool {
	cur, _ := c.h.store.CurrentInstance(inst.service, inst.id)
	ms := c.metrics[inst]
	if ms == nil {
		ms = &metricState{}
		c.metrics[inst] = ms
	}
	if cur == nil || maps.Equal(cur.Metrics, m) {
		c.setPending(inst, ms, nil)
		return false
	}
	c.setPending(inst, ms, m)
	return now.Sub(ms.written) >= c.h.cfg.MetricsPeriod
}

// setPending sets the metrics of inst waiting to be written (nil: none) and
// keeps c.waiting, the states with some, in step.
func (c *coordinator) setPending(inst instanceKey, ms *metricState, m map[string]float64) {
	ms.pending = m
	if m == nil {
		delete(c.waiting, inst)
	} else {
		c.waiting[inst] = ms
	}
}

// dropMetrics forgets the metrics state of inst.
func (c *coordinator) dropMetrics(inst instanceKey) {
	delete(c.metrics, inst)
	delete(c.waiting, inst)
}

// flushMetrics writes pending metrics whose period has passed (of only the
// given instances when only is not nil) in one command.
func (c *coordinator) flushMetrics(now time.Time, only []instanceKey) (uint64, error) {
	var req fsm.MetricsRequest
	consider := func(k instanceKey, ms *metricState) {
		if ms == nil || ms.pending == nil || now.Sub(ms.written) < c.h.cfg.MetricsPeriod {
			return
		}
		req.Updates = append(req.Updates, fsm.InstanceMetrics{Service: k.service, Instance: k.id, Metrics: ms.pending})
	}
	if only != nil {
		for _, k := range only {
			consider(k, c.metrics[k])
		}
	} else {
		for k, ms := range c.waiting {
			consider(k, ms)
		}
	}
	if len(req.Updates) == 0 {
		return 0, nil
	}
	sort.Slice(req.Updates, func(i, j int) bool {
		a, b := req.Updates[i], req.Updates[j]
		return instanceKey{a.Service, a.Instance}.less(instanceKey{b.Service, b.Instance})
	})
	req.Time = now.UnixNano()
	idx, err := c.apply(fsm.MetricsType, &req)
	if err != nil {
		c.h.logger.Warn("cannot write custom metrics", "count", len(req.Updates), "error", err)
		for _, u := range req.Updates {
			// Retry after retryAfter rather than at once.
			c.metrics[instanceKey{u.Service, u.Instance}].written = now.Add(retryAfter - c.h.cfg.MetricsPeriod)
		}
		return 0, err
	}
	for _, u := range req.Updates {
		k := instanceKey{u.Service, u.Instance}
		ms := c.metrics[k]
		ms.written = now
		c.setPending(k, ms, nil)
	}
	c.h.stats.metricsWrites.Add(uint64(len(req.Updates)))
	return idx, nil
}

func (c *coordinator) apply(t fsm.MessageType, req any) (uint64, error) {
	cmd, err := fsm.Encode(t, req)
	if err != nil {
		return 0, err
	}
	return c.h.cl.ApplyLeader(c.ctx, cmd)
}

// watcher waits on one watch set at a time, cancelling the previous wait.
type watcher struct {
	parent context.Context
	cancel context.CancelFunc
}

func newWatcher(parent context.Context) *watcher { return &watcher{parent: parent, cancel: func() {}} }

func (w *watcher) watch(ws memdb.WatchSet) <-chan error {
	w.cancel()
	ctx, cancel := context.WithCancel(w.parent)
	w.cancel = cancel
	return ws.WatchCh(ctx)
}

func (w *watcher) stop() { w.cancel() }
