package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// A flapping check counts as critical for its instance; its exposed status
// must say so (issue 19: it showed "passing" with "flapping": true while
// the instance was left out of routing).
func TestAFlappingCheckReadsCriticalWithItsResultBeside(t *testing.T) {
	ts := newTestServer(t)
	ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 80,
		Checks: []client.CheckDefinition{{Name: "heartbeat", TTL: client.Duration(10 * time.Second)}}})
	until := time.Now().Add(time.Minute)
	ts.applyCmd(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Time: time.Now().UnixNano(),
		Updates: []fsm.CheckUpdate{{Check: "web:web-1:heartbeat", Status: fsm.Passing, Output: "ok", Flapping: true, FlapUntil: until.UnixNano(), FlapLevel: 1}}})

	inst := ts.getInstance("web", "web-1")
	if inst.Status != "critical" || inst.Healthy {
		t.Fatalf("instance of a flapping check: status %s healthy %v", inst.Status, inst.Healthy)
	}
	var checks []client.Check
	decodeStrict(t, ts.do(http.MethodGet, "/v1/checks?status=critical", nil).body, &checks)
	for _, c := range append(checks, inst.Checks...) {
		if c.Status != "critical" || !c.Flapping || c.ResultStatus != "passing" || c.FlapUntil == nil {
			t.Fatalf("flapping check: %+v, want status critical, flapping, result_status passing", c)
		}
	}
	if len(checks) != 1 {
		t.Fatalf("?status=critical listed %d checks, want the flapping one", len(checks))
	}
	// Once it stops flapping, status is its result again and result_status goes.
	ts.applyCmd(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Time: time.Now().UnixNano(),
		Updates: []fsm.CheckUpdate{{Check: "web:web-1:heartbeat", Status: fsm.Passing, Output: "ok"}}})
	c := ts.getInstance("web", "web-1").Checks[0]
	if c.Status != "passing" || c.Flapping || c.ResultStatus != "" {
		t.Fatalf("after flapping: %+v", c)
	}
}

// ?owner=(leader) lists the TTL checks, which have no owner and which
// beacon checks shows with owner (leader); a node's name lists the checks
// it probes (the h7 review: the table showed "leader", which ?owner=leader
// did not match).
func TestOwnerLeaderFilterListsTheTTLChecks(t *testing.T) {
	ts := newTestServer(t)
	ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 80, Checks: []client.CheckDefinition{
		{Name: "hb", TTL: client.Duration(10 * time.Second)},
		{Name: "http", HTTP: "http://10.0.0.1:80/health"},
	}})
	ts.applyCmd(fsm.AssignChecksType, &fsm.AssignChecksRequest{Assignments: []fsm.Assignment{{Check: "web:web-1:http", Owner: "n1"}}})
	for _, tc := range []struct{ owner, want string }{
		{"%28leader%29", "web:web-1:hb"},
		{"(leader)", "web:web-1:hb"},
		{"n1", "web:web-1:http"},
	} {
		var checks []client.Check
		decodeStrict(t, ts.do(http.MethodGet, "/v1/checks?owner="+tc.owner, nil).body, &checks)
		if len(checks) != 1 || checks[0].ID != tc.want {
			t.Errorf("?owner=%s listed %+v, want only %s", tc.owner, checks, tc.want)
		}
	}
}
