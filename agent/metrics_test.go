package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// series are the samples of one scrape, keyed by name{label="value",...}
// with labels sorted; histograms appear as their _count and _sum.
type series map[string]float64

// metricFamilies reads GET /metrics of an agent or a balancer's admin
// address, as Prometheus would.
func metricFamilies(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d", addr, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", addr, err)
	}
	return fams
}

// scrape reads the samples of GET /metrics.
func scrape(t *testing.T, addr string) series {
	t.Helper()
	out := series{}
	for name, f := range metricFamilies(t, addr) {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			key := name + "{" + strings.Join(ls, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[strings.Replace(key, "{", "_count{", 1)] = float64(m.GetHistogram().GetSampleCount())
				out[strings.Replace(key, "{", "_sum{", 1)] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

// sum adds the samples of name whose labels include every want label.
func (s series) sum(name string, want ...string) float64 {
	var total float64
	for k, v := range s {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(k, w)
		}
		if ok {
			total += v
		}
	}
	return total
}

// TestMetricsSeriesMoveWithTheCluster scrapes /metrics on every node before
// and after writes through a follower, while a blocking query waits, and
// after a node stops, and checks that the series of docs/metrics.md move.
func TestMetricsSeriesMoveWithTheCluster(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	f, l := c.Follower(), c.Leader()
	before := []series{scrape(t, c.Node(0).HTTPAddr()), scrape(t, c.Node(1).HTTPAddr()), scrape(t, c.Node(2).HTTPAddr())}

	// A blocking query held by the follower shows in flight.
	_, meta, err := c.Client(f).Instances(ctx, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Client(f).Instances(ctx, "web", &client.QueryOptions{WaitIndex: meta.Index, WaitTime: 30 * time.Second})
		done <- err
	}()
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return scrape(t, c.Node(f).HTTPAddr()).sum("beacon_http_blocking_queries") == 1
	}, "one blocking query in flight on the follower")

	var last uint64
	for i := 0; i < 5; i++ {
		last = agenttest.Register(t, c.Client(f), "web", fmt.Sprintf("web-%d", i), reg("10.0.0.1", 8000+i))
	}
	// An instance with an HTTP check against a real server: its owner
	// probes it, and the check turns passing.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	checked := reg("127.0.0.1", 9999)
	// A generous timeout and three failures before critical: a probe
	// delayed by a loaded machine is not a transition.
	checked.Checks = []client.CheckDefinition{{Name: "http", HTTP: srv.URL + "/healthz", Interval: client.Duration(500 * time.Millisecond),
		Timeout: client.Duration(500 * time.Millisecond), FailuresBeforeCritical: 3}}
	last = agenttest.Register(t, c.Client(f), "api", "api-1", checked)
	agenttest.Eventually(t, 30*time.Second, func() bool {
		inst, meta, err := c.Client(f).Instance(ctx, "api", "api-1", nil)
		if err == nil && inst.Status == "passing" {
			last = max(last, meta.Index) // the transition's write
			return true
		}
		return false
	}, "the HTTP check to pass")
	agenttest.Eventually(t, 20*time.Second, func() bool {
		runs := 0.0
		for i := range c.Nodes() {
			runs += scrape(t, c.Node(i).HTTPAddr()).sum("beacon_health_check_runs_total", `type="http"`, `status="passing"`)
		}
		return runs >= 2
	}, "check runs counted on the owner")
	if err := <-done; err != nil {
		t.Fatalf("blocking query: %v", err)
	}
	// Every node has applied every write (the check's transition
	// included) before its series are compared.
	c.WaitForIndex(last)
	after := []series{scrape(t, c.Node(0).HTTPAddr()), scrape(t, c.Node(1).HTTPAddr()), scrape(t, c.Node(2).HTTPAddr())}

	moved := func(node int, name string, atLeast float64, labels ...string) {
		t.Helper()
		d := after[node].sum(name, labels...) - before[node].sum(name, labels...)
		if d < atLeast {
			t.Errorf("node %d: %s%v moved by %v, want at least %v", node, name, labels, d, atLeast)
		}
	}
	route := `route="PUT /v1/services/{service}/instances/{id}"`
	moved(f, "beacon_http_requests_total", 5, route, `code="200"`, `method="PUT"`)
	moved(f, "beacon_http_request_duration_seconds_count", 5, route)
	// On a loaded machine an election may move the leadership during the
	// test: writes through f are forwarded only while it does not lead,
	// and they are applied by whichever node leads.
	elected := termOf(after[0]) != termOf(before[0]) || after[f].sum("beacon_raft_state", `state="Leader"`) == 1
	if elected {
		t.Logf("an election during the test (term %v -> %v): forwarded writes not counted", termOf(before[0]), termOf(after[0]))
	} else {
		moved(f, "beacon_forwarded_requests_total", 5, `op="apply"`, `outcome="ok"`)
	}
	moved(f, "beacon_write_duration_seconds_count", 5)
	applied := 0.0
	for i := range c.Nodes() {
		applied += after[i].sum("beacon_raft_apply_duration_seconds_count") - before[i].sum("beacon_raft_apply_duration_seconds_count")
	}
	if applied < 5 {
		t.Errorf("Raft applies observed on the leaders: %v, want at least 5", applied)
	}
	if got := after[f].sum("beacon_http_blocking_queries"); got != 0 {
		t.Errorf("blocking queries in flight after it returned: %v", got)
	}
	runs, durations, leaders := 0.0, 0.0, 0.0
	for i := range c.Nodes() {
		runs += after[i].sum("beacon_health_check_runs_total", `type="http"`)
		durations += after[i].sum("beacon_health_check_duration_seconds_count", `type="http"`)
		moved(i, "beacon_health_transitions_total", 1, `status="passing"`)
		moved(i, "beacon_raft_commit_index", 5)
		moved(i, "beacon_raft_applied_index", 5)
		moved(i, "beacon_catalog_index", 5)
		moved(i, "beacon_fsm_applied_total", 5, `type="register"`, `result="ok"`)
		s := after[i]
		if got := s.sum("beacon_catalog_instances"); got != 6 {
			t.Errorf("node %d: %v instances, want 6", i, got)
		}
		if got := s.sum("beacon_catalog_services"); got != 2 {
			t.Errorf("node %d: %v services, want 2", i, got)
		}
		if got := s.sum("beacon_catalog_checks", `status="passing"`); got != 1 {
			t.Errorf("node %d: %v passing checks, want 1", i, got)
		}
		if got := s.sum("beacon_gossip_members", `status="alive"`); got != 3 {
			t.Errorf("node %d: %v alive members, want 3", i, got)
		}
		if got := s.sum("beacon_raft_peers", `suffrage="Voter"`); got != 3 {
			t.Errorf("node %d: %v voters, want 3", i, got)
		}
		leaders += s.sum("beacon_raft_state", `state="Leader"`)
		if s.sum("beacon_raft_term") < 1 || s.sum("go_goroutines") < 1 || s.sum("process_resident_memory_bytes") <= 0 {
			t.Errorf("node %d: term, goroutines or RSS missing", i)
		}
	}

	if leaders != 1 && !elected {
		t.Errorf("%v nodes report the leader state, want 1", leaders)
	}
	if durations != runs {
		// The owner goes on probing (every 500ms) and counts a run, then
		// observes its duration, while a scrape collects the two series
		// concurrently: a scrape may see one probe in only one of them.
		agenttest.Eventually(t, 10*time.Second, func() bool {
			runs, durations = 0, 0
			for i := range c.Nodes() {
				s := scrape(t, c.Node(i).HTTPAddr())
				runs += s.sum("beacon_health_check_runs_total", `type="http"`)
				durations += s.sum("beacon_health_check_duration_seconds_count", `type="http"`)
			}
			return durations == runs
		}, "a scrape with one check duration per check run")
	}
	if runs < 2 || durations != runs {
		t.Errorf("check runs %v, durations observed %v", runs, durations)
	}

	// A stopped node shows as failed in gossip, and alive once restarted.
	c.Stop(f)
	agenttest.Eventually(t, 30*time.Second, func() bool {
		return scrape(t, c.Node(l).HTTPAddr()).sum("beacon_gossip_members", `status="failed"`) == 1
	}, "the stopped node counted as failed")
	c.Restart(f)
	agenttest.Eventually(t, 30*time.Second, func() bool {
		s := scrape(t, c.Node(l).HTTPAddr())
		return s.sum("beacon_gossip_members", `status="alive"`) == 3 && s.sum("beacon_gossip_members", `status="failed"`) == 0
	}, "the restarted node counted as alive again")
}

