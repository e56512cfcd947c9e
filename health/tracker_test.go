package health

import (
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/beaconhq/beacon/fsm"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func check(status fsm.Health, fails, succs int) *fsm.Check {
	return &fsm.Check{ID: "i:c", Status: status, CheckDefinition: &fsm.CheckDefinition{
		FailuresBeforeCritical: fails, SuccessesBeforePassing: succs,
	}}
}

// apply copies the tracker's update into c, as the FSM would.
func apply(c *fsm.Check, u fsm.CheckUpdate) {
	c.Status, c.Output, c.Flapping, c.FlapUntil, c.FlapLevel = u.Status, u.Output, u.Flapping, u.FlapUntil, int32(u.FlapLevel)
}

func TestThresholds(t *testing.T) {
	pass := Result{fsm.Passing, "ok"}
	fail := Result{fsm.Critical, "down"}
	warn := Result{fsm.Warning, "slow"}
	cases := []struct {
		name        string
		start       fsm.Health
		fails, succ int
		results     []Result
		// changedAt lists the 1-based results after which the debounced status changed.
		changedAt []int
		final     fsm.Health
	}{
		{"a passing check goes critical after exactly failures_before_critical failures", fsm.Passing, 3, 1,
			[]Result{fail, fail, fail, fail}, []int{3}, fsm.Critical},
		{"a success in between restarts the failure count", fsm.Passing, 3, 1,
			[]Result{fail, fail, pass, fail, fail, fail}, []int{6}, fsm.Critical},
		{"a critical check passes after exactly successes_before_passing successes", fsm.Critical, 1, 2,
			[]Result{pass, fail, pass, pass, pass}, []int{4}, fsm.Passing},
		{"a warning counts as a failure and sets warning", fsm.Passing, 2, 1,
			[]Result{warn, warn, fail}, []int{2, 3}, fsm.Critical},
		{"thresholds of 1 follow every result", fsm.Critical, 1, 1,
			[]Result{pass, fail, pass}, []int{1, 2, 3}, fsm.Passing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(check(tc.start, tc.fails, tc.succ), &FlapPolicy{}, true)
			var got []int
			for i, r := range tc.results {
				if changed, _ := tr.observe(t0.Add(time.Duration(i)*time.Second), r); changed {
					got = append(got, i+1)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.changedAt) || tr.status != tc.final {
				t.Fatalf("changed after results %v, final %s; want %v, %s", got, tr.status, tc.changedAt, tc.final)
			}
		})
	}
}

func TestTTLReportsIgnoreThresholds(t *testing.T) {
	tr := newTracker(check(fsm.Passing, 5, 5), &FlapPolicy{}, false)
	if changed, _ := tr.observe(t0, Result{fsm.Critical, "x"}); !changed || tr.status != fsm.Critical {
		t.Fatalf("a TTL fail report did not apply at once: %s", tr.status)
	}
}

func TestOnlyStatusChangesNeedWrites(t *testing.T) {
	c := check(fsm.Passing, 1, 1)
	c.Output = "ok 1"
	tr := newTracker(c, &FlapPolicy{}, true)
	tr.observe(t0, Result{fsm.Passing, "ok 2, with new output"})
	if tr.needsWrite(c) {
		t.Fatal("an output-only change needs a write")
	}
	tr.observe(t0.Add(time.Second), Result{fsm.Critical, "down"})
	if !tr.needsWrite(c) {
		t.Fatal("a status change needs no write")
	}
	apply(c, tr.update(c.ID, 4096))
	if tr.needsWrite(c) || c.Output != "down" {
		t.Fatalf("after the write: needsWrite=%v output %q", tr.needsWrite(c), c.Output)
	}
}

func TestAJustRegisteredCheckGetsItsFirstOutputOnce(t *testing.T) {
	c := check(fsm.Critical, 1, 1) // initial status, no output yet
	tr := newTracker(c, &FlapPolicy{}, true)
	tr.observe(t0, Result{fsm.Critical, "connection refused"})
	if !tr.needsWrite(c) {
		t.Fatal("the first output of a new check is not written")
	}
	apply(c, tr.update(c.ID, 4096))
	tr.observe(t0.Add(time.Second), Result{fsm.Critical, "connection refused again"})
	if tr.needsWrite(c) {
		t.Fatal("a second output-only change needs a write")
	}
}

