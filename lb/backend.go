package lb

import (
	"math"
	"net"
	"strconv"
	"time"
)

// Health is an instance's status as the registry reports it.
type Health string

// Health values, from best to worst.
const (
	Passing  Health = "passing"
	Warning  Health = "warning"
	Critical Health = "critical"
)

// Meta keys the balancer reads from an instance's meta.
const (
	// MetaZone is the instance's zone, compared with Config.Zone.
	MetaZone = "zone"
	// MetaRoutePrefix declares a path prefix (such as "/shop") under which
	// the balancer routes requests to the instance's service.
	MetaRoutePrefix = "route_prefix"
	// MetaRouteStrip, set to "true", strips the declared prefix before the
	// request is forwarded.
	MetaRouteStrip = "route_strip"
)

// Metric names that change an instance's effective weight (see
// MetricFactor).
const (
	MetricCapacity = "capacity"
	MetricLoad     = "load"
)

// Backend is one registered instance of a service as the balancer sees it.
// A Backend handed to the balancer must not be changed afterwards.
type Backend struct {
	ID      string
	Address string
	Port    int
	// Weight is the registered weight (1 when zero or negative).
	Weight int
	Status Health
	// HealthySince is when the instance last became passing (zero when it is
	// not passing or the registry does not say).
	HealthySince time.Time
	// Draining and Maintenance instances get no new requests.
	Draining    bool
	Maintenance bool
	Meta        map[string]string
	// Metrics are the custom health metrics the instance last reported.
	Metrics map[string]float64
	// Trusted is set when the management token registered the instance:
	// only then may its route_prefix leave the service's own path
	// (/SERVICE and below), and even then not shadow another service's.
	Trusted bool
}

// Zone returns the instance's zone from its meta.
func (b *Backend) Zone() string { return b.Meta[MetaZone] }

// HostPort returns the address to dial.
func (b *Backend) HostPort() string { return net.JoinHostPort(b.Address, strconv.Itoa(b.Port)) }

// available reports whether the instance may take new requests at all:
// not draining and not in maintenance (its health is judged separately).
func (b *Backend) available() bool { return !b.Draining && !b.Maintenance }

func (b *Backend) weight() int {
	if b.Weight < 1 {
		return 1
	}
	return b.Weight
}

// minMetricFactor keeps an instance that reports itself saturated in the
// rotation with a trickle of traffic, so that its next report is still
// meaningful.
const minMetricFactor = 0.05

// MetricFactor is the documented rule that turns an instance's custom health
// metrics into a multiplier of its registered weight:
//
//   - "capacity" (c >= 0) multiplies the weight by c, clamped to [0.05, 100]:
//     an instance that reports capacity 2 takes twice its weight's share;
//   - "load" (l, the utilisation in [0, 1]) multiplies it by 1-l, clamped to
//     [0.05, 1]: an instance at load 0.75 takes a quarter of its share;
//   - both multiply; an absent or non-finite metric counts as 1.
func MetricFactor(metrics map[string]float64) float64 {
	f := 1.0
	if c, ok := metrics[MetricCapacity]; ok && !math.IsNaN(c) && !math.IsInf(c, 0) {
		f *= min(max(c, minMetricFactor), 100)
	}
	if l, ok := metrics[MetricLoad]; ok && !math.IsNaN(l) && !math.IsInf(l, 0) {
		f *= min(max(1-l, minMetricFactor), 1)
	}
	return f
}

// SlowStartFactor is the share of its weight an instance gets at now when
// it became passing at since: it ramps linearly from minShare to 1 over
// window. A zero since (unknown) or window means full weight.
func SlowStartFactor(since, now time.Time, window time.Duration, minShare float64) float64 {
	if window <= 0 || since.IsZero() {
		return 1
	}
	el := now.Sub(since)
	if el >= window {
		return 1
	}
	f := float64(el) / float64(window)
	return min(max(f, minShare), 1)
}
