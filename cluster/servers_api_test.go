package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/cluster"
)

// TestTheClientWaitsAsLongAsTheAgentDoesForEachServer: the client grows
// each attempt of GET /v1/cluster/servers by the agent's own wait for a
// server, so the two must agree.
func TestTheClientWaitsAsLongAsTheAgentDoesForEachServer(t *testing.T) {
	if client.ServersWait != cluster.DefaultServerViewTimeout {
		t.Fatalf("client.ServersWait %v, cluster.DefaultServerViewTimeout %v", client.ServersWait, cluster.DefaultServerViewTimeout)
	}
}

// servers reads GET /v1/cluster/servers through node i.
func servers(t *testing.T, c *agenttest.Cluster, i int) *client.ClusterServers {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := c.Client(i).Servers(ctx)
	if err != nil {
		t.Fatalf("servers through node %d: %v", i, err)
	}
	return s
}

// caughtUp reports whether every server answered s with a view that has
// heard from leader in term and applied index.
func caughtUp(s *client.ClusterServers, leader string, term, index uint64) bool {
	if len(s.Servers) != 3 {
		return false
	}
	for _, sv := range s.Servers {
		if sv.View == nil || sv.View.LastContactMS < 0 || sv.View.AppliedIndex < index ||
			sv.View.Leader != leader || sv.View.Term != term {
			return false
		}
	}
	return true
}

// TestClusterServersGathersEveryServersOwnView asks each of three agents
// for every server's view over real Raft: each server answers for itself
// (its own role, the same leader and term, its own indexes), whichever
// agent asks; a stopped server is listed with the reason it gave no
// answer, and the request still succeeds.
func TestClusterServersGathersEveryServersOwnView(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	idx := agenttest.Register(t, c.Client(0), "web", "web-1", reg("10.0.0.1", 8080))
	c.WaitForIndex(idx)
	// Under load a follower that has not yet caught up with the leader
	// reports its last contact as never (-1): wait until every server,
	// asked through every agent, has heard from the leader and applied idx.
	// An election in between (a loaded machine) starts the wait again.
	views := make([]*client.ClusterServers, 3)
	var leader string
	agenttest.Eventually(t, 60*time.Second, func() bool {
		st, err := c.Client(0).Status(context.Background())
		if err != nil || st.Leader == "" {
			return false
		}
		leader = st.Leader
		for i := range views {
			if views[i] = servers(t, c, i); !caughtUp(views[i], leader, st.Term, idx) {
				return false
			}
		}
		return true
	}, "every server caught up with one leader, as every agent sees it")
	for i, v := range views {
		if v.Node != c.Node(i).Name {
			t.Errorf("asked through %s, the answer says %q", c.Node(i).Name, v.Node)
		}
		leaders := 0
		for _, sv := range v.Servers {
			if sv.Error != "" || sv.Suffrage != "Voter" || sv.Address == "" {
				t.Errorf("through %s: %+v", v.Node, sv)
			}
			if sv.View.Leader != leader || sv.View.Term != v.Servers[0].View.Term || sv.View.Term == 0 {
				t.Errorf("through %s: %s says leader %q term %d; want %q and one term", v.Node, sv.ID, sv.View.Leader, sv.View.Term, leader)
			}
			if sv.View.CommitIndex < idx || sv.View.LastIndex < sv.View.CommitIndex {
				t.Errorf("through %s: %s indexes %+v (write at %d)", v.Node, sv.ID, *sv.View, idx)
			}
			switch {
			case sv.ID == leader:
				leaders++
				if sv.View.State != "Leader" || sv.View.LastContactMS != 0 {
					t.Errorf("through %s: the leader %s says %+v", v.Node, sv.ID, *sv.View)
				}
			case sv.View.State != "Follower":
				t.Errorf("through %s: %s is %s", v.Node, sv.ID, sv.View.State)
			}
			// The answering agent answers for itself without a round trip.
			if sv.ID == v.Node && sv.TookMS != 0 {
				t.Errorf("through %s: its own view took %d ms", v.Node, sv.TookMS)
			}
		}
		if leaders != 1 {
			t.Errorf("through %s: %d leaders", v.Node, leaders)
		}
	}

	// A stopped server refuses the connection: listed with the error.
	f := c.Follower()
	stopped := c.Node(f).Name
	c.Stop(f)
	asker := c.Follower(f)
	v := servers(t, c, asker)
	found := false
	for _, sv := range v.Servers {
		if sv.ID != stopped {
			if sv.Error != "" || sv.View == nil {
				t.Errorf("%s: %+v", sv.ID, sv)
			}
			continue
		}
		found = true
		if sv.View != nil || sv.Error == "" || !strings.Contains(sv.Error, sv.Address) {
			t.Errorf("the stopped %s: %+v; want an error naming its address", stopped, sv)
		}
		t.Logf("a stopped server: %q in %d ms", sv.Error, sv.TookMS)
	}
	if !found {
		t.Fatalf("the stopped %s is missing: %+v", stopped, v.Servers)
	}
}

// TestAnIdleClusterShowsEveryServerAppliedAsFarAsCommitted: on a healthy,
// idle cluster every server's applied index (what `beacon operator raft
// servers` prints as APPLIED) reaches its commit index. It used to be the
// catalog's index, which the leader's commit nudge (a barrier after every
// write, which changes nothing in the catalog) leaves one below the commit
// index for good: APPLIED one less than COMMIT on every server. The
// catalog's index is shown apart, at the write.
func TestAnIdleClusterShowsEveryServerAppliedAsFarAsCommitted(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	idx := agenttest.Register(t, c.Client(c.Follower()), "web", "web-1", reg("10.0.0.1", 8080))
	c.WaitForIndex(idx)
	var last *client.ClusterServers
	agenttest.Eventually(t, 30*time.Second, func() bool {
		last = servers(t, c, 0)
		if len(last.Servers) != 3 {
			return false
		}
		for _, sv := range last.Servers {
			v := sv.View
			if v == nil || v.CatalogIndex < idx || v.AppliedIndex != v.CommitIndex || v.LastIndex != v.CommitIndex {
				return false
			}
		}
		return true
	}, "every server applied as far as it committed, idle, after the write")
	for _, sv := range last.Servers {
		if v := sv.View; v.CatalogIndex > v.AppliedIndex {
			t.Errorf("%s: catalog index %d past the applied index %d", sv.ID, v.CatalogIndex, v.AppliedIndex)
		}
	}
}
