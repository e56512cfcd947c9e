package consul_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// discardWriter is the cheapest http.ResponseWriter, so that the handler's
// own work is what a benchmark counts.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

// benchCatalog is a 10-instance service, each with a TTL check, 2 of them
// critical, on a known node: the same catalog for both paths.
func benchCatalog(b testing.TB) *testServer {
	ts := newTestServer(b, nil)
	ts.addNode("node1", fsm.NodeAlive)
	for i := range 10 {
		id := fmt.Sprintf("web-%d", i)
		ts.applyCmd(fsm.RegisterType, &fsm.RegisterRequest{
			ID: id, Service: "web", Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 8080,
			Tags: []string{"v1", fmt.Sprintf("t%d", i%2)}, Meta: map[string]string{"zone": "a"}, Version: "1.2.3",
			Weight: 1, Node: "node1", Time: 1,
			Checks: []fsm.CheckDefinition{{Name: "service", Type: fsm.CheckTTL, TTL: int64(time.Minute), InitialStatus: fsm.Critical}},
		})
		if i%4 != 3 {
			ts.applyCmd(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Updates: []fsm.CheckUpdate{{Check: fsm.CheckID("web", id, "service"), Status: fsm.Passing}}, Time: 2})
		}
	}
	return ts
}

// BenchmarkConsulVsNative measures one discovery read of a 10-instance
// service through the agent's HTTP handler (no network), on Beacon's own
// route and on Consul's, in the same run: path=native is GET
// /v1/services/web/instances, path=consul is GET /v1/health/service/web
// (what Prometheus, fabio and Spring send). The Consul answer is larger
// (each entry carries its node and checks); docs/consul.md has the ratio.
func BenchmarkConsulVsNative(b *testing.B) {
	ts := benchCatalog(b)
	h := ts.api.Handler()
	for _, c := range []struct{ name, url string }{
		{"path=native/all", "/v1/services/web/instances"},
		{"path=consul/all", "/v1/health/service/web"},
		{"path=native/passing", "/v1/services/web/instances?healthy=true"},
		{"path=consul/passing", "/v1/health/service/web?passing=1"},
	} {
		b.Run(c.name, func(b *testing.B) {
			req, _ := http.NewRequest(http.MethodGet, c.url, nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}

// TestBenchCatalogAnswersBothPaths keeps the benchmark honest: both paths
// answer 200 with the same instances (8 of them passing).
func TestBenchCatalogAnswersBothPaths(t *testing.T) {
	ts := benchCatalog(t)
	for _, c := range []struct {
		native, consul string
		want           int
	}{{"/v1/services/web/instances", "/v1/health/service/web", 10}, {"/v1/services/web/instances?healthy=true", "/v1/health/service/web?passing=1", 8}} {
		var n []client.Instance
		ts.mustOK(http.MethodGet, c.native, "").decode(t, &n)
		var e []entry
		ts.mustOK(http.MethodGet, c.consul, "").decode(t, &e)
		if len(n) != c.want || len(e) != c.want {
			t.Fatalf("%s: %d, %s: %d, want %d", c.native, len(n), c.consul, len(e), c.want)
		}
		for i := range n {
			if n[i].ID != e[i].Service.ID || n[i].Address != e[i].Service.Address {
				t.Fatalf("instance %d: %+v vs %+v", i, n[i], e[i].Service)
			}
		}
	}
}

// BenchmarkConsulRatio alternates a native and a Consul discovery read of
// the same service in one loop, so that both see the same machine load,
// and reports their cost and the ratio consul/native (the bound is
// 1.3). query=all reads every instance, query=passing the passing ones.
func BenchmarkConsulRatio(b *testing.B) {
	ts := benchCatalog(b)
	h := ts.api.Handler()
	for _, c := range []struct{ name, native, consul string }{
		{"query=all", "/v1/services/web/instances", "/v1/health/service/web"},
		{"query=passing", "/v1/services/web/instances?healthy=true", "/v1/health/service/web?passing=1"},
	} {
		b.Run(c.name, func(b *testing.B) {
			nreq, _ := http.NewRequest(http.MethodGet, c.native, nil)
			creq, _ := http.NewRequest(http.MethodGet, c.consul, nil)
			w := &discardWriter{h: http.Header{}}
			var native, consul time.Duration
			for b.Loop() {
				clear(w.h)
				t0 := time.Now()
				h.ServeHTTP(w, nreq)
				t1 := time.Now()
				clear(w.h)
				h.ServeHTTP(w, creq)
				t2 := time.Now()
				native += t1.Sub(t0)
				consul += t2.Sub(t1)
			}
			b.ReportMetric(float64(native.Nanoseconds())/float64(b.N), "native-ns/read")
			b.ReportMetric(float64(consul.Nanoseconds())/float64(b.N), "consul-ns/read")
			b.ReportMetric(float64(consul)/float64(native), "consul/native")
		})
	}
}
