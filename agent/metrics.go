package agent

import (
	"github.com/beaconhq/beacon/fsm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newAgentRegistry returns the agent's own Prometheus registry (never the
// global one, so agents in one process do not share series) with the Go
// runtime and process collectors. Every package registers its own
// collectors on it (docs/metrics.md): the catalog's here, through
// f.RegisterMetrics; health, cluster and api through their Config.Metrics.
func newAgentRegistry(f *fsm.FSM) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if err := f.RegisterMetrics(reg); err != nil {
		return nil, err
	}
	return reg, nil
}
