package health_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/cluster"
)

// TestATTLReportOnAServerCutOffFromTheLeaderIsAnswered: a TTL report sent to
// a follower that the leader commits without (the follower receives none of
// the leader's entries from then on) is answered as accepted, and the
// leader's catalog has it. Until 2026-12-08 the report waited for the
// follower's own apply with the request's context alone: the request hung
// for as long as the client waited.
func TestATTLReportOnAServerCutOffFromTheLeaderIsAnswered(t *testing.T) {
	var to atomic.Value // the cluster address cut off
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.ClusterForTest = func(cc *cluster.Config) { cluster.SetSendFilterForTest(cc, cluster.CutOffForTest(&to)) }
	}))
	l := c.WaitForLeader()
	f := c.Follower()
	ttl := client.CheckDefinition{Name: "hb", TTL: client.Duration(10 * time.Minute), InitialStatus: "passing"}
	register(t, c.Client(l), "jobs", "j1", &client.Registration{Address: "127.0.0.1", Port: 1, Checks: []client.CheckDefinition{ttl}})
	waitInstance(t, c, 30*time.Second, "jobs", "j1", "passing", hasStatus("passing"))

	to.Store(c.Node(f).Agent.Node().ClusterAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	idx, err := c.Client(f).ReportTTL(ctx, "jobs:j1:hb", "fail", &client.TTLUpdate{Output: "down"})
	if err != nil {
		t.Fatalf("TTL report on the cut-off server: %v", err)
	}
	agenttest.Eventually(t, 30*time.Second, func() bool {
		inst, _, err := c.Client(l).Instance(context.Background(), "jobs", "j1", nil)
		return err == nil && inst.Status == "critical"
	}, "the leader's catalog having the report")
	if got := c.Node(f).Agent.Store().AppliedIndex(); got >= idx {
		t.Fatalf("the cut-off server applied the report (index %d, applied %d): the test did not cut it off", idx, got)
	}
}
