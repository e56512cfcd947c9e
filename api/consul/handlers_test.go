package consul_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/consul"
	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// addNode records this node (and others) in the catalog, as the leader does
// from gossip.
func (ts *testServer) addNode(name string, status fsm.NodeStatus) {
	ts.t.Helper()
	ts.applyCmd(fsm.NodeUpdateType, &fsm.NodeUpdateRequest{
		Upserts: []fsm.NodeState{{Name: name, Address: "127.0.0.9:8750", Role: "voter", Status: status}}, Time: 1})
}

type entry struct {
	Node    consul.Node
	Service consul.AgentService
	Checks  []consul.HealthCheck
}

func (ts *testServer) health(target string) ([]entry, response) {
	ts.t.Helper()
	r := ts.mustOK(http.MethodGet, target, "")
	var out []entry
	r.decode(ts.t, &out)
	return out, r
}

func TestRegisterWithEachCheckTypeShowsInHealthAndAgent(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.addNode(apitest.NodeName, fsm.NodeAlive)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"web-1","Name":"web","Tags":["v1","prod"],"Port":8080,
		"Address":"127.0.0.2","Meta":{"zone":"a"},"Weights":{"Passing":5,"Warning":1},"EnableTagOverride":true,
		"Checks":[{"HTTP":"http://127.0.0.2:8080/health","Interval":"10s","Timeout":"1s","Method":"GET","Header":{"X-A":["b"]},"TLSSkipVerify":true,"SuccessBeforePassing":2,"FailuresBeforeCritical":3,"Status":"passing"},
		{"TCP":"127.0.0.2:8080","Interval":"5s"},
		{"GRPC":"127.0.0.2:9090/svc","Interval":"5s"},
		{"CheckID":"web-ttl","TTL":"30s","Notes":"n","DeregisterCriticalServiceAfter":"1m"}]}`,
		"Content-Type", "text/plain")

	entries, r := ts.health("/v1/health/service/web")
	if len(entries) != 1 {
		t.Fatalf("entries %s", r)
	}
	e := entries[0]
	if e.Service.ID != "web-1" || e.Service.Port != 8080 || e.Service.Address != "127.0.0.2" || e.Service.Weights.Passing != 5 ||
		e.Service.Meta["zone"] != "a" || strings.Join(e.Service.Tags, ",") != "v1,prod" || e.Node.Node != apitest.NodeName {
		t.Fatalf("entry %+v", e)
	}
	ids := map[string]consul.HealthCheck{}
	for _, c := range e.Checks {
		ids[c.CheckID] = c
	}
	for _, id := range []string{"serfHealth", "service:web-1:1", "service:web-1:2", "service:web-1:3", "web-ttl"} {
		if _, ok := ids[id]; !ok {
			t.Fatalf("check %q missing from %s", id, r)
		}
	}
	if c := ids["service:web-1:1"]; c.Type != "http" || c.Status != "passing" || c.Definition.HTTP != "http://127.0.0.2:8080/health" || c.Name != "Service 'web' check" {
		t.Fatalf("http check %+v", c)
	}
	if c := ids["service:web-1:3"]; c.Type != "grpc" || c.Definition.GRPC != "127.0.0.2:9090/svc" {
		t.Fatalf("grpc check %+v", c)
	}
	if c := ids["web-ttl"]; c.Type != "ttl" || c.Status != "critical" {
		t.Fatalf("ttl check %+v", c)
	}

	// The agent-local view: the service and its checks on this node.
	var svcs map[string]consul.AgentService
	ts.mustOK(http.MethodGet, "/v1/agent/services", "").decode(t, &svcs)
	if svcs["web-1"].Service != "web" {
		t.Fatalf("agent services %+v", svcs)
	}
	var checks map[string]consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/agent/checks", "").decode(t, &checks)
	if len(checks) != 4 || checks["web-ttl"].ServiceID != "web-1" {
		t.Fatalf("agent checks %+v", checks)
	}
	var one consul.AgentService
	ts.mustOK(http.MethodGet, "/v1/agent/service/web-1", "").decode(t, &one)
	if one.ID != "web-1" {
		t.Fatalf("agent service %+v", one)
	}
	assertError(t, ts.do(http.MethodGet, "/v1/agent/service/nope", ""), 404, "not_found", "")
}

func TestDefaultCheckIDs(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"api","Port":80,"Check":{"TTL":"10s"}}`)
	var checks map[string]consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/agent/checks", "").decode(t, &checks)
	if _, ok := checks["service:api"]; !ok || len(checks) != 1 {
		t.Fatalf("checks %+v", checks)
	}
	// The ID defaults to the name and the address to the node's.
	var svcs map[string]consul.AgentService
	ts.mustOK(http.MethodGet, "/v1/agent/services", "").decode(t, &svcs)
	if svcs["api"].Address != "127.0.0.1" {
		t.Fatalf("services %+v", svcs)
	}
}

