package lb

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// HashKey says where the Hash strategy finds a request's key.
type HashKey struct {
	// Source is "header", "cookie" or "ip" (the client's address).
	Source string
	// Name is the header or cookie name.
	Name string
}

// ParseHashKey reads "ip", "header:NAME" or "cookie:NAME".
func ParseHashKey(s string) (HashKey, error) {
	src, name, _ := strings.Cut(s, ":")
	switch {
	case src == "ip" && name == "":
		return HashKey{Source: "ip"}, nil
	case (src == "header" || src == "cookie") && name != "":
		if src == "header" {
			name = http.CanonicalHeaderKey(name)
		}
		return HashKey{Source: src, Name: name}, nil
	}
	return HashKey{}, fmt.Errorf("lb: hash key %q: want ip, header:NAME or cookie:NAME", s)
}

// String is the form ParseHashKey reads.
func (k HashKey) String() string {
	if k.Source == "ip" || k.Source == "" {
		return "ip"
	}
	return k.Source + ":" + k.Name
}

// Config configures a Balancer. Build it from DefaultConfig and change what
// you need; Validate reports the first problem.
type Config struct {
	// Domains are the host suffixes of host routing: a request for
	// SERVICE.DOMAIN goes to SERVICE. Empty disables host routing.
	Domains []string
	// PathRouting routes /SERVICE/rest to SERVICE with the /SERVICE prefix
	// stripped.
	PathRouting bool
	// Services, when not empty, limits the services followed and routed to.
	// Otherwise every service in the catalog is followed (so that route
	// prefixes declared in instance meta are known before the first request).
	Services []string

	// Strategy is the default strategy; Strategies overrides it per service.
	Strategy   Strategy
	Strategies map[string]Strategy
	// HashKey is where the Hash strategy finds its key; HashKeys overrides
	// it per service.
	HashKey  HashKey
	HashKeys map[string]HashKey

	// Zone is this balancer's zone. When set, instances whose "zone" meta
	// matches are preferred as long as at least ZoneMinHealthy of them are
	// passing; otherwise traffic spills over to every zone.
	Zone           string
	ZoneMinHealthy int
	// PanicThreshold (0 to 1; 0 disables) enters panic mode when fewer than
	// this share of a service's available instances are passing (and at
	// least one is): traffic then goes to every available instance.
	PanicThreshold float64
	// FallbackToWarning routes to instances in warning when none is passing,
	// instead of answering 503.
	FallbackToWarning bool
	// SlowStart ramps an instance that just became passing from
	// SlowStartMinShare of its weight to all of it over this window (0
	// disables). It applies to the weighted, least-requests and random
	// strategies.
	SlowStart         time.Duration
	SlowStartMinShare float64

	// MaxRetries bounds the further instances a request is tried on after a
	// connection failure (any method, when nothing of the request was sent)
	// or, for idempotent requests, after a failure once sent or a retryable
	// status.
	MaxRetries int
	// RetryStatuses are the statuses after which idempotent requests are
	// retried on another instance.
	RetryStatuses []int
	// RetryBudgetRatio and RetryBudgetMinPerSecond bound retries per service:
	// retries may add this share of the requests, plus this many per second.
	RetryBudgetRatio        float64
	RetryBudgetMinPerSecond float64
	// RetryBufferBytes is how much of a request body is kept so that an
	// idempotent request with a body can be retried (larger bodies are not
	// retried once sent).
	RetryBufferBytes int

	// EjectAfter consecutive failures (connection failures, any 5xx when
	// EjectOn5xx, and the RetryStatuses) eject an instance for EjectBase, doubling with each
	// further ejection up to EjectMax. At most MaxEjectedShare of a
	// service's routed instances (and at least one) are ejected at a time.
	EjectAfter      int
	EjectOn5xx      bool
	EjectBase       time.Duration
	EjectMax        time.Duration
	MaxEjectedShare float64

	// Upstream timeouts.
	DialTimeout           time.Duration
	ResponseHeaderTimeout time.Duration
	UpstreamIdleTimeout   time.Duration
	// RequestTimeout bounds a whole proxied request, retries included
	// (0: none, so streams and WebSockets may last).
	RequestTimeout time.Duration
	// Client-side timeouts of the listener.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration

	// DisableFastPath serves every request through net/http's server and
	// httputil's machinery instead of the balancer's own HTTP/1.1 path for
	// plain requests (docs/lb.md, "The request path"). The answers are the
	// same; the fast path costs about 40 % less CPU per request (18-20 against 32 µs
	// in make bench-lb).
	DisableFastPath bool

	// PassHost forwards the client's Host header; otherwise the upstream
	// sees the instance's host:port.
	PassHost bool
	// TLS, when set, makes Serve speak TLS (HTTP/2 through ALPN). Without
	// it Serve speaks HTTP/1.1 and cleartext HTTP/2 (h2c).
	TLS *tls.Config

	// RegistryWait is how long a follower's blocking read may wait
	// (implementations of Catalog may apply their own bound);
	// RegistryBackoffMin/Max bound the pause between failed reads.
	RegistryBackoffMin time.Duration
	RegistryBackoffMax time.Duration

	Logger hclog.Logger

	// DenyCIDRs are address ranges the balancer never connects to, checked
	// on the resolved address at connect time (so a host name that resolves
	// into one is refused too): an instance registered there (a cloud
	// metadata endpoint, say) gets no traffic. Default: the link-local
	// ranges 169.254.0.0/16 and fe80::/10.
	DenyCIDRs []netip.Prefix
	// AllowLoopback lets the balancer connect to loopback addresses
	// (127.0.0.0/8, ::1). Off by default: a loopback instance is on the
	// balancer's own host, where the agents' and the balancer's own ports
	// are; a dev setup with every service on 127.0.0.1 turns it on
	// (--lb-allow-loopback).
	AllowLoopback bool
	// DenyAddrs are endpoints the balancer never connects to, whatever
	// AllowLoopback says: the agents' API and cluster ports. The balancer
	// adds its own listen and admin addresses when it serves them. An
	// unspecified address (0.0.0.0:8750) stands for every address of this
	// host.
	DenyAddrs []netip.AddrPort
	// MaxHops is how many Beacon balancers a request may have passed
	// (counted in the X-Beacon-Lb-Hops header) before this one answers 508
	// instead of forwarding it: a request that loops is stopped there. 0
	// disables the check (the header is still set).
	MaxHops int
	// MaxConnsPerClient caps the connections one client IP holds open on
	// the admin listener (ServeAdmin); 0 disables the cap. AdminIdleTimeout
	// is how long an idle admin keep-alive connection is kept.
	MaxConnsPerClient int
	AdminIdleTimeout  time.Duration

	// Metrics, when set, receives the balancer's Prometheus collector: the
	// routing tables read at scrape time, and the attempts, latencies and
	// ejections counted on the request path (docs/metrics.md). Gatherer is
	// what the admin GET /metrics serves. With neither set the balancer
	// keeps a registry of its own and serves that.
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer
}

