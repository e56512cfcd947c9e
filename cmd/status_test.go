package cmd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// TestStatusOfAServerThatLostItsLeaderSaysSo stops two of three servers:
// the one left has a term and peers, so its status says no leader is known
// and what an election needs, not that a new cluster is forming.
func TestStatusOfAServerThatLostItsLeaderSaysSo(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	left := c.Follower()
	// The leader's configuration is not yet the follower's: it must have
	// taken the three voters itself before the others stop, or it is a
	// server that never joined (CI met that).
	agenttest.Eventually(t, 30*time.Second, func() bool {
		voters := 0
		for _, p := range c.Node(left).Agent.Node().Status().Peers {
			if p.Suffrage == "Voter" {
				voters++
			}
		}
		return voters == 3
	}, "the follower knows the three voters")
	for i := range c.Nodes() {
		if i != left {
			c.Stop(i)
		}
	}
	var out string
	agenttest.Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		out, _, err = beacon(ctx, c.Node(left).HTTPAddr(), "status")
		return err == nil && strings.Contains(out, "leader:") && strings.Contains(out, " none ")
	}, "the last server without a leader")
	if !strings.Contains(out, "no leader known in term") || !strings.Contains(out, "2 of the 3 voters") || strings.Contains(out, "bootstrap-expect") {
		t.Fatalf("status of a server that lost its leader:\n%s", out)
	}
}
