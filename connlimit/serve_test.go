package connlimit

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestSetRefusesOnceClosingAndShutdownWaitsForBusyOnes: a connection added
// before SetClosing is waited for until it goes idle; one offered after is
// refused; Shutdown returns once the set is empty.
func TestSetRefusesOnceClosingAndShutdownWaitsForBusyOnes(t *testing.T) {
	type conn struct{ _ int }
	var s Set[*conn]
	busy := &conn{}
	if !s.Add(busy) {
		t.Fatal("Add refused before closing")
	}
	s.SetClosing()
	if s.Add(&conn{}) {
		t.Fatal("Add accepted a connection while closing")
	}
	released := make(chan struct{})
	ticks := make(chan struct{}, 100)
	shut := make(chan error, 1)
	go func() {
		shut <- s.Shutdown(context.Background(), time.Millisecond, func(*conn) {
			select {
			case ticks <- struct{}{}:
			default:
			}
		}, func(*conn) {})
	}()
	go func() {
		<-released
		s.Remove(busy)
	}()
	// Three rounds of the loop have seen the busy connection: it has not
	// returned.
	for range 3 {
		<-ticks
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a busy connection left", err)
	default:
	}
	close(released)
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once the set was empty")
	}
}

// TestShutdownLoopKeepsItsDeadline: past ctx, closeAll runs and the loop
// returns ctx's error without waiting for the connections.
func TestShutdownLoopKeepsItsDeadline(t *testing.T) {
	var s Set[int]
	s.Add(1)
	defer s.Remove(1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	closedAll := false
	err := s.Shutdown(ctx, time.Millisecond, func(int) {}, func(int) { closedAll = true })
	if !errors.Is(err, context.DeadlineExceeded) || !closedAll {
		t.Fatalf("Shutdown: %v, closeAll called %v", err, closedAll)
	}
}

// TestAcceptLoopEndsWithItsListener: a closed listener ends the loop with
// nil when the server is closing, with the listener's error otherwise.
func TestAcceptLoopEndsWithItsListener(t *testing.T) {
	for _, closing := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		handled := make(chan net.Conn, 1)
		done := make(chan error, 1)
		go func() { done <- AcceptLoop(ln, func() bool { return closing }, func(c net.Conn) { handled <- c }) }()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		(<-handled).Close()
		c.Close()
		ln.Close()
		select {
		case err := <-done:
			if (err == nil) != closing {
				t.Errorf("closing=%v: AcceptLoop returned %v", closing, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("closing=%v: AcceptLoop did not return after its listener closed", closing)
		}
	}
}