// DefaultConfig returns the documented defaults (docs/lb.md).
func DefaultConfig() Config {
	return Config{
		Domains:                 []string{"service.beacon", "localhost"},
		PathRouting:             true,
		Strategy:                RoundRobin,
		HashKey:                 HashKey{Source: "ip"},
		ZoneMinHealthy:          1,
		SlowStartMinShare:       0.1,
		MaxRetries:              2,
		RetryStatuses:           []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout},
		RetryBudgetRatio:        0.2,
		RetryBudgetMinPerSecond: 10,
		RetryBufferBytes:        64 << 10,
		EjectAfter:              5,
		EjectOn5xx:              true,
		EjectBase:               10 * time.Second,
		EjectMax:                5 * time.Minute,
		MaxEjectedShare:         0.5,
		DialTimeout:             2 * time.Second,
		ResponseHeaderTimeout:   30 * time.Second,
		UpstreamIdleTimeout:     90 * time.Second,
		ReadHeaderTimeout:       10 * time.Second,
		IdleTimeout:             2 * time.Minute,
		PassHost:                true,
		RegistryBackoffMin:      50 * time.Millisecond,
		RegistryBackoffMax:      5 * time.Second,
		DenyCIDRs:               []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")},
		MaxHops:                 DefaultMaxHops,
		MaxConnsPerClient:       200,
		AdminIdleTimeout:        30 * time.Second,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("lb: "+format, args...))
		}
	}
	for _, d := range c.Domains {
		check(d != "" && !strings.HasPrefix(d, ".") && !strings.HasSuffix(d, "."), "domain %q: give it without leading or trailing dots", d)
	}
	_, err := ParseStrategy(string(c.Strategy))
	check(err == nil, "default strategy %q is unknown", c.Strategy)
	for svc, s := range c.Strategies {
		_, err := ParseStrategy(string(s))
		check(err == nil, "strategy %q of service %q is unknown", s, svc)
	}
	for svc, k := range c.HashKeys {
		_, err := ParseHashKey(k.String())
		check(err == nil, "hash key of service %q: %v", svc, err)
	}
	check(c.ZoneMinHealthy >= 0, "zone min healthy must not be negative")
	check(c.PanicThreshold >= 0 && c.PanicThreshold <= 1, "panic threshold must be between 0 and 1")
	check(c.SlowStart >= 0, "slow start window must not be negative")
	check(c.SlowStartMinShare > 0 && c.SlowStartMinShare <= 1, "slow start min share must be in (0, 1]")
	check(c.MaxRetries >= 0 && c.MaxRetries <= 10, "max retries must be 0-10")
	check(c.RetryBudgetRatio >= 0 && c.RetryBudgetMinPerSecond >= 0, "retry budget must not be negative")
	check(c.RetryBufferBytes >= 0, "retry buffer must not be negative")
	check(c.EjectAfter >= 0, "eject-after must not be negative (0 disables ejection)")
	check(c.EjectAfter == 0 || (c.EjectBase > 0 && c.EjectMax >= c.EjectBase), "need 0 < eject base <= eject max")
	check(c.MaxEjectedShare >= 0 && c.MaxEjectedShare <= 1, "max ejected share must be between 0 and 1")
	check(c.DialTimeout > 0 && c.ResponseHeaderTimeout > 0, "dial and response header timeouts must be positive")
	check(c.RequestTimeout >= 0 && c.UpstreamIdleTimeout >= 0 && c.ReadHeaderTimeout >= 0 && c.IdleTimeout >= 0, "timeouts must not be negative")
	check(c.MaxHops >= 0 && c.MaxConnsPerClient >= 0 && c.AdminIdleTimeout >= 0, "max hops, max connections per client and admin idle timeout must not be negative")
	check(c.RegistryBackoffMin > 0 && c.RegistryBackoffMax >= c.RegistryBackoffMin, "need 0 < registry backoff min <= max")
	return errors.Join(errs...)
}

// strategyFor returns the strategy of service.
func (c *Config) strategyFor(service string) Strategy {
	if s, ok := c.Strategies[service]; ok {
		return s
	}
	return c.Strategy
}

// hashKeyFor returns the hash key of service.
func (c *Config) hashKeyFor(service string) HashKey {
	if k, ok := c.HashKeys[service]; ok {
		return k
	}
	return c.HashKey
}
