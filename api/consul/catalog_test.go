package consul_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/consul"
	"github.com/beaconhq/beacon/fsm"
)

// An external node (PUT /v1/catalog/register naming a node that runs no
// Beacon agent) is a node of the catalog: listed with its address, tagged
// addresses and meta, with no serfHealth, and removable with everything on
// it.
func TestCatalogExternalNodeIsANode(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.addNode(apitest.NodeName, fsm.NodeAlive)
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-db","Address":"127.0.0.5",
		"TaggedAddresses":{"lan":"127.0.0.5","wan":"198.51.100.5"},"NodeMeta":{"external-node":"true"},
		"Service":{"ID":"db-1","Service":"db","Port":5432}}`)

	var nodes []consul.Node
	ts.mustOK(http.MethodGet, "/v1/catalog/nodes", "").decode(t, &nodes)
	var ext *consul.Node
	for i := range nodes {
		if nodes[i].Node == "ext-db" {
			ext = &nodes[i]
		}
	}
	if len(nodes) != 2 || ext == nil || ext.Address != "127.0.0.5" || ext.TaggedAddresses["wan"] != "198.51.100.5" ||
		ext.Meta["external-node"] != "true" || ext.Meta["beacon-role"] != "" {
		t.Fatalf("nodes %+v", nodes)
	}
	// ?node-meta selects it by its meta; beacon-role:server does not.
	ts.mustOK(http.MethodGet, "/v1/catalog/nodes?node-meta=external-node:true", "").decode(t, &nodes)
	if len(nodes) != 1 || nodes[0].Node != "ext-db" {
		t.Fatalf("by node-meta: %+v", nodes)
	}
	ts.mustOK(http.MethodGet, "/v1/catalog/nodes?node-meta=beacon-role:server", "").decode(t, &nodes)
	for _, n := range nodes {
		if n.Node == "ext-db" {
			t.Fatalf("external node selected as a server: %+v", nodes)
		}
	}

	var ns consul.NodeServices
	ts.mustOK(http.MethodGet, "/v1/catalog/node/ext-db", "").decode(t, &ns)
	if ns.Node == nil || ns.Node.Address != "127.0.0.5" || ns.Services["db-1"] == nil || ns.Services["db-1"].Address != "127.0.0.5" {
		t.Fatalf("catalog/node %s", ts.mustOK(http.MethodGet, "/v1/catalog/node/ext-db", "").body)
	}
	var checks []consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/health/node/ext-db", "").decode(t, &checks)
	if len(checks) != 0 {
		t.Fatalf("health/node of an external node without checks: %+v", checks)
	}
	es, _ := ts.health("/v1/health/service/db")
	if len(es) != 1 || es[0].Node.Node != "ext-db" || es[0].Node.Meta["external-node"] != "true" || len(es[0].Checks) != 0 {
		t.Fatalf("health/service %+v", es)
	}
	es, _ = ts.health("/v1/health/service/db?passing=1")
	if len(es) != 1 {
		t.Fatalf("an instance without checks on an external node is passing: %+v", es)
	}
	var state []consul.HealthCheck
	ts.mustOK(http.MethodGet, "/v1/health/state/any", "").decode(t, &state)
	for _, c := range state {
		if c.Node == "ext-db" {
			t.Fatalf("health/state shows a check on ext-db: %+v", c)
		}
	}

	// A check of its own, then deregistered by its CheckID alone.
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-db","Address":"127.0.0.5",
		"TaggedAddresses":{"lan":"127.0.0.5","wan":"198.51.100.5"},"NodeMeta":{"external-node":"true"},
		"Service":{"ID":"db-1","Service":"db","Port":5432},
		"Checks":[{"CheckID":"db-tcp","ServiceID":"db-1","Status":"passing","Definition":{"TCP":"127.0.0.5:5432","Interval":"1h"}}]}`)
	ts.mustOK(http.MethodGet, "/v1/health/node/ext-db", "").decode(t, &checks)
	if len(checks) != 1 || checks[0].CheckID != "db-tcp" || checks[0].Node != "ext-db" {
		t.Fatalf("health/node %+v", checks)
	}
	ts.mustOK(http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext-db","CheckID":"db-tcp"}`)
	ts.mustOK(http.MethodGet, "/v1/health/node/ext-db", "").decode(t, &checks)
	if len(checks) != 0 {
		t.Fatalf("after the check's deregistration: %+v", checks)
	}
	ts.mustOK(http.MethodGet, "/v1/catalog/node/ext-db", "").decode(t, &ns)
	if ns.Services["db-1"] == nil {
		t.Fatalf("the check's deregistration removed the service")
	}

	// Node alone: the node and everything on it.
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-db","Address":"127.0.0.5","SkipNodeUpdate":true,
		"Service":{"ID":"db-2","Service":"db","Port":5433}}`)
	ts.mustOK(http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext-db"}`)
	if r := ts.mustOK(http.MethodGet, "/v1/catalog/node/ext-db", ""); string(r.body) != "null" {
		t.Fatalf("catalog/node after deregistration: %s", r)
	}
	var cat []consul.CatalogService
	ts.mustOK(http.MethodGet, "/v1/catalog/service/db", "").decode(t, &cat)
	if len(cat) != 0 {
		t.Fatalf("services left on the deregistered node: %+v", cat)
	}
}

