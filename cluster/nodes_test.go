package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// testNodes is a small in-package harness: n real Nodes on loopback (Raft
// over TCP through the mux, raft-boltdb in t.TempDir(), real gossip), for
// tests that need the package's test hooks (pausing a node's cluster
// traffic, a failing log store, pipelined replication). Tests of the whole
// agent use agent/agenttest instead.
type testNodes struct {
	t       *testing.T
	nodes   []*Node
	fsms    []*fsm.FSM
	resumes []func()
}

func newTestNodes(t *testing.T, n int, mutate func(i int, c *Config)) *testNodes {
	t.Helper()
	return newTestNodesFSM(t, n, mutate, nil)
}

// newTestNodesFSM is newTestNodes with prepare, if not nil, called on each
// node's FSM before its node starts (to set an observer).
func newTestNodesFSM(t *testing.T, n int, mutate func(i int, c *Config), prepare func(i int, f *fsm.FSM)) *testNodes {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	tn := &testNodes{t: t}
	// The data dirs are made before the shutdown is registered: cleanups
	// run last-registered first, so the nodes stop before their files are
	// removed (a running node writes files, such as its cluster ID, and a
	// removal racing with that fails the test).
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	t.Cleanup(tn.shutdown)
	var seed string
	for i := range n {
		cfg := DefaultConfig()
		cfg.NodeName = fmt.Sprintf("node%d", i+1)
		cfg.DataDir = dirs[i]
		cfg.ClusterAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.ClusterSecret = []byte("nodes-test-secret-0123456789abcdef")
		cfg.BootstrapExpect = n
		cfg.RejoinInterval = 2 * time.Second
		if seed != "" {
			cfg.Join = []string{seed}
		}
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: cfg.NodeName, Level: hclog.Info, Output: testWriter{t}})
		if mutate != nil {
			mutate(i, &cfg)
		}
		f := fsm.New(cfg.Logger.Named("fsm"))
		if prepare != nil {
			prepare(i, f)
		}
		node, err := New(cfg, f)
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Start(context.Background()); err != nil {
			t.Fatalf("start %s: %v", cfg.NodeName, err)
		}
		tn.nodes = append(tn.nodes, node)
		tn.fsms = append(tn.fsms, f)
		if i == 0 {
			seed = node.GossipAddr()
		}
	}
	tn.waitForLeader(30 * time.Second)
	return tn
}

// testWriter sends log lines to t.Log until the test ends.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a line logged after the test ended
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// waitForLeader waits until one running, unpaused node leads and every such
// node knows it; it returns the leader's position.
func (tn *testNodes) waitForLeader(timeout time.Duration) int {
	tn.t.Helper()
	leader := -1
	eventually(tn.t, timeout, func() bool {
		leader = -1
		for i, n := range tn.nodes {
			if n.mux.paused.Load() != nil {
				continue
			}
			if n.IsLeader() {
				leader = i
			}
		}
		if leader < 0 {
			return false
		}
		want := tn.nodes[leader].ClusterAddr()
		for _, n := range tn.nodes {
			if n.mux.paused.Load() != nil {
				continue
			}
			if addr, _ := n.raft.LeaderWithID(); string(addr) != want {
				return false
			}
		}
		return true
	}, "a leader known to every running node")
	return leader
}

// follower returns a node that is not i.
func (tn *testNodes) other(i int) int { return (i + 1) % len(tn.nodes) }

// waitRaftServers waits until every node's Raft configuration holds n
// servers.
func (tn *testNodes) waitRaftServers(t testing.TB, n int) {
	t.Helper()
	eventually(t, 30*time.Second, func() bool {
		for _, nd := range tn.nodes {
			if len(nd.raftServers()) != n {
				return false
			}
		}
		return true
	}, fmt.Sprintf("%d servers in raft, as every server sees it", n))
}

// pause freezes node i's cluster traffic until resume (or the test's end).
func (tn *testNodes) pause(i int) (resume func()) {
	r := tn.nodes[i].mux.pauseForTest()
	tn.resumes = append(tn.resumes, r)
	return r
}

func (tn *testNodes) shutdown() {
	for _, r := range tn.resumes {
		r()
	}
	for i, n := range tn.nodes {
		start := time.Now()
		if err := n.Shutdown(context.Background()); err != nil {
			tn.t.Errorf("shutdown %s: %v", n.Name(), err)
		}
		if d := time.Since(start); d > 2*defaultShutdownTimeout {
			tn.t.Errorf("shutdown of node %d took %s", i, d)
		}
	}
}

// eventually polls cond until it holds or timeout passes (wait.Until).
// waitCaughtUp waits until every node has learned that index is committed
// and applied it. A follower learns the commit index from the leader's next
// AppendEntries, after the leader: a check of a node's committed log waits
// for that node, not for the leader.
func (tn *testNodes) waitCaughtUp(t testing.TB, timeout time.Duration, index uint64) {
	t.Helper()
	eventually(t, timeout, func() bool {
		for _, n := range tn.nodes {
			if n.raft.CommitIndex() < index || n.raft.AppliedIndex() < index {
				return false
			}
		}
		return true
	}, fmt.Sprintf("every node committing and applying index %d", index))
}

func eventually(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	wait.Until(t, timeout, what, cond)
}

// countEntries counts the entries of node i's log (up to its commit index)
// whose data is cmd, and the members of group entries that are cmd.
func (tn *testNodes) countEntries(i int, cmd []byte) int {
	n := tn.nodes[i]
	first, _ := n.logs.FirstIndex()
	count := 0
	var l raft.Log
	for idx := max(first, 1); idx <= n.raft.CommitIndex(); idx++ {
		if err := n.logs.GetLog(idx, &l); err != nil {
			continue
		}
		if l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		if string(l.Data) == string(cmd) {
			count++
		}
		if fsm.MessageType(l.Data[0]) == fsm.GroupType {
			_ = fsm.SplitGroup(l.Data, func(_ int, _, m []byte) bool {
				if string(m) == string(cmd) {
					count++
				}
				return true
			})
		}
	}
	return count
}
