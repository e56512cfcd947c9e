package fsm_test

import (
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/prometheus/client_golang/prometheus"
)

// transitionsCounted reads beacon_health_transitions_total by status.
func transitionsCounted(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "beacon_health_transitions_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

// beacon_health_transitions_total counts the check transitions the catalog
// records, no more: a new check's first failing probe (critical, as it
// started) and a new output are updates but no transitions.
func TestTransitionsCounterCountsOnlyStatusChanges(t *testing.T) {
	f := checkedFSM(t) // both checks critical
	reg := prometheus.NewRegistry()
	if err := f.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		cmd  []byte
		want map[string]float64
	}{
		{"the first probe fails", httpUpdate(t, t0+1, fsm.Critical, "connection refused"),
			map[string]float64{"passing": 0, "warning": 0, "critical": 0}},
		{"a TTL check failed again", ttlUpdate(t, t0+2, fsm.Critical, "late"),
			map[string]float64{"passing": 0, "warning": 0, "critical": 0}},
		{"the probe passes", httpUpdate(t, t0+3, fsm.Passing, "200 OK"),
			map[string]float64{"passing": 1, "warning": 0, "critical": 0}},
		{"it passes with a new output", httpUpdate(t, t0+4, fsm.Passing, "204 No Content"),
			map[string]float64{"passing": 1, "warning": 0, "critical": 0}},
		{"it fails", httpUpdate(t, t0+5, fsm.Critical, "500"),
			map[string]float64{"passing": 1, "warning": 0, "critical": 1}},
	}
	idx := uint64(10)
	for _, s := range steps {
		applyAll(t, f, idx, s.cmd)
		idx++
		got := transitionsCounted(t, reg)
		for status, n := range s.want {
			if got[status] != n {
				t.Fatalf("after %q: %s counted %v, want %v (all: %v)", s.name, status, got[status], n, got)
			}
		}
	}
	// The counter agrees with the history the UI lists.
	inst, _ := instance(t, f, "web", "web-1")
	if len(inst.Transitions) != 2 {
		t.Fatalf("history %+v, want the 2 counted transitions", inst.Transitions)
	}
}
