package cmd_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
)

// TestLeaveMakesTheFirstAddressLeaveAndNoOther: with --addr (BEACON_ADDR)
// naming every agent, `beacon leave` is for the first one alone. While it
// is down the command fails naming it and no other agent leaves; once it is
// back, it is the one that leaves, and the output names it.
func TestLeaveMakesTheFirstAddressLeaveAndNoOther(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	// The leader first: the agent whose wrongful leave costs the most.
	first := c.Leader()
	addrs := []string{c.Node(first).HTTPAddr()}
	for i := range c.Nodes() {
		if i != first {
			addrs = append(addrs, c.Node(i).HTTPAddr())
		}
	}
	list := strings.Join(addrs, ",")
	othersStillRunning := func() {
		t.Helper()
		for i, n := range c.Nodes() {
			if i == first {
				continue
			}
			select {
			case err := <-n.Agent.Err():
				t.Fatalf("%s stopped (%v): leave reached an agent other than the first", n.Name, err)
			default:
			}
		}
	}

	c.Stop(first)
	out, _, err := beacon(ctx, list, "leave")
	if err == nil || !strings.Contains(err.Error(), addrs[0]) || !strings.Contains(err.Error(), "no other agent is asked") {
		t.Fatalf("leave with the first agent down: %v (out %q), want an error naming %s", err, out, addrs[0])
	}
	othersStillRunning()
	c.WaitForVoters(3) // nobody left Raft

	c.Restart(first)
	// The cluster settles first, as an operator's would: the restarted
	// agent follows the leader and has caught up. (A leave in the first
	// moments after a restart can meet an election; a new leader whose
	// gossip had not yet heard of the leave used to add the server back.
	// The departure is now recorded in the catalog first:
	// cluster's TestALeaveSticksAcrossALeaderChange.)
	c.WaitForVoters(3)
	agenttest.Eventually(t, 30*time.Second, func() bool {
		st, err := c.Client(first).Status(ctx)
		if err != nil || st.Leader == "" {
			return false
		}
		lst, err := c.Client(c.Leader()).Status(ctx)
		return err == nil && st.Term == lst.Term && st.CommitIndex >= lst.CommitIndex
	}, "the restarted agent following the leader, caught up")
	out = mustBeacon(t, list, "leave")
	if want := c.Node(first).Name + " (" + addrs[0] + ") left the cluster"; strings.TrimSpace(out) != want {
		t.Fatalf("leave printed %q, want %q", out, want)
	}
	select {
	case err := <-c.Node(first).Agent.Err():
		if !errors.Is(err, agent.ErrLeft) {
			t.Fatalf("the first agent stopped with %v, want ErrLeft", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first agent did not stop after leaving")
	}
	c.Node(first).Agent = nil
	othersStillRunning()
	c.WaitForVoters(2)
}