// termOf returns the Raft term a node's series report.
func termOf(s series) float64 { return s.sum("beacon_raft_term") }

// TestRaftAndCatalogIndexMetricsMatchOperatorRaftServers: each node's
// beacon_raft_applied_index is Raft's applied index, the APPLIED column of
// `beacon operator raft servers` (applied_index), and beacon_catalog_index
// the catalog's, its catalog_index. They differ at rest: the leader's
// barrier after the last write reaches Raft's applied index, not the
// catalog. (beacon_raft_applied_index used to report the catalog's.)
func TestRaftAndCatalogIndexMetricsMatchOperatorRaftServers(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	f := c.Follower()
	var last uint64
	for i := 0; i < 3; i++ {
		last = agenttest.Register(t, c.Client(f), "web", fmt.Sprintf("web-%d", i), reg("10.0.0.1", 8000+i))
	}
	c.WaitForIndex(last)
	for i := range c.Nodes() {
		// This node's own view, as the agent reports it to the CLI.
		own := func() *client.ServerView {
			ss, err := c.Client(i).Servers(ctx)
			if err != nil {
				t.Fatalf("servers through node %d: %v", i, err)
			}
			for _, s := range ss.Servers {
				if s.ID == c.Node(i).Name {
					return s.View
				}
			}
			t.Fatalf("node %d is not among its own servers: %+v", i, ss.Servers)
			return nil
		}
		var v *client.ServerView
		var s series
		// Compared once the indexes held still across the scrape (writes of
		// the cluster itself, node updates, may still be landing).
		agenttest.Eventually(t, 30*time.Second, func() bool {
			v = own()
			s = scrape(t, c.Node(i).HTTPAddr())
			after := own()
			return v != nil && after != nil && v.AppliedIndex == after.AppliedIndex && v.CatalogIndex == after.CatalogIndex &&
				v.AppliedIndex == v.CommitIndex &&
				s.sum("beacon_raft_applied_index") == float64(v.AppliedIndex) &&
				s.sum("beacon_catalog_index") == float64(v.CatalogIndex)
		}, fmt.Sprintf("node %d's index metrics equal to its operator raft servers view", i))
		if v.CatalogIndex < last || v.CatalogIndex > v.AppliedIndex {
			t.Errorf("node %d: catalog index %d, applied %d, last write %d", i, v.CatalogIndex, v.AppliedIndex, last)
		}
		t.Logf("node %d: beacon_raft_applied_index %v (applied_index %d), beacon_catalog_index %v (catalog_index %d)",
			i, s.sum("beacon_raft_applied_index"), v.AppliedIndex, s.sum("beacon_catalog_index"), v.CatalogIndex)
	}
}
