package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// An external node (registered through the Consul catalog API) is no
// gossip member: the leader's sweep that marks failed the nodes gossip has
// not seen must leave it alive, with its meta, and its instances healthy.
// A node record of a member gossip does not know ("ghost") is the control:
// once the sweep has marked it failed, the sweep has run past its grace.
func TestLeaderLeavesExternalNodesAlone(t *testing.T) {
	tn := newTestNodes(t, 1, func(_ int, c *Config) { c.ReconcileInterval = 50 * time.Millisecond })
	l := tn.waitForLeader(30 * time.Second)
	ctx := context.Background()
	apply := func(typ fsm.MessageType, req any) {
		t.Helper()
		cmd, err := fsm.Encode(typ, req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tn.nodes[l].Apply(ctx, cmd); err != nil {
			t.Fatalf("apply %s: %v", typ, err)
		}
	}
	now := time.Now().UnixNano()
	apply(fsm.CatalogRegisterType, &fsm.CatalogRegisterRequest{
		Node: "ext-db", Address: "127.0.0.5", Meta: map[string]string{"external-node": "true"}, Time: now,
		Service: &fsm.RegisterRequest{ID: "db-1", Service: "db", Address: "127.0.0.5", Port: 5432, Weight: 1, Node: "ext-db", Time: now},
	})
	apply(fsm.NodeUpdateType, &fsm.NodeUpdateRequest{
		Upserts: []fsm.NodeState{{Name: "ghost", Address: "127.0.0.6:8750", Role: fsm.RoleServer, Status: fsm.NodeAlive}}, Time: now,
	})
	store := tn.fsms[l].Store()
	eventually(t, 30*time.Second, func() bool {
		n := store.Node("ghost")
		return n != nil && n.Status == fsm.NodeFailed
	}, "the leader to mark the ghost member failed")
	n := store.Node("ext-db")
	if n == nil || !n.External() || n.Status != fsm.NodeAlive || n.Meta["external-node"] != "true" {
		t.Fatalf("external node after the sweep: %+v", n)
	}
	inst, _ := store.CurrentInstance("db", "db-1")
	if inst == nil || inst.NodeFailed || inst.Status != fsm.Passing {
		t.Fatalf("instance on the external node after the sweep: %+v", inst)
	}
}