func TestCatalogRegisterRefusesBadInput(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.addNode(apitest.NodeName, fsm.NodeAlive)
	svc := `"Service":{"Service":"db","Port":5432}`
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-there","Address":"127.0.0.4"}`)
	manyMeta := make([]string, api.MaxMetaKeys+1)
	for i := range manyMeta {
		manyMeta[i] = fmt.Sprintf(`"k%d":"v"`, i)
	}
	for _, tc := range []struct {
		name, body  string
		status      int
		code, field string
	}{
		{"no node", `{"Address":"127.0.0.5",` + svc + `}`, 400, "invalid", "Node"},
		{"a node name with a space", `{"Node":"ext db","Address":"127.0.0.5",` + svc + `}`, 400, "invalid", "Node"},
		{"a node name too long", `{"Node":"` + strings.Repeat("a", fsm.MaxNameLen+1) + `","Address":"127.0.0.5"}`, 400, "invalid", "Node"},
		{"the reserved node", `{"Node":"beacon-external","Address":"127.0.0.5",` + svc + `}`, 400, "invalid", "Node"},
		{"no address for a new node", `{"Node":"ext-db",` + svc + `}`, 400, "invalid", "Address"},
		{"SkipNodeUpdate for a node not there", `{"Node":"ext-db","SkipNodeUpdate":true,` + svc + `}`, 400, "invalid", "Address"},
		{"no address for a node there", `{"Node":"ext-there",` + svc + `}`, 400, "invalid", "Address"},
		{"an unspecified address", `{"Node":"ext-db","Address":"0.0.0.0",` + svc + `}`, 400, "invalid", "Address"},
		{"an address that is no host", `{"Node":"ext-db","Address":"a b",` + svc + `}`, 400, "invalid", "Address"},
		{"a bad tagged address", `{"Node":"ext-db","Address":"127.0.0.5","TaggedAddresses":{"wan":"x y"}}`, 400, "invalid", "TaggedAddresses.wan"},
		{"a bad meta key", `{"Node":"ext-db","Address":"127.0.0.5","NodeMeta":{"a b":"c"}}`, 400, "invalid", "NodeMeta"},
		{"a reserved meta key", `{"Node":"ext-db","Address":"127.0.0.5","NodeMeta":{"beacon-role":"server"}}`, 400, "invalid", "NodeMeta"},
		{"too many meta keys", `{"Node":"ext-db","Address":"127.0.0.5","NodeMeta":{` + strings.Join(manyMeta, ",") + `}}`, 400, "invalid", "NodeMeta"},
		{"a meta value with a control character", `{"Node":"ext-db","Address":"127.0.0.5","NodeMeta":{"k":"a\u001b[31m"}}`, 400, "invalid", "NodeMeta.k"},
		{"another datacenter", `{"Datacenter":"dc2","Node":"ext-db","Address":"127.0.0.5"}`, 400, "unknown_datacenter", ""},
		{"a check without a service", `{"Node":"ext-db","Address":"127.0.0.5","Checks":[{"CheckID":"c","ServiceID":"db","Definition":{"TCP":"127.0.0.5:1"}}]}`, 400, "invalid", "Checks[0]"},
		{"a node check", `{"Node":"ext-db","Address":"127.0.0.5",` + svc + `,"Check":{"CheckID":"ext","Definition":{"TCP":"127.0.0.5:1"}}}`, 400, "invalid", "Checks[0].ServiceID"},
		{"a bad service", `{"Node":"ext-db","Address":"127.0.0.5","Service":{"Service":"Bad_Name","Port":1}}`, 400, "invalid", "Name"},
		{"a bad port", `{"Node":"ext-db","Address":"127.0.0.5","Service":{"Service":"db","Port":70000}}`, 400, "invalid", "Port"},
		{"a field of the wrong type", `{"Node":"ext-db","Address":"127.0.0.5","NodeMeta":[1]}`, 400, "invalid", "NodeMeta"},
		{"not JSON", `{"Node":`, 400, "bad_json", ""},
		// A Beacon agent's record is gossip's: not changed, not shadowed.
		{"a member's address", `{"Node":"` + apitest.NodeName + `","Address":"10.0.0.9",` + svc + `}`, 409, "member_node", ""},
		{"a member's meta", `{"Node":"` + apitest.NodeName + `","NodeMeta":{"k":"v"},` + svc + `}`, 409, "member_node", ""},
		{"a member's tagged address", `{"Node":"` + apitest.NodeName + `","TaggedAddresses":{"wan":"10.0.0.9"},` + svc + `}`, 409, "member_node", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertError(t, ts.do(http.MethodPut, "/v1/catalog/register", tc.body), tc.status, tc.code, tc.field)
		})
	}
	var nodes []consul.Node
	ts.mustOK(http.MethodGet, "/v1/catalog/nodes", "").decode(t, &nodes)
	if len(nodes) != 2 || nodes[0].Node != apitest.NodeName || nodes[0].Meta["beacon-role"] != "voter" || nodes[1].Address != "127.0.0.4" {
		t.Fatalf("a refused registration changed the nodes: %+v", nodes)
	}

	// A service on a member, leaving its record alone, is registered there
	// (the member's address, given or not, is the service's default).
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"`+apitest.NodeName+`","Address":"127.0.0.9",`+svc+`}`)
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"`+apitest.NodeName+`","Address":"10.0.0.9","SkipNodeUpdate":true,"Service":{"ID":"db-2","Service":"db","Port":5433}}`)
	var cat []consul.CatalogService
	ts.mustOK(http.MethodGet, "/v1/catalog/service/db", "").decode(t, &cat)
	if len(cat) != 2 || cat[0].Node != apitest.NodeName || cat[0].ServiceAddress != "127.0.0.9" || cat[0].Address != "127.0.0.9" {
		t.Fatalf("service on a member: %+v", cat)
	}

	for _, tc := range []struct {
		name, body  string
		status      int
		code, field string
	}{
		{"no node", `{"ServiceID":"db"}`, 400, "invalid", "Node"},
		{"a bad node name", `{"Node":"a/b"}`, 400, "invalid", "Node"},
		{"a member", `{"Node":"` + apitest.NodeName + `"}`, 409, "member_node", ""},
		{"not JSON", `[`, 400, "bad_json", ""},
	} {
		t.Run("deregister "+tc.name, func(t *testing.T) {
			assertError(t, ts.do(http.MethodPut, "/v1/catalog/deregister", tc.body), tc.status, tc.code, tc.field)
		})
	}
	// Unknown nodes, services and checks: nothing to do, as in Consul.
	for _, body := range []string{`{"Node":"nope"}`, `{"Node":"nope","ServiceID":"x"}`, `{"Node":"` + apitest.NodeName + `","CheckID":"serfHealth"}`} {
		if r := ts.mustOK(http.MethodPut, "/v1/catalog/deregister", body); string(r.body) != "true" {
			t.Fatalf("%s: %s", body, r)
		}
	}
}

