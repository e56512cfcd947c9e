package lb

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the balancer's Prometheus series (docs/metrics.md, docs/lb.md),
// one collector: the routing tables' state and counters, read from Status
// at scrape time, and the attempts on each instance by answer, their
// latency and the ejections, counted on the request path. The series of an
// instance the balancer no longer routes to are dropped at the next scrape
// (deployments replace instances; their series must not pile up). The
// counters always exist, so the request path needs no nil checks; they are
// exported when the collector is registered (Config.Metrics).
type metrics struct {
	b         *Balancer
	attempts  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	ejections *prometheus.CounterVec

	mu   sync.Mutex
	seen map[[2]string]struct{} // (service, instance) with counted series
	// gen changes whenever Collect drops series: the series an instance's
	// state keeps (instanceState.series) are looked up again then.
	gen atomic.Uint64
}

// instSeries are the attempt series of one instance of a service, kept on
// its state so that counting an attempt looks nothing up (the label
// values' hash, the vectors' locks and maps, the seen set's lock): the
// latency histogram and the counters of the statuses counted so far (a
// few: copied on each new one).
type instSeries struct {
	gen               uint64
	service, instance string
	latency           prometheus.Observer
	codes             atomic.Pointer[[]codeSeries]
}

type codeSeries struct {
	status  int // 0: an error (no answer)
	counter prometheus.Counter
}

func newMetrics(b *Balancer) *metrics {
	return &metrics{
		b: b,
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_lb_attempts_total",
			Help: "Attempts to send a request to an instance, by the instance's answer: its status code, or error (no answer).",
		}, []string{"service", "instance", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "beacon_lb_upstream_duration_seconds",
			Help:    "Time from sending a request to an instance to its response headers (or the error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"service", "instance"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_lb_ejections_total",
			Help: "Times an instance was ejected by outlier detection.",
		}, []string{"service", "instance"}),
		seen: map[[2]string]struct{}{},
	}
}

// attempt counts one attempt on instance of service: the status of its
// answer (err set: none) and the time to its headers.
//
// st is the instance's state: the series are kept there, looked up once
// and again only after Collect dropped series (of this instance or
// another: drops are rare).
func (m *metrics) attempt(st *instanceState, service, instance string, status int, err error, took time.Duration) {
	if err != nil {
		status = 0
	}
	gen := m.gen.Load()
	s := st.series.Load()
	if s == nil || s.gen != gen || s.service != service || s.instance != instance {
		// Noted before the lookups: a Collect that drops the series in
		// between changes gen, and the next attempt notes them again.
		m.note(service, instance)
		s = &instSeries{gen: gen, service: service, instance: instance, latency: m.latency.WithLabelValues(service, instance)}
		st.series.Store(s)
	}
	s.counter(m, status).Inc()
	s.latency.Observe(took.Seconds())
}

// counter returns the attempts counter of status (0: error).
func (s *instSeries) counter(m *metrics, status int) prometheus.Counter {
	for {
		old := s.codes.Load()
		if old != nil {
			for _, c := range *old {
				if c.status == status {
					return c.counter
				}
			}
		}
		code := "error"
		if status != 0 {
			code = strconv.Itoa(status)
		}
		var codes []codeSeries
		if old != nil {
			codes = append(codes, *old...)
		}
		codes = append(codes, codeSeries{status: status, counter: m.attempts.WithLabelValues(s.service, s.instance, code)})
		if s.codes.CompareAndSwap(old, &codes) {
			return codes[len(codes)-1].counter
		}
	}
}

// ejected counts one ejection of instance.
func (m *metrics) ejected(service, instance string) {
	m.note(service, instance)
	m.ejections.WithLabelValues(service, instance).Inc()
}

func (m *metrics) note(service, instance string) {
	k := [2]string{service, instance}
	m.mu.Lock()
	m.seen[k] = struct{}{}
	m.mu.Unlock()
}

// tableMetric is a series of the routing tables, one per service or per
// instance.
type tableMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
}

func serviceMetric(name string, typ prometheus.ValueType, help string) tableMetric {
	return tableMetric{prometheus.NewDesc(name, help, []string{"service"}, nil), typ}
}

func instanceMetric(name string, typ prometheus.ValueType, help string) tableMetric {
	return tableMetric{prometheus.NewDesc(name, help, []string{"service", "instance"}, nil), typ}
}

