package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api/client"
	"go.uber.org/goleak"
)

// clientStartingAt returns a client over addrs whose fail-over order starts
// at start (the client picks a random start; tests rotate until it is).
func clientStartingAt(t *testing.T, start string, addrs ...string) *client.Client {
	t.Helper()
	for range 1000 {
		c, err := client.New(client.Config{Addresses: addrs, AttemptTimeout: answerAttempt})
		if err != nil {
			t.Fatal(err)
		}
		if c.FirstAddress() == start {
			return c
		}
	}
	t.Fatalf("the client never started with %s", start)
	return nil
}

// TestLeaveAndJoinGoToTheFirstAddressAlone: calls addressed to one agent
// go to the first address whichever agent the client would start with,
// and never to another one, even when the first cannot be reached.
func TestLeaveAndJoinGoToTheFirstAddressAlone(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the agents' own cleanups
	ctx := context.Background()
	first, b, c := newRecordingAgent(t), newRecordingAgent(t), newRecordingAgent(t)
	addrs := []string{first.addr(), b.addr(), c.addr()}
	for _, start := range addrs {
		cl := clientStartingAt(t, start, addrs...)
		res, err := cl.Leave(ctx)
		if err != nil {
			t.Fatalf("leave (client starting at %s): %v", start, err)
		}
		if res.Agent != first.addr() || cl.First() != first.addr() {
			t.Fatalf("leave answered by %s, First %s, want %s", res.Agent, cl.First(), first.addr())
		}
		if _, err := cl.Join(ctx, []string{"10.0.0.1:8752"}); err != nil {
			t.Fatalf("join (client starting at %s): %v", start, err)
		}
	}
	if got := first.got(); len(got) != 6 {
		t.Errorf("the first agent got %q, want 3 leaves and 3 joins", got)
	}
	if len(b.got())+len(c.got()) != 0 {
		t.Fatalf("other agents were asked: %q %q", b.got(), c.got())
	}

	dead := deadAddr(t)
	for _, start := range []string{b.addr(), c.addr()} {
		cl := clientStartingAt(t, start, dead, b.addr(), c.addr())
		_, err := cl.Leave(ctx)
		var ue *client.UnreachableError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), dead) {
			t.Fatalf("leave with the first agent dead: %v, want an *UnreachableError naming %s", err, dead)
		}
		if _, err := cl.Join(ctx, []string{"10.0.0.1:8752"}); err == nil {
			t.Fatal("join with the first agent dead succeeded")
		}
	}
	if len(b.got())+len(c.got()) != 0 {
		t.Fatalf("with the first agent dead, others were asked: %q %q", b.got(), c.got())
	}
}
