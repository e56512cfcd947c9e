package health

import (
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// tracker turns the results of one check into the state to replicate: it
// applies the thresholds (failures before critical, successes before
// passing) and the flapping policy. It is not safe for concurrent use; each
// check's goroutine (or the leader's TTL loop) owns its tracker.
type tracker struct {
	failuresBeforeCritical int
	successesBeforePassing int
	policy                 FlapPolicy

	// status is the debounced status; output the latest result's output.
	status              fsm.Health
	output              string
	successes, failures int
	// changes are the debounced status changes within the flap window.
	changes   []time.Time
	flapping  bool
	flapUntil time.Time
	flapLevel int
	calmSince time.Time // when the last flapping episode ended
}

// newTracker seeds a tracker from the replicated check, so a check that
// moves to another node or leader carries on where it was. With thresholds
// false (TTL reports) every result counts at once.
func newTracker(c *fsm.Check, p FlapPolicy, thresholds bool) *tracker {
	t := &tracker{
		failuresBeforeCritical: 1, successesBeforePassing: 1, policy: p,
		status: c.Status, output: c.Output, flapping: c.Flapping, flapLevel: int(c.FlapLevel),
	}
	if thresholds {
		t.failuresBeforeCritical = max(1, c.FailuresBeforeCritical)
		t.successesBeforePassing = max(1, c.SuccessesBeforePassing)
	}
	if c.Flapping && c.FlapUntil != 0 {
		t.flapUntil = time.Unix(0, c.FlapUntil)
	}
	if !t.status.Valid() {
		t.status = fsm.Critical
	}
	return t
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
		t.flapLevel++
		t.flapUntil = now.Add(p.holdDown(t.flapLevel))
		return true
	case !t.flapping:
		// A long calm forgets earlier episodes, so the next hold-down
		// starts short again. (Replicated only with the next write.)
		if t.flapLevel > 0 && len(t.changes) == 0 && now.Sub(t.calmSince) >= p.MaxHoldDown {
			t.flapLevel = 0
		}
	case !now.Before(t.flapUntil):
		if len(t.changes) >= p.Threshold {
			t.flapLevel++
			t.flapUntil = now.Add(p.holdDown(t.flapLevel))
		} else {
			t.flapping = false
			t.flapUntil = time.Time{}
			t.calmSince = now
		}
	}
	return false
}

func (t *tracker) flapUntilNanos() int64 {
	if t.flapUntil.IsZero() {
		return 0
	}
	return t.flapUntil.UnixNano()
}

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

// update is the CheckUpdate that brings the replicated check to the
// tracker's state.
func (t *tracker) update(id string, maxOutput int) fsm.CheckUpdate {
	return fsm.CheckUpdate{
		Check: id, Status: t.status, Output: capOutput(t.output, maxOutput),
		Flapping: t.flapping, FlapUntil: t.flapUntilNanos(), FlapLevel: t.flapLevel,
	}
}
