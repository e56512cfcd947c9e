package wait_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	err := wait.Poll(time.Minute, time.Millisecond, func() (bool, string) {
		return n.Add(1) == 3, "not yet"
	})
	if err != nil || n.Load() != 3 {
		t.Fatalf("Poll = %v after %d checks, want nil after 3", err, n.Load())
	}
}

func TestPollChecksAtOnceAndGivesUpWithTheLastReason(t *testing.T) {
	n := 0
	start := time.Now()
	err := wait.Poll(50*time.Millisecond, 10*time.Millisecond, func() (bool, string) {
		n++
		return false, fmt.Sprintf("check %d", n)
	})
	var te *wait.TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("Poll = %v, want a *TimeoutError", err)
	}
	if te.Checks != n || te.Reason != fmt.Sprintf("check %d", n) || n < 2 {
		t.Fatalf("error %+v after %d checks", te, n)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Fatalf("gave up after %s, before the timeout", el)
	}
	if !strings.Contains(err.Error(), "timed out after 50ms") || !strings.Contains(err.Error(), "last: check") {
		t.Fatalf("message %q", err)
	}
}

func TestPollWithAZeroTimeoutChecksOnce(t *testing.T) {
	n := 0
	if err := wait.Poll(0, time.Second, func() (bool, string) { n++; return n > 1, "" }); err == nil || n != 1 {
		t.Fatalf("Poll(0) = %v after %d checks", err, n)
	}
	if err := wait.Poll(0, time.Second, func() (bool, string) { return true, "" }); err != nil {
		t.Fatal(err)
	}
}

// fakeT records what For and Until report instead of failing this test.
type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper()                   {}
func (f *fakeT) Fatal(args ...any)         { f.msg = fmt.Sprint(args...) }
func (f *fakeT) Fatalf(s string, a ...any) { f.msg = fmt.Sprintf(s, a...) }

func TestForAndUntilFailTheTestNamingWhatWasAwaited(t *testing.T) {
	ft := &fakeT{}
	wait.For(ft, 20*time.Millisecond, time.Millisecond, func() (bool, string) { return false, "node2 at index 4, want 7" })
	if !strings.Contains(ft.msg, "timed out after 20ms") || !strings.HasSuffix(ft.msg, "last: node2 at index 4, want 7") {
		t.Fatalf("For's message: %q", ft.msg)
	}
	ft = &fakeT{}
	wait.Until(ft, 20*time.Millisecond, "a leader", func() bool { return false })
	if !strings.Contains(ft.msg, "timed out after 20ms") || !strings.HasSuffix(ft.msg, "waiting for a leader") {
		t.Fatalf("Until's message: %q", ft.msg)
	}
	ft = &fakeT{}
	wait.Until(ft, time.Second, "nothing", func() bool { return true })
	if ft.msg != "" {
		t.Fatalf("a condition that holds failed the test: %q", ft.msg)
	}
}
