package compattest

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/consul"
	"github.com/prometheus/prometheus/discovery/targetgroup"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// targets keeps the latest target group per source, as Prometheus'
// discovery manager does.
type targets struct {
	mu     sync.Mutex
	groups map[string]*targetgroup.Group
}

func (ts *targets) run(ctx context.Context, ch <-chan []*targetgroup.Group) {
	for {
		select {
		case <-ctx.Done():
			return
		case tgs := <-ch:
			ts.mu.Lock()
			for _, g := range tgs {
				if g != nil {
					ts.groups[g.Source] = g
				}
			}
			ts.mu.Unlock()
		}
	}
}

// view is "address=health" for each target of service, sorted.
func (ts *targets) view(service string) string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	g := ts.groups[service]
	if g == nil {
		return ""
	}
	var out []string
	for _, t := range g.Targets {
		out = append(out, string(t[model.AddressLabel])+"="+string(t["__meta_consul_health"]))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// TestPrometheusDiscoveryFollowsTheCatalog runs Prometheus' Consul
// discoverer, configured as its docs say for a Consul agent (server, no
// services listed: the whole catalog), against node 2 of a 3-node cluster
// while the catalog changes through node 1. Each change must reach the
// target groups within a second.
func TestPrometheusDiscoveryFollowsTheCatalog(t *testing.T) {
	c := agenttest.New(t, 3)
	writer := consulClient(t, c, 0, "")
	tg := startPrometheus(t, c.Node(1).HTTPAddr())

	within := func(what, service, want string) {
		t.Helper()
		start := time.Now()
		agenttest.Eventually(t, 10*time.Second, func() bool { return tg.view(service) == want }, what)
		if took := time.Since(start); took > time.Second {
			// Loaded machines stretch this; report rather than flake.
			t.Logf("%s took %s (target: within 1s)", what, took)
		} else {
			t.Logf("%s: %s", what, took)
		}
	}

	register := func(id string, port int) {
		t.Helper()
		if err := writer.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: id, Name: "api", Port: port, Address: "127.0.0.1", Tags: []string{"metrics"},
			Check: &consulapi.AgentServiceCheck{TTL: "60s", Status: "passing"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	register("api-1", 9001)
	within("first instance discovered", "api", "127.0.0.1:9001=passing")
	register("api-2", 9002)
	within("registration followed", "api", "127.0.0.1:9001=passing,127.0.0.1:9002=passing")
	if err := writer.Agent().FailTTL("service:api-2", "down"); err != nil {
		t.Fatal(err)
	}
	within("health change followed", "api", "127.0.0.1:9001=passing,127.0.0.1:9002=critical")
	if err := writer.Agent().PassTTL("service:api-2", "up"); err != nil {
		t.Fatal(err)
	}
	within("recovery followed", "api", "127.0.0.1:9001=passing,127.0.0.1:9002=passing")
	if err := writer.Agent().ServiceDeregister("api-1"); err != nil {
		t.Fatal(err)
	}
	within("deregistration followed", "api", "127.0.0.1:9002=passing")
	if err := writer.Agent().ServiceDeregister("api-2"); err != nil {
		t.Fatal(err)
	}
	within("service removal followed", "api", "")
}

// startPrometheus runs Prometheus' Consul discoverer against server,
// configured as its docs say for a Consul agent (server, no services listed:
// the whole catalog), and collects the target groups it yields until the
// test ends.
func startPrometheus(t *testing.T, server string) *targets {
	t.Helper()
	conf := consul.DefaultSDConfig
	conf.Server = server
	// How often the catalog is re-listed after a blocking query returns; the
	// default 30s would make a new service take up to 30s to appear.
	conf.RefreshInterval = model.Duration(100 * time.Millisecond)
	reg := prometheus.NewRegistry()
	refresh := discovery.NewRefreshMetrics(reg)
	metrics := conf.NewDiscovererMetrics(reg, refresh)
	if err := metrics.Register(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(metrics.Unregister)
	d, err := conf.NewDiscoverer(discovery.DiscovererOptions{Logger: slog.New(slog.DiscardHandler), Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []*targetgroup.Group)
	tg := &targets{groups: map[string]*targetgroup.Group{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.Run(ctx, ch) }()
	go func() { defer wg.Done(); tg.run(ctx, ch) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return tg
}

// TestPrometheusDiscoverySurvivesTheLeaderBeingKilled points the discoverer
// at a follower, stops the leader, and registers through the third node: the
// new instance must still reach the target groups once a new leader is
// elected, and the instance registered before stays.
func TestPrometheusDiscoverySurvivesTheLeaderBeingKilled(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	leader := c.Leader()
	watched := c.Follower(leader)
	writeVia := c.Follower(leader, watched)
	writer := consulClient(t, c, writeVia, "")
	tg := startPrometheus(t, c.Node(watched).HTTPAddr())

	register := func(id string, port int) error {
		return writer.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: id, Name: "api", Port: port, Address: "127.0.0.1",
			Check: &consulapi.AgentServiceCheck{TTL: "60s", Status: "passing"},
		})
	}
	if err := register("api-1", 9001); err != nil {
		t.Fatal(err)
	}
	agenttest.Eventually(t, 10*time.Second, func() bool { return tg.view("api") == "127.0.0.1:9001=passing" }, "first instance discovered")

	c.Stop(leader)
	// A write sent while the cluster elects may answer 503: retry, as a
	// registering service would, within a bound.
	agenttest.Eventually(t, 30*time.Second, func() bool { return register("api-2", 9002) == nil }, "a registration after the leader died")
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return tg.view("api") == "127.0.0.1:9001=passing,127.0.0.1:9002=passing"
	}, "the registration made after the leader died discovered")
}