func TestTTLUpdatesAndUnknownCheck(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2","Check":{"TTL":"10s"}}`)
	status := func() (string, string) {
		entries, _ := ts.health("/v1/health/service/web")
		for _, c := range entries[0].Checks {
			if c.CheckID == "service:w1" {
				return c.Status, c.Output
			}
		}
		t.Fatal("no check")
		return "", ""
	}
	ts.mustOK(http.MethodPut, "/v1/agent/check/pass/service:w1?note=fine", "")
	if s, o := status(); s != "passing" || o != "fine" {
		t.Fatalf("after pass: %s %q", s, o)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/check/update/service:w1", `{"Status":"warning","Output":"slow"}`)
	if s, o := status(); s != "warning" || o != "slow" {
		t.Fatalf("after update: %s %q", s, o)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/check/fail/service:w1", "")
	if s, _ := status(); s != "critical" {
		t.Fatalf("after fail: %s", s)
	}
	assertError(t, ts.do(http.MethodPut, "/v1/agent/check/pass/service:nope", ""), 404, "not_found", "")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/check/update/service:w1", `{"Status":"bad"}`), 400, "invalid", "Status")
}

func TestRefusedCheckKindsNameTheField(t *testing.T) {
	ts := newTestServer(t, nil)
	for field, check := range map[string]string{
		"Check.ScriptArgs":        `{"ScriptArgs":["/bin/true"],"Interval":"10s"}`,
		"Check.DockerContainerID": `{"DockerContainerID":"abc","Shell":"/bin/sh","Interval":"10s"}`,
		"Check.H2PING":            `{"H2PING":"127.0.0.1:80","Interval":"10s"}`,
		"Check.OSService":         `{"OSService":"sshd","Interval":"10s"}`,
	} {
		r := ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","Port":80,"Check":`+check+`}`)
		assertError(t, r, 400, "invalid", field)
	}
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","Port":80,"Checks":[{"TTL":"10s"},{"Args":["x"]}]}`), 400, "invalid", "Checks[1].Args")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"Web_App","Port":80}`), 400, "invalid", "Name")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","Port":0}`), 400, "invalid", "Port")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","Port":80,"Check":{"HTTP":"ftp://x","Interval":"1s"}}`), 400, "invalid", "Check.HTTP")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","Port":80,"Kind":"connect-proxy"}`), 400, "invalid", "Kind")
	if _, insts := ts.cl.Store().Instances(nil); len(insts) != 0 {
		t.Fatalf("refused registrations stored %d instances", len(insts))
	}
}

