// Package wait is the one bounded wait of Beacon's tests: poll a condition
// until it holds, and give up after a timeout with a message that says what
// was awaited and why it did not hold the last time it was checked.
//
// It imports nothing of the project (scripts/depcheck.sh enforces it), so the
// tests of every package can use it, fsm's as well as cmd/beacon's. Tests
// wait on conditions through it instead of sleeping for a fixed time or
// writing their own `for { ...; time.Sleep }` loops: on a loaded machine a
// condition may take many times longer than on an idle one, so every wait is
// generous but bounded, and the first check happens at once.
//
//	wait.For(t, 30*time.Second, 20*time.Millisecond, func() (bool, string) {
//		idx := node.AppliedIndex()
//		return idx >= want, fmt.Sprintf("node at index %d, want %d", idx, want)
//	})
package wait

import (
	"fmt"
	"testing"
	"time"
)

// Interval is the polling interval of Until.
const Interval = 10 * time.Millisecond

// Cond reports whether the awaited condition holds, and if not, why: the
// reason of the last check is shown when the wait times out.
type Cond func() (ok bool, reason string)

// For checks cond at once and then every interval until it holds, and fails
// the test (t.Fatalf) after timeout, naming the last reason cond gave. Like
// t.Fatalf it must be called from the test's goroutine; cond may itself call
// t.Fatalf to stop waiting on an error that will not go away.
func For(t testing.TB, timeout, interval time.Duration, cond Cond) {
	t.Helper()
	if err := Poll(timeout, interval, cond); err != nil {
		t.Fatal(err)
	}
}

// Until is For with the default interval and a condition that gives no
// reason: what names it in the failure message.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Poll(timeout, Interval, func() (bool, string) { return cond(), "" }); err != nil {
		t.Fatalf("%v waiting for %s", err, what)
	}
}

// TimeoutError is returned by Poll when the condition did not hold in time.
type TimeoutError struct {
	Timeout time.Duration // how long Poll waited
	Checks  int           // how often it checked
	Reason  string        // the reason of the last check ("" if cond gave none)
}

func (e *TimeoutError) Error() string {
	msg := fmt.Sprintf("timed out after %s (%d checks)", e.Timeout, e.Checks)
	if e.Reason != "" {
		msg += "; last: " + e.Reason
	}
	return msg
}

// Poll is For without a test: it returns nil once cond holds, or a
// *TimeoutError after timeout. For TestMain, benchmarks' worker goroutines
// and examples, where failing a test is not possible or not allowed.
func Poll(timeout, interval time.Duration, cond Cond) error {
	if interval <= 0 {
		interval = Interval
	}
	deadline := time.Now().Add(timeout)
	checks := 0
	for {
		ok, reason := cond()
		checks++
		if ok {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return &TimeoutError{Timeout: timeout, Checks: checks, Reason: reason}
		}
		time.Sleep(min(interval, left))
	}
}
