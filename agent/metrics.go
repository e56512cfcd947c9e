package agent

import (
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/health"
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

// healthMetrics are the health subsystem's series: check runs and their
// durations from the runner's probe hook, and its counters read at scrape
// time.
type healthMetrics struct {
	runs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHealthMetrics() *healthMetrics {
	return &healthMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_health_check_runs_total",
			Help: "Probes this node ran, by check type and the probe's status.",
		}, []string{"type", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "beacon_health_check_duration_seconds",
			Help:    "Time one probe took, by check type.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"type"}),
	}
}

// observeProbe is the runner's ProbeObserver.
func (m *healthMetrics) observeProbe(typ fsm.CheckType, status fsm.Health, took time.Duration) {
	m.runs.WithLabelValues(string(typ), string(status)).Inc()
	m.duration.WithLabelValues(string(typ)).Observe(took.Seconds())
}

// register exports m and h's counters through reg.
func (m *healthMetrics) register(reg prometheus.Registerer, h *health.Health) error {
	counter := func(name, help string, v func(health.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(h.Stats())) })
	}
	cs := []prometheus.Collector{
		m.runs, m.duration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "beacon_health_checks_running", Help: "Checks this node probes now (it owns them)."},
			func() float64 { return float64(h.Stats().RunningChecks) }),
		counter("beacon_health_proposals_total", "Check status changes this node proposed (its runner, or TTL checks as leader).", func(s health.Stats) uint64 { return s.Proposals }),
		counter("beacon_health_proposal_errors_total", "Proposals that failed (retried at the next probe).", func(s health.Stats) uint64 { return s.ProposalErrors }),
		counter("beacon_health_flap_episodes_total", "Checks that started flapping.", func(s health.Stats) uint64 { return s.FlapEpisodes }),
		counter("beacon_health_ttl_reports_total", "TTL reports handled by this node as leader.", func(s health.Stats) uint64 { return s.TTLReports }),
		counter("beacon_health_ttl_expiries_total", "TTLs that ran out on this node as leader.", func(s health.Stats) uint64 { return s.TTLExpiries }),
		counter("beacon_health_reassignments_total", "Checks given a new owner by this node as leader.", func(s health.Stats) uint64 { return s.Reassignments }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
