package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

func reg(addr string, port int) *client.Registration {
	return &client.Registration{Address: addr, Port: port, Tags: []string{"v1"}, Meta: map[string]string{"zone": "a"}, Version: "1.2.3"}
}

func TestClusterFormsByItselfAndReplicatesWritesFromAFollower(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	c.WaitForVoters(3)

	f := c.Follower()
	idx := agenttest.Register(t, c.Client(f), "web", "web-1", reg("10.0.0.1", 8080))
	// Read-your-writes on the node written to: no waiting.
	insts, meta, err := c.Client(f).Instances(ctx, "web", nil)
	if err != nil || len(insts) != 1 || meta.Index < idx {
		t.Fatalf("follower read after its own write: %v %+v %+v", err, insts, meta)
	}
	c.WaitForIndex(idx)
	for i := range c.Nodes() {
		insts, meta, err := c.Client(i).Instances(ctx, "web", nil)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if len(insts) != 1 || insts[0].ID != "web-1" || insts[0].Address != "10.0.0.1" || insts[0].Meta["zone"] != "a" {
			t.Fatalf("node %d sees %+v", i, insts)
		}
		if meta.Index != idx || !meta.KnownLeader {
			t.Fatalf("node %d meta %+v, want index %d and a known leader", i, meta, idx)
		}
		// A consistent read from every node, too.
		var cinsts []client.Instance
		agenttest.Retry503(t, fmt.Sprintf("node %d consistent read", i), func() (err error) {
			cinsts, _, err = c.Client(i).Instances(ctx, "web", &client.QueryOptions{Consistent: true})
			return err
		})
		if len(cinsts) != 1 {
			t.Fatalf("node %d consistent read: %v", i, cinsts)
		}
	}

	// Re-registering is an update that bumps the modify index only.
	idx2 := agenttest.Register(t, c.Client(f), "web", "web-1", reg("10.0.0.2", 8081))
	inst, _, err := c.Client(f).Instance(ctx, "web", "web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Address != "10.0.0.2" || inst.CreateIndex != idx || inst.ModifyIndex != idx2 {
		t.Fatalf("after update: %+v (create %d modify %d), want create %d modify %d", inst, inst.CreateIndex, inst.ModifyIndex, idx, idx2)
	}

	// Deregistering through another follower removes it everywhere.
	other := (f + 1) % 3
	if other == c.Leader() {
		other = (other + 1) % 3
	}
	didx, err := c.Client(other).Deregister(ctx, "web", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	c.WaitForIndex(didx)
	for i := range c.Nodes() {
		insts, meta, err := c.Client(i).Instances(ctx, "web", nil)
		if err != nil || len(insts) != 0 || meta.Index < didx {
			t.Fatalf("node %d after deregister: %v %+v %+v", i, err, insts, meta)
		}
	}
}

// A follower learns that an entry committed only from the leader's next
// AppendEntries, which Raft sends for new entries or after CommitTimeout.
// With CommitTimeout at a minute, only the leader's commit nudge (a barrier
// after a write that nothing follows) tells the followers in time: a write
// through the leader must reach every follower, and a write forwarded by a
// follower (answered once that follower has applied it) must return, in
// seconds, not in a minute.
func TestFollowersLearnOfACommitWithoutWaitingForCommitTimeout(t *testing.T) {
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.RaftCommitTimeout = time.Minute
	}))
	c.WaitForVoters(3)
	for i := 0; i < 3; i++ {
		l := c.WaitForLeader()
		// WaitForIndex gives up after 30 s, half the commit timeout.
		c.WaitForIndex(agenttest.Register(t, c.Client(l), "nudge", fmt.Sprintf("via-leader-%d", i), reg("10.0.0.1", 8080)))
	}
	f := c.Follower()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, err := c.Client(f).Register(ctx, "nudge", "via-follower", reg("10.0.0.2", 8080))
	if err != nil {
		t.Fatalf("a write forwarded by a follower did not return within 10s: %v", err)
	}
	c.WaitForIndex(idx)
}

func TestLeaderStopNewLeaderNoAcknowledgedWriteLostOldLeaderCatchesUp(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	c.WaitForVoters(3)
	acked := map[string]bool{}
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("api-%d", i)
		agenttest.Register(t, c.Client(i%3), "api", id, reg("10.1.0.1", 9000+i))
		acked[id] = true
	}
	old := c.Leader()
	c.Stop(old)
	newLeader := c.WaitForLeader()
	if newLeader == old {
		t.Fatalf("leader did not change")
	}
	// Writes resume through the survivors.
	for i := 20; i < 40; i++ {
		id := fmt.Sprintf("api-%d", i)
		n := (old + 1 + i%2) % 3
		agenttest.Register(t, c.Client(n), "api", id, reg("10.1.0.1", 9000+i))
		acked[id] = true
	}
	var insts []client.Instance
	var meta *client.QueryMeta
	agenttest.Retry503(t, "a consistent read on the new leader", func() (err error) {
		insts, meta, err = c.Client(newLeader).Instances(ctx, "api", &client.QueryOptions{Consistent: true})
		return err
	})
	got := map[string]bool{}
	for _, i := range insts {
		got[i.ID] = true
	}
	for id := range acked {
		if !got[id] {
			t.Errorf("acknowledged registration %s lost", id)
		}
	}
	// The old leader restarts from its data dir and catches up.
	c.Restart(old)
	c.WaitForIndex(meta.Index)
	insts, _, err := c.Client(old).Instances(ctx, "api", nil)
	if err != nil || len(insts) != len(acked) {
		t.Fatalf("restarted node sees %d instances (err %v), want %d", len(insts), err, len(acked))
	}
	c.WaitForVoters(3)
}

