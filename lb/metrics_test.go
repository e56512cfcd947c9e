package lb

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
