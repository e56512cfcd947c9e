package api

// Review of shared check definitions (32921bc): instances that declare the
// same checks but for their targets share one definition in the FSM; the
// native API must still show each check's own target and headers.

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

func TestReviewSharedDefNativeChecksShowTheirOwnTargets(t *testing.T) {
	ts := newTestServer(t)
	decl := func(k int) []client.CheckDefinition {
		addr := fmt.Sprintf("10.0.0.%d", k)
		return []client.CheckDefinition{
			{Name: "http", HTTP: "http://" + addr + ":8080/health", Interval: client.Duration(5 * time.Second), Timeout: client.Duration(time.Second)},
			{Name: "hdr", HTTP: "http://" + addr + ":8080/h", Header: map[string][]string{"X-Inst": {addr}}},
			{Name: "tcp", TCP: addr + ":5432"},
			{Name: "grpc", GRPC: addr + ":9000", GRPCService: "svc.v1"},
			{Name: "ttl", TTL: client.Duration(15 * time.Second)},
		}
	}
	for k := 1; k <= 4; k++ {
		ts.register("web", fmt.Sprintf("web-%d", k), client.Registration{Address: fmt.Sprintf("10.0.0.%d", k), Port: 8080, Checks: decl(k)})
	}
	verify := func(how string, c client.Check) {
		t.Helper()
		var k int
		if _, err := fmt.Sscanf(c.Instance, "web-%d", &k); err != nil {
			t.Fatalf("%s: instance %q", how, c.Instance)
		}
		addr := fmt.Sprintf("10.0.0.%d", k)
		want := map[string]string{"http": "http://" + addr + ":8080/health", "hdr": "http://" + addr + ":8080/h", "tcp": addr + ":5432", "grpc": addr + ":9000", "ttl": ""}[c.Name]
		got := c.HTTP + c.TCP + c.GRPC
		if got != want {
			t.Errorf("%s: check %s shows target %q, want %q", how, c.ID, got, want)
		}
		if c.Name == "hdr" && !reflect.DeepEqual(c.Header, map[string][]string{"X-Inst": {addr}}) {
			t.Errorf("%s: check %s shows headers %v", how, c.ID, c.Header)
		}
		if c.Name == "grpc" && c.GRPCService != "svc.v1" {
			t.Errorf("%s: check %s shows grpc service %q", how, c.ID, c.GRPCService)
		}
	}
	r := ts.do(http.MethodGet, "/v1/checks?service=web", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/checks: %s", r)
	}
	var checks []client.Check
	decodeStrict(t, r.body, &checks)
	if len(checks) != 20 {
		t.Fatalf("%d checks, want 20", len(checks))
	}
	for _, c := range checks {
		verify("/v1/checks", c)
	}
	for k := 1; k <= 4; k++ {
		inst := ts.getInstance("web", fmt.Sprintf("web-%d", k))
		if len(inst.Checks) != 5 {
			t.Fatalf("instance %s has %d checks", inst.ID, len(inst.Checks))
		}
		for _, c := range inst.Checks {
			verify("instance read", c)
		}
	}
}
