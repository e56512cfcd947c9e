package fsm

import (
	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics registers the catalog's Prometheus collectors on reg
// (docs/metrics.md): the commands this FSM applies by type and result, the
// check status changes they commit, and the catalog's sizes read from the
// store at scrape time. Every node applies the same log, so every node
// reports the same counts (modulo lag). Call it once, before Raft starts.
func (f *FSM) RegisterMetrics(reg prometheus.Registerer) error {
	m := newMetrics()
	for _, c := range []prometheus.Collector{m.applied, m.transitions, catalogCollector{f.store}} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	f.metrics = m
	return nil
}

// metrics count what the FSM applies.
type metrics struct {
	applied     *prometheus.CounterVec
	transitions *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_fsm_applied_total",
			Help: "Commands this node's catalog applied, by type and result (ok or the rejection code).",
		}, []string{"type", "result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_health_transitions_total",
			Help: "Check status changes committed to the catalog, by the new status.",
		}, []string{"status"}),
	}
	for _, s := range []Health{Passing, Warning, Critical} {
		m.transitions.WithLabelValues(string(s))
	}
	return m
}

// count runs on the FSM goroutine after each applied command.
func (m *metrics) count(a Applied) {
	result := "ok"
	if a.Err != nil {
		result = a.Err.Code()
	}
	m.applied.WithLabelValues(a.Type.String(), result).Inc()
}

// transitioned counts the check transitions a batch recorded, by their new
// status. These are the transitions the instances' histories (and
// /v1/ui/transitions) list: an update that leaves a check's status as it
// was (a new check's first probe failing as it starts critical, a new
// output) is none.
func (m *metrics) transitioned(to []Health) {
	for _, s := range to {
		m.transitions.WithLabelValues(string(s)).Inc()
	}
}

var (
	descServices  = prometheus.NewDesc("beacon_catalog_services", "Services in the catalog.", nil, nil)
	descInstances = prometheus.NewDesc("beacon_catalog_instances", "Instances in the catalog, by health status.", []string{"status"}, nil)
	descChecks    = prometheus.NewDesc("beacon_catalog_checks", "Checks in the catalog, by status.", []string{"status"}, nil)
	descNodes     = prometheus.NewDesc("beacon_catalog_nodes", "Cluster members in the catalog, by status (external nodes, registered through the Consul catalog API, are not members).", []string{"status"}, nil)
	descTokens    = prometheus.NewDesc("beacon_catalog_tokens", "API tokens in the catalog (the management token is not one).", nil, nil)
	descIndex     = prometheus.NewDesc("beacon_catalog_index", "The last log index this node's catalog has applied (catalog_index of `beacon operator raft servers`; beacon_raft_applied_index also counts entries that never reach the catalog).", nil, nil)
)

// catalogCollector counts the catalog at scrape time.
type catalogCollector struct{ store *Store }

// Describe implements prometheus.Collector.
func (c catalogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServices, descInstances, descChecks, descNodes, descTokens, descIndex} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c catalogCollector) Collect(ch chan<- prometheus.Metric) {
	byHealth := func() map[string]int {
		return map[string]int{string(Passing): 0, string(Warning): 0, string(Critical): 0}
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
	nodes := map[string]int{string(NodeAlive): 0, string(NodeFailed): 0, string(NodeLeft): 0}
	_, ns := c.store.Nodes(nil)
	for _, n := range ns {
		if !n.External() { // members only: an external node is no member
			nodes[string(n.Status)]++
		}
	}
	for s, n := range nodes {
		ch <- prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(n), s)
	}
	_, ts := c.store.Tokens(nil)
	ch <- prometheus.MustNewConstMetric(descTokens, prometheus.GaugeValue, float64(len(ts)))
	// What the FSM reports as its applied index (FSM.AppliedIndex), which
	// `operator raft servers` shows as catalog_index and `status` as the
	// catalog index.
	ch <- prometheus.MustNewConstMetric(descIndex, prometheus.GaugeValue, float64(c.store.applied.Load()))
}
