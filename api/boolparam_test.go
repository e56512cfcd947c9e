package api

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// The spellings of a boolean query parameter, and what each means. Every
// boolean parameter of the native API reads them the same way (QA: a bare
// ?healthy was read as false, so discovery returned instances in
// maintenance).
var boolSpellings = []struct {
	query string // after the parameter's name
	on    bool
}{
	{"", true},
	{"=", true},
	{"=true", true},
	{"=1", true},
	{"=false", false},
	{"=0", false},
}

// junkSpellings are refused with 400, naming the parameter.
var junkSpellings = []string{"=yes", "=no", "=TRUE", "=2", "=on", "=%20"}

func TestHealthyFilterReadsEverySpellingTheSameWay(t *testing.T) {
	ts := newTestServer(t)
	ttl := []client.CheckDefinition{{Name: "ttl", TTL: client.Duration(time.Hour)}} // critical until reported
	ts.register("mix", "mix-ok", client.Registration{Address: "10.0.0.1", Port: 1})
	ts.register("mix", "mix-maint", client.Registration{Address: "10.0.0.2", Port: 1})
	ts.register("mix", "mix-crit", client.Registration{Address: "10.0.0.3", Port: 1, Checks: ttl})
	ts.register("down", "down-maint", client.Registration{Address: "10.0.0.4", Port: 1})
	ts.register("down", "down-crit", client.Registration{Address: "10.0.0.5", Port: 1, Checks: ttl})
	for _, p := range [][2]string{{"mix", "mix-maint"}, {"down", "down-maint"}} {
		r := ts.do(http.MethodPut, "/v1/services/"+p[0]+"/instances/"+p[1]+"/maintenance", []byte(`{"mode":"maintenance","reason":"qa"}`))
		if r.status != http.StatusOK {
			t.Fatalf("maintenance %s: %s", p[1], r)
		}
	}

	for _, sp := range boolSpellings {
		t.Run("healthy"+sp.query, func(t *testing.T) {
			wantInsts := []string{"mix-crit", "mix-maint", "mix-ok"}
			wantServices := []string{"down", "mix"}
			if sp.on {
				wantInsts, wantServices = []string{"mix-ok"}, []string{"mix"}
			}
			if got := ts.discover("mix", "healthy"+sp.query); !slices.Equal(got, wantInsts) {
				t.Errorf("instances?healthy%s: %v, want %v", sp.query, got, wantInsts)
			}
			// The parameter first and last: a bare one is read wherever it stands.
			if got := names(ts.services("healthy" + sp.query + "&prefix=")); !slices.Equal(got, wantServices) {
				t.Errorf("services?healthy%s&prefix=: %v, want %v", sp.query, got, wantServices)
			}
			if got := names(ts.services("prefix=&healthy" + sp.query)); !slices.Equal(got, wantServices) {
				t.Errorf("services?prefix=&healthy%s: %v, want %v", sp.query, got, wantServices)
			}
		})
	}
	for _, junk := range junkSpellings {
		t.Run("healthy"+junk+" is refused", func(t *testing.T) {
			assertError(t, ts.do(http.MethodGet, "/v1/services/mix/instances?healthy"+junk, nil), http.StatusBadRequest, "invalid", "healthy")
			assertError(t, ts.do(http.MethodGet, "/v1/services?healthy"+junk, nil), http.StatusBadRequest, "invalid", "healthy")
		})
	}
}

// consistent on every read route that takes it, and stale on GET
// /v1/snapshot: each spelling turns the leader round trip on or off (the
// fake cluster counts them).
func TestConsistentAndStaleReadEverySpellingTheSameWay(t *testing.T) {
	ts := newTestServer(t)
	ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 1})
	routes := []string{
		"/v1/services/web/instances",
		"/v1/services/web/instances/web-1",
		"/v1/services",
		"/v1/checks",
		"/v1/ui/summary",
		"/v1/ui/transitions",
	}
	// roundTrips reports whether GET target asked the leader for a read
	// index; the answer must be 200.
	roundTrips := func(t *testing.T, target string) bool {
		t.Helper()
		before := ts.cl.ConsistentReads()
		if r := ts.do(http.MethodGet, target, nil); r.status != http.StatusOK {
			t.Fatalf("GET %s: %s", target, r)
		}
		return ts.cl.ConsistentReads() > before
	}
	for _, route := range routes {
		for _, sp := range boolSpellings {
			target := route + "?consistent" + sp.query
			t.Run(target, func(t *testing.T) {
				if got := roundTrips(t, target); got != sp.on {
					t.Fatalf("GET %s asked the leader: %v, want %v", target, got, sp.on)
				}
			})
		}
		for _, junk := range junkSpellings {
			t.Run(route+"?consistent"+junk+" is refused", func(t *testing.T) {
				assertError(t, ts.do(http.MethodGet, route+"?consistent"+junk, nil), http.StatusBadRequest, "invalid", "consistent")
			})
		}
	}
	for _, sp := range boolSpellings {
		target := "/v1/snapshot?stale" + sp.query
		t.Run(target, func(t *testing.T) {
			// stale skips the round trip.
			if got := roundTrips(t, target); got != !sp.on {
				t.Fatalf("GET %s asked the leader: %v, want %v", target, got, !sp.on)
			}
		})
	}
	for _, junk := range junkSpellings {
		t.Run("/v1/snapshot?stale"+junk+" is refused", func(t *testing.T) {
			assertError(t, ts.do(http.MethodGet, "/v1/snapshot?stale"+junk, nil), http.StatusBadRequest, "invalid", "stale")
		})
	}
}