func TestMaintenanceShowsAsCriticalCheckAndPassingDropsIt(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2"}`)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"w2","Name":"web","Port":81,"Address":"127.0.0.2"}`)
	ts.mustOK(http.MethodPut, "/v1/agent/service/maintenance/w1?enable=true&reason=deploy", "")
	entries, _ := ts.health("/v1/health/service/web")
	var found bool
	for _, c := range entries[0].Checks {
		if c.CheckID == "_service_maintenance:w1" && c.Status == "critical" && c.Notes == "deploy" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no maintenance check in %+v", entries[0].Checks)
	}
	passing, _ := ts.health("/v1/health/service/web?passing=1")
	if len(passing) != 1 || passing[0].Service.ID != "w2" {
		t.Fatalf("passing %+v", passing)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/service/maintenance/w1?enable=false", "")
	if passing, _ := ts.health("/v1/health/service/web?passing"); len(passing) != 2 {
		t.Fatalf("after maintenance off: %+v", passing)
	}
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/maintenance/w1", ""), 400, "invalid", "enable")
}

func TestSerfHealthFollowsTheNode(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.addNode("other", fsm.NodeAlive)
	ts.applyCmd(fsm.RegisterType, &fsm.RegisterRequest{ID: "w1", Service: "web", Address: "127.0.0.2", Port: 80, Weight: 1, Node: "other"})
	if p, _ := ts.health("/v1/health/service/web?passing"); len(p) != 1 {
		t.Fatalf("alive node: %+v", p)
	}
	ts.addNode("other", fsm.NodeFailed)
	entries, _ := ts.health("/v1/health/service/web")
	if entries[0].Checks[0].CheckID != "serfHealth" || entries[0].Checks[0].Status != "critical" {
		t.Fatalf("checks %+v", entries[0].Checks)
	}
	if p, _ := ts.health("/v1/health/service/web?passing"); len(p) != 0 {
		t.Fatalf("failed node still passing: %+v", p)
	}
	var node []consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/health/node/other", "").decode(t, &node)
	if len(node) != 1 || node[0].CheckID != "serfHealth" || node[0].Status != "critical" {
		t.Fatalf("health/node %+v", node)
	}
	var crit []consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/health/state/critical", "").decode(t, &crit)
	if len(crit) != 1 {
		t.Fatalf("state critical %+v", crit)
	}
}

func TestTagsAreANDedAndFilterSelects(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"a","Name":"web","Port":80,"Address":"127.0.0.2","Tags":["x","y"],"Meta":{"v":"1"}}`)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"b","Name":"web","Port":81,"Address":"127.0.0.2","Tags":["x"],"Meta":{"v":"2"}}`)
	ids := func(target string) string {
		entries, _ := ts.health(target)
		var out []string
		for _, e := range entries {
			out = append(out, e.Service.ID)
		}
		return strings.Join(out, ",")
	}
	for target, want := range map[string]string{
		"/v1/health/service/web?tag=x":                                                                 "a,b",
		"/v1/health/service/web?tag=x&tag=y":                                                           "a",
		"/v1/health/service/web?filter=Service.Meta.v+%3D%3D+%222%22":                                  "b",
		"/v1/health/service/web?filter=%22y%22+in+Service.Tags":                                        "a",
		"/v1/health/service/web?filter=Service.ID+matches+%22%5Ea%22+or+Service.Port+%3D%3D+81":        "a,b",
		"/v1/health/service/web?filter=not+(Node.Node+%3D%3D+%22x%22)+and+Service.Meta.v+!%3D+%221%22": "b",
	} {
		if got := ids(target); got != want {
			t.Errorf("%s: %q, want %q", target, got, want)
		}
	}
	var cat []consul.CatalogService
	ts.mustOK(http.MethodGet, "/v1/catalog/service/web?tag=y", "").decode(t, &cat)
	if len(cat) != 1 || cat[0].ServiceID != "a" || cat[0].ServiceAddress != "127.0.0.2" {
		t.Fatalf("catalog %+v", cat)
	}
	var svcs map[string][]string
	ts.mustOK(http.MethodGet, "/v1/catalog/services", "").decode(t, &svcs)
	if strings.Join(svcs["web"], ",") != "x,y" {
		t.Fatalf("services %+v", svcs)
	}
	assertError(t, ts.do(http.MethodGet, "/v1/health/service/web?filter=Service.ID+%3D%3D", ""), 400, "invalid", "filter")
	assertError(t, ts.do(http.MethodGet, "/v1/health/service/web?filter=Nope.X+%3D%3D+%22a%22", ""), 400, "invalid", "filter")
}

