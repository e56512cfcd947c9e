package api

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRequestSeriesAreBoundedAndCounted: the resolved series (httpMetrics.of)
// count into the same series as the vectors, a client's made-up methods
// share one "OTHER" series, and past maxRouteKeys new keys still count.
func TestRequestSeriesAreBoundedAndCounted(t *testing.T) {
	m := newHTTPMetrics()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.collectors()...)
	for i := 0; i < 3; i++ {
		m.inflight.Inc()
		m.answered("GET /v1/services", http.MethodGet, 200)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("GET /v1/services", "GET", "200")); got != 3 {
		t.Fatalf("GET 200 counted %v times, want 3", got)
	}
	for i := 0; i < 1000; i++ {
		m.inflight.Inc()
		m.answered("unmatched", fmt.Sprintf("M%d", i), 405)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("unmatched", "OTHER", "405")); got != 1000 {
		t.Fatalf("made-up methods counted %v times under OTHER, want 1000", got)
	}
	// Many routes and codes: more keys than are kept resolved.
	for i := 0; i < 2*maxRouteKeys; i++ {
		m.of(fmt.Sprintf("route-%d", i), http.MethodGet, 200).requests.Inc()
	}
	if n := len(*m.resolved.Load()); n > maxRouteKeys {
		t.Fatalf("%d series kept resolved, want at most %d", n, maxRouteKeys)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues(fmt.Sprintf("route-%d", 2*maxRouteKeys-1), "GET", "200")); got != 1 {
		t.Fatalf("a series past the kept ones counted %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.requests); got != 2+2*maxRouteKeys {
		t.Fatalf("%d request series, want %d (no series per made-up method)", got, 2+2*maxRouteKeys)
	}
}
