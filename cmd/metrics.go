package cmd

import (
	"github.com/beaconhq/beacon/fsm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newAgentRegistry returns the agent's own Prometheus registry (never the
// global one, so agents in one process do not share series) with the Go
// runtime and process collectors, the catalog's sizes and the FSM's counts.
func newAgentRegistry(f *fsm.FSM) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	fm := newFSMMetrics()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		catalogCollector{f.Store()},
		fm.applied, fm.transitions,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	f.SetObserver(fm.observe)
	return reg, nil
}

// fsmMetrics count what the catalog applies. Every node applies the same
// log, so every node reports the same counts (modulo lag).
type fsmMetrics struct {
	applied     *prometheus.CounterVec
	transitions *prometheus.CounterVec
}

func newFSMMetrics() *fsmMetrics {
	m := &fsmMetrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_fsm_applied_total",
			Help: "Commands this node's catalog applied, by type and result (ok or the rejection code).",
		}, []string{"type", "result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_health_transitions_total",
			Help: "Check status changes committed to the catalog, by the new status.",
		}, []string{"status"}),
	}
	for _, s := range []fsm.Health{fsm.Passing, fsm.Warning, fsm.Critical} {
		m.transitions.WithLabelValues(string(s))
	}
	return m
}

// observe runs on the FSM goroutine after each applied command; it only
// counts.
func (m *fsmMetrics) observe(a fsm.Applied) {
	result := "ok"
	if a.Err != nil {
		result = a.Err.Code()
	}
	m.applied.WithLabelValues(a.Type.String(), result).Inc()
	if a.Err != nil || a.Type&^fsm.SkipUnknown != fsm.CheckUpdateType {
		return
	}
	var req fsm.CheckUpdateRequest
	if _, err := fsm.Decode(append([]byte{byte(a.Type)}, a.Body...), &req); err != nil {
		return
	}
	for _, u := range req.Updates {
		m.transitions.WithLabelValues(string(u.Status)).Inc()
	}
}

var (
	descServices  = prometheus.NewDesc("beacon_catalog_services", "Services in the catalog.", nil, nil)
	descInstances = prometheus.NewDesc("beacon_catalog_instances", "Instances in the catalog, by health status.", []string{"status"}, nil)
	descChecks    = prometheus.NewDesc("beacon_catalog_checks", "Checks in the catalog, by status.", []string{"status"}, nil)
	descNodes     = prometheus.NewDesc("beacon_catalog_nodes", "Nodes in the catalog, by status.", []string{"status"}, nil)
	descTokens    = prometheus.NewDesc("beacon_catalog_tokens", "API tokens in the catalog (the management token is not one).", nil, nil)
	descIndex     = prometheus.NewDesc("beacon_catalog_index", "The catalog's last modification index.", nil, nil)
)

// catalogCollector counts the catalog at scrape time.
type catalogCollector struct{ store *fsm.Store }

// Describe implements prometheus.Collector.
func (c catalogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServices, descInstances, descChecks, descNodes, descTokens, descIndex} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c catalogCollector) Collect(ch chan<- prometheus.Metric) {
	byHealth := func() map[string]int {
		return map[string]int{string(fsm.Passing): 0, string(fsm.Warning): 0, string(fsm.Critical): 0}
	}
	_, svcs, _ := c.store.Services(nil, "", "", 0)
	ch <- prometheus.MustNewConstMetric(descServices, prometheus.GaugeValue, float64(len(svcs)))
	insts := byHealth()
	_, is := c.store.Instances(nil)
	for _, i := range is {
		insts[string(i.Status)]++
	}
	for s, n := range insts {
		ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(n), s)
	}
	checks := byHealth()
	_, cs := c.store.Checks(nil, "")
	for _, k := range cs {
		checks[string(k.Status)]++
	}
	for s, n := range checks {
		ch <- prometheus.MustNewConstMetric(descChecks, prometheus.GaugeValue, float64(n), s)
	}
	nodes := map[string]int{string(fsm.NodeAlive): 0, string(fsm.NodeFailed): 0, string(fsm.NodeLeft): 0}
	_, ns := c.store.Nodes(nil)
	for _, n := range ns {
		nodes[string(n.Status)]++
	}
	for s, n := range nodes {
		ch <- prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(n), s)
	}
	_, ts := c.store.Tokens(nil)
	ch <- prometheus.MustNewConstMetric(descTokens, prometheus.GaugeValue, float64(len(ts)))
	ch <- prometheus.MustNewConstMetric(descIndex, prometheus.GaugeValue, float64(c.store.LastIndex()))
}
