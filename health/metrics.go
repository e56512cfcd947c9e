package health

import (
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the health subsystem's Prometheus series (docs/metrics.md):
// the probes this node's runner ran and their durations, counted as they
// run, and its Stats counters read at scrape time. They always exist, so the
// runner needs no nil checks; they are exported only when Config.Metrics is
// set.
type metrics struct {
	runs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics() *metrics {
	return &metrics{
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

// probed counts one probe the runner ran.
func (m *metrics) probed(typ fsm.CheckType, status fsm.Health, took time.Duration) {
	m.runs.WithLabelValues(string(typ), string(status)).Inc()
	m.duration.WithLabelValues(string(typ)).Observe(took.Seconds())
}

// register exports m and h's counters through reg.
func (m *metrics) register(reg prometheus.Registerer, h *Health) error {
	counter := func(name, help string, v func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(h.Stats())) })
	}
	cs := []prometheus.Collector{
		m.runs, m.duration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "beacon_health_checks_running", Help: "Checks this node probes now (it owns them)."},
			func() float64 { return float64(h.Stats().RunningChecks) }),
		counter("beacon_health_proposals_total", "Check status changes this node proposed (its runner, or TTL checks as leader).", func(s Stats) uint64 { return s.Proposals }),
		counter("beacon_health_proposal_errors_total", "Proposals that failed (retried at the next probe).", func(s Stats) uint64 { return s.ProposalErrors }),
		counter("beacon_health_flap_episodes_total", "Checks that started flapping.", func(s Stats) uint64 { return s.FlapEpisodes }),
		counter("beacon_health_ttl_reports_total", "TTL reports handled by this node as leader.", func(s Stats) uint64 { return s.TTLReports }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "beacon_health_ttl_timers", Help: "Entries in this node's TTL timer heap as leader (0 otherwise): one per TTL check not expired since its last report, plus, until their time comes, those of checks gone or redefined and those armed with a new leader's grace before a report moved the deadline earlier."},
			func() float64 { return float64(h.Stats().TTLTimers) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "beacon_health_ttl_trackers", Help: "TTL checks holding a tracker on this node as leader (0 otherwise): those whose results hold what the catalog does not yet (a write to retry, a status change inside the flap window, a flapping episode); a calm check holds none."},
			func() float64 { return float64(h.Stats().TTLTrackers) }),
		counter("beacon_health_ttl_expiries_total", "TTLs that ran out on this node as leader.", func(s Stats) uint64 { return s.TTLExpiries }),
		counter("beacon_health_reassignments_total", "Checks given a new owner by this node as leader.", func(s Stats) uint64 { return s.Reassignments }),
		counter("beacon_health_full_scans_total", "Scans by this node as leader that read every check (on taking office, when the alive servers change, when its feed of changed checks lost track).", func(s Stats) uint64 { return s.FullScans }),
		counter("beacon_health_scanned_checks_total", "Checks read by this node's scans as leader, full or not (a scan reads the checks changed since the last one).", func(s Stats) uint64 { return s.ScannedChecks }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
