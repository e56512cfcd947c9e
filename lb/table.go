package lb

import (
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Table modes: how a table chose the instances it routes to.
const (
	// ModeNormal routes to the passing instances.
	ModeNormal = "normal"
	// ModeZone routes to the passing instances of the balancer's zone.
	ModeZone = "zone"
	// ModeSpillover routes to passing instances of every zone because too
	// few are passing in the balancer's zone.
	ModeSpillover = "spillover"
	// ModePanic routes to every available instance, passing or not,
	// because too few are passing.
	ModePanic = "panic"
	// ModeWarning routes to instances in warning because none is passing
	// (Config.FallbackToWarning).
	ModeWarning = "warning"
	// ModeUnavailable routes nowhere: no instance may take traffic, and the
	// balancer answers 503.
	ModeUnavailable = "unavailable"
)

// entry is one instance in a table. The Backend copy and the computed
// fields are immutable; state is shared with later tables.
type entry struct {
	Backend
	target       string
	state        *instanceState
	routed       bool
	weight       float64 // effective weight
	metricFactor float64
	slowStart    float64
}

// routePrefix is a path prefix an instance declares in its meta.
type routePrefix struct {
	prefix string
	strip  bool
}

// Table is an immutable snapshot of how one service is routed: every
// registered instance, the ones chosen to receive traffic, and the strategy
// over them. Followers build a new Table on every change and swap it in
// atomically; requests read it without locks.
type Table struct {
	service  string
	index    uint64
	built    time.Time
	source   Source
	strategy Strategy
	hashKey  HashKey
	mode     string
	entries  []*entry // every instance, ordered by ID
	routed   []*entry // the candidates, ordered by ID
	picker   Picker
	prefixes []routePrefix
	// passing and available count instances for status and panic mode.
	passing, available int
	// rebuildAt is when a slow start ramp calls for a new table (zero: no
	// ramp in progress).
	rebuildAt time.Time
}

// Service returns the table's service name.
func (t *Table) Service() string { return t.service }

// Index returns the registry index the table was built from.
func (t *Table) Index() uint64 { return t.index }

// Mode returns how the table chose its candidates (ModeNormal, ModePanic...).
func (t *Table) Mode() string { return t.mode }

// Routed returns the IDs of the instances that receive new requests.
func (t *Table) Routed() []string {
	out := make([]string, len(t.routed))
	for i, e := range t.routed {
		out[i] = e.ID
	}
	return out
}

// slowStartStep is how often a ramping table is rebuilt, as a share of the
// window, and at least.
const (
	slowStartSteps   = 20
	minSlowStartStep = 100 * time.Millisecond
)

// buildTable computes a service's table at now from its instances. state
// returns the shared state of an instance ID; seq is the service's rotation
// counter. It does no I/O.
func buildTable(service string, list *InstanceList, cfg *Config, state func(id string) *instanceState, seq *atomic.Uint64, now time.Time) *Table {
	t := &Table{
		service: service, index: list.Index, built: now, source: list.Source,
		strategy: cfg.strategyFor(service), hashKey: cfg.hashKeyFor(service),
	}
	bs := slices.Clone(list.Backends)
	sort.Slice(bs, func(i, j int) bool { return bs[i].ID < bs[j].ID })
	var avail, passing, warning []*entry
	seenPrefix := map[string]bool{}
	for _, b := range bs {
		e := &entry{Backend: b, target: b.HostPort(), state: state(b.ID), metricFactor: 1, slowStart: 1}
		t.entries = append(t.entries, e)
		if !b.available() {
			continue
		}
		avail = append(avail, e)
		switch b.Status {
		case Passing:
			passing = append(passing, e)
		case Warning:
			warning = append(warning, e)
		}
		if p := b.Meta[MetaRoutePrefix]; p != "" {
			p = normalizePrefix(p)
			if p != "" && !b.Trusted && !InNamespace(p, service) {
				// Only the management token may route another path here.
				continue
			}
			if p != "" && !seenPrefix[p] {
				seenPrefix[p] = true
				t.prefixes = append(t.prefixes, routePrefix{prefix: p, strip: b.Meta[MetaRouteStrip] == "true"})
			}
		}
	}
	t.passing, t.available = len(passing), len(avail)

	switch {
	case len(passing) == 0 && cfg.FallbackToWarning && len(warning) > 0:
		t.routed, t.mode = warning, ModeWarning
	case len(passing) == 0:
		t.mode = ModeUnavailable
	case cfg.PanicThreshold > 0 && float64(len(passing)) < cfg.PanicThreshold*float64(len(avail)):
		t.routed, t.mode = avail, ModePanic
	default:
		t.routed, t.mode = passing, ModeNormal
		if cfg.Zone != "" {
			var local []*entry
			for _, e := range passing {
				if e.Zone() == cfg.Zone {
					local = append(local, e)
				}
			}
			if len(local) >= max(cfg.ZoneMinHealthy, 1) {
				t.routed, t.mode = local, ModeZone
			} else {
				t.mode = ModeSpillover
			}
		}
	}

	cands := make([]Candidate, len(t.routed))
	for i, e := range t.routed {
		e.routed = true
		e.metricFactor = MetricFactor(e.Metrics)
		if e.Status == Passing {
			e.slowStart = SlowStartFactor(e.HealthySince, now, cfg.SlowStart, cfg.SlowStartMinShare)
			if e.slowStart < 1 {
				step := max(cfg.SlowStart/slowStartSteps, minSlowStartStep)
				at := now.Add(step)
				if t.rebuildAt.IsZero() || at.Before(t.rebuildAt) {
					t.rebuildAt = at
				}
			}
		}
		e.weight = float64(e.weight0()) * e.metricFactor * e.slowStart
		cands[i] = Candidate{ID: e.ID, Weight: e.weight, InFlight: &e.state.inflight}
		if t.strategy == Hash {
			// Keys stay on their instance whatever the load reports say.
			cands[i].Weight = float64(e.weight0())
		}
	}
	t.picker = NewPicker(t.strategy, cands, seq)
	return t
}

func (e *entry) weight0() int { return e.Backend.weight() }

// InNamespace reports whether the normalized route prefix p is the
// service's own path, /SERVICE, or below it. An instance may declare such a
// prefix with any write token for its service; a prefix outside needs an
// instance registered with the management token (Backend.Trusted), since it
// takes traffic for paths no service name claims.
func InNamespace(p, service string) bool {
	ns := "/" + service
	return p == ns || strings.HasPrefix(p, ns+"/")
}

// normalizePrefix makes "/shop", "shop" and "/shop/" the same prefix; "/"
// alone is refused (it would swallow every request).
func normalizePrefix(p string) string {
	p = "/" + strings.Trim(p, "/")
	if p == "/" {
		return ""
	}
	return p
}

// pick chooses an instance for a request, avoiding the instances already
// tried and, while others remain, the ejected ones. It returns nil when every
// candidate has been tried.
func (t *Table) pick(key Key, tried []int, now int64) (int, *entry) {
	i := t.pickSkipping(key, tried, now, true)
	if i < 0 {
		// Every candidate left is ejected: better an ejected instance than
		// none (the registry still says it is healthy).
		i = t.pickSkipping(key, tried, now, false)
	}
	if i < 0 {
		return -1, nil
	}
	return i, t.routed[i]
}

// canEject reports whether one more routed instance may be ejected.
func (t *Table) canEject(cfg *Config, now int64) bool {
	ejected := 0
	for _, e := range t.routed {
		if e.state.ejected(now) {
			ejected++
		}
	}
	return ejected < max(1, int(cfg.MaxEjectedShare*float64(len(t.routed))))
}

// pickSkipping picks a candidate not in tried and, when ejected is set,
// not ejected at now. It calls the concrete strategies' Pick directly:
// through the Picker interface the skip function, and with it the caller's
// list of tried instances, would escape to the heap (two allocations per
// request).
func (t *Table) pickSkipping(key Key, tried []int, now int64, ejected bool) int {
	skip := func(i int) bool {
		return slices.Contains(tried, i) || ejected && t.routed[i].state.ejected(now)
	}
	switch p := t.picker.(type) {
	case *roundRobin:
		return p.Pick(key, skip)
	case *weighted:
		return p.Pick(key, skip)
	case *randomPicker:
		return p.Pick(key, skip)
	case *leastRequests:
		return p.Pick(key, skip)
	case *hashRing:
		return p.Pick(key, skip)
	}
	// A Picker NewPicker does not build: its own copy of tried.
	own := slices.Clone(tried)
	return t.picker.Pick(key, func(i int) bool {
		return slices.Contains(own, i) || ejected && t.routed[i].state.ejected(now)
	})
}
