package compattest

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// consulClient is a Consul API client pointed at node i of the cluster,
// configured as for a Consul agent at that address.
func consulClient(t testing.TB, c *agenttest.Cluster, i int, token string) *consulapi.Client {
	t.Helper()
	cfg := consulapi.DefaultConfig()
	cfg.Address = c.Node(i).HTTPAddr()
	cfg.Token = token
	cl, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// healthServer is an HTTP health endpoint on loopback whose answer the test
// switches between 200 and 503.
type healthServer struct {
	*httptest.Server
	healthy atomic.Bool
}

func newHealthServer(t testing.TB) *healthServer {
	hs := &healthServer{}
	hs.healthy.Store(true)
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hs.healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *healthServer) hostPort() (string, int) {
	a := hs.Listener.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

// waitFor polls cond until it holds or 15 seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	agenttest.Eventually(t, 15*time.Second, cond, what)
}

func statusOf(t testing.TB, cl *consulapi.Client, service, checkID string) string {
	t.Helper()
	entries, _, err := cl.Health().Service(service, "", false, nil)
	if err != nil {
		t.Fatalf("health service %s: %v", service, err)
	}
	for _, e := range entries {
		for _, c := range e.Checks {
			if c.CheckID == checkID {
				return c.Status
			}
		}
	}
	return ""
}

func TestConsulClientAgainstCluster(t *testing.T) {
	c := agenttest.New(t, 3)
	cl := consulClient(t, c, 0, "")
	other := consulClient(t, c, 2, "")
	hs := newHealthServer(t)
	host, port := hs.hostPort()
	ctx := context.Background()

	t.Run("ServiceRegister with each check type", func(t *testing.T) {
		reg := &consulapi.AgentServiceRegistration{
			ID: "web-1", Name: "web", Tags: []string{"v1", "prod"}, Port: port, Address: host,
			Meta: map[string]string{"zone": "a"}, Weights: &consulapi.AgentWeights{Passing: 3, Warning: 1},
			EnableTagOverride: true,
			Checks: consulapi.AgentServiceChecks{
				{HTTP: hs.URL + "/health", Interval: "1s", Timeout: "500ms", Method: "GET",
					Header: map[string][]string{"X-Probe": {"beacon"}}, TLSSkipVerify: true,
					SuccessBeforePassing: 1, FailuresBeforeCritical: 1, Notes: "http"},
				{TCP: hs.Listener.Addr().String(), Interval: "1s", Timeout: "500ms"},
				{CheckID: "web-1-ttl", TTL: "30s", Status: "passing", DeregisterCriticalServiceAfter: "10m"},
			},
		}
		if err := cl.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: "grpc-1", Name: "grpcsvc", Port: port, Address: host,
			Check: &consulapi.AgentServiceCheck{GRPC: hs.Listener.Addr().String(), Interval: "10s"},
		}); err != nil {
			t.Fatal(err)
		}
		// Read on another node: the instance is cluster-wide, on node1.
		waitFor(t, "web-1 passing on node3", func() bool {
			entries, _, err := other.Health().Service("web", "", true, nil)
			return err == nil && len(entries) == 1 && entries[0].Node.Node == "node1" && entries[0].Service.ID == "web-1"
		})
		entries, meta, err := other.Health().Service("web", "", false, nil)
		if err != nil || meta.LastIndex == 0 || !meta.KnownLeader {
			t.Fatalf("health: %v %+v", err, meta)
		}
		var ids []string
		for _, ch := range entries[0].Checks {
			ids = append(ids, ch.CheckID)
		}
		if got := strings.Join(ids, ","); got != "serfHealth,service:web-1:1,service:web-1:2,web-1-ttl" {
			t.Fatalf("check IDs %s", got)
		}
		if s := entries[0].Service; s.Weights.Passing != 3 || s.Meta["zone"] != "a" || s.Port != port {
			t.Fatalf("service %+v", s)
		}
		svcs, err := cl.Agent().Services()
		if err != nil || svcs["web-1"] == nil || svcs["grpc-1"] == nil {
			t.Fatalf("agent services %v %v", svcs, err)
		}
		if svcs, _ := other.Agent().Services(); len(svcs) != 0 {
			t.Fatalf("node3 owns %v", svcs)
		}
	})

	t.Run("refused check kinds name the field", func(t *testing.T) {
		err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "bad", Port: 1,
			Check: &consulapi.AgentServiceCheck{Args: []string{"/bin/true"}, Interval: "10s"}})
		if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "ScriptArgs") {
			t.Fatalf("script check: %v", err)
		}
		for _, chk := range []*consulapi.AgentServiceCheck{
			{DockerContainerID: "x", Shell: "/bin/sh", Interval: "10s"}, {H2PING: "127.0.0.1:1", Interval: "10s"},
		} {
			if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{Name: "bad", Port: 1, Check: chk}); err == nil || !strings.Contains(err.Error(), "400") {
				t.Fatalf("check %+v: %v", chk, err)
			}
		}
	})

	t.Run("UpdateTTL", func(t *testing.T) {
		if err := cl.Agent().UpdateTTL("web-1-ttl", "degraded", consulapi.HealthWarning); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ttl warning", func() bool { return statusOf(t, other, "web", "web-1-ttl") == "warning" })
		if err := cl.Agent().UpdateTTL("web-1-ttl", "ok", consulapi.HealthPassing); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ttl passing", func() bool { return statusOf(t, other, "web", "web-1-ttl") == "passing" })
		err := cl.Agent().UpdateTTL("nope", "", consulapi.HealthPassing)
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("unknown check: %v", err)
		}
	})

	t.Run("HTTP check follows the endpoint", func(t *testing.T) {
		hs.healthy.Store(false)
		waitFor(t, "http check critical", func() bool { return statusOf(t, other, "web", "service:web-1:1") == "critical" })
		if e, _, _ := other.Health().Service("web", "", true, nil); len(e) != 0 {
			t.Fatalf("passingOnly kept a critical instance: %+v", e)
		}
		hs.healthy.Store(true)
		waitFor(t, "http check passing", func() bool { return statusOf(t, other, "web", "service:web-1:1") == "passing" })
	})

	t.Run("Catalog Services, Service and Nodes", func(t *testing.T) {
		svcs, meta, err := other.Catalog().Services(nil)
		if err != nil || meta.LastIndex == 0 || strings.Join(svcs["web"], ",") != "prod,v1" {
			t.Fatalf("services %v %v", svcs, err)
		}
		cs, _, err := other.Catalog().Service("web", "v1", nil)
		if err != nil || len(cs) != 1 || cs[0].ServiceID != "web-1" || cs[0].Node != "node1" || cs[0].ServiceAddress != host {
			t.Fatalf("catalog service %+v %v", cs, err)
		}
		nodes, _, err := other.Catalog().Nodes(nil)
		if err != nil || len(nodes) != 3 {
			t.Fatalf("nodes %+v %v", nodes, err)
		}
		dcs, err := other.Catalog().Datacenters()
		if err != nil || len(dcs) != 1 || dcs[0] != "dc1" {
			t.Fatalf("datacenters %v %v", dcs, err)
		}
		name, err := other.Agent().NodeName()
		if err != nil || name != "node3" {
			t.Fatalf("node name %q %v", name, err)
		}
		leader, err := other.Status().Leader()
		if err != nil || leader == "" {
			t.Fatalf("leader %q %v", leader, err)
		}
		peers, err := other.Status().Peers()
		if err != nil || len(peers) != 3 {
			t.Fatalf("peers %v %v", peers, err)
		}
		members, err := other.Agent().Members(false)
		if err != nil || len(members) != 3 {
			t.Fatalf("members %v %v", members, err)
		}
	})

	t.Run("Health Service with passingOnly and tags", func(t *testing.T) {
		if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "web-2", Name: "web", Tags: []string{"v2"},
			Port: port + 1, Address: host, Check: &consulapi.AgentServiceCheck{TTL: "30s"}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "web-2 registered", func() bool {
			e, _, err := other.Health().Service("web", "", false, nil)
			return err == nil && len(e) == 2
		})
		e, _, err := other.Health().ServiceMultipleTags("web", []string{"v1", "prod"}, false, nil)
		if err != nil || len(e) != 1 || e[0].Service.ID != "web-1" {
			t.Fatalf("tags v1+prod: %+v %v", e, err)
		}
		if e, _, _ := other.Health().ServiceMultipleTags("web", []string{"v1", "v2"}, false, nil); len(e) != 0 {
			t.Fatalf("tags are not ANDed: %+v", e)
		}
		e, _, err = other.Health().Service("web", "", true, nil) // web-2's TTL check starts critical
		if err != nil || len(e) != 1 || e[0].Service.ID != "web-1" {
			t.Fatalf("passing only: %+v %v", e, err)
		}
		e, _, err = other.Health().Service("web", "", false, &consulapi.QueryOptions{Filter: `Service.ID == "web-2"`})
		if err != nil || len(e) != 1 {
			t.Fatalf("filter: %+v %v", e, err)
		}
	})

	t.Run("blocking queries return on change and time out without", func(t *testing.T) {
		_, meta, err := other.Health().Service("web", "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, meta2, err := other.Health().Service("web", "", false, &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 500 * time.Millisecond})
		if err != nil || meta2.LastIndex != meta.LastIndex || time.Since(start) < 500*time.Millisecond {
			t.Fatalf("no change: index %d -> %d after %s (%v)", meta.LastIndex, meta2.LastIndex, time.Since(start), err)
		}
		done := make(chan *consulapi.QueryMeta, 1)
		go func() {
			_, m, err := other.Health().Service("web", "", false, &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
			if err != nil {
				t.Error(err)
			}
			done <- m
		}()
		// An unrelated service changes: the query sleeps on.
		if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "db-1", Name: "db", Port: 5432, Address: host}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-done:
			t.Fatalf("woke on another service's change: %+v", m)
		case <-time.After(300 * time.Millisecond):
		}
		if err := cl.Agent().PassTTL("service:web-2", "up"); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-done:
			if m == nil || m.LastIndex <= meta.LastIndex {
				t.Fatalf("woke with %+v", m)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("blocking query did not return on change")
		}
	})

	t.Run("AllowStale and RequireConsistent", func(t *testing.T) {
		for _, q := range []*consulapi.QueryOptions{{AllowStale: true}, {RequireConsistent: true}} {
			e, meta, err := other.Health().Service("web", "", false, q)
			if err != nil || len(e) != 2 || meta.LastIndex == 0 {
				t.Fatalf("%+v: %v %+v", q, err, meta)
			}
		}
		_, _, err := other.Health().Service("web", "", false, &consulapi.QueryOptions{AllowStale: true, RequireConsistent: true})
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Fatalf("stale+consistent: %v", err)
		}
	})

	t.Run("EnableServiceMaintenance", func(t *testing.T) {
		if err := cl.Agent().EnableServiceMaintenance("web-1", "deploy"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "maintenance check", func() bool { return statusOf(t, other, "web", "_service_maintenance:web-1") == "critical" })
		if e, _, _ := other.Health().Service("web", "", true, nil); len(e) != 1 || e[0].Service.ID != "web-2" {
			t.Fatalf("passing during maintenance: %+v", e)
		}
		if err := cl.Agent().DisableServiceMaintenance("web-1"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "maintenance over", func() bool { return statusOf(t, other, "web", "_service_maintenance:web-1") == "" })
		if err := cl.Agent().EnableNodeMaintenance("kernel upgrade"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "node maintenance check", func() bool {
			checks, _, err := other.Health().Node("node1", nil)
			for _, c := range checks {
				if err == nil && c.CheckID == "_node_maintenance" && c.Status == "critical" && c.Notes == "kernel upgrade" {
					return true
				}
			}
			return false
		})
		if err := cl.Agent().DisableNodeMaintenance(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "node maintenance over", func() bool {
			e, _, err := other.Health().Service("web", "", true, nil)
			return err == nil && len(e) == 2
		})
	})

	t.Run("ServiceDeregister", func(t *testing.T) {
		for _, id := range []string{"web-1", "web-2", "db-1", "grpc-1"} {
			if err := cl.Agent().ServiceDeregisterOpts(id, (&consulapi.QueryOptions{}).WithContext(ctx)); err != nil {
				t.Fatalf("deregister %s: %v", id, err)
			}
		}
		waitFor(t, "web gone on node3", func() bool {
			e, _, err := other.Health().Service("web", "", false, nil)
			return err == nil && len(e) == 0
		})
		if err := cl.Agent().ServiceDeregister("web-1"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("second deregister: %v", err)
		}
	})
}

func TestConsulClientWithTokens(t *testing.T) {
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.ManagementToken = "root-secret-0123456789"
		cfg.AnonymousRead = false
	}), agenttest.WithClient(func(cc *client.Config) { cc.Token = "root-secret-0123456789" }))
	anon := consulClient(t, c, 1, "")
	root := consulClient(t, c, 1, "root-secret-0123456789")
	reg := &consulapi.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 8080, Address: "127.0.0.1"}
	if err := anon.Agent().ServiceRegister(reg); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("anonymous register: %v", err)
	}
	if _, _, err := anon.Catalog().Services(nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("anonymous read: %v", err)
	}
	if err := consulClient(t, c, 1, "wrong").Agent().ServiceRegister(reg); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("wrong token: %v", err)
	}
	if err := root.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	e, _, err := root.Health().Service("web", "", false, nil)
	if err != nil || len(e) != 1 {
		t.Fatalf("read with token: %+v %v", e, err)
	}
}
