package consul_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/consul"
)

// TestKVReadsAnswerAbsentWithAnIndex: Beacon has no KV store, and the
// Consul client reads a 404 under /v1/kv/ as "absent", so tools that watch
// keys (consul-template's key and keyOrDefault, fabio's manual routes, both
// on by default in fabio) keep asking. Before, the 404 came without
// X-Consul-Index: they never had an index to block on and asked again at
// once, forever (consul-template about 9 requests a second per key; fabio
// with no pause at all). Now every read is Consul's answer for an absent
// key, index 1, and a blocking read at that index waits out its wait.
func TestKVReadsAnswerAbsentWithAnIndex(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, target := range []string{"/v1/kv/config/a", "/v1/kv/config?recurse=", "/v1/kv/config/?keys=&separator=/", "/v1/kv/?recurse", "/v1/kv/x?stale", "/v1/kv/x?consistent", "/v1/kv/x?index=7&wait=1m"} {
		r := ts.do(http.MethodGet, target, "")
		assertError(t, r, http.StatusNotFound, "not_found", "")
		if got := r.index(t); got != 1 {
			t.Errorf("%s: X-Consul-Index %d, want 1", target, got)
		}
		if r.header.Get("X-Consul-KnownLeader") == "" || r.header.Get("X-Consul-LastContact") == "" {
			t.Errorf("%s: no read headers: %v", target, r.header)
		}
	}
	// A blocking read at the index waits out its wait (the lower bound
	// only: a slow machine may answer later, never sooner).
	start := time.Now()
	r := ts.do(http.MethodGet, "/v1/kv/config/a?index=1&wait=300ms", "")
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("a blocking read at index 1 answered after %v, before its wait of 300ms", took)
	}
	assertError(t, r, http.StatusNotFound, "not_found", "")
	if r.index(t) != 1 {
		t.Errorf("blocking read: index %d", r.index(t))
	}
	// Writes are refused, clearly, not taken for an absent key.
	assertError(t, ts.do(http.MethodPut, "/v1/kv/config/a", "value"), http.StatusNotImplemented, "unsupported", "")
	assertError(t, ts.do(http.MethodDelete, "/v1/kv/config?recurse", ""), http.StatusNotImplemented, "unsupported", "")
}

// TestKVReadsNeedAReadToken: with anonymous reads off, a KV read needs a
// token like any other read.
func TestKVReadsNeedAReadToken(t *testing.T) {
	ts := newTestServer(t, func(ac *api.Config, _ *consul.Config) {
		ac.Auth = api.AuthConfig{ManagementTokenHash: api.HashToken("root")}
	})
	assertError(t, ts.do(http.MethodGet, "/v1/kv/config/a", ""), http.StatusUnauthorized, "unauthenticated", "")
	assertError(t, ts.do(http.MethodGet, "/v1/kv/config/a", "", "X-Consul-Token", "wrong"), http.StatusForbidden, "invalid_token", "")
	r := ts.do(http.MethodGet, "/v1/kv/config/a", "", "X-Consul-Token", "root")
	assertError(t, r, http.StatusNotFound, "not_found", "")
}
