package fsm

import (
	"context"
	"testing"
	"time"
)

func TestWaitAckedWaitsForTheAcknowledgedIndexOnly(t *testing.T) {
	s := NewStore()
	ctx := context.Background()
	if !s.WaitAcked(ctx, time.Millisecond) {
		t.Fatal("nothing acknowledged, yet WaitAcked waited")
	}
	s.NoteAcked(5)
	s.NoteAcked(3) // never goes back
	if s.WaitAcked(ctx, 20*time.Millisecond) {
		t.Fatal("index 5 acknowledged but not applied, yet WaitAcked returned true")
	}
	done := make(chan bool, 1)
	go func() { done <- s.WaitAcked(ctx, 10*time.Second) }()
	s.advance(4)
	select {
	case <-done:
		t.Fatal("WaitAcked returned at index 4, before 5")
	case <-time.After(20 * time.Millisecond):
	}
	s.advance(5)
	if !<-done {
		t.Fatal("WaitAcked did not see index 5 applied")
	}
}

// TestWaitsThatGiveUpLeaveOneEntryPerIndex: on a node that does not catch
// up (cut off from its leader after acknowledging a write), every read waits
// for the same acknowledged index and gives up; before 2026-12-08 each left
// its own channel in the waiters' heap until the index was reached, so the
// heap grew with every read for as long as the node stayed behind.
func TestWaitsThatGiveUpLeaveOneEntryPerIndex(t *testing.T) {
	s := NewStore()
	s.NoteAcked(7)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 1000 {
		if s.WaitAcked(ctx, time.Hour) {
			t.Fatal("index 7 is not applied, yet WaitAcked returned true")
		}
	}
	for i := range 1000 {
		// What FSM.WaitForIndex waits on, for writes of three indexes.
		select {
		case <-s.appliedWaitCh(uint64(8 + i%3)):
			t.Fatal("the wait for an index not applied ended")
		default:
		}
	}
	s.notifyMu.Lock()
	n, m := len(s.waiters), len(s.waiting)
	s.notifyMu.Unlock()
	if n != 4 || m != 4 {
		t.Fatalf("%d waiters in the heap (%d in the map) after 2,000 waits for 4 indexes, want 4", n, m)
	}
	// Those waiting still wake, and the entries go.
	done := make(chan bool, 1)
	go func() { done <- s.WaitAcked(context.Background(), time.Minute) }()
	s.advance(10)
	if !<-done {
		t.Fatal("WaitAcked did not see index 7 applied")
	}
	s.notifyMu.Lock()
	n, m = len(s.waiters), len(s.waiting)
	s.notifyMu.Unlock()
	if n != 0 || m != 0 {
		t.Fatalf("%d waiters left (%d in the map) once every index is applied", n, m)
	}
}
