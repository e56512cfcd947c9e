package agent_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/lb/registry"
	"github.com/hashicorp/go-hclog"
)

// TestLoadBalancerFollowsASecureRegistryAndCountsAttempts runs `beacon lb`
// against a cluster with TLS everywhere and tokens (a read token, client
// certificate and CA, as the CLI flags give them), sends traffic through it
// to one live and one dead instance, and reads its admin /metrics: attempts
// by answer, upstream latency and the dead instance's ejection.
func TestLoadBalancerFollowsASecureRegistryAndCountsAttempts(t *testing.T) {
	dir, _ := pki(t)
	c := secureCluster(t, 3, dir, newGossipKey(t), nil)
	c.WaitForVoters(3)
	read := createToken(t, c.Client(0), client.TokenRequest{Policy: "read", Description: "lb"})

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") }))
	defer backend.Close()
	host, port, _ := net.SplitHostPort(backend.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	agenttest.Register(t, c.Client(0), "web", "web-live", &client.Registration{Address: host, Port: p})
	dead := freeTCPPort(t)
	agenttest.Register(t, c.Client(0), "web", "web-dead", &client.Registration{Address: "127.0.0.1", Port: dead})

	var addrs []string
	for i := range c.Nodes() {
		addrs = append(addrs, c.Node(i).HTTPAddr()) // no scheme: https because of RegistryTLS
	}
	l := startLB(t, "lb", addrs, func(cfg *registry.Config) {
		cfg.Token = read.Secret
		cfg.RegistryTLS = clientTLS(t, dir)
		cfg.RegistryWait = 5 * time.Second
		cfg.LB.PathRouting = true
		cfg.LB.EjectAfter = 2
	})
	agenttest.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + l.Addr() + "/web/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && string(b) == "hello"
	}, "the balancer to route /web/ to the live instance")
	for i := 0; i < 20; i++ {
		resp, err := http.Get("http://" + l.Addr() + "/web/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d through the balancer: %d", i, resp.StatusCode)
		}
	}
	s := scrape(t, l.AdminAddr())
	if got := s.sum("beacon_lb_attempts_total", `service="web"`, `instance="web-live"`, `code="200"`); got < 20 {
		t.Errorf("attempts answered 200 by web-live: %v, want at least 20", got)
	}
	if got := s.sum("beacon_lb_attempts_total", `instance="web-dead"`, `code="error"`); got < 2 {
		t.Errorf("failed attempts on web-dead: %v, want at least 2", got)
	}
	if got := s.sum("beacon_lb_ejections_total", `instance="web-dead"`); got < 1 {
		t.Errorf("ejections of web-dead: %v", got)
	}
	if got := s.sum("beacon_lb_upstream_duration_seconds_count", `instance="web-live"`); got < 20 {
		t.Errorf("latency observations of web-live: %v", got)
	}
	if got := s.sum("beacon_lb_instance_requests_total", `instance="web-live"`); got < 20 {
		t.Errorf("the balancer's own request counter: %v", got)
	}

	// Series of an instance that is gone are dropped.
	if _, err := c.Client(0).Deregister(context.Background(), "web", "web-dead"); err != nil {
		t.Fatal(err)
	}
	agenttest.Eventually(t, 30*time.Second, func() bool {
		return scrape(t, l.AdminAddr()).sum("beacon_lb_attempts_total", `instance="web-dead"`) == 0
	}, "the deregistered instance's series to go")
}

// freeTCPPort returns a loopback port nothing listens on.
func freeTCPPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startLB runs a `beacon lb` (as a library) against the given registry nodes.
func startLB(t *testing.T, name string, addrs []string, mutate func(*registry.Config)) *registry.Balancer {
	t.Helper()
	cfg := registry.DefaultConfig()
	cfg.Registry = addrs
	cfg.Listen, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.LB.AllowLoopback = true // the test instances listen on 127.0.0.1
	mutate(&cfg)
	l, err := registry.New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = l.Shutdown(ctx)
	})
	return l
}
