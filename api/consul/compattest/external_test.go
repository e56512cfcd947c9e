package compattest

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// findNode returns the node called name in nodes, or nil.
func findNode(nodes []*consulapi.Node, name string) *consulapi.Node {
	for _, n := range nodes {
		if n.Node == name {
			return n
		}
	}
	return nil
}

// TestConsulClientExternalNodes registers an external node (the pattern of
// consul-esm and of a database or SaaS endpoint registered by hand) through
// Catalog().Register on the leader, and reads it through a follower: it is
// a node of the catalog with its address, tagged addresses and meta, whose
// health is the checks registered for it (no serfHealth), and it goes with
// Catalog().Deregister by node, by service or by check. Its instances show
// in Beacon's own discovery, on that node. A registration under a Beacon
// agent's name may not change the agent's record.
func TestConsulClientExternalNodes(t *testing.T) {
	c := agenttest.New(t, 3)
	leader := c.Leader()
	follower := c.Follower()
	w := consulClient(t, c, leader, "")
	r := consulClient(t, c, follower, "")
	// The only check probes a listener on loopback (the cluster's agents
	// dial it); the node's own address is only stored.
	hs := newHealthServer(t)
	host, port := hs.hostPort()
	tagged := map[string]string{"lan": "127.0.0.5", "wan": "198.51.100.5"}
	meta := map[string]string{"external-node": "true", "external-probe": "false"}

	reg := &consulapi.CatalogRegistration{
		Node: "ext-db", Address: "127.0.0.5", TaggedAddresses: tagged, NodeMeta: meta,
		Service: &consulapi.AgentService{ID: "db-1", Service: "db", Port: 5432, Tags: []string{"primary"}},
	}
	if _, err := w.Catalog().Register(reg, nil); err != nil {
		t.Fatal(err)
	}
	// A second service on the node, with a TCP check (Consul's catalog
	// check shape: a Definition).
	if _, err := w.Catalog().Register(&consulapi.CatalogRegistration{
		Node: "ext-db", Address: "127.0.0.5", TaggedAddresses: tagged, NodeMeta: meta,
		Service: &consulapi.AgentService{ID: "probe-1", Service: "probe", Port: port, Address: host},
		Check: &consulapi.AgentCheck{
			Node: "ext-db", CheckID: "probe-tcp", Name: "probe tcp", ServiceID: "probe-1", Status: "critical",
			Definition: consulapi.HealthCheckDefinition{TCP: hs.Listener.Addr().String(), IntervalDuration: 200e6, TimeoutDuration: 100e6},
		},
	}, nil); err != nil {
		t.Fatal(err)
	}

	t.Run("Catalog().Nodes lists it on a follower, as registered", func(t *testing.T) {
		waitFor(t, "ext-db in the follower's node list", func() bool {
			nodes, _, err := r.Catalog().Nodes(nil)
			return err == nil && findNode(nodes, "ext-db") != nil
		})
		nodes, meta2, err := r.Catalog().Nodes(nil)
		if err != nil || meta2.LastIndex == 0 {
			t.Fatalf("nodes: %v %+v", err, meta2)
		}
		n := findNode(nodes, "ext-db")
		if n.Address != "127.0.0.5" || !maps.Equal(n.TaggedAddresses, tagged) || !maps.Equal(n.Meta, meta) || n.Datacenter != "dc1" || n.ID == "" {
			t.Fatalf("ext-db %+v", n)
		}
		if len(nodes) != 4 {
			t.Fatalf("want the three agents and ext-db, got %d nodes", len(nodes))
		}
		// ?node-meta selects it, and only it.
		sel, _, err := r.Catalog().Nodes(&consulapi.QueryOptions{NodeMeta: map[string]string{"external-node": "true"}})
		if err != nil || len(sel) != 1 || sel[0].Node != "ext-db" {
			t.Fatalf("by node meta: %+v %v", sel, err)
		}
	})

	t.Run("Catalog().Node and NodeServiceList show its services", func(t *testing.T) {
		// The follower may list the node before it has applied the
		// second registration.
		waitFor(t, "both of ext-db's services on the follower", func() bool {
			cn, _, err := r.Catalog().Node("ext-db", nil)
			return err == nil && cn != nil && len(cn.Services) == 2
		})
		cn, _, err := r.Catalog().Node("ext-db", nil)
		if err != nil || cn == nil || cn.Node == nil {
			t.Fatalf("catalog node: %+v %v", cn, err)
		}
		if cn.Node.Address != "127.0.0.5" || !maps.Equal(cn.Node.Meta, meta) || len(cn.Services) != 2 ||
			cn.Services["db-1"] == nil || cn.Services["db-1"].Address != "127.0.0.5" || cn.Services["probe-1"].Port != port {
			t.Fatalf("catalog node %+v, services %+v", cn.Node, cn.Services)
		}
		list, _, err := r.Catalog().NodeServiceList("ext-db", nil)
		if err != nil || list == nil || len(list.Services) != 2 {
			t.Fatalf("node-services: %+v %v", list, err)
		}
	})

	t.Run("Health().Node is the registered check alone, probed by the cluster", func(t *testing.T) {
		waitFor(t, "probe-tcp passing on the follower", func() bool {
			checks, _, err := r.Health().Node("ext-db", nil)
			return err == nil && len(checks) == 1 && checks[0].CheckID == "probe-tcp" && checks[0].Status == "passing"
		})
		checks, _, _ := r.Health().Node("ext-db", nil)
		if checks[0].Node != "ext-db" || checks[0].ServiceID != "probe-1" {
			t.Fatalf("check %+v", checks[0])
		}
		entries, _, err := r.Health().Service("db", "", true, nil)
		if err != nil || len(entries) != 1 || entries[0].Node.Node != "ext-db" || entries[0].Node.Meta["external-node"] != "true" {
			t.Fatalf("health service db: %+v %v", entries, err)
		}
		for _, e := range entries {
			for _, ch := range e.Checks {
				if ch.CheckID == "serfHealth" {
					t.Fatalf("an external node shows serfHealth: %+v", ch)
				}
			}
		}
	})

	t.Run("Beacon's own discovery lists its instances on that node", func(t *testing.T) {
		insts, _, err := c.Client(follower).Instances(context.Background(), "db", nil)
		if err != nil || len(insts) != 1 || insts[0].ID != "db-1" || insts[0].Node != "ext-db" || insts[0].Address != "127.0.0.5" {
			t.Fatalf("native instances of db: %+v %v", insts, err)
		}
	})

	t.Run("a Beacon agent's record is not changed or shadowed", func(t *testing.T) {
		agent := c.Node(follower).Config.Node
		_, err := w.Catalog().Register(&consulapi.CatalogRegistration{
			Node: agent, Address: "10.9.9.9", Service: &consulapi.AgentService{Service: "cache", Port: 6379},
		}, nil)
		if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "member_node") {
			t.Fatalf("register over agent %s: %v", agent, err)
		}
		if _, err := w.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: agent}, nil); err == nil || !strings.Contains(err.Error(), "409") {
			t.Fatalf("deregister agent %s: %v", agent, err)
		}
		nodes, _, err := r.Catalog().Nodes(nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := findNode(nodes, agent); n == nil || n.Address != "127.0.0.1" || n.Meta["beacon-role"] != "server" {
			t.Fatalf("agent's node %+v", n)
		}
	})

	t.Run("Deregister by CheckID, by ServiceID, then the node", func(t *testing.T) {
		if _, err := w.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: "ext-db", CheckID: "probe-tcp"}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "no checks on ext-db on the follower", func() bool {
			checks, _, err := r.Health().Node("ext-db", nil)
			return err == nil && len(checks) == 0
		})
		if _, err := w.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: "ext-db", ServiceID: "probe-1"}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "probe-1 gone from ext-db on the follower", func() bool {
			cn, _, err := r.Catalog().Node("ext-db", nil)
			return err == nil && cn != nil && len(cn.Services) == 1 && cn.Services["db-1"] != nil
		})
		if _, err := w.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: "ext-db"}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ext-db gone on the follower", func() bool {
			cn, _, err := r.Catalog().Node("ext-db", nil)
			return err == nil && cn == nil
		})
		nodes, _, err := r.Catalog().Nodes(nil)
		if err != nil || findNode(nodes, "ext-db") != nil || len(nodes) != 3 {
			t.Fatalf("nodes after deregistration: %v", err)
		}
		entries, _, err := r.Health().Service("db", "", false, nil)
		if err != nil || len(entries) != 0 {
			t.Fatalf("db after its node's deregistration: %+v %v", entries, err)
		}
		services, _, err := r.Catalog().Services(nil)
		if err != nil || slices.Contains(slices.Collect(maps.Keys(services)), "db") {
			t.Fatalf("services: %+v %v", services, err)
		}
	})
}
