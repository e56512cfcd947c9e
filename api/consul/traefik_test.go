package consul_test

import (
	"net/http"
	"strings"
	"testing"
)

// The requests in these tests were captured between Traefik v3.7.13 and a
// 3-node Beacon cluster (docs/consul.md, "Traefik").

// TestNamespaceAndPartitionOtherThanDefaultAreRefused: Traefik's
// consulCatalog provider with `namespaces: ["team-a", "default"]` runs one
// provider per namespace, whose Consul client adds ?ns= to every request.
// Beacon answered ?ns=team-a with the default namespace's catalog, so every
// route was built twice (consulcatalog-team-a and consulcatalog-default).
// Another namespace or partition is refused, in the query or in a header;
// "default" is the one Beacon has.
func TestNamespaceAndPartitionOtherThanDefaultAreRefused(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mustOK(http.MethodPut, "/v1/agent/service/register", `{"Name":"web","Port":80,"Tags":["traefik.enable=true"]}`)

	for _, target := range []string{
		"/v1/catalog/services?consistent=&dc=dc1&ns=team-a",
		"/v1/health/service/web?consistent=&dc=dc1&ns=team-a",
		"/v1/health/state/any?ns=team-a",
		"/v1/catalog/service/web?ns=team-a",
		"/v1/agent/services?ns=team-a",
	} {
		assertError(t, ts.do(http.MethodGet, target, ""), http.StatusBadRequest, "invalid", "ns")
	}
	for _, target := range []string{
		"/v1/catalog/services?consistent=&dc=dc1&ns=default",
		"/v1/health/service/web?consistent=&dc=dc1&ns=default",
		"/v1/catalog/services?partition=default",
		"/v1/catalog/services?ns=",
	} {
		if r := ts.mustOK(http.MethodGet, target, ""); !strings.Contains(string(r.body), "web") {
			t.Errorf("%s: %s", target, r)
		}
	}
	assertError(t, ts.do(http.MethodGet, "/v1/catalog/services?partition=p1", ""), http.StatusBadRequest, "invalid", "partition")
	assertError(t, ts.do(http.MethodGet, "/v1/catalog/services", "", "X-Consul-Namespace", "team-a"), http.StatusBadRequest, "invalid", "X-Consul-Namespace")
	assertError(t, ts.do(http.MethodGet, "/v1/health/service/web", "", "X-Consul-Partition", "p1"), http.StatusBadRequest, "invalid", "X-Consul-Partition")
	ts.mustOK(http.MethodGet, "/v1/health/service/web", "", "X-Consul-Namespace", "default")

	// A write for another namespace registers nothing in the default one.
	assertError(t, ts.do(http.MethodPut, "/v1/agent/service/register?ns=team-a", `{"Name":"api","Port":81}`), http.StatusBadRequest, "invalid", "ns")
	if r := ts.mustOK(http.MethodGet, "/v1/catalog/services", ""); strings.Contains(string(r.body), `"api"`) {
		t.Fatalf("a registration for namespace team-a landed in default: %s", r)
	}
}

// TestKVPathsAnswerNotImplemented: Beacon has no KV store. Traefik's KV
// provider (providers.consul, through kvtools/consul and the Consul client)
// reads a 404 from /v1/kv/ as "no such key" and blocks on the answer's
// X-Consul-Index; Beacon's 404 had none (0), so its watch asked again at
// once: 18,720 requests in 10 seconds, and nothing in Traefik's log. A 501
// is an error to the Consul client, which Traefik reports and backs off on.
func TestKVPathsAnswerNotImplemented(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, tc := range []struct{ method, target string }{
		// Traefik's connection check, its first read, then its watch.
		{http.MethodGet, "/v1/kv/traefik/qmslkjdfmqlskdjfmqlksjazcueznbvbwzlkajzebvkwjdcqmlsfj?consistent=&wait=3000ms"},
		{http.MethodGet, "/v1/kv/traefik?consistent=&recurse=&wait=3000ms"},
		{http.MethodGet, "/v1/kv/traefik?recurse=&wait=15000ms"},
		{http.MethodGet, "/v1/kv/"},
		{http.MethodGet, "/v1/kv/app/config?index=5"},
		{http.MethodPut, "/v1/kv/app/config"},
		{http.MethodDelete, "/v1/kv/app?recurse"},
	} {
		r := ts.do(tc.method, tc.target, "")
		assertError(t, r, http.StatusNotImplemented, "unsupported", "")
		if !strings.Contains(string(r.body), "no KV store") {
			t.Errorf("%s %s: %s", tc.method, tc.target, r)
		}
	}
}