func TestEmptyListsAreArraysAndHeadersAreSet(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, target := range []string{"/v1/health/service/none", "/v1/catalog/service/none", "/v1/catalog/nodes", "/v1/health/checks/none", "/v1/health/state/any"} {
		r := ts.mustOK(http.MethodGet, target, "")
		if string(r.body) != "[]" {
			t.Errorf("%s: %s", target, r.body)
		}
		r.index(t)
		if r.header.Get("X-Consul-KnownLeader") != "true" || r.header.Get("X-Consul-LastContact") != "0" {
			t.Errorf("%s: headers %v", target, r.header)
		}
	}
	if r := ts.mustOK(http.MethodGet, "/v1/catalog/services", ""); string(r.body) != "{}" {
		t.Errorf("services: %s", r.body)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","Port":80}`)
	if r := ts.mustOK(http.MethodGet, "/v1/health/service/web", ""); !strings.Contains(string(r.body), `"Tags":[]`) {
		t.Errorf("no empty tags: %s", r.body)
	}
}

// TestLastContactOfANodeThatNeverCaughtUp: an agent that has not caught up
// with a leader since it started (restarted while there is no quorum, or
// before the leader's replication reaches it) serves ?stale reads from
// its old catalog. Its X-Consul-LastContact must say so, as Consul's does
// (time.Since of a zero time: the largest duration, in milliseconds), for
// consul-template's max_stale (default 2s) and every client that bounds
// staleness by it to fall back to a consistent read. It said 0, "fresh":
// consul-template rendered services deregistered while the agent was down.
func TestLastContactOfANodeThatNeverCaughtUp(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, c := range []struct {
		known bool
		lc    time.Duration
		want  string
	}{
		{true, 0, "0"},
		{true, 1500 * time.Millisecond, "1500"},
		{false, 1<<63 - 1, "9223372036854"},
	} {
		ts.cl.SetLeader(c.known, c.lc)
		r := ts.mustOK(http.MethodGet, "/v1/catalog/services?stale", "")
		if got := r.header.Get("X-Consul-LastContact"); got != c.want {
			t.Errorf("last contact %v: X-Consul-LastContact %q, want %q", c.lc, got, c.want)
		}
		if got := r.header.Get("X-Consul-KnownLeader"); got != strconv.FormatBool(c.known) {
			t.Errorf("known leader %v: X-Consul-KnownLeader %q", c.known, got)
		}
	}
}

func TestDatacenterAndConsistency(t *testing.T) {
	ts := newTestServer(t, func(_ *api.Config, c *consul.Config) { c.Datacenter = "east" })
	ts.mustOK(http.MethodGet, "/v1/catalog/services?dc=east", "")
	assertError(t, ts.do(http.MethodGet, "/v1/catalog/services?dc=west", ""), 400, "unknown_datacenter", "")
	assertError(t, ts.do(http.MethodGet, "/v1/catalog/services?stale&consistent", ""), 400, "invalid", "consistent")
	before := ts.cl.ConsistentReads()
	ts.mustOK(http.MethodGet, "/v1/health/service/web?consistent", "")
	if ts.cl.ConsistentReads() != before+1 {
		t.Fatal("?consistent did not confirm leadership")
	}
	ts.mustOK(http.MethodGet, "/v1/health/service/web?stale", "")
	if ts.cl.ConsistentReads() != before+1 {
		t.Fatal("?stale confirmed leadership")
	}
	var dcs []string
	ts.mustOK(http.MethodGet, "/v1/catalog/datacenters", "").decode(t, &dcs)
	var self map[string]map[string]any
	ts.mustOK(http.MethodGet, "/v1/agent/self", "").decode(t, &self)
	if len(dcs) != 1 || dcs[0] != "east" || self["Config"]["Datacenter"] != "east" || self["Config"]["NodeName"] != apitest.NodeName || self["Member"] == nil {
		t.Fatalf("dcs %v self %v", dcs, self)
	}
}

func TestBlockingQueryWakesOnlyOnItsOwnResult(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2","Check":{"TTL":"10s"}}`)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"d1","Name":"db","Port":5432,"Address":"127.0.0.3"}`)
	r := ts.mustOK(http.MethodGet, "/v1/health/service/web", "")
	idx := r.index(t)

	type result struct {
		r   response
		err time.Duration
	}
	done := make(chan response, 1)
	go func() {
		done <- ts.do(http.MethodGet, "/v1/health/service/web?index="+itoa(idx)+"&wait=20s", "")
	}()
	// Changes to another service do not wake it.
	for i := 0; i < 3; i++ {
		ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"d1","Name":"db","Port":`+itoa(uint64(5432+i))+`,"Address":"127.0.0.3"}`)
	}
	select {
	case r := <-done:
		t.Fatalf("woke on another service's change: %s", r)
	case <-time.After(200 * time.Millisecond):
	}
	// A change to its own result does, with a higher index.
	ts.mustOK(http.MethodPut, "/v1/agent/check/pass/service:w1", "")
	select {
	case r := <-done:
		if r.index(t) <= idx || !strings.Contains(string(r.body), `"passing"`) {
			t.Fatalf("woke with %s (index %d, was %d)", r, r.index(t), idx)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("blocking query did not wake on its own change")
	}
	// Without a change it times out at wait with the same index.
	r2 := ts.mustOK(http.MethodGet, "/v1/health/service/web", "")
	start := time.Now()
	r3 := ts.mustOK(http.MethodGet, "/v1/health/service/web?index="+itoa(r2.index(t))+"&wait=300ms", "")
	if time.Since(start) < 300*time.Millisecond || r3.index(t) < r2.index(t) {
		t.Fatalf("timed-out query: %s after %s", r3, time.Since(start))
	}
}

func itoa(i uint64) string { return strconvU(i) }

func TestDeregisterAndCatalogEndpoints(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.addNode(apitest.NodeName, fsm.NodeAlive)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2"}`)
	var ns consul.NodeServices
	ts.mustOK(http.MethodGet, "/v1/catalog/node/"+apitest.NodeName, "").decode(t, &ns)
	if ns.Node == nil || ns.Services["w1"] == nil {
		t.Fatalf("node services %+v", ns)
	}
	var nl consul.NodeServiceList
	ts.mustOK(http.MethodGet, "/v1/catalog/node-services/"+apitest.NodeName, "").decode(t, &nl)
	if len(nl.Services) != 1 {
		t.Fatalf("node-services %+v", nl)
	}
	if r := ts.mustOK(http.MethodGet, "/v1/catalog/node/nope", ""); string(r.body) != "null" {
		t.Fatalf("unknown node: %s", r)
	}
	var nodes []consul.Node
	ts.mustOK(http.MethodGet, "/v1/catalog/nodes", "").decode(t, &nodes)
	if len(nodes) != 1 || nodes[0].Address != "127.0.0.9" {
		t.Fatalf("nodes %+v", nodes)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/service/deregister/w1", "")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/deregister/w1", ""), 404, "not_found", "")

	// Catalog registration of an external service with an HTTP check.
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"ext","Address":"127.0.0.5","Service":{"ID":"e1","Service":"ext","Port":443},
		"Checks":[{"CheckID":"ext-http","ServiceID":"e1","Definition":{"HTTP":"http://127.0.0.5:8080/","Interval":"10s"}}]}`)
	var cat []consul.CatalogService
	ts.mustOK(http.MethodGet, "/v1/catalog/service/ext", "").decode(t, &cat)
	if len(cat) != 1 || cat[0].Node != "ext" || cat[0].ServiceAddress != "127.0.0.5" {
		t.Fatalf("catalog ext %+v", cat)
	}
	assertError(t, ts.do(http.MethodPut, "/v1/catalog/register", `{"Node":"ext","Service":{"Service":"ext","Port":1},"Checks":[{"ServiceID":"ext","Status":"passing"}]}`), 400, "invalid", "Checks[0].Definition")
	ts.mustOK(http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext","ServiceID":"e1"}`)
	ts.mustOK(http.MethodGet, "/v1/catalog/service/ext", "").decode(t, &cat)
	if len(cat) != 0 {
		t.Fatalf("after catalog deregister: %+v", cat)
	}
	// Node alone: the external node goes (the next test covers more).
	ts.mustOK(http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext"}`)
	if r := ts.mustOK(http.MethodGet, "/v1/catalog/node/ext", ""); string(r.body) != "null" {
		t.Fatalf("external node after its deregistration: %s", r)
	}
	assertError(t, ts.do(http.MethodGet, "/v1/agent/metrics", ""), 404, "unsupported", "")
}

