package agent_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// TestConsulIDsArePerAgentAndTakenOnesAreNamed (docs/security.md, "Routes
// and the policy each needs"): on Beacon's API an instance is its service
// and ID, so a tenant reusing another's IDs reaches nothing of theirs; on
// the Consul API an ID is unique per agent, and a tenant registering an ID
// another tenant's service holds is refused with a message that says so.
func TestConsulIDsArePerAgentAndTakenOnesAreNamed(t *testing.T) {
	c := agenttest.New(t, 1, withAuth(true), withToken(testManagementToken))
	c.WaitForLeader()
	base := "http://" + c.Node(0).HTTPAddr()
	a := createToken(t, c.Client(0), client.TokenRequest{Policy: "write", Prefixes: []string{"web-"}})
	b := createToken(t, c.Client(0), client.TokenRequest{Policy: "write", Prefixes: []string{"api-"}})
	put := func(tok, path, body string) rawResult {
		return retryRaw503(t, func() rawResult { return rawDo(t, nil, http.MethodPut, base+path, tok, body) })
	}
	instance := func(service, id string) bool {
		_, _, err := c.Client(0).Instance(context.Background(), service, id, nil)
		return err == nil
	}

	// Beacon's API: IDs per service.
	for _, id := range []string{"shared", "i-b"} {
		if r := put(b.Secret, "/v1/services/api-a/instances/"+id, `{"address":"10.0.0.2","port":80}`); r.status != http.StatusOK {
			t.Fatalf("B registers api-a/%s: %d %s", id, r.status, r.body)
		}
	}
	if r := put(a.Secret, "/v1/services/web-a/instances/shared", `{"address":"10.0.0.1","port":80}`); r.status != http.StatusOK {
		t.Fatalf("A registers web-a/shared: %d %s", r.status, r.body)
	}
	if r := rawDo(t, nil, http.MethodDelete, base+"/v1/services/web-a/instances/i-b", a.Secret, ""); r.status != http.StatusOK {
		t.Fatalf("A deregisters web-a/i-b: %d %s", r.status, r.body)
	}
	for _, id := range []string{"shared", "i-b"} {
		if !instance("api-a", id) {
			t.Fatalf("B's api-a/%s is gone", id)
		}
	}
	if !instance("web-a", "shared") {
		t.Fatal("A's web-a/shared is missing")
	}

	// The Consul API: IDs per agent.
	if r := put(b.Secret, "/v1/agent/service/register", `{"Name":"api-a","ID":"cshared","Address":"10.0.0.2","Port":80}`); r.status != http.StatusOK {
		t.Fatalf("B registers cshared through the Consul API: %d %s", r.status, r.body)
	}
	r := put(a.Secret, "/v1/agent/service/register", `{"Name":"web-a","ID":"cshared","Address":"10.0.0.1","Port":80}`)
	if r.status != http.StatusForbidden || r.err.Code != "permission_denied" ||
		!strings.Contains(r.err.Error, `service ID "cshared" is taken on this agent by an instance of service "api-a"`) ||
		!strings.Contains(r.err.Error, "choose another ID") {
		t.Fatalf("A takes B's Consul ID: %d %s", r.status, r.body)
	}
	if !instance("api-a", "cshared") || instance("web-a", "cshared") {
		t.Fatal("a refused Consul registration changed the catalog")
	}
}
