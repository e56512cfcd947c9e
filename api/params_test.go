package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// Unknown query parameters are refused as unknown body fields are (issue
// 19: ?limt=2 on an instance list returned all 21 instances).
func TestUnknownQueryParametersAreRefused(t *testing.T) {
	ts := newTestServer(t)
	ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 80})
	for _, tc := range []struct{ method, target, field string }{
		{http.MethodGet, "/v1/services/web/instances?limt=2", "limt"},
		{http.MethodGet, "/v1/services/web/instances?healthy=true&helthy=true", "helthy"},
		{http.MethodGet, "/v1/services/web/instances/web-1?limit=2", "limit"},
		{http.MethodGet, "/v1/services?verison=1.0.0", "verison"},
		{http.MethodGet, "/v1/checks?servce=web", "servce"},
		{http.MethodGet, "/v1/cluster/status?stale", "stale"},
		{http.MethodGet, "/v1/snapshot?consistent", "consistent"},
		{http.MethodPut, "/v1/services/web/instances/web-2?replace=1", "replace"},
		{http.MethodDelete, "/v1/services/web/instances/web-1?force", "force"},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			var body []byte
			if tc.method == http.MethodPut {
				body = []byte(`{"address":"10.0.0.2","port":80}`)
			}
			r := ts.do(tc.method, tc.target, body)
			assertError(t, r, http.StatusBadRequest, "invalid", tc.field)
			if !strings.Contains(string(r.body), "unknown query parameter") {
				t.Fatalf("error %s does not say what is wrong", r.body)
			}
		})
	}
	// Nothing was written by the refused PUT and DELETE.
	if got := ts.discover("web", ""); !slices.Equal(got, []string{"web-1"}) {
		t.Fatalf("instances after refused writes: %v", got)
	}
	// The parameters a route does take still work.
	for _, target := range []string{
		"/v1/services/web/instances?healthy=true&tag=a&meta=k:v&version=1.0.0&max_stale=5s&limit=5&cursor=a",
		"/v1/services?prefix=w&limit=1&cursor=a&tag=x&consistent",
		"/v1/checks?service=web&status=passing&owner=n1&instance=web-1&limit=1&cursor=x&index=1&wait=1ms",
		"/v1/snapshot?stale",
	} {
		if r := ts.do(http.MethodGet, target, nil); r.status != http.StatusOK {
			t.Fatalf("GET %s: %s", target, r)
		}
	}
}

// An exact version must look like one a registration may carry; anything
// else must parse as a range (issue 19: --version 'garbage!' listed nothing
// with exit 0).
func TestAVersionFilterThatIsNeitherAVersionNorARangeIsRefused(t *testing.T) {
	ts := newTestServer(t)
	for _, v := range []string{"garbage!", ">=1.0 <", "1.2.x.y.z!"} {
		assertError(t, ts.do(http.MethodGet, "/v1/services/web/instances?version="+url.QueryEscape(v), nil), http.StatusBadRequest, "invalid", "version")
	}
}

func TestInstanceAndCheckListsPage(t *testing.T) {
	ts := newTestServer(t)
	var ids []string
	for i := 0; i < 21; i++ {
		id := fmt.Sprintf("web-%02d", i)
		ids = append(ids, id)
		ts.register("web", id, client.Registration{Address: "10.0.0.1", Port: 1000 + i,
			Checks: []client.CheckDefinition{{Name: "ttl", TTL: client.Duration(time.Minute)}}})
	}
	walk := func(t *testing.T, path string, decode func([]byte) []string) []string {
		var walked []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 21 {
				t.Fatalf("more pages than items; walked %v", walked)
			}
			r := ts.do(http.MethodGet, path+"?limit=2&cursor="+url.QueryEscape(cursor), nil)
			if r.status != http.StatusOK {
				t.Fatalf("%s: %s", path, r)
			}
			got := decode(r.body)
			if len(got) > 2 {
				t.Fatalf("page of %d", len(got))
			}
			walked = append(walked, got...)
			next := r.header.Get(HeaderNextCursor)
			if next == "" {
				if pages != 10 {
					t.Fatalf("%d pages of 2 for 21 items, want 11", pages+1)
				}
				return walked
			}
			cursor = next
		}
	}
	t.Run("instances: pages of two walk every instance once, in ID order", func(t *testing.T) {
		walked := walk(t, "/v1/services/web/instances", func(b []byte) []string {
			var insts []client.Instance
			if err := json.Unmarshal(b, &insts); err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, i := range insts {
				out = append(out, i.ID)
			}
			return out
		})
		if !slices.Equal(walked, ids) {
			t.Fatalf("walked %v, want %v", walked, ids)
		}
	})
	t.Run("checks: pages of two walk every check once, in ID order", func(t *testing.T) {
		walked := walk(t, "/v1/checks", func(b []byte) []string {
			var checks []client.Check
			if err := json.Unmarshal(b, &checks); err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, c := range checks {
				out = append(out, c.Instance)
			}
			return out
		})
		if !slices.Equal(walked, ids) {
			t.Fatalf("walked %v, want %v", walked, ids)
		}
	})
	t.Run("limit=2 answers two and the cursor of the next page", func(t *testing.T) {
		count := func(r response) int {
			var insts []client.Instance
			if err := json.Unmarshal(r.body, &insts); err != nil {
				t.Fatal(err)
			}
			return len(insts)
		}
		r := ts.do(http.MethodGet, "/v1/services/web/instances?limit=2", nil)
		if n := count(r); n != 2 || r.header.Get(HeaderNextCursor) != "web-01" {
			t.Fatalf("limit=2: %d instances, next %q", n, r.header.Get(HeaderNextCursor))
		}
		if r := ts.do(http.MethodGet, "/v1/services/web/instances?limit=21", nil); count(r) != 21 || r.header.Get(HeaderNextCursor) != "" {
			t.Fatalf("limit=21: %d instances, next %q", count(r), r.header.Get(HeaderNextCursor))
		}
	})
	t.Run("a bad limit is refused", func(t *testing.T) {
		for _, l := range []string{"0", "-1", "x", "1001"} {
			assertError(t, ts.do(http.MethodGet, "/v1/checks?limit="+l, nil), http.StatusBadRequest, "invalid", "limit")
			assertError(t, ts.do(http.MethodGet, "/v1/services/web/instances?limit="+l, nil), http.StatusBadRequest, "invalid", "limit")
		}
	})
}

// Every answer of the API, errors included, carries client.HeaderAgent, so
// that the CLI can tell an agent from another HTTP server.
func TestEveryAnswerSaysItIsFromAnAgent(t *testing.T) {
	ts := newTestServer(t)
	for _, target := range []string{"/v1/services", "/v1/no/such/route", "/v1/services?bogus=1", "/healthz"} {
		if r := ts.do(http.MethodGet, target, nil); r.header.Get(client.HeaderAgent) == "" {
			t.Fatalf("GET %s (%d) has no %s header", target, r.status, client.HeaderAgent)
		}
	}
}
