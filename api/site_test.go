package api

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api/client"
)

// TestSiteRulesRefuseWebPagesAndKeepClientsWorking drives the API through
// real HTTP with what a browser sends cross-site or after DNS rebinding, and
// with what the CLI, the Go client and curl send.
func TestSiteRulesRefuseWebPagesAndKeepClientsWorking(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Site.AllowedHosts = []string{"n1", "10.0.0.7"}
		c.Site.AllowedOrigins = []string{"https://dash.example"}
	})
	body := mustJSON(t, client.Registration{Address: "10.0.0.1", Port: 80})
	cases := []struct {
		name    string
		method  string
		host    string
		headers map[string]string
		body    []byte
		status  int
		code    string
	}{
		{"the Go client's register", "PUT", "", map[string]string{"Content-Type": "application/json"}, body, 200, ""},
		{"JSON with a charset", "PUT", "", map[string]string{"Content-Type": "application/json; charset=utf-8"}, body, 200, ""},
		{"a text/plain body", "PUT", "", map[string]string{"Content-Type": "text/plain"}, body, 415, "unsupported_media_type"},
		{"a form body (curl -d)", "PUT", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, body, 415, "unsupported_media_type"},
		{"a body without a type", "PUT", "", nil, body, 415, "unsupported_media_type"},
		{"a same-origin request (a UI on the agent)", "PUT", "", map[string]string{"Content-Type": "application/json", "Origin": "SELF", "Sec-Fetch-Site": "same-origin"}, body, 200, ""},
		{"an allowed origin", "PUT", "", map[string]string{"Content-Type": "application/json", "Origin": "https://dash.example"}, body, 200, ""},
		{"a user typing the URL", "GET", "", map[string]string{"Sec-Fetch-Site": "none"}, nil, 200, ""},
		{"a cross-site origin", "PUT", "", map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, body, 403, "cross_site"},
		{"another port of the same host", "PUT", "", map[string]string{"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"}, body, 403, "cross_site"},
		{"Sec-Fetch-Site cross-site", "GET", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, nil, 403, "cross_site"},
		{"Sec-Fetch-Site same-site", "GET", "", map[string]string{"Sec-Fetch-Site": "same-site"}, nil, 403, "cross_site"},
		{"a rebound Host", "GET", "evil.example", nil, nil, 403, "host_not_allowed"},
		{"a rebound Host with the agent's port", "PUT", "rebind.evil.example:8750", map[string]string{"Content-Type": "application/json"}, body, 403, "host_not_allowed"},
		{"localhost", "GET", "localhost:8750", nil, nil, 200, ""},
		{"a *.localhost name", "GET", "web.localhost", nil, nil, 200, ""},
		{"IPv6 loopback", "GET", "[::1]:8750", nil, nil, 200, ""},
		{"another loopback address", "GET", "127.1.2.3", nil, nil, 200, ""},
		{"the agent's name", "GET", "N1:8750", nil, nil, 200, ""},
		{"the agent's address", "GET", "10.0.0.7:8750", nil, nil, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, ts.url+"/v1/services/web/instances/web-1", bytes.NewReader(tc.body))
			if tc.method == "GET" {
				req, err = http.NewRequest(tc.method, ts.url+"/v1/services", nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.headers {
				if v == "SELF" {
					v = ts.url
				}
				req.Header.Set(k, v)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := ts.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			r := response{status: resp.StatusCode, header: resp.Header, body: b.Bytes()}
			if tc.code == "" {
				if r.status != tc.status {
					t.Fatalf("got %s, want %d", r, tc.status)
				}
				return
			}
			assertError(t, r, tc.status, tc.code, "")
		})
	}
	t.Run("with auth on any Host is accepted (a rebinding page has no token)", func(t *testing.T) {
		g := newSiteGuard(SiteConfig{}, true)
		r := httptest.NewRequest("GET", "/v1/services", nil)
		r.Host = "evil.example"
		if err := g.check(r); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a snapshot upload takes its own media types, JSON elsewhere", func(t *testing.T) {
		g := newSiteGuard(SiteConfig{}, true)
		for _, tc := range []struct {
			path, ct string
			ok       bool
		}{
			{"/v1/snapshot", client.SnapshotContentType, true},
			{"/v1/snapshot", "application/octet-stream", true},
			{"/v1/snapshot", "application/json", false},
			{"/v1/tokens", "application/json", true},
			{"/v1/tokens", client.SnapshotContentType, false},
		} {
			r := httptest.NewRequest("PUT", tc.path, strings.NewReader("x"))
			r.Header.Set("Content-Type", tc.ct)
			if err := g.check(r); (err == nil) != tc.ok {
				t.Errorf("PUT %s as %s: %v", tc.path, tc.ct, err)
			}
		}
	})
	t.Run("BodyTypes lets another package decide its paths", func(t *testing.T) {
		g := newSiteGuard(SiteConfig{BodyTypes: map[string][]string{"/v1/agent/": nil, "/v1/snapshot": {client.SnapshotContentType}}}, true)
		r := httptest.NewRequest("PUT", "/v1/agent/service/register", strings.NewReader("{}"))
		if err := g.check(r); err != nil {
			t.Fatalf("a path with no media type rule: %v", err)
		}
		r.Header.Set("Origin", "http://evil.example")
		if err := g.check(r); err == nil {
			t.Fatal("the Origin rule does not apply to it")
		}
	})
}

