package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

func TestTheUIIsServedWithSecurityHeaders(t *testing.T) {
	ts := newTestServer(t, nil)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(ts.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET / answered %d Location %q, want 302 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	cases := []struct {
		path, status, ctype, contains string
	}{
		{"/ui/", "200", "text/html; charset=utf-8", `<script type="module" src="js/app.js">`},
		{"/ui/js/app.js", "200", "text/javascript; charset=utf-8", "import"},
		{"/ui/style.css", "200", "text/css; charset=utf-8", "--bg"},
		{"/ui/missing.js", "404", "", ""},
		// Pages are routed in the fragment: any other path is no page (its
		// relative asset links would miss and leave it on "Loading…").
		{"/ui/services/web", "404", "", ""},
		{"/ui/js/", "404", "", ""},
		{"/ui/foo/", "404", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			r := ts.get(t, tc.path)
			if got := http.StatusText(r.status); r.status != atoi(t, tc.status) {
				t.Fatalf("status %d (%s), want %s", r.status, got, tc.status)
			}
			csp := r.header.Get("Content-Security-Policy")
			if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Fatalf("CSP %q", csp)
			}
			if r.header.Get("X-Frame-Options") != "DENY" || r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("headers %v", r.header)
			}
			if tc.ctype != "" && r.header.Get("Content-Type") != tc.ctype {
				t.Fatalf("Content-Type %q, want %q", r.header.Get("Content-Type"), tc.ctype)
			}
			if !strings.Contains(string(r.body), tc.contains) {
				t.Fatalf("body lacks %q", tc.contains)
			}
		})
	}
	t.Run("an unchanged file is not sent again", func(t *testing.T) {
		first := ts.get(t, "/ui/js/app.js")
		req, _ := http.NewRequest(http.MethodGet, ts.base+"/ui/js/app.js", nil)
		req.Header.Set("If-None-Match", first.header.Get("ETag"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Fatalf("status %d, want 304", resp.StatusCode)
		}
	})
}

