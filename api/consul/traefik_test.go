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

// TestKVPathsAnswerAsAnEmptyStore replays the KV requests Traefik's KV
// provider (providers.consul, through kvtools/consul and the Consul client)
// sent. Beacon has no KV store; its first answer, a 404 without an
// X-Consul-Index (0), made that watch ask again at once: 18,720 requests in
// 10 seconds, and nothing in Traefik's log. Every read now answers as Consul
// does for an absent key, with index 1 to block on (kv.go), and writes are
// refused with a 501.
func TestKVPathsAnswerAsAnEmptyStore(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, tc := range []struct {
		method, target string
		status         int
	}{
		// Traefik's connection check, its first read, then its watch.
		{http.MethodGet, "/v1/kv/traefik/qmslkjdfmqlskdjfmqlksjazcueznbvbwzlkajzebvkwjdcqmlsfj?consistent=&wait=3000ms", http.StatusNotFound},
		{http.MethodGet, "/v1/kv/traefik?consistent=&recurse=&wait=3000ms", http.StatusNotFound},
		{http.MethodGet, "/v1/kv/traefik?recurse=&wait=15000ms", http.StatusNotFound},
		{http.MethodGet, "/v1/kv/", http.StatusNotFound},
		{http.MethodGet, "/v1/kv/app/config?index=5", http.StatusNotFound},
		{http.MethodPut, "/v1/kv/app/config", http.StatusNotImplemented},
		{http.MethodDelete, "/v1/kv/app?recurse", http.StatusNotImplemented},
	} {
		r := ts.do(tc.method, tc.target, "")
		if r.status != tc.status || !strings.Contains(string(r.body), "no KV store") {
			t.Errorf("%s %s: %s; want %d naming the missing KV store", tc.method, tc.target, r, tc.status)
		}
		if tc.status == http.StatusNotFound && r.header.Get("X-Consul-Index") != "1" {
			t.Errorf("%s %s: X-Consul-Index %q, want 1 (an index to block on)", tc.method, tc.target, r.header.Get("X-Consul-Index"))
		}
	}
}
