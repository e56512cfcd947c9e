package lb

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Status is the balancer's state as GET /lb/status shows it.
type Status struct {
	Zone         string   `json:"zone,omitempty"`
	Domains      []string `json:"domains"`
	PathRouting  bool     `json:"path_routing"`
	ShuttingDown bool     `json:"shutting_down"`
	// Registry is the connectivity of the service-list follower (or, with a
	// fixed list of services, always connected).
	Registry RegistryStatus `json:"registry"`
	// Routes are the path prefixes instances declared, longest first.
	Routes   []RouteStatus   `json:"routes"`
	Services []ServiceStatus `json:"services"`
}

// RegistryStatus is a follower's connectivity.
type RegistryStatus struct {
	// Connected is false while reads fail; the last table is served meanwhile.
	Connected   bool       `json:"connected"`
	Node        string     `json:"node,omitempty"`
	KnownLeader bool       `json:"known_leader"`
	LastContact string     `json:"last_contact,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	ErrorSince  *time.Time `json:"error_since,omitempty"`
	Failures    int        `json:"failures,omitempty"`
}

// RouteStatus is a declared path prefix and the service it routes to.
type RouteStatus struct {
	Prefix  string `json:"prefix"`
	Service string `json:"service"`
	Strip   bool   `json:"strip"`
}

// ServiceStatus is one routing table.
type ServiceStatus struct {
	Service  string         `json:"service"`
	Loaded   bool           `json:"loaded"`
	Index    uint64         `json:"index"`
	Built    *time.Time     `json:"built,omitempty"`
	Strategy Strategy       `json:"strategy"`
	HashKey  string         `json:"hash_key,omitempty"`
	Mode     string         `json:"mode"`
	Panic    bool           `json:"panic"`
	Registry RegistryStatus `json:"registry"`
	// Registered, Available (not draining or in maintenance), Passing and
	// Routed count the instances.
	Registered           int              `json:"registered"`
	Available            int              `json:"available"`
	Passing              int              `json:"passing"`
	Routed               int              `json:"routed"`
	Retries              uint64           `json:"retries"`
	RetryBudgetExhausted uint64           `json:"retry_budget_exhausted"`
	Unavailable          uint64           `json:"unavailable_responses"`
	Instances            []InstanceStatus `json:"instances"`
}

// InstanceStatus is one instance of a routing table.
type InstanceStatus struct {
	ID           string     `json:"id"`
	Address      string     `json:"address"`
	Port         int        `json:"port"`
	Zone         string     `json:"zone,omitempty"`
	Status       Health     `json:"status"`
	Draining     bool       `json:"draining,omitempty"`
	Maintenance  bool       `json:"maintenance,omitempty"`
	HealthySince *time.Time `json:"healthy_since,omitempty"`
	// Routed is true when the instance receives new requests.
	Routed bool `json:"routed"`
	// Weight is the registered weight; EffectiveWeight what the strategy
	// uses after the metric rule (MetricFactor) and slow start (SlowStart).
	Weight          int                `json:"weight"`
	EffectiveWeight float64            `json:"effective_weight"`
	MetricFactor    float64            `json:"metric_factor"`
	SlowStart       float64            `json:"slow_start"`
	Metrics         map[string]float64 `json:"metrics,omitempty"`
	InFlight        int64              `json:"in_flight"`
	Requests        uint64             `json:"requests"`
	Failures        uint64             `json:"failures"`
	Consecutive     int64              `json:"consecutive_failures"`
	Ejected         bool               `json:"ejected"`
	EjectedUntil    *time.Time         `json:"ejected_until,omitempty"`
	Ejections       uint64             `json:"ejections"`
}

func registryStatus(r *registryState) RegistryStatus {
	s := RegistryStatus{Connected: r.Connected, Node: r.Source.Node, KnownLeader: r.Source.KnownLeader,
		LastError: r.LastError, Failures: r.Failures}
	if r.Source.Node != "" && r.Source.LastContact >= 0 {
		s.LastContact = r.Source.LastContact.String()
	}
	if !r.LastSuccess.IsZero() {
		t := r.LastSuccess.UTC()
		s.LastSuccess = &t
	}
	if !r.Connected && !r.ErrorSince.IsZero() {
		t := r.ErrorSince.UTC()
		s.ErrorSince = &t
	}
	return s
}

// Status returns the state of every routing table, sorted by service.
func (b *Balancer) Status() Status {
	st := Status{
		Zone: b.cfg.Zone, Domains: b.cfg.Domains, PathRouting: b.cfg.PathRouting,
		ShuttingDown: b.draining.Load(), Registry: registryStatus(b.listReg.Load()),
		Routes: []RouteStatus{}, Services: []ServiceStatus{},
	}
	if st.Domains == nil {
		st.Domains = []string{}
	}
	for _, r := range *b.routes.Load() {
		st.Routes = append(st.Routes, RouteStatus{Prefix: r.prefix, Service: r.service, Strip: r.strip})
	}
	now := time.Now()
	for _, s := range *b.services.Load() {
		st.Services = append(st.Services, s.status(now))
	}
	sort.Slice(st.Services, func(i, j int) bool { return st.Services[i].Service < st.Services[j].Service })
	return st
}

func (s *service) status(now time.Time) ServiceStatus {
	out := ServiceStatus{
		Service: s.name, Strategy: s.b.cfg.strategyFor(s.name), Mode: ModeUnavailable,
		Registry: registryStatus(s.reg.Load()), Retries: s.retries.Load(),
		RetryBudgetExhausted: s.budgetOut.Load(), Unavailable: s.unavailable.Load(),
		Instances: []InstanceStatus{},
	}
	if out.Strategy == Hash {
		out.HashKey = s.b.cfg.hashKeyFor(s.name).String()
	}
	t := s.table.Load()
	if t == nil {
		return out
	}
	built := t.built.UTC()
	out.Loaded, out.Index, out.Built, out.Mode, out.Panic = true, t.index, &built, t.mode, t.mode == ModePanic
	out.Registered, out.Available, out.Passing, out.Routed = len(t.entries), t.available, t.passing, len(t.routed)
	nowNS := now.UnixNano()
	for _, e := range t.entries {
		is := InstanceStatus{
			ID: e.ID, Address: e.Address, Port: e.Port, Zone: e.Zone(), Status: e.Status,
			Draining: e.Draining, Maintenance: e.Maintenance, Routed: e.routed,
			Weight: e.weight0(), Metrics: e.Metrics,
			InFlight: e.state.inflight.Load(), Requests: e.state.requests.Load(),
			Failures: e.state.failures.Load(), Consecutive: e.state.consecutive.Load(),
			Ejections: e.state.ejection.Load(),
		}
		if e.routed {
			is.EffectiveWeight, is.MetricFactor, is.SlowStart = round3(e.weight), round3(e.metricFactor), round3(e.slowStart)
		}
		if !e.HealthySince.IsZero() {
			h := e.HealthySince.UTC()
			is.HealthySince = &h
		}
		if until := e.state.ejectedUntil.Load(); until > nowNS {
			u := time.Unix(0, until).UTC()
			is.Ejected, is.EjectedUntil = true, &u
		}
		out.Instances = append(out.Instances, is)
	}
	return out
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// AdminHandler serves GET /lb/status (JSON; ?service=NAME for one table),
// GET /metrics (Config.Gatherer, when set: metrics.go), GET /healthz and GET /readyz (ready once
// the service list has been read, or with Config.Services every table, until shutdown starts).
func (b *Balancer) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /lb/status", func(w http.ResponseWriter, r *http.Request) {
		st := b.Status()
		if name := r.URL.Query().Get("service"); name != "" {
			var keep []ServiceStatus
			for _, s := range st.Services {
				if s.Service == name {
					keep = append(keep, s)
				}
			}
			if keep == nil {
				writeError(w, http.StatusNotFound, ErrorBody{Error: fmt.Sprintf("service %q is not followed", name), Code: "not_found", Service: name})
				return
			}
			st.Services = keep
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	if b.cfg.Gatherer != nil {
		mux.Handle("GET /metrics", b.metricsHandler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		why := b.notReady()
		switch {
		case b.draining.Load():
			writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: "shutting down", Code: CodeShuttingDown})
		case why != "":
			writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: why, Code: CodeNotReady})
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, ErrorBody{Error: "no such route", Code: CodeNoRoute})
	})
	return mux
}

// notReady says why the balancer is not ready yet ("": it is): without
// Config.Services until the service list has been read, with it until
// every service's table has (a balancer that has never reached the
// registry answers every request 503 not_ready).
func (b *Balancer) notReady() string {
	if len(b.cfg.Services) == 0 {
		if b.listReg.Load().LastSuccess.IsZero() {
			return "the service list has not been read from the registry yet"
		}
		return ""
	}
	var missing []string
	for name, s := range *b.services.Load() {
		if s.table.Load() == nil {
			missing = append(missing, strconv.Quote(name))
		}
	}
	if len(missing) == 0 {
		return ""
	}
	sort.Strings(missing)
	return "the routing table of " + strings.Join(missing, ", ") + " has not been read from the registry yet"
}
