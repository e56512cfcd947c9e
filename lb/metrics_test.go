package lb

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// instanceSeries counts, per family, the series of instance in what reg
// gathers.
func instanceSeries(t *testing.T, reg prometheus.Gatherer, instance string) map[string]int {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "instance" && l.GetValue() == instance {
					out[f.GetName()]++
				}
			}
		}
	}
	return out
}

// A balancer given a registry registers its one collector there and its
// admin /metrics serves the Gatherer; attempts are counted per instance,
// and the series of an instance that leaves the table go at the next
// scrape.
func TestMetricsOnTheGivenRegistryDropGoneInstances(t *testing.T) {
	reg := prometheus.NewRegistry()
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "other_total", Help: "Registered beside the balancer."})
	reg.MustRegister(other)
	cat := newMemCatalog()
	bes, idx := threeBackends(t, cat)
	b, url := startBalancer(t, cat, func(cfg *Config) { cfg.Metrics, cfg.Gatherer = reg, reg })
	waitTable(t, b, "web", idx)
	c := newClient(t)
	for i := 0; i < 9; i++ {
		if code, _, _ := get(t, c, url+"/web/"); code != 200 {
			t.Fatalf("request %d: status %d", i, code)
		}
	}
	for _, be := range bes {
		got := instanceSeries(t, reg, be.name)
		for _, name := range []string{"beacon_lb_attempts_total", "beacon_lb_upstream_duration_seconds", "beacon_lb_instance_requests_total", "beacon_lb_instance_in_flight"} {
			if got[name] != 1 {
				t.Errorf("%s: %d series of %s, want 1 (%v)", be.name, got[name], name, got)
			}
		}
	}
	adm := httptest.NewServer(b.AdminHandler())
	defer adm.Close()
	_, body, _ := get(t, c, adm.URL+"/metrics")
	for _, want := range []string{"other_total 0", `beacon_lb_attempts_total{code="200",instance="web-1",service="web"}`, `beacon_lb_service_instances_routed{service="web"} 3`} {
		if !strings.Contains(body, want) {
			t.Errorf("admin /metrics lacks %q:\n%s", want, body)
		}
	}

	idx = cat.Set("web", bes[0].backend(), bes[1].backend())
	waitTable(t, b, "web", idx)
	if got := instanceSeries(t, reg, bes[2].name); len(got) != 0 {
		t.Fatalf("series of the instance that left the table: %v", got)
	}
	if got := instanceSeries(t, reg, bes[0].name); got["beacon_lb_attempts_total"] != 1 {
		t.Fatalf("series of an instance still routed: %v", got)
	}
}

// The attempt series the balancer keeps on an instance's state are looked
// up again once a scrape has dropped series: an instance that leaves the
// table (its series dropped) and comes back is counted again from zero,
// each status on its own series, and the histogram with them.
func TestMetricsCountAnInstanceThatLeftAndCameBack(t *testing.T) {
	reg := prometheus.NewRegistry()
	cat := newMemCatalog()
	tb := startBackend(t, "web-1")
	tb.handle(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/missing") {
			w.WriteHeader(http.StatusNotFound)
		}
	})
	other := startBackend(t, "web-2")
	idx := cat.Set("web", tb.backend())
	b, url := startBalancer(t, cat, func(cfg *Config) { cfg.Metrics, cfg.Gatherer = reg, reg })
	waitTable(t, b, "web", idx)
	c := newClient(t)
	send := func(path string, n, want int) {
		t.Helper()
		for range n {
			if code, _, _ := get(t, c, url+path); code != want {
				t.Fatalf("%s: status %d, want %d", path, code, want)
			}
		}
	}
	// counts returns web-1's attempts by code and its latency samples.
	counts := func() (map[string]float64, uint64) {
		t.Helper()
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		codes, samples := map[string]float64{}, uint64(0)
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["instance"] != "web-1" {
					continue
				}
				switch f.GetName() {
				case "beacon_lb_attempts_total":
					codes[labels["code"]] = m.GetCounter().GetValue()
				case "beacon_lb_upstream_duration_seconds":
					samples = m.GetHistogram().GetSampleCount()
				}
			}
		}
		return codes, samples
	}
	send("/web/", 3, 200)
	send("/web/missing", 2, 404)
	send("/web/", 1, 200)
	if codes, samples := counts(); !reflect.DeepEqual(codes, map[string]float64{"200": 4, "404": 2}) || samples != 6 {
		t.Fatalf("before leaving: attempts %v, %d latency samples; want 200: 4, 404: 2, 6 samples", codes, samples)
	}

	idx = cat.Set("web", other.backend())
	waitTable(t, b, "web", idx)
	if codes, samples := counts(); len(codes) != 0 || samples != 0 {
		t.Fatalf("after leaving: attempts %v, %d latency samples; want none", codes, samples)
	}

	idx = cat.Set("web", tb.backend())
	waitTable(t, b, "web", idx)
	send("/web/", 2, 200)
	if codes, samples := counts(); !reflect.DeepEqual(codes, map[string]float64{"200": 2}) || samples != 2 {
		t.Fatalf("back: attempts %v, %d latency samples; want 200: 2, 2 samples", codes, samples)
	}
}

// An instance's state may outlive the series a scrape dropped (a request
// still running on an instance that left): the next attempt counted on that
// state creates its series again, noted for the next scrape to drop, rather
// than counting into the dropped ones.
func TestMetricsSeriesKeptOnAStateAreRenewedAfterADrop(t *testing.T) {
	reg := prometheus.NewRegistry()
	cat := newMemCatalog()
	idx := cat.Set("web", startBackend(t, "web-2").backend())
	b, _ := startBalancer(t, cat, func(cfg *Config) { cfg.Metrics, cfg.Gatherer = reg, reg })
	waitTable(t, b, "web", idx)
	m := b.metrics
	st := &instanceState{} // web-1's, which no table holds
	m.attempt(st, "web", "web-1", 200, nil, time.Millisecond)
	instanceSeries(t, reg, "web-1") // the scrape drops web-1's series
	m.attempt(st, "web", "web-1", 200, nil, time.Millisecond)
	var d dto.Metric
	if err := m.attempts.WithLabelValues("web", "web-1", "200").(prometheus.Metric).Write(&d); err != nil {
		t.Fatal(err)
	}
	if n := d.GetCounter().GetValue(); n != 1 {
		t.Fatalf("attempts counted on web-1's series after the drop: %v, want 1", n)
	}
	m.mu.Lock()
	_, noted := m.seen[[2]string{"web", "web-1"}]
	m.mu.Unlock()
	if !noted {
		t.Fatal("web-1's new series are not noted: no scrape would drop them")
	}
	if got := instanceSeries(t, reg, "web-1"); len(got) != 0 {
		t.Fatalf("series of web-1 after the next scrape: %v", got)
	}
}

// The admin /metrics answers a scraper that asks for OpenMetrics with
// OpenMetrics, closed by "# EOF".
func TestAdminMetricsServeOpenMetricsWhenAsked(t *testing.T) {
	cat := newMemCatalog()
	b, _ := startBalancer(t, cat, nil)
	adm := httptest.NewServer(b.AdminHandler())
	defer adm.Close()
	req, err := http.NewRequest(http.MethodGet, adm.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	resp, err := adm.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("Content-Type %q, want OpenMetrics", ct)
	}
	if !strings.HasSuffix(string(body), "# EOF\n") {
		t.Fatalf("the body does not end with # EOF:\n%s", body)
	}
}
