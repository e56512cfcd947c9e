package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/cluster"
)

// writeRecovery writes a recovery file into node i's data dir.
func writeRecovery(t *testing.T, c *agenttest.Cluster, i int, content string) string {
	t.Helper()
	path := filepath.Join(c.Node(i).Config.DataDir, cluster.RecoveryFile)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startFails starts node i's agent with its last configuration and returns
// the error Start must return.
func startFails(t *testing.T, c *agenttest.Cluster, i int) error {
	t.Helper()
	a, err := agent.New(c.Node(i).Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		return err
	}
	_ = a.Shutdown(context.Background())
	t.Fatalf("%s started", c.Node(i).Name)
	return nil
}

// The documented outage recovery (docs/operations.md, "Recovering from a
// lost quorum"): all three servers stop, the operator names the one that
// survives in its recovery file, and it comes back alone as the leader of a
// one-server cluster with every committed write, takes writes, stays so
// across a restart, and grows again by joining a fresh server.
func TestARecoveryFileBringsBackALoneSurvivorWithItsData(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	c.WaitForVoters(3)
	var last uint64
	for i := range 10 {
		last = agenttest.Register(t, c.Client(i%3), "web", fmt.Sprintf("web-%d", i), reg("10.0.0.1", 8000+i))
	}
	c.WaitForIndex(last)
	for i := range c.Nodes() {
		c.Stop(i)
	}

	n1 := c.Node(0)
	path := writeRecovery(t, c, 0, fmt.Sprintf(`[{"id": %q, "address": %q, "non_voter": false}]`, n1.Name, n1.Config.RaftAddr))
	c.Restart(0)
	if l := c.WaitForLeader(); l != 0 {
		t.Fatalf("node %d leads, want the survivor", l)
	}
	st := n1.Agent.Node().Status()
	if len(st.Peers) != 1 || st.Peers[0].ID != n1.Name || st.Peers[0].Suffrage != "Voter" {
		t.Fatalf("raft configuration after recovery: %+v, want %s alone as a voter", st.Peers, n1.Name)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the recovery file is still there (stat: %v)", err)
	}
	if _, err := os.Stat(path + ".applied"); err != nil {
		t.Fatalf("the applied recovery file: %v", err)
	}
	wantInstances := func(i, want int) {
		t.Helper()
		agenttest.Eventually(t, 30*time.Second, func() bool {
			insts, _, err := c.Client(i).Instances(ctx, "web", nil)
			return err == nil && len(insts) == want
		}, fmt.Sprintf("%s to hold %d instances", c.Node(i).Name, want))
	}
	wantInstances(0, 10)
	agenttest.Register(t, c.Client(0), "web", "web-after", reg("10.0.0.2", 9000))
	wantInstances(0, 11)

	// A restart does not apply the file again, and keeps the recovery.
	c.Stop(0)
	c.Restart(0)
	c.WaitForLeader()
	if st := n1.Agent.Node().Status(); len(st.Peers) != 1 {
		t.Fatalf("raft configuration after a restart: %+v", st.Peers)
	}
	wantInstances(0, 11)

	// Growing back: a fresh server joins and the leader adds it.
	n4 := c.AddNode("node4")
	if n, err := n4.Client().Join(ctx, []string{n1.Config.GossipAddr}); err != nil || n != 1 {
		t.Fatalf("join: %d %v", n, err)
	}
	c.WaitForVoters(2)
	wantInstances(3, 11)
}

// A recovery file that cannot be applied as written stops the agent from
// starting, with an error that names the file, and is left in place.
func TestAnUnusableRecoveryFileStopsTheStart(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	c.Stop(1)
	n2 := c.Node(1)
	for _, tc := range []struct{ name, content, want string }{
		{"gossip peers are not a raft configuration", `["127.0.0.1:8752"]`, "is not valid"},
		{"a truncated file is not valid", `[{"id": "node2", "addr`, "is not valid"},
		{"an empty list has no voter", `[]`, "is not valid"},
		{"a server without an address is not valid", `[{"id": "node2"}]`, "is not valid"},
		{"this node must be listed", `[{"id": "node1", "address": "127.0.0.1:1"}]`, "does not list this node"},
		{"this node must be at its own address", `[{"id": "node2", "address": "127.0.0.1:1"}]`, "but it is reached at " + n2.Config.RaftAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeRecovery(t, c, 1, tc.content)
			err := startFails(t, c, 1)
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start failed with %q, want it to name %s and say %q", err, path, tc.want)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("the recovery file was not left in place: %v", err)
			}
		})
	}
	// Removed, the node starts and rejoins as before.
	if err := os.Remove(filepath.Join(n2.Config.DataDir, cluster.RecoveryFile)); err != nil {
		t.Fatal(err)
	}
	c.Restart(1)
	c.WaitForLeader()
	c.WaitForVoters(3)
}
