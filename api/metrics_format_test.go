package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// A scraper that asks for OpenMetrics (as Prometheus does) gets it: the
// content type, the closing "# EOF", and a body Prometheus' decoder reads.
func TestMetricsServeOpenMetricsWhenAsked(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, func(c *Config) { c.Metrics, c.Gatherer = reg, reg })
	ts.do(http.MethodGet, "/v1/services", nil) // a request series to expose
	for _, accept := range []string{
		"application/openmetrics-text;version=1.0.0",
		"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
	} {
		req, err := http.NewRequest(http.MethodGet, ts.url+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", accept)
		resp, err := ts.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
			t.Fatalf("Accept %q: Content-Type %q, want OpenMetrics", accept, ct)
		}
		if !bytes.HasSuffix(body, []byte("# EOF\n")) {
			t.Fatalf("Accept %q: the body does not end with # EOF:\n%s", accept, body)
		}
		dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.ResponseFormat(resp.Header))
		found := false
		for {
			var f dto.MetricFamily
			if err := dec.Decode(&f); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("Accept %q: decoding: %v\n%s", accept, err, body)
			}
			found = found || f.GetName() == "beacon_http_requests_total"
		}
		if !found {
			t.Fatalf("Accept %q: no beacon_http_requests_total in\n%s", accept, body)
		}
	}
}

// Every request no route took, an unknown path or a known path with a
// method it does not take, is counted under route "unmatched"
// (docs/metrics.md), never under the catch-all's pattern.
func TestUnmatchedRequestsAreCountedAsUnmatched(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, func(c *Config) { c.Metrics = reg })
	if r := ts.do(http.MethodGet, "/v1/nosuch", nil); r.status != http.StatusNotFound {
		t.Fatalf("GET /v1/nosuch: %s", r)
	}
	if r := ts.do(http.MethodDelete, "/v1/services", nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE /v1/services: %s", r)
	}
	count := func(route, method, code string) float64 {
		return testutil.ToFloat64(ts.api.metrics.requests.WithLabelValues(route, method, code))
	}
	if got := count("unmatched", "GET", "404"); got != 1 {
		t.Errorf("unknown path counted %v times as unmatched, want 1", got)
	}
	if got := count("unmatched", "DELETE", "405"); got != 1 {
		t.Errorf("wrong method counted %v times as unmatched, want 1", got)
	}
	if got := count("/", "GET", "404") + count("/", "DELETE", "405"); got != 0 {
		t.Errorf("%v requests counted under route \"/\"", got)
	}
}
