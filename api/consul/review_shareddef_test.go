package consul_test

// Review of shared check definitions (32921bc): instances that declare the
// same checks but for their targets share one definition in the FSM; the
// Consul views must still show each check's own HTTP/TCP/GRPC address and
// its headers.

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/consul"
	"github.com/beaconhq/beacon/fsm"
)

func TestReviewSharedDefConsulChecksShowTheirOwnTargets(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.addNode(apitest.NodeName, fsm.NodeAlive)
	for k := 2; k <= 4; k++ {
		addr := fmt.Sprintf("127.0.0.%d", k)
		ts.mustOK(http.MethodPut, "/v1/agent/service/register", fmt.Sprintf(`{"ID":"web-%d","Name":"web","Port":8080,"Address":%q,
			"Checks":[{"HTTP":"http://%s:8080/health","Interval":"10s","Header":{"X-Inst":[%q]}},
			{"HTTP":"http://%s:8080/plain","Interval":"10s"},
			{"TCP":"%s:8080","Interval":"5s"},
			{"GRPC":"%s:9090/svc","Interval":"5s"}]}`, k, addr, addr, addr, addr, addr, addr))
	}
	verify := func(how string, c consul.HealthCheck) {
		t.Helper()
		if c.CheckID == "serfHealth" {
			return
		}
		addr := "127.0.0." + strings.TrimPrefix(c.ServiceID, "web-")
		want := map[string]string{
			"service:" + c.ServiceID + ":1": "http://" + addr + ":8080/health",
			"service:" + c.ServiceID + ":2": "http://" + addr + ":8080/plain",
			"service:" + c.ServiceID + ":3": addr + ":8080",
			"service:" + c.ServiceID + ":4": addr + ":9090/svc",
		}[c.CheckID]
		d := c.Definition
		if got := d.HTTP + d.TCP + d.GRPC; want == "" || got != want {
			t.Errorf("%s: check %s of %s shows %q, want %q", how, c.CheckID, c.ServiceID, got, want)
		}
		if c.CheckID == "service:"+c.ServiceID+":1" && !reflect.DeepEqual(d.Header, map[string][]string{"X-Inst": {addr}}) {
			t.Errorf("%s: check %s shows headers %v", how, c.CheckID, d.Header)
		}
	}
	entries, r := ts.health("/v1/health/service/web")
	if len(entries) != 3 {
		t.Fatalf("entries %s", r)
	}
	for _, e := range entries {
		if len(e.Checks) != 5 {
			t.Fatalf("entry %s has %d checks", e.Service.ID, len(e.Checks))
		}
		for _, c := range e.Checks {
			verify("/v1/health/service", c)
		}
	}
	var checks []consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/health/checks/web", "").decode(t, &checks)
	if len(checks) != 12 {
		t.Fatalf("%d checks from /v1/health/checks/web, want 12", len(checks))
	}
	for _, c := range checks {
		verify("/v1/health/checks", c)
	}
	var agent map[string]consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/agent/checks", "").decode(t, &agent)
	if len(agent) != 12 {
		t.Fatalf("%d agent checks, want 12", len(agent))
	}
	for _, c := range agent {
		verify("/v1/agent/checks", c)
	}
}
