package lb

import (
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// promObserver turns a balancer's Observer hooks into Prometheus series: the
// attempts on each instance by answer, their latency, and ejections. They
// live in their own registry and are appended to the balancer's admin
// GET /metrics (lb.Config.ExtraMetrics), after the balancer's own series
// (requests, failures, retries, in flight, ejected, weights).
type promObserver struct {
	reg       *prometheus.Registry
	attempts  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	ejections *prometheus.CounterVec

	// bal is the balancer observed, set once it is built; its status says
	// which instances still exist, so series of gone instances are dropped.
	bal  *Balancer
	mu   sync.Mutex
	seen map[[2]string]struct{}
}

func newPromObserver() *promObserver {
	m := &promObserver{
		reg: prometheus.NewRegistry(),
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
	m.reg.MustRegister(m.attempts, m.latency, m.ejections)
	return m
}

// observe wires m into a balancer's configuration.
func (m *promObserver) observe(cfg *Config) {
	cfg.Observer = m
	cfg.ExtraMetrics = m.write
}

// Attempt implements Observer.
func (m *promObserver) Attempt(service, instance string, status int, err error, took time.Duration) {
	code := "error"
	if err == nil {
		code = strconv.Itoa(status)
	}
	m.note(service, instance)
	m.attempts.WithLabelValues(service, instance, code).Inc()
	m.latency.WithLabelValues(service, instance).Observe(took.Seconds())
}

// Ejected implements Observer.
func (m *promObserver) Ejected(service, instance string, d time.Duration) {
	m.note(service, instance)
	m.ejections.WithLabelValues(service, instance).Inc()
}

func (m *promObserver) note(service, instance string) {
	k := [2]string{service, instance}
	m.mu.Lock()
	m.seen[k] = struct{}{}
	m.mu.Unlock()
}

// write drops the series of instances the balancer no longer routes to
// (deployments replace instances; their series must not pile up), then
// writes the rest in the Prometheus text format.
func (m *promObserver) write(w io.Writer) {
	if m.bal != nil {
		live := map[[2]string]bool{}
		for _, s := range m.bal.Status().Services {
			for _, in := range s.Instances {
				live[[2]string{s.Service, in.ID}] = true
			}
		}
		m.mu.Lock()
		for k := range m.seen {
			if !live[k] {
				delete(m.seen, k)
				labels := prometheus.Labels{"service": k[0], "instance": k[1]}
				m.attempts.DeletePartialMatch(labels)
				m.latency.Delete(labels)
				m.ejections.Delete(labels)
			}
		}
		m.mu.Unlock()
	}
	fams, err := m.reg.Gather()
	if err != nil {
		return
	}
	for _, f := range fams {
		_, _ = expfmt.MetricFamilyToText(w, f)
	}
}
