package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/lb/registry"
)

// metricsGolden lists every series family an agent's GET /metrics and a
// balancer's admin GET /metrics serve (name, type, labels, help), as captured
// from the running code. BEACON_UPDATE_GOLDEN=1 rewrites it.
var metricsGolden = filepath.Join("testdata", "metrics.golden")

// families reads the name, type and help of every family a /metrics serves
// that has at least one sample, with its label names, into into
// ("name type {labels} help" by name).
func families(t *testing.T, addr string, into map[string]string) {
	t.Helper()
	for name, f := range metricFamilies(t, addr) {
		if len(f.GetMetric()) == 0 {
			continue
		}
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		var ls []string
		for l := range labels {
			ls = append(ls, l)
		}
		sort.Strings(ls)
		into[name] = fmt.Sprintf("%s %s {%s} %s", name, strings.ToLower(f.GetType().String()), strings.Join(ls, ","), f.GetHelp())
	}
}

// TestMetricsNamesAndHelpUnchanged scrapes every agent of a cluster (with
// writes through a follower, a probed HTTP check and a blocking query) and
// the balancers (an embedded one and `beacon lb`, with traffic to a live and
// a dead instance, so attempts, latencies and ejections show), and compares
// the name, type, label names and help of every family with
// testdata/metrics.golden: the
// series are where dashboards and alerts look, and no refactoring may rename
// or re-describe one.
func TestMetricsNamesAndHelpUnchanged(t *testing.T) {
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.LBAddr, cfg.LBAdminAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.LBAllowLoopback = true
	}))
	c.WaitForVoters(3)
	ctx := context.Background()
	f := c.Follower()

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") }))
	defer backend.Close()
	host, port, _ := net.SplitHostPort(backend.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	live := &client.Registration{Address: host, Port: p, Checks: []client.CheckDefinition{{Name: "http", HTTP: backend.URL + "/healthz",
		Interval: client.Duration(time.Second), Timeout: client.Duration(time.Second)}}}
	registerRetry(t, c.Client(f), "web", "web-live", live)
	idx := registerRetry(t, c.Client(f), "web", "web-dead", &client.Registration{Address: "127.0.0.1", Port: freeTCPPort(t)})
	agenttest.Eventually(t, 30*time.Second, func() bool {
		inst, _, err := c.Client(f).Instance(ctx, "web", "web-live", nil)
		return err == nil && inst.Status == "passing"
	}, "the HTTP check to pass")
	c.WaitForIndex(idx)

	// A blocking query that returns at once (its index is old).
	if _, _, err := c.Client(f).Instances(ctx, "web", &client.QueryOptions{WaitIndex: 1, WaitTime: time.Second}); err != nil {
		t.Fatal(err)
	}

	var addrs []string
	for i := range c.Nodes() {
		addrs = append(addrs, c.Node(i).HTTPAddr())
	}
	standalone := startLB(t, "lb", addrs, func(cfg *registry.Config) {
		cfg.LB.PathRouting = true
		cfg.LB.EjectAfter = 2
	})
	embedded := c.Node(0).Agent
	// Traffic through both balancers until each has ejected the dead
	// instance and counted answers of the live one.
	for _, b := range []struct{ proxy, admin string }{{standalone.Addr(), standalone.AdminAddr()}, {embedded.LBAddr(), embedded.LBAdminAddr()}} {
		agenttest.Eventually(t, 60*time.Second, func() bool {
			for i := 0; i < 10; i++ {
				resp, err := http.Get("http://" + b.proxy + "/web/")
				if err != nil {
					return false
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			s := scrape(t, b.admin)
			return s.sum("beacon_lb_ejections_total", `instance="web-dead"`) >= 1 &&
				s.sum("beacon_lb_attempts_total", `instance="web-live"`, `code="200"`) >= 1
		}, "the balancer at "+b.proxy+" to eject the dead instance and reach the live one")
	}

	got := map[string]string{}
	for i := range c.Nodes() {
		families(t, c.Node(i).HTTPAddr(), got)
		families(t, c.Node(i).Agent.LBAdminAddr(), got)
	}
	families(t, standalone.AdminAddr(), got)
	var lines []string
	for _, l := range got {
		lines = append(lines, l)
	}
	sort.Strings(lines)
	// go_* and process_* are client_golang's; their set varies with its
	// version and the platform.
	var ours []string
	for _, l := range lines {
		if strings.HasPrefix(l, "beacon_") {
			ours = append(ours, l)
		}
	}
	if os.Getenv("BEACON_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(metricsGolden, []byte(strings.Join(ours, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(metricsGolden)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		name, _, _ := strings.Cut(l, " ")
		want[name] = l
	}
	for _, l := range ours {
		name, _, _ := strings.Cut(l, " ")
		if w, ok := want[name]; !ok {
			t.Errorf("new family: %s", l)
		} else if w != l {
			t.Errorf("family changed:\n  was %s\n  now %s", w, l)
		}
		delete(want, name)
	}
	for _, l := range want {
		t.Errorf("family gone: %s", l)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "go_goroutines gauge") || !strings.Contains(strings.Join(lines, "\n"), "process_start_time_seconds gauge") {
		t.Errorf("the Go and process collectors are missing")
	}
}
