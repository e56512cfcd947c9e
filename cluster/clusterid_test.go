package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestAJoinBetweenTwoClustersIsRefused: a server of one cluster asked to
// join a member of another (the same cluster secret) is refused, on both
// sides, and neither catalog nor Raft configuration changes. Before
// cluster IDs the gossip pools merged, the leaders added each other's
// servers, and the side with the lower term lost its catalog.
func TestAJoinBetweenTwoClustersIsRefused(t *testing.T) {
	a := newTestNodes(t, 1, nil)
	b := newTestNodes(t, 1, func(_ int, c *Config) { c.NodeName = "other1" })
	na, nb := a.nodes[0], b.nodes[0]
	if _, err := na.Apply(context.Background(), fsmtest.Register(t, "a-1", "only-in-a")); err != nil {
		t.Fatal(err)
	}
	if _, err := nb.Apply(context.Background(), fsmtest.Register(t, "b-1", "only-in-b")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return na.ClusterID() != "" && nb.ClusterID() != "" }, "both clusters drawing their IDs")
	if na.ClusterID() == nb.ClusterID() {
		t.Fatalf("two clusters drew the same ID %s", na.ClusterID())
	}

	_, err := na.Join([]string{nb.GossipAddr()})
	if !errors.Is(err, ErrForeignCluster) || !errors.Is(err, fsm.ErrConflict) {
		t.Fatalf("join of another cluster's member: %v; want ErrForeignCluster (a conflict)", err)
	}
	_, err = nb.Join([]string{na.GossipAddr()})
	if !errors.Is(err, ErrForeignCluster) {
		t.Fatalf("the join the other way: %v; want ErrForeignCluster", err)
	}
	// Nothing merged: each side still sees itself alone, in gossip and in
	// Raft, with its own catalog (checked after a few gossip rounds).
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range []*Node{na, nb} {
			if ms := n.Members(); len(ms) != 1 {
				t.Fatalf("%s sees %d members after a refused join: %+v", n.Name(), len(ms), ms)
			}
			if s := n.raftServers(); len(s) != 1 {
				t.Fatalf("%s's raft configuration holds %v after a refused join", n.Name(), s)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range []struct {
		n       *Node
		f       *fsm.FSM
		has, no string
	}{{na, a.fsms[0], "only-in-a", "only-in-b"}, {nb, b.fsms[0], "only-in-b", "only-in-a"}} {
		if _, insts := c.f.Store().ServiceInstances(nil, c.has); len(insts) != 1 {
			t.Fatalf("%s lost its own service %s", c.n.Name(), c.has)
		}
		if _, insts := c.f.Store().ServiceInstances(nil, c.no); len(insts) != 0 {
			t.Fatalf("%s holds the other cluster's service %s", c.n.Name(), c.no)
		}
	}
}

// TestEveryServerTakesItsLeadersClusterID: the servers of one cluster end
// with one ID, kept in their data dirs, so that a restarted server is
// known as a member of its cluster from its first gossip.
func TestEveryServerTakesItsLeadersClusterID(t *testing.T) {
	tn := newTestNodes(t, 3, nil)
	var id string
	eventually(t, 15*time.Second, func() bool {
		id = tn.nodes[0].ClusterID()
		for _, n := range tn.nodes {
			if n.ClusterID() == "" || n.ClusterID() != id {
				return false
			}
		}
		return true
	}, "every server holding one cluster ID")
	for _, n := range tn.nodes {
		got, err := loadClusterID(n.cfg.DataDir)
		if err != nil || got != id {
			t.Fatalf("%s's data dir holds %q (%v), want %s", n.Name(), got, err, id)
		}
		// Every member's gossip names it too.
		for _, m := range n.Members() {
			if m.ClusterID != id {
				eventually(t, 10*time.Second, func() bool {
					mm, _ := n.gossip.member(m.Name)
					return mm.ClusterID == id
				}, "gossip carrying "+m.Name+"'s cluster ID to "+n.Name())
			}
		}
	}
}

// TestAClusterIDFileThatIsNotOneStopsTheServer: a server does not start
// under an identity it cannot read.
func TestAClusterIDFileThatIsNotOneStopsTheServer(t *testing.T) {
	dir := t.TempDir()
	if id, err := loadClusterID(dir); id != "" || err != nil {
		t.Fatalf("no file: %q, %v", id, err)
	}
	if err := os.WriteFile(filepath.Join(dir, clusterIDFile), []byte("\x1b[31mnot-an-id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadClusterID(dir); err == nil {
		t.Fatal("a file of garbage read as a cluster ID")
	}
	id := newClusterID()
	if err := storeClusterID(dir, id); err != nil {
		t.Fatal(err)
	}
	if got, err := loadClusterID(dir); got != id || err != nil {
		t.Fatalf("stored %s, read %q (%v)", id, got, err)
	}
}
