package health

import (
	"math"
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// tracker turns the results of one check into the state to replicate: it
// applies the thresholds (failures before critical, successes before
// passing) and the flapping policy. It is not safe for concurrent use; each
// check's goroutine (or the leader's TTL loop) owns its tracker.
//
// The leader keeps one per TTL check that has been reported or has expired,
// and each node one per check it probes, so it is kept small: 104 bytes,
// allocated in the 112-byte size class, against 184 (192) with a copy of
// the policy, int counters and time.Time fields. The policy is shared, the
// counters are 32-bit and the two instants are Unix nanoseconds. flapUntil is replicated as Unix
// nanoseconds anyway; like calmSince it follows the wall clock, so a clock
// step moves the end of a hold-down (or when a calm resets the level) by as
// much. The flap window keeps time.Time (monotonic) instants in changes,
// which is empty unless the status changed within the window.
type tracker struct {
	policy *FlapPolicy // shared (Config.Flap), never changed

	failuresBeforeCritical int32
	successesBeforePassing int32

	// status is the debounced status; output the latest result's output.
	status              fsm.Health
	output              string
	successes, failures int32
	flapLevel           int32
	flapping            bool
	// changes are the debounced status changes within the flap window.
	changes []time.Time
	// flapUntil is when the hold-down ends (Unix nanoseconds; 0: none);
	// calmSince when the last flapping episode ended (0: never).
	flapUntil, calmSince int64
}

// newTracker seeds a tracker from the replicated check, so a check that
// moves to another node or leader carries on where it was. With thresholds
// false (TTL reports) every result counts at once. p must outlive it.
func newTracker(c *fsm.Check, p *FlapPolicy, thresholds bool) *tracker {
	t := &tracker{
		failuresBeforeCritical: 1, successesBeforePassing: 1, policy: p,
		status: c.Status, output: c.Output, flapping: c.Flapping, flapLevel: c.FlapLevel,
	}
	if thresholds {
		t.failuresBeforeCritical = int32(max(1, min(c.FailuresBeforeCritical, 1<<30)))
		t.successesBeforePassing = int32(max(1, min(c.SuccessesBeforePassing, 1<<30)))
	}
	if c.Flapping && c.FlapUntil != 0 {
		t.flapUntil = c.FlapUntil
	}
	if !t.status.Valid() {
		t.status = fsm.Critical
	}
	return t
}

// redefine takes the thresholds of c, the tracker's check redefined in
// place (a re-registration that kept its target). The status, counters and
// flap state are kept: the counts of results in a row so far stand, and
// the next result is judged by the new thresholds (a check at 2 failures in
// a row whose failures_before_critical drops from 3 to 2 turns critical at
// its next failure, not at the redefinition).
func (t *tracker) redefine(c *fsm.Check) {
	t.failuresBeforeCritical = int32(max(1, min(c.FailuresBeforeCritical, 1<<30)))
	t.successesBeforePassing = int32(max(1, min(c.SuccessesBeforePassing, 1<<30)))
}

// observe records one result seen at now. It reports whether the debounced
// status changed and whether the check started flapping.
func (t *tracker) observe(now time.Time, r Result) (changed, startedFlapping bool) {
	t.output = r.Output
	if r.Status == fsm.Passing {
		t.successes++
		t.failures = 0
	} else {
		t.failures++
		t.successes = 0
	}
	next := t.status
	switch {
	case r.Status == fsm.Passing && t.successes >= t.successesBeforePassing:
		next = fsm.Passing
	case r.Status != fsm.Passing && t.failures >= t.failuresBeforeCritical:
		next = r.Status
	}
	if next != t.status {
		t.status = next
		changed = true
		if t.policy.Threshold > 0 {
			t.changes = append(t.changes, now)
		}
	}
	return changed, t.tick(now)
}

// tick advances the flapping state to now; it reports whether the check
// started flapping.
func (t *tracker) tick(now time.Time) bool {
	p := t.policy
	if p.Threshold == 0 {
		t.flapping = false
		return false
	}
	cut := 0
	for cut < len(t.changes) && now.Sub(t.changes[cut]) > p.Window {
		cut++
	}
	t.changes = t.changes[cut:]
	switch {
	case !t.flapping && len(t.changes) >= p.Threshold:
		t.flapping = true
		t.flapLevel = nextLevel(t.flapLevel)
		t.flapUntil = now.Add(p.holdDown(int(t.flapLevel))).UnixNano()
		return true
	case !t.flapping:
		// A long calm forgets earlier episodes, so the next hold-down
		// starts short again. (Replicated only with the next write.)
		if t.flapLevel > 0 && len(t.changes) == 0 && now.UnixNano()-t.calmSince >= int64(p.MaxHoldDown) {
			t.flapLevel = 0
		}
	case now.UnixNano() >= t.flapUntil:
		if len(t.changes) >= p.Threshold {
			t.flapLevel = nextLevel(t.flapLevel)
			t.flapUntil = now.Add(p.holdDown(int(t.flapLevel))).UnixNano()
		} else {
			t.flapping = false
			t.flapUntil = 0
			t.calmSince = now.UnixNano()
		}
	}
	return false
}

// nextLevel is the flap level after l, kept from overflowing (the
// hold-down stops doubling at MaxHoldDown long before).
func nextLevel(l int32) int32 { return min(l, math.MaxInt32-1) + 1 }

// flapUntilTime is flapUntil as a time, for logs.
func (t *tracker) flapUntilTime() time.Time { return time.Unix(0, t.flapUntil) }

func (t *tracker) flapUntilNanos() int64 { return t.flapUntil }

// needsWrite reports whether the replicated check c differs from what the
// tracker wants in a way worth a Raft write: the status (unless the check is
// held flapping) or the flapping state. A change of output alone is not,
// with one exception: a check that has no output yet (just registered) gets
// its first result's output, once, so that it always shows why it is in
// its state.
func (t *tracker) needsWrite(c *fsm.Check) bool {
	if t.flapping != c.Flapping || t.flapUntilNanos() != c.FlapUntil {
		return true
	}
	if c.Output == "" && t.output != "" {
		return true
	}
	return !t.flapping && t.status != c.Status
}

// settled reports whether the TTL tracker t holds nothing beyond the
// replicated check c, so that newTracker(c, p, false) would decide every
// later result as t would: c has t's status and output written, neither is
// flapping or has a flap level, and no status change of t is still inside
// the flap window. The leader then drops t; a calm check's next report
// makes one from the check again. Only for trackers without thresholds
// (the leader's TTL trackers), whose counters decide nothing.
func (t *tracker) settled(c *fsm.Check, now time.Time) bool {
	if t.flapping || t.flapUntil != 0 || t.flapLevel != 0 || c.Flapping || c.FlapLevel != 0 {
		return false
	}
	if n := len(t.changes); n > 0 && now.Sub(t.changes[n-1]) <= t.policy.Window {
		return false
	}
	return t.status == c.Status && !t.needsWrite(c)
}

// update is the CheckUpdate that brings the replicated check to the
// tracker's state.
func (t *tracker) update(id string, maxOutput int) fsm.CheckUpdate {
	return fsm.CheckUpdate{
		Check: id, Status: t.status, Output: capOutput(t.output, maxOutput),
		Flapping: t.flapping, FlapUntil: t.flapUntilNanos(), FlapLevel: int(t.flapLevel),
	}
}
