package agent_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// TestAFailedJoinSaysWhyInOneLine: a join that reaches no address answers
// 502 join_failed with one line naming each address and its error, on
// Beacon's route and the Consul one, not memberlist's multi-line list
// ("1 error occurred:\n\t* ...").
func TestAFailedJoinSaysWhyInOneLine(t *testing.T) {
	c := agenttest.New(t, 1)
	c.WaitForLeader()
	base := "http://" + c.Node(0).HTTPAddr()
	for _, tc := range []struct {
		method, path, body string
		addrs              []string
	}{
		{http.MethodPost, "/v1/cluster/join", `{"addresses":["127.0.0.1:1","127.0.0.2:1"]}`, []string{"127.0.0.1:1", "127.0.0.2:1"}},
		{http.MethodPut, "/v1/agent/join/127.0.0.1:1", "", []string{"127.0.0.1:1"}},
	} {
		r := rawDo(t, nil, tc.method, base+tc.path, "", tc.body)
		msg := r.err.Error
		if r.status != http.StatusBadGateway || r.err.Code != "join_failed" {
			t.Fatalf("%s %s: %d %s, want 502 join_failed", tc.method, tc.path, r.status, r.body)
		}
		if strings.ContainsAny(msg, "\n\t") || strings.Contains(msg, "error occurred") || strings.Contains(msg, "* ") {
			t.Fatalf("%s %s: the message is not one clean line: %q", tc.method, tc.path, msg)
		}
		for _, a := range tc.addrs {
			if !strings.Contains(msg, "failed to join "+a+": ") {
				t.Fatalf("%s %s: the message does not name %s and its error: %q", tc.method, tc.path, a, msg)
			}
		}
	}
}
