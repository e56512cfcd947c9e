package consul_test

import (
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/consul"
	"github.com/beaconhq/beacon/fsm"
)

// catalogServices is GET /v1/catalog/services' names, sorted.
func (ts *testServer) catalogServices() []string {
	var m map[string][]string
	ts.mustOK(http.MethodGet, "/v1/catalog/services", "").decode(ts.t, &m)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// agentServices is GET /v1/agent/services.
func (ts *testServer) agentServices() map[string]consul.AgentService {
	ts.t.Helper()
	var m map[string]consul.AgentService
	ts.mustOK(http.MethodGet, "/v1/agent/services", "").decode(ts.t, &m)
	return m
}

// healthChecks is GET /v1/health/checks/:service by CheckID.
func (ts *testServer) healthChecks(service string) map[string]consul.HealthCheck {
	ts.t.Helper()
	var l []consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/health/checks/"+service, "").decode(ts.t, &l)
	out := map[string]consul.HealthCheck{}
	for _, c := range l {
		out[c.CheckID] = c
	}
	return out
}

func TestReRegisteringAnIDUnderAnotherNameReplacesIt(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"old-name","ID":"r-1","Port":80,"Address":"127.0.0.2","Check":{"TTL":"60s","Status":"passing"}}`)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"new-name","ID":"r-1","Port":80,"Address":"127.0.0.2","Check":{"TTL":"60s","Status":"passing"}}`)
	if got := ts.catalogServices(); strings.Join(got, ",") != "new-name" {
		t.Fatalf("catalog after the rename: %v, want only new-name", got)
	}
	if sv := ts.agentServices()["r-1"]; sv.Service != "new-name" {
		t.Fatalf("agent services r-1: %+v", sv)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/check/warn/service:r-1", "")
	if c := ts.healthChecks("new-name")["service:r-1"]; c.Status != "warning" {
		t.Fatalf("the warned check: %+v", c)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/service/deregister/r-1", "")
	if got := ts.catalogServices(); len(got) != 0 {
		t.Fatalf("catalog after deregistering r-1: %v", got)
	}
	if m := ts.agentServices(); len(m) != 0 {
		t.Fatalf("agent services after deregistering r-1: %+v", m)
	}
}

func TestARenameNeedsATokenThatMayWriteTheOldService(t *testing.T) {
	ts := newTestServer(t, func(ac *api.Config, _ *consul.Config) {
		ac.Auth = api.AuthConfig{ManagementTokenHash: api.HashToken("root")}
	})
	ts.applyCmd(fsm.TokenSetType, &fsm.TokenSetRequest{Token: fsm.Token{Accessor: "w", SecretHash: hexHash("wtok"), Policy: api.PolicyWrite, Prefixes: []string{"web"}}})
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"db","ID":"x-1","Port":80,"Address":"127.0.0.2"}`, "X-Consul-Token", "root")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","ID":"x-1","Port":80,"Address":"127.0.0.2"}`, "X-Consul-Token", "wtok"), 403, "permission_denied", "")
	var m map[string][]string
	ts.mustOK(http.MethodGet, "/v1/catalog/services", "", "X-Consul-Token", "root").decode(t, &m)
	if _, ok := m["db"]; !ok || len(m) != 1 {
		t.Fatalf("catalog after a refused rename: %v", m)
	}
}