func TestFourthNodeJoinsAndLeavesAndRaftFollows(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	c.WaitForVoters(3)
	agenttest.Register(t, c.Client(0), "db", "db-1", reg("10.2.0.1", 5432))
	n4 := c.AddNode("node4")
	// The same calls `beacon join` and `beacon leave` make.
	if n, err := n4.Client().Join(ctx, []string{c.Node(0).Config.GossipAddr}); err != nil || n != 1 {
		t.Fatalf("join: %d %v", n, err)
	}
	c.WaitForVoters(4)
	agenttest.Eventually(t, 30*time.Second, func() bool {
		insts, _, err := n4.Client().Instances(ctx, "db", nil)
		return err == nil && len(insts) == 1
	}, "the new node to replicate the catalog")

	if _, err := n4.Client().Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	c.WaitForVoters(3)
	select {
	case err := <-n4.Agent.Err():
		if !errors.Is(err, agent.ErrLeft) {
			t.Fatalf("agent stopped with %v, want ErrLeft", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop after leaving")
	}
	n4.Agent = nil
	agenttest.Eventually(t, 30*time.Second, func() bool {
		ms, err := c.Client(0).Members(ctx)
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.Name == "node4" {
				return m.Status == "left"
			}
		}
		return false
	}, "node4 listed as left")
	// A server that left keeps its role (it was listed as untrusted, the
	// role of a server whose credentials the leader refused), in every
	// agent's members and in the catalog.
	for i := range c.Nodes()[:3] {
		ms, err := c.Client(i).Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Name == "node4" && (m.Role != "server" || m.Status != "left") {
				t.Errorf("agent %d lists node4 as %s/%s, want server/left", i, m.Role, m.Status)
			}
		}
	}
	agenttest.Eventually(t, 30*time.Second, func() bool {
		nd := c.Node(c.Leader()).Agent.Store().Node("node4")
		return nd != nil && nd.Status == "left"
	}, "the catalog recording node4 as left")
	if nd := c.Node(c.Leader()).Agent.Store().Node("node4"); nd.Role != "server" {
		t.Errorf("the catalog records node4 with role %q, want server", nd.Role)
	}
}

func TestWriteWithoutQuorumFailsWith503AndRetryAfter(t *testing.T) {
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) { cfg.LeaderWait = time.Second }))
	c.WaitForVoters(3)
	keep := c.Follower()
	for i := range c.Nodes() {
		if i != keep {
			c.Stop(i)
		}
	}
	agenttest.Eventually(t, 30*time.Second, func() bool {
		return !c.Node(keep).Agent.Node().KnownLeader()
	}, "the survivor to lose its leader")
	req, _ := http.NewRequest(http.MethodPut, "http://"+c.Node(keep).HTTPAddr()+"/v1/services/web/instances/w1",
		strings.NewReader(`{"address":"10.0.0.1","port":80}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"code":"no_leader"`) {
		t.Fatalf("got %d %q (Retry-After %q), want 503 no_leader with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	// Default reads still answer locally and say how stale they are.
	_, meta, err := c.Client(keep).Instances(context.Background(), "web", nil)
	if err != nil || meta.KnownLeader || meta.LastContact < 0 && meta.LastContact != -1 {
		t.Fatalf("stale local read: %v %+v", err, meta)
	}
	if _, _, err := c.Client(keep).Instances(context.Background(), "web", &client.QueryOptions{Consistent: true}); err == nil {
		t.Fatal("consistent read without a quorum succeeded")
	}
}

// A second agent on a data dir in use says so instead of "timeout".
func TestASecondAgentOnADataDirInUseSaysSo(t *testing.T) {
	c := agenttest.New(t, 1)
	cfg := c.Node(0).Config
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Join = nil
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = a.Start(context.Background())
	if err == nil {
		_ = a.Shutdown(context.Background())
		t.Fatal("a second agent started on a data dir in use")
	}
	if !strings.Contains(err.Error(), "is in use by another process") || !strings.Contains(err.Error(), cfg.DataDir) {
		t.Fatalf("second agent: %v, want the data dir named as in use", err)
	}
}