// Node-level writes need a token that may write every service on the node
// (the management token for a node with none), so that a write token
// scoped to one service cannot move or remove another's node.
func TestCatalogNodeWritesNeedTheirServicesTokens(t *testing.T) {
	ts := newTestServer(t, func(ac *api.Config, _ *consul.Config) {
		ac.Auth = api.AuthConfig{ManagementTokenHash: api.HashToken("root")}
	})
	ts.applyCmd(fsm.TokenSetType, &fsm.TokenSetRequest{Token: fsm.Token{Accessor: "d", SecretHash: hexHash("dbtok"), Policy: api.PolicyWrite, Prefixes: []string{"db"}}})
	db, root := []string{"X-Consul-Token", "dbtok"}, []string{"X-Consul-Token", "root"}
	reg := `{"Node":"ext-db","Address":"127.0.0.5","Service":{"Service":"db","Port":5432}}`
	assertError(t, ts.do(http.MethodPut, "/v1/catalog/register", reg), 401, "unauthenticated", "")
	ts.mustOK(http.MethodPut, "/v1/catalog/register", reg, db...)
	// A node without a service needs the management token.
	assertError(t, ts.do(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-bare","Address":"127.0.0.6"}`, db...), 403, "permission_denied", "")
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-bare","Address":"127.0.0.6"}`, root...)
	// Another service on ext-db (management), then the db token may
	// neither move the node nor remove it.
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-db","Address":"127.0.0.5","Service":{"Service":"cache","Port":6379}}`, root...)
	assertError(t, ts.do(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-db","Address":"127.0.0.7","Service":{"Service":"db","Port":5432}}`, db...), 403, "permission_denied", "")
	assertError(t, ts.do(http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext-db"}`, db...), 403, "permission_denied", "")
	// It may still re-register its service on the node as it is.
	ts.mustOK(http.MethodPut, "/v1/catalog/register", `{"Node":"ext-db","Address":"127.0.0.5","Service":{"Service":"db","Port":5433}}`, db...)
	ts.mustOK(http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext-db","ServiceID":"cache"}`, root...)
	ts.mustOK(http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext-db"}`, db...)
	assertError(t, ts.do(http.MethodPut, "/v1/catalog/deregister", `{"Node":"ext-bare"}`, db...), 403, "permission_denied", "")
}
