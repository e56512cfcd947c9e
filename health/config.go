package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// FlapPolicy decides when a check is flapping: Threshold or more debounced
// status changes within Window. A flapping check is held (it counts as
// critical) for HoldDown, doubled for each hold-down in a row up to
// MaxHoldDown, and leaves the state at the end of a hold-down once fewer than
// Threshold changes fall within the last Window. Threshold 0 disables
// flapping detection.
type FlapPolicy struct {
	Threshold   int
	Window      time.Duration
	HoldDown    time.Duration
	MaxHoldDown time.Duration
}

// holdDown returns the hold-down of the level-th flapping episode in a row (level >= 1).
func (p FlapPolicy) holdDown(level int) time.Duration {
	d := p.HoldDown
	for i := 1; i < level && d < p.MaxHoldDown; i++ {
		d *= 2
	}
	return min(d, p.MaxHoldDown)
}

// Validate reports the first problem with p.
func (p FlapPolicy) Validate() error {
	if p.Threshold == 0 {
		return nil
	}
	if p.Threshold < 2 {
		return errors.New("health: flap threshold must be 0 (off) or at least 2")
	}
	if p.Window <= 0 || p.HoldDown <= 0 || p.MaxHoldDown < p.HoldDown {
		return errors.New("health: flap window and hold-down must be positive, max hold-down at least the hold-down")
	}
	return nil
}

// Config configures the health checking of one agent.
type Config struct {
	// Node is this agent's node name: the owner name of the checks it runs.
	Node string
	// DenyCIDRs are address ranges no check may connect to; every resolved
	// address is checked at connect time.
	DenyCIDRs []netip.Prefix
	// AllowCIDRs are ranges any check may connect to besides its instance's
	// own address (--check-allow-cidr). Checks registered with the
	// management token may connect anywhere the deny list allows; every
	// other check only to the address its instance is registered at (a host
	// name resolved when the check runs).
	AllowCIDRs []netip.Prefix
	// LocalCIDRs are the addresses that reach the host running the probe:
	// loopback, the unspecified addresses and the host's own addresses.
	// A check not registered with the management token
	// (fsm.CheckDefinition.AnyTarget) never connects to them, unless they
	// lie in AllowCIDRs; every resolved address is checked at connect time,
	// so neither its instance's address nor a host name leads there. The
	// agent sets them when auth is on (without --check-allow-loopback);
	// nil: no such rule.
	LocalCIDRs []netip.Prefix
	// SafeMethodsOnly: an HTTP check not registered with the management
	// token is probed only with GET, HEAD or OPTIONS; another method makes
	// it critical without connecting. The agent sets it when auth is on.
	SafeMethodsOnly bool
	// Flap is the flapping policy of every check.
	Flap FlapPolicy
	// TTLGrace is added to every TTL when a new leader re-arms the timers,
	// so that reports lost during the election do not expire healthy checks.
	TTLGrace time.Duration
	// MetricsPeriod is the coalescing period of custom metrics: each
	// instance's metrics are replicated at most once per period, and only
	// when they changed.
	MetricsPeriod time.Duration
	// MinScanInterval bounds how often the leader scans the checks that
	// changed (assignments, timers, deadlines), so bursts of writes cost
	// one scan.
	MinScanInterval time.Duration
	// MaxOutput caps the output kept per check (bytes).
	MaxOutput int
	Logger    hclog.Logger
	// Metrics, when set, receives the subsystem's Prometheus collectors:
	// probe runs and durations, counted by the runner, and the Stats
	// counters (docs/metrics.md).
	Metrics prometheus.Registerer
	// AuditTTL, when set, is called on the leader after it accepted a TTL
	// report, with the context the report arrived with (the cluster puts
	// who sent it there), the check, the status reported and the index a
	// reader must reach to see its effect, and whether the report was
	// written at that index (false when it changed nothing, as a heartbeat
	// of a passing check). The agent writes its audit line with it: once per
	// write, heartbeats not at all. It must not block.
	AuditTTL func(ctx context.Context, check string, status fsm.Health, index uint64, wrote bool)
}

// DefaultDenyCIDRs is the default deny list: the IPv4 and IPv6 link-local
// ranges (cloud metadata endpoints answer at 169.254.169.254).
func DefaultDenyCIDRs() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")}
}

// DefaultConfig returns the documented defaults (docs/health.md).
func DefaultConfig() Config {
	return Config{
		DenyCIDRs: DefaultDenyCIDRs(),
		Flap: FlapPolicy{
			Threshold: 5, Window: time.Minute,
			HoldDown: 30 * time.Second, MaxHoldDown: 10 * time.Minute,
		},
		TTLGrace:        10 * time.Second,
		MetricsPeriod:   10 * time.Second,
		MinScanInterval: 200 * time.Millisecond,
		MaxOutput:       4096,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if c.Node == "" {
		return errors.New("health: node name is required")
	}
	if err := c.Flap.Validate(); err != nil {
		return err
	}
	if c.TTLGrace < 0 || c.MetricsPeriod <= 0 || c.MinScanInterval < 0 {
		return errors.New("health: ttl grace must be >= 0 and the metrics period positive")
	}
	if c.MaxOutput <= 0 {
		return fmt.Errorf("health: max output must be positive, got %d", c.MaxOutput)
	}
	return nil
}
