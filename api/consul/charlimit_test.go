package consul_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/consul"
	"github.com/beaconhq/beacon/fsm"
)

// Maintenance reasons are limited in characters, not bytes, as on the
// native API: N characters of two, three or four bytes each are taken,
// N+1 refused without a change.
func TestMaintenanceReasonsCountCharacters(t *testing.T) {
	const nodePrefix = "node maintenance: " // what the node's reason is stored behind
	for _, ch := range []string{"é", "日", "😀"} {
		t.Run(ch, func(t *testing.T) {
			ts := newTestServer(t, nil)
			ts.addNode(apitest.NodeName, fsm.NodeAlive)
			ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2"}`)
			reason := func() string {
				_, inst, _ := ts.cl.Store().Instance(nil, "web", "w1")
				if inst == nil || inst.Maintenance == nil {
					return ""
				}
				return inst.Maintenance.Reason
			}
			for _, tc := range []struct {
				target, prefix string
				max            int
			}{
				{"/v1/agent/service/maintenance/w1", "", consul.MaxReasonLen},
				{"/v1/agent/maintenance", nodePrefix, consul.MaxReasonLen - len(nodePrefix)},
			} {
				fits := strings.Repeat(ch, tc.max)
				ts.mustOK(http.MethodPut, tc.target+"?enable=true&reason="+url.QueryEscape(fits), "")
				if got := reason(); got != tc.prefix+fits {
					t.Fatalf("%s: reason %q, want %q", tc.target, got, tc.prefix+fits)
				}
				assertError(t, ts.do(http.MethodPut, tc.target+"?enable=true&reason="+url.QueryEscape(fits+ch), ""), 400, "invalid", "reason")
				if got := reason(); got != tc.prefix+fits {
					t.Fatalf("%s: after a refusal the reason is %q", tc.target, got)
				}
				ts.mustOK(http.MethodPut, tc.target+"?enable=false", "")
			}
		})
	}
}