// Two instances of one ID on one agent, as registrations made before the
// rename rule left them: every agent endpoint takes the newest, and a
// deregistration removes both.
func TestAgentEndpointsAgreeOnAnIDTwoInstancesShare(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, svc := range []string{"bbb", "aaa"} { // aaa is the newer
		ts.applyCmd(fsm.RegisterType, &fsm.RegisterRequest{Service: svc, ID: "dup", Address: "127.0.0.2", Port: 80, Node: apitest.NodeName,
			Checks: []fsm.CheckDefinition{{Name: "service", Type: fsm.CheckTTL, TTL: int64(time.Minute), InitialStatus: fsm.Passing}}, Time: 1})
	}
	if sv := ts.agentServices()["dup"]; sv.Service != "aaa" {
		t.Fatalf("agent services dup: %+v, want aaa (the newest)", sv)
	}
	var one consul.AgentService
	ts.mustOK(http.MethodGet, "/v1/agent/service/dup", "").decode(t, &one)
	if one.Service != "aaa" {
		t.Fatalf("agent service dup: %+v", one)
	}
	var checks map[string]consul.HealthCheck
	ts.mustOK(http.MethodPut, "/v1/agent/check/fail/service:dup", "")
	ts.mustOK(http.MethodGet, "/v1/agent/checks", "").decode(t, &checks)
	if c := checks["service:dup"]; c.ServiceName != "aaa" || c.Status != "critical" {
		t.Fatalf("agent checks service:dup: %+v, want aaa's, failed", c)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/service/deregister/dup", "")
	if got := ts.catalogServices(); len(got) != 0 {
		t.Fatalf("catalog after deregistering dup: %v", got)
	}
}

func TestTTLUpdateByACustomCheckIDOfAnotherAgent(t *testing.T) {
	ts := newTestServer(t, nil)
	reg := func(svc, id string) {
		ts.applyCmd(fsm.RegisterType, &fsm.RegisterRequest{Service: svc, ID: id, Address: "127.0.0.2", Port: 80, Node: "other-agent",
			Checks: []fsm.CheckDefinition{{Name: "c-ttl", Type: fsm.CheckTTL, TTL: int64(time.Minute)}}, Time: 1})
	}
	reg("cttl", "c-1")
	ts.mustOK(http.MethodPut, "/v1/agent/check/pass/c-ttl", "")
	if c := ts.healthChecks("cttl")["c-ttl"]; c.Status != "passing" {
		t.Fatalf("after pass through another agent: %+v", c)
	}
	reg("cttl", "c-2")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/check/pass/c-ttl", ""), 409, "ambiguous_check", "")
	assertError(t, ts.do(http.MethodPut, "/v1/agent/check/pass/nope", ""), 404, "not_found", "")
}

func TestReRegistrationKeepsChecksUnlessReplaceExistingChecks(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"rc","ID":"rc-1","Port":80,"Address":"127.0.0.2","Check":{"TTL":"5m","Status":"passing"}}`)
	ts.mustOK(http.MethodPut, "/v1/agent/check/warn/service:rc-1", "")
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"rc","ID":"rc-1","Port":80,"Address":"127.0.0.2","Tags":["v2"]}`)
	if c, ok := ts.healthChecks("rc")["service:rc-1"]; !ok || c.Status != "warning" {
		t.Fatalf("after a re-registration without checks: %+v %v, want the check kept with its status", c, ok)
	}
	if sv := ts.agentServices()["rc-1"]; len(sv.Tags) != 1 || sv.Tags[0] != "v2" {
		t.Fatalf("the re-registration's tags: %+v", sv)
	}
	ts.mustOK(http.MethodPut, "/v1/agent/service/register?replace-existing-checks=true", `{"Name":"rc","ID":"rc-1","Port":80,"Address":"127.0.0.2","Tags":["v3"]}`)
	if cs := ts.healthChecks("rc"); len(cs) != 0 {
		t.Fatalf("after replace-existing-checks: %+v, want none", cs)
	}
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register?replace-existing-checks=maybe", `{"Name":"rc","ID":"rc-1","Port":80}`), 400, "invalid", "replace-existing-checks")
}

func TestWrongMethodOnAServedPathIs405(t *testing.T) {
	ts := newTestServer(t, nil)
	r := ts.do(http.MethodPost, "/v1/agent/service/register", `{"Name":"a","Port":80}`)
	assertError(t, r, 405, "method_not_allowed", "")
	if r.header.Get("Allow") != "PUT" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	r = ts.do(http.MethodDelete, "/v1/agent/service/deregister/x", "")
	assertError(t, r, 405, "method_not_allowed", "")
	assertError(t, ts.do(http.MethodPost, "/v1/agent/metrics", ""), 404, "unsupported", "")
}

func TestMissingTokenNamesTheConsulHeaders(t *testing.T) {
	ts := newTestServer(t, func(ac *api.Config, _ *consul.Config) {
		ac.Auth = api.AuthConfig{ManagementTokenHash: api.HashToken("root")}
	})
	for _, r := range []response{
		ts.do(http.MethodGet, "/v1/catalog/services", ""),
		ts.do(http.MethodPut, "/v1/agent/service/register", `{"Name":"a","Port":80}`),
	} {
		assertError(t, r, 401, "unauthenticated", "")
		if !strings.Contains(string(r.body), "X-Consul-Token") || strings.Contains(string(r.body), "X-Beacon-Token") {
			t.Fatalf("401 body %s: want X-Consul-Token named, not X-Beacon-Token", r.body)
		}
	}
}

func TestTTLOutputIsCutOnACharacterBoundary(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"rr","ID":"rr-1","Port":80,"Address":"127.0.0.2","Check":{"TTL":"5m","Status":"passing"}}`)
	ts.mustOK(http.MethodPut, "/v1/agent/check/update/service:rr-1", `{"Status":"critical","Output":"a`+strings.Repeat("é", 3000)+`"}`)
	out := ts.healthChecks("rr")["service:rr-1"].Output
	if !utf8.ValidString(out) || strings.Contains(out, `\`) || len(out) > 4096 || len(out) < 4090 {
		t.Fatalf("output of %d bytes ends %q", len(out), out[max(0, len(out)-8):])
	}
}