// TestRegistrationRulesOfIssue15 checks the registration rules over real
// HTTP: addresses no proxy may dial, route prefixes and check targets, with
// and without privilege, and the 413 before reading.
func TestRegistrationRulesOfIssue15(t *testing.T) {
	open := newTestServer(t)
	trusted := newTestServer(t, func(c *Config) { c.TrustOpenRegistrations = true })
	allowing := newTestServer(t, func(c *Config) { c.CheckAllowCIDRs = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")} })
	for _, ts := range []*testServer{open, trusted} {
		ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 80})
	}
	reg := func(addr string, meta map[string]string, checks ...client.CheckDefinition) []byte {
		return mustJSON(t, client.Registration{Address: addr, Port: 80, Meta: meta, Checks: checks})
	}
	cases := []struct {
		name   string
		ts     *testServer
		body   []byte
		status int
		code   string
		field  string
	}{
		{"0.0.0.0", open, reg("0.0.0.0", nil), 400, "invalid", "address"},
		{"::", open, reg("::", nil), 400, "invalid", "address"},
		{"multicast", open, reg("239.1.1.1", nil), 400, "invalid", "address"},
		{"broadcast", open, reg("255.255.255.255", nil), 400, "invalid", "address"},
		{"a private address", open, reg("10.0.0.5", nil), 200, "", ""},
		{"a prefix in /api", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api/v2"}), 200, "", ""},
		{"a prefix outside /api", open, reg("10.0.0.5", map[string]string{"route_prefix": "/web"}), 403, "permission_denied", ""},
		{"a prefix outside /api, trusted lab", trusted, reg("10.0.0.5", map[string]string{"route_prefix": "/shop"}), 200, "", ""},
		{"a prefix over another service, trusted lab", trusted, reg("10.0.0.5", map[string]string{"route_prefix": "/web"}), 400, "invalid", "meta.route_prefix"},
		{"a prefix of /", trusted, reg("10.0.0.5", map[string]string{"route_prefix": "//"}), 400, "invalid", "meta.route_prefix"},
		{"a prefix that climbs out of /api", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api/../web-z"}), 400, "invalid", "meta.route_prefix"},
		{"a prefix that climbs out of /api, escaped", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api/%2e%2E/web-z"}), 400, "invalid", "meta.route_prefix"},
		{"a prefix with half an escaped dot-dot", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api/.%2e"}), 400, "invalid", "meta.route_prefix"},
		{"a prefix with a dot segment", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api/./v2"}), 400, "invalid", "meta.route_prefix"},
		{"a prefix with an empty segment", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api//v2"}), 400, "invalid", "meta.route_prefix"},
		{"a prefix with an escaped slash", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api%2F..%2Fweb-z"}), 400, "invalid", "meta.route_prefix"},
		{"a prefix with a bad escape", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api/%zz"}), 400, "invalid", "meta.route_prefix"},
		{"a dot-dot prefix, trusted lab", trusted, reg("10.0.0.5", map[string]string{"route_prefix": "/shop/.."}), 400, "invalid", "meta.route_prefix"},
		{"a prefix with dots inside a segment", open, reg("10.0.0.5", map[string]string{"route_prefix": "/api/v1.2..3/.well"}), 200, "", ""},
		{"a check of the instance", open, reg("10.0.0.5", nil, client.CheckDefinition{HTTP: "http://10.0.0.5:80/health"}), 200, "", ""},
		{"a check by name (decided at probe time)", open, reg("10.0.0.5", nil, client.CheckDefinition{HTTP: "http://api.internal:80/health"}), 200, "", ""},
		{"a check of another host", open, reg("10.0.0.5", nil, client.CheckDefinition{HTTP: "http://127.0.0.1:8750/metrics"}), 403, "permission_denied", ""},
		{"a TCP check of another host", open, reg("10.0.0.5", nil, client.CheckDefinition{TCP: "10.0.0.6:22"}), 403, "permission_denied", ""},
		{"a check of another host, trusted lab", trusted, reg("10.0.0.5", nil, client.CheckDefinition{TCP: "10.0.0.6:22"}), 200, "", ""},
		{"a check in --check-allow-cidr", allowing, reg("10.0.0.5", nil, client.CheckDefinition{TCP: "10.9.1.1:22"}), 200, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotCatalog(tc.ts.api.store)
			r := tc.ts.do("PUT", "/v1/services/api/instances/api-1", tc.body)
			if tc.code == "" {
				if r.status != tc.status {
					t.Fatalf("got %s", r)
				}
				return
			}
			assertError(t, r, tc.status, tc.code, tc.field)
			tc.ts.assertUnchanged(before)
		})
	}
	t.Run("a trusted registration is shown and marks its checks", func(t *testing.T) {
		if r := trusted.do("PUT", "/v1/services/api/instances/api-2", reg("10.0.0.5", map[string]string{"route_prefix": "/shop"}, client.CheckDefinition{TCP: "10.0.0.6:22"})); r.status != 200 {
			t.Fatalf("trusted registration: %s", r)
		}
		_, inst, checks := trusted.api.store.Instance(nil, "api", "api-2")
		if inst == nil || !inst.Trusted || len(checks) != 1 || !checks[0].AnyTarget {
			t.Fatalf("instance %+v checks %+v", inst, checks)
		}
	})
	t.Run("an identical re-registration does not reach Raft", func(t *testing.T) {
		body := reg("10.0.0.8", nil)
		open.do("PUT", "/v1/services/api/instances/api-3", body)
		last := open.cl.Store().LastIndex()
		r := open.do("PUT", "/v1/services/api/instances/api-3", body)
		if r.status != 200 || open.cl.Store().LastIndex() != last {
			t.Fatalf("got %s; catalog index %d -> %d", r, last, open.cl.Store().LastIndex())
		}
	})
}

// FuzzSiteGuard: whatever the headers, the guard answers nil or a 4xx
// error, and never lets a request through whose Sec-Fetch-Site says
// cross-site or whose Origin is foreign.
func FuzzSiteGuard(f *testing.F) {
	f.Add("PUT", "/v1/services/web/instances/w1", "127.0.0.1:8750", "", "", "application/json", false)
	f.Add("POST", "/v1/cluster/leave", "evil.example", "http://evil.example", "cross-site", "text/plain", false)
	f.Add("PUT", "/v1/snapshot", "[::1]:1", "http://[::1]:1", "same-origin", "application/octet-stream", true)
	f.Add("GET", "/v1/services", "LOCALHOST.", "null", "none", "", true)
	f.Fuzz(func(t *testing.T, method, path, host, origin, fetchSite, ct string, authOn bool) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		r, err := http.NewRequest(method, "http://x"+path, strings.NewReader("{}"))
		if err != nil {
			return
		}
		r.Host = host
		for k, v := range map[string]string{"Origin": origin, "Sec-Fetch-Site": fetchSite, "Content-Type": ct} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		g := newSiteGuard(SiteConfig{AllowedHosts: []string{"n1"}}, authOn)
		err = g.check(r)
		if err != nil {
			if st, _, _ := statusOf(err); st < 400 || st > 499 {
				t.Fatalf("status %d for %v", st, err)
			}
			return
		}
		if s := strings.ToLower(fetchSite); s == "cross-site" || s == "same-site" {
			t.Fatalf("Sec-Fetch-Site %q let through", fetchSite)
		}
		if origin != "" && !strings.EqualFold(origin, "http://"+host) {
			t.Fatalf("Origin %q let through to Host %q", origin, host)
		}
	})
}

// TestHostAllowedCacheAnswersAsTheCheck: hostAllowed remembers its answers
// for up to maxSeenHosts Host values; asked again, and past the bound, it
// answers as the check itself does.
func TestHostAllowedCacheAnswersAsTheCheck(t *testing.T) {
	g := newSiteGuard(SiteConfig{AllowedHosts: []string{"beacon.example", "10.1.2.3"}}, false)
	hosts := []string{"127.0.0.1:8500", "[::1]:8500", "localhost", "LOCALHOST:1", "a.localhost", "beacon.example",
		"Beacon.Example.:80", "10.1.2.3:8500", "[::ffff:10.1.2.3]:1", "evil.example", "10.1.2.4", "127.0.0.1.evil.example"}
	for i := 0; i < 2*maxSeenHosts; i++ {
		hosts = append(hosts, fmt.Sprintf("h%d.example:%d", i, i), fmt.Sprintf("127.0.%d.%d:1", i/256, i%256))
	}
	for round := 0; round < 2; round++ {
		for _, h := range hosts {
			if got, want := g.hostAllowed(h), g.hostAllowedNow(h); got != want {
				t.Fatalf("round %d: hostAllowed(%q) = %v, the check says %v", round, h, got, want)
			}
		}
	}
	for h, want := range map[string]bool{"127.0.0.1:8500": true, "beacon.example": true, "10.1.2.3:8500": true, "evil.example": false, "10.1.2.4": false} {
		if got := g.hostAllowed(h); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", h, got, want)
		}
	}
	if n := g.nseen.Load(); n > maxSeenHosts {
		t.Errorf("%d hosts remembered, more than %d", n, maxSeenHosts)
	}
}