var (
	descRegistryConnected = prometheus.NewDesc("beacon_lb_registry_connected", "1 while the service list follower reaches the registry.", nil, nil)

	svcMetrics = []struct {
		tableMetric
		val func(*ServiceStatus) float64
	}{
		{serviceMetric("beacon_lb_service_registry_connected", prometheus.GaugeValue, "1 while the service's follower reaches the registry (else the last table is served)."), func(s *ServiceStatus) float64 { return bool01(s.Registry.Connected) }},
		{serviceMetric("beacon_lb_service_panic", prometheus.GaugeValue, "1 while the service is routed in panic mode."), func(s *ServiceStatus) float64 { return bool01(s.Panic) }},
		{serviceMetric("beacon_lb_service_table_index", prometheus.GaugeValue, "Registry index of the service's routing table."), func(s *ServiceStatus) float64 { return float64(s.Index) }},
		{serviceMetric("beacon_lb_service_instances_routed", prometheus.GaugeValue, "Instances that receive new requests."), func(s *ServiceStatus) float64 { return float64(s.Routed) }},
		{serviceMetric("beacon_lb_service_instances_passing", prometheus.GaugeValue, "Instances passing their checks and available."), func(s *ServiceStatus) float64 { return float64(s.Passing) }},
		{serviceMetric("beacon_lb_service_instances_registered", prometheus.GaugeValue, "Instances registered."), func(s *ServiceStatus) float64 { return float64(s.Registered) }},
		{serviceMetric("beacon_lb_retries_total", prometheus.CounterValue, "Requests retried on another instance."), func(s *ServiceStatus) float64 { return float64(s.Retries) }},
		{serviceMetric("beacon_lb_retry_budget_exhausted_total", prometheus.CounterValue, "Retries refused by the retry budget."), func(s *ServiceStatus) float64 { return float64(s.RetryBudgetExhausted) }},
		{serviceMetric("beacon_lb_unavailable_total", prometheus.CounterValue, "Requests answered 503 because no instance could take traffic."), func(s *ServiceStatus) float64 { return float64(s.Unavailable) }},
	}
	instMetrics = []struct {
		tableMetric
		val func(*InstanceStatus) float64
	}{
		{instanceMetric("beacon_lb_instance_in_flight", prometheus.GaugeValue, "Requests in flight to the instance."), func(i *InstanceStatus) float64 { return float64(i.InFlight) }},
		{instanceMetric("beacon_lb_instance_requests_total", prometheus.CounterValue, "Requests sent to the instance (attempts)."), func(i *InstanceStatus) float64 { return float64(i.Requests) }},
		{instanceMetric("beacon_lb_instance_failures_total", prometheus.CounterValue, "Connection failures and retryable statuses from the instance."), func(i *InstanceStatus) float64 { return float64(i.Failures) }},
		{instanceMetric("beacon_lb_instance_ejected", prometheus.GaugeValue, "1 while the instance is ejected by outlier detection."), func(i *InstanceStatus) float64 { return bool01(i.Ejected) }},
		{instanceMetric("beacon_lb_instance_effective_weight", prometheus.GaugeValue, "Weight the strategy uses (0 when not routed)."), func(i *InstanceStatus) float64 { return i.EffectiveWeight }},
	}
)

func bool01(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRegistryConnected
	for _, sm := range svcMetrics {
		ch <- sm.desc
	}
	for _, im := range instMetrics {
		ch <- im.desc
	}
	m.attempts.Describe(ch)
	m.latency.Describe(ch)
	m.ejections.Describe(ch)
}

// Collect implements prometheus.Collector: it reads the routing tables,
// drops the counted series of instances no table holds any more, and
// sends the rest.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.b.Status()
	ch <- prometheus.MustNewConstMetric(descRegistryConnected, prometheus.GaugeValue, bool01(st.Registry.Connected))
	live := map[[2]string]bool{}
	for i := range st.Services {
		s := &st.Services[i]
		for _, sm := range svcMetrics {
			ch <- prometheus.MustNewConstMetric(sm.desc, sm.typ, sm.val(s), s.Service)
		}
		for j := range s.Instances {
			in := &s.Instances[j]
			live[[2]string{s.Service, in.ID}] = true
			for _, im := range instMetrics {
				ch <- prometheus.MustNewConstMetric(im.desc, im.typ, im.val(in), s.Service, in.ID)
			}
		}
	}
	m.mu.Lock()
	for k := range m.seen {
		if !live[k] {
			m.gen.Add(1)
			delete(m.seen, k)
			labels := prometheus.Labels{"service": k[0], "instance": k[1]}
			m.attempts.DeletePartialMatch(labels)
			m.latency.Delete(labels)
			m.ejections.Delete(labels)
		}
	}
	m.mu.Unlock()
	m.attempts.Collect(ch)
	m.latency.Collect(ch)
	m.ejections.Collect(ch)
}

// metricsHandler serves the balancer's gatherer in the Prometheus
// exposition format the scraper asks for: text, protobuf or OpenMetrics
// (which promhttp offers only when told to).
func (b *Balancer) metricsHandler() http.Handler {
	return promhttp.HandlerFor(b.cfg.Gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true})
}