func TestTokensMapToBeaconPolicies(t *testing.T) {
	ts := newTestServer(t, func(ac *api.Config, _ *consul.Config) {
		ac.Auth = api.AuthConfig{ManagementTokenHash: api.HashToken("root")}
	})
	// A write token limited to services starting with "web".
	ts.applyCmd(fsm.TokenSetType, &fsm.TokenSetRequest{Token: fsm.Token{Accessor: "w", SecretHash: hexHash("wtok"), Policy: api.PolicyWrite, Prefixes: []string{"web"}}})
	reg := `{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2"}`
	assertError(t, ts.do(http.MethodGet, "/v1/catalog/services", ""), 401, "unauthenticated", "")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register", reg), 401, "unauthenticated", "")
	assertError(t, ts.do(http.MethodGet, "/v1/catalog/services", "", "X-Consul-Token", "wrong"), 403, "invalid_token", "")
	assertError(t, ts.do(http.MethodGet, "/v1/catalog/services?token=root", ""), 400, "token_in_url", "")
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", reg, "X-Consul-Token", "wtok")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"db","Port":80}`, "X-Consul-Token", "wtok"), 403, "permission_denied", "")
	ts.mustOK(http.MethodGet, "/v1/health/service/web", "", "Authorization", "Bearer wtok")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/force-leave/x", "", "X-Consul-Token", "wtok"), 403, "permission_denied", "")
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"db","Port":80}`, "X-Consul-Token", "root")
}

func TestNodeMaintenanceShowsAsNodeCheck(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.addNode(apitest.NodeName, fsm.NodeAlive)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2"}`)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"w2","Name":"web","Port":81,"Address":"127.0.0.2"}`)
	ts.mustOK(http.MethodPut, "/v1/agent/service/maintenance/w2?enable=true&reason=own", "")
	ts.mustOK(http.MethodPut, "/v1/agent/maintenance?enable=true&reason=kernel", "")
	var node []consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/health/node/"+apitest.NodeName, "").decode(t, &node)
	var ids []string
	for _, c := range node {
		ids = append(ids, c.CheckID+"="+c.Status+"/"+c.Notes)
	}
	if got := strings.Join(ids, ","); got != "serfHealth=passing/,_node_maintenance=critical/kernel,_service_maintenance:w2=critical/own" {
		t.Fatalf("node checks %s", got)
	}
	if p, _ := ts.health("/v1/health/service/web?passing"); len(p) != 0 {
		t.Fatalf("passing during node maintenance: %+v", p)
	}
	// Leaving node maintenance keeps the service's own.
	ts.mustOK(http.MethodPut, "/v1/agent/maintenance?enable=false", "")
	entries, _ := ts.health("/v1/health/service/web")
	var got []string
	for _, e := range entries {
		for _, c := range e.Checks {
			got = append(got, e.Service.ID+":"+c.CheckID)
		}
	}
	if strings.Join(got, ",") != "w1:serfHealth,w2:serfHealth,w2:_service_maintenance:w2" {
		t.Fatalf("after node maintenance off: %v", got)
	}
}

func TestBlockingQueriesAreCapped(t *testing.T) {
	ts := newTestServer(t, func(_ *api.Config, c *consul.Config) { c.MaxBlockingQueries = 1 })
	// A first write, so that the registration below moves the index past
	// that of the empty result (1).
	ts.addNode(apitest.NodeName, fsm.NodeAlive)
	r := ts.mustOK(http.MethodGet, "/v1/health/service/web", "")
	long := func() chan response {
		done := make(chan response, 1)
		go func() {
			done <- ts.do(http.MethodGet, "/v1/health/service/web?index="+itoa(r.index(t))+"&wait=30s", "")
		}()
		return done
	}
	done := long()
	// Once one blocks, another is refused. (Either may be the one that
	// got the slot first: a refused long query is sent again.)
	wait.For(t, 30*time.Second, time.Millisecond, func() (bool, string) {
		select {
		case r1 := <-done:
			if r1.status != http.StatusTooManyRequests {
				t.Fatalf("long query: %s", r1)
			}
			done = long()
		default:
		}
		r2 := ts.do(http.MethodGet, "/v1/catalog/services?index="+itoa(r.index(t))+"&wait=100ms", "")
		if r2.status == http.StatusTooManyRequests {
			assertError(t, r2, 429, "too_many_blocking_queries", "")
			return true, ""
		}
		return false, fmt.Sprintf("second blocking query: %s", r2)
	})
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","Port":80}`)
	if r := <-done; r.status != 200 || r.index(t) <= 1 {
		t.Fatalf("first blocking query: %s", r)
	}
}

func TestIdenticalReRegistrationAppendsNothing(t *testing.T) {
	ts := newTestServer(t, nil)
	body := `{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2","Tags":["a"],"Check":{"TTL":"10s"}}`
	first := ts.mustOK(http.MethodPut, "/v1/agent/service/register", body).index(t)
	applies := ts.cl.Applies()
	// Spring Cloud Consul and most clients re-register periodically.
	for range 3 {
		if idx := ts.mustOK(http.MethodPut, "/v1/agent/service/register", body).index(t); idx != first {
			t.Fatalf("identical re-registration answered index %d, want %d", idx, first)
		}
	}
	if got := ts.cl.Applies(); got != applies {
		t.Fatalf("identical re-registrations appended %d entries", got-applies)
	}
	// A change still goes through.
	changed := strings.Replace(body, `"Port":80`, `"Port":81`, 1)
	if idx := ts.mustOK(http.MethodPut, "/v1/agent/service/register", changed).index(t); idx <= first {
		t.Fatalf("a changed registration answered index %d, not past %d", idx, first)
	}
	if got := ts.cl.Applies(); got != applies+1 {
		t.Fatalf("a changed registration appended %d entries, want 1", got-applies)
	}
}
