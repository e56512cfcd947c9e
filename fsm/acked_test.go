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