func atoi(t *testing.T, s string) int {
	var n int
	if err := json.Unmarshal([]byte(s), &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUIWatchBlocksUntilTheCatalogMoves(t *testing.T) {
	ts := newTestServer(t, nil)
	idx := ts.register(t, inst{id: "web-1", service: "web"})
	r := ts.get(t, "/v1/ui/watch")
	var got client.WriteResult
	if err := json.Unmarshal(r.body, &got); err != nil || got.Index != idx || r.index != idx {
		t.Fatalf("watch answered %s (header %d), want index %d", r.body, r.index, idx)
	}
	ch := ts.blocked(t, "/v1/ui/watch?index="+r.header.Get(api.HeaderIndex)+"&wait=30s")
	notYet(t, ch, "nothing was applied")
	next := ts.register(t, inst{id: "api-1", service: "api"}) // another service wakes it too
	r = receive(t, ch)
	if r.status != http.StatusOK || r.index != next {
		t.Fatalf("watch answered %d index %d, want 200 index %d", r.status, r.index, next)
	}
}

func TestUISummaryCountsInstancesByHealth(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.register(t, inst{id: "web-1", service: "web"})
	ts.register(t, inst{id: "web-2", service: "web", health: fsm.Warning})
	ts.register(t, inst{id: "api-1", service: "api", health: fsm.Critical})
	var got api.Summary
	if err := json.Unmarshal(ts.get(t, "/v1/ui/summary").body, &got); err != nil {
		t.Fatal(err)
	}
	want := api.Summary{Services: 2, Instances: 3, Passing: 1, Warning: 1, Critical: 1}
	if got != want {
		t.Fatalf("summary %+v, want %+v", got, want)
	}
}

func TestUITransitionsAreNewestFirstAndLimited(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.register(t, inst{id: "web-1", service: "web", health: fsm.Passing})
	ts.register(t, inst{id: "api-1", service: "api", health: fsm.Passing})
	ts.setHealth(t, "web", "web-1", fsm.Critical, "first")
	ts.setHealth(t, "api", "api-1", fsm.Warning, "second <b>")
	ts.setHealth(t, "web", "web-1", fsm.Passing, "third")
	var got []api.InstanceTransition
	if err := json.Unmarshal(ts.get(t, "/v1/ui/transitions?limit=2").body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Output != "third" || got[1].Output != "second <b>" || got[1].Service != "api" || got[1].Instance != "api-1" || got[1].To != "warning" {
		t.Fatalf("transitions %+v", got)
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x"} {
		r := ts.get(t, "/v1/ui/transitions?"+q)
		if e := r.errorBody(t); r.status != http.StatusBadRequest || e.Field != "limit" {
			t.Fatalf("%s: %d %+v", q, r.status, e)
		}
	}
}

func TestStatusFilterOnServicesAndDiscovery(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.register(t, inst{id: "web-1", service: "web"})
	ts.register(t, inst{id: "web-2", service: "web", health: fsm.Critical})
	ts.register(t, inst{id: "api-1", service: "api", health: fsm.Warning})
	if ids := ts.get(t, "/v1/services/web/instances?status=critical").ids(t); len(ids) != 1 || ids[0] != "web-2" {
		t.Fatalf("critical web instances %v", ids)
	}
	var list client.ServiceList
	if err := json.Unmarshal(ts.get(t, "/v1/services?status=warning").body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Services) != 1 || list.Services[0].Name != "api" {
		t.Fatalf("services with a warning instance: %+v", list.Services)
	}
	r := ts.get(t, "/v1/services?status=sick")
	if e := r.errorBody(t); r.status != http.StatusBadRequest || e.Field != "status" {
		t.Fatalf("status=sick: %d %+v", r.status, e)
	}
}

// TestUILoadBalancersAreFetchedOnlyAtTheirStatusPath serves a fake
// balancer admin and checks that the agent asks it for /lb/status only,
// whatever the UI's request carries, and reports failures per balancer.
func TestUILoadBalancersAreFetchedOnlyAtTheirStatusPath(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"services":[{"service":"web","panic":true}]}` + "\n"))
	}))
	defer good.Close()
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<html>not json</html>"))
	}))
	defer html.Close()
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	ts := newTestServer(t, func(c *api.Config) {
		c.UILoadBalancers = func() []string { return []string{addr(good), addr(html), "not an address"} }
	})
	if r := ts.get(t, "/v1/ui/lbs?addr=10.0.0.1:80"); r.status != http.StatusBadRequest {
		t.Fatalf("a parameter was accepted: %d", r.status)
	}
	r := ts.get(t, "/v1/ui/lbs")
	var got []api.LBReport
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
	if len(got) != 3 {
		t.Fatalf("reports %s", r.body)
	}
	if got[0].Error != "" || !strings.Contains(string(got[0].Status), `"panic":true`) {
		t.Fatalf("good LB: %+v", got[0])
	}
	if got[1].Error == "" || got[1].Status != nil {
		t.Fatalf("an HTML answer was passed on: %+v", got[1])
	}
	if got[2].Error == "" {
		t.Fatalf("a bad address was fetched: %+v", got[2])
	}
	// One service's table: the name is checked, then passed on escaped.
	if r := ts.get(t, "/v1/ui/lbs?service=..%2Fx"); r.status != http.StatusBadRequest {
		t.Fatalf("a bad service name was accepted: %d", r.status)
	}
	if r := ts.get(t, "/v1/ui/lbs?service=web"); r.status != http.StatusOK {
		t.Fatalf("service=web: %d %s", r.status, r.body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) != 2 || paths[0] != "GET /lb/status" || paths[1] != "GET /lb/status?service=web" {
		t.Fatalf("the balancer was asked %v", paths)
	}
}

func TestUIWhoamiTellsWhetherATokenIsNeeded(t *testing.T) {
	ts := newTestServer(t, func(c *api.Config) {
		c.Auth = api.AuthConfig{ManagementTokenHash: api.HashToken("secret-management")}
	})
	who := func(tok string) api.Whoami {
		req, _ := http.NewRequest(http.MethodGet, ts.base+"/v1/ui/whoami", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("whoami answered %d", resp.StatusCode)
		}
		var w api.Whoami
		if err := json.NewDecoder(resp.Body).Decode(&w); err != nil {
			t.Fatal(err)
		}
		return w
	}
	if w := who(""); !w.Auth || w.AnonymousRead || w.Policy != "" || w.Error != "" {
		t.Fatalf("anonymous: %+v", w)
	}
	if w := who("secret-management"); w.Policy != api.PolicyManagement || w.Error != "" {
		t.Fatalf("management: %+v", w)
	}
	if w := who("wrong"); w.Error == "" || w.Policy != "" {
		t.Fatalf("wrong token: %+v", w)
	}
	// The UI's data stays closed without a token.
	if r := ts.get(t, "/v1/ui/summary"); r.status != http.StatusUnauthorized {
		t.Fatalf("summary without a token: %d", r.status)
	}
}