func TestFlapping(t *testing.T) {
	p := FlapPolicy{Threshold: 4, Window: 10 * time.Second, HoldDown: 4 * time.Second, MaxHoldDown: 16 * time.Second}
	pass, fail := Result{fsm.Passing, "ok"}, Result{fsm.Critical, "down"}

	t.Run("a check that toggles every probe is held flapping, with writes bounded", func(t *testing.T) {
		c := check(fsm.Passing, 1, 1)
		tr := newTracker(c, &p, true)
		writes, episodes := 0, 0
		var levels []int
		for i := 0; i < 600; i++ { // 10 minutes at one probe a second
			r := pass
			if i%2 == 0 {
				r = fail
			}
			_, started := tr.observe(t0.Add(time.Duration(i)*time.Second), r)
			if started {
				episodes++
			}
			if tr.needsWrite(c) {
				writes++
				u := tr.update(c.ID, 4096)
				if u.Flapping && (len(levels) == 0 || levels[len(levels)-1] != u.FlapLevel) {
					levels = append(levels, u.FlapLevel)
				}
				apply(c, u)
			}
		}
		if episodes != 1 || !c.Flapping {
			t.Fatalf("episodes %d, flapping %v; want one episode still held", episodes, c.Flapping)
		}
		// 3 changes before the threshold, then one write per hold-down
		// (4s, 8s, 16s, 16s, ...): about 40 in 10 minutes, not 600.
		if writes > 45 {
			t.Fatalf("%d writes in 600 probes of a flapping check", writes)
		}
		if fmt.Sprint(levels[:3]) != "[1 2 3]" {
			t.Fatalf("hold-down levels %v, want exponential 1, 2, 3, ...", levels)
		}
		if got := time.Unix(0, c.FlapUntil).Sub(t0.Add(599 * time.Second)); got > p.MaxHoldDown {
			t.Fatalf("hold-down %s exceeds the maximum", got)
		}
	})

	t.Run("a flapping check that calms down leaves the state with its current status", func(t *testing.T) {
		c := check(fsm.Passing, 1, 1)
		tr := newTracker(c, &p, true)
		now := t0
		for i := 0; i < 4; i++ {
			r := fail
			if i%2 == 1 {
				r = pass
			}
			tr.observe(now, r)
			now = now.Add(time.Second)
		}
		if !tr.flapping {
			t.Fatal("4 changes in 10s did not start flapping")
		}
		apply(c, tr.update(c.ID, 4096))
		for c.Flapping && now.Before(t0.Add(time.Minute)) {
			tr.observe(now, pass)
			if tr.needsWrite(c) {
				apply(c, tr.update(c.ID, 4096))
			}
			now = now.Add(time.Second)
		}
		if c.Flapping || c.Status != fsm.Passing || c.FlapUntil != 0 {
			t.Fatalf("after a calm minute: %+v", c)
		}
		if tr.flapLevel != 2 {
			// The first hold-down (4s) ended with the 4 changes still
			// inside the 10s window, so it was extended once.
			t.Fatalf("flap level %d right after the episode, want 2 (kept for the next)", tr.flapLevel)
		}
		tr.observe(now.Add(p.MaxHoldDown+time.Second), pass)
		if tr.flapLevel != 0 {
			t.Fatalf("flap level %d after a long calm, want 0", tr.flapLevel)
		}
	})

	t.Run("a new owner carries on a replicated flapping state", func(t *testing.T) {
		c := check(fsm.Critical, 1, 1)
		c.Output = "down"
		c.Flapping, c.FlapLevel, c.FlapUntil = true, 2, t0.Add(5*time.Second).UnixNano()
		tr := newTracker(c, &p, true)
		tr.observe(t0, pass)
		if !tr.flapping || tr.needsWrite(c) {
			t.Fatalf("inside the hold-down: flapping %v needsWrite %v", tr.flapping, tr.needsWrite(c))
		}
		tr.observe(t0.Add(6*time.Second), pass)
		if tr.flapping || !tr.needsWrite(c) || tr.update(c.ID, 10).Status != fsm.Passing {
			t.Fatalf("after the hold-down: flapping %v needsWrite %v", tr.flapping, tr.needsWrite(c))
		}
	})
}

func TestHoldDownDoublesUpToTheMaximum(t *testing.T) {
	p := FlapPolicy{Threshold: 2, Window: time.Second, HoldDown: time.Second, MaxHoldDown: 5 * time.Second}
	var got []time.Duration
	for l := 1; l <= 5; l++ {
		got = append(got, p.holdDown(l))
	}
	if fmt.Sprint(got) != "[1s 2s 4s 5s 5s]" {
		t.Fatalf("hold-downs %v", got)
	}
}

// TestTrackerIsSmall keeps the tracker in the 112-byte size class: the leader
// holds one per TTL check that has been reported (100,000 checks: 11 MB,
// against 19 MB at the 184 bytes it took with a copy of the flap policy, int
// counters and time.Time instants), and each node one per check it probes.
func TestTrackerIsSmall(t *testing.T) {
	if s := unsafe.Sizeof(tracker{}); s > 112 {
		t.Fatalf("tracker is %d bytes, want at most 112 (the size class it is kept in)", s)
	}
}

// A check redefined in place keeps its tracker's status and counts; the
// next result is judged by the new thresholds, none at the redefinition.
func TestRedefineKeepsCountsAndTakesNewThresholds(t *testing.T) {
	fail := Result{fsm.Critical, "down"}
	tr := newTracker(check(fsm.Passing, 3, 1), &FlapPolicy{}, true)
	for i := range 2 {
		if changed, _ := tr.observe(t0.Add(time.Duration(i)*time.Second), fail); changed {
			t.Fatalf("changed after %d failures with failures_before_critical 3", i+1)
		}
	}
	tr.redefine(check(fsm.Passing, 2, 1))
	if tr.status != fsm.Passing || tr.failures != 2 {
		t.Fatalf("after the redefinition: status %s, %d failures; want passing, 2", tr.status, tr.failures)
	}
	if changed, _ := tr.observe(t0.Add(3*time.Second), fail); !changed || tr.status != fsm.Critical {
		t.Fatalf("third failure: changed %t, status %s; want critical by the new threshold", changed, tr.status)
	}
}
