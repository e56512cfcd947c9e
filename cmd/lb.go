package cmd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/lb"
	"github.com/hashicorp/go-hclog"
)

// LBConfig is the configuration of a standalone load balancer (`beacon lb`).
type LBConfig struct {
	// Registry lists the HTTP addresses of registry nodes; the balancer
	// follows one and fails over to the others.
	Registry []string
	Token    string
	// RegistryTLS, when set, is how the balancer talks HTTPS to the
	// registry nodes (addresses without a scheme then mean https://);
	// `beacon lb` builds it from --ca-cert, --client-cert and friends.
	RegistryTLS *tls.Config
	// Listen is the proxy's address (default :8080); AdminAddr serves
	// /lb/status, /metrics, /healthz and /readyz ("" disables it).
	Listen    string
	AdminAddr string
	// RegistryWait bounds each blocking read of the registry.
	RegistryWait time.Duration
	// TLSCert and TLSKey make the proxy serve TLS (and HTTP/2 through ALPN).
	TLSCert, TLSKey string
	// LB is the balancer's own configuration.
	LB lb.Config
}

// DefaultLBConfig returns the documented defaults of `beacon lb`.
func DefaultLBConfig() LBConfig {
	return LBConfig{
		Registry:     []string{"127.0.0.1:8750"},
		Listen:       ":8080",
		AdminAddr:    "127.0.0.1:8081",
		RegistryWait: 30 * time.Second,
		LB:           lb.DefaultConfig(),
	}
}

// LoadBalancer is `beacon lb` as a library: a balancer following a
// registry cluster through the Go client, with its proxy and admin
// listeners. main and the tests both use it.
type LoadBalancer struct {
	cfg     LBConfig
	logger  hclog.Logger
	cat     *registryCatalog
	bal     *lb.Balancer
	ln      net.Listener
	adminLn net.Listener
	wg      sync.WaitGroup
	errCh   chan error
	once    sync.Once
	err     error
}

// NewLoadBalancer checks cfg and builds a load balancer that is not running.
func NewLoadBalancer(cfg LBConfig, logger hclog.Logger) (*LoadBalancer, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if cfg.RegistryWait <= 0 {
		return nil, errors.New("lb: registry wait must be positive")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("lb: give both --tls-cert and --tls-key, or neither")
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("lb: load TLS key pair: %w", err)
		}
		cfg.LB.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	cat, err := newRegistryCatalog(cfg.Registry, cfg.Token, cfg.RegistryWait, cfg.RegistryTLS)
	if err != nil {
		return nil, err
	}
	cfg.LB.Logger = logger
	lm := newLBMetrics()
	lm.observe(&cfg.LB)
	bal, err := lb.New(cfg.LB, cat)
	if err != nil {
		return nil, err
	}
	lm.bal = bal
	return &LoadBalancer{cfg: cfg, logger: logger, cat: cat, bal: bal, errCh: make(chan error, 2)}, nil
}

// Start binds the listeners, starts following the registry and serves.
func (l *LoadBalancer) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			_ = l.Shutdown(context.Background())
		}
	}()
	if l.ln, err = net.Listen("tcp", l.cfg.Listen); err != nil {
		return fmt.Errorf("lb: listen on %s: %w", l.cfg.Listen, err)
	}
	if l.cfg.AdminAddr != "" {
		if l.adminLn, err = net.Listen("tcp", l.cfg.AdminAddr); err != nil {
			return fmt.Errorf("lb: admin listen on %s: %w", l.cfg.AdminAddr, err)
		}
	}
	refuseAgents(ctx, l.bal, l.cfg.Registry, func(ctx context.Context) (ms []client.Member, err error) {
		_, err = l.cat.read(ctx, func(c *client.Client) (*client.QueryMeta, error) {
			ms, err = c.Members(ctx)
			return &client.QueryMeta{KnownLeader: true}, err
		})
		return ms, err
	}, l.logger)
	if err := l.bal.Start(ctx); err != nil {
		return err
	}
	l.serve(l.ln, l.bal.Serve, "proxy")
	if l.adminLn != nil {
		l.serve(l.adminLn, l.bal.ServeAdmin, "admin")
	}
	l.logger.Info("load balancer started", "listen", l.ln.Addr().String(), "admin", l.AdminAddr(),
		"registry", strings.Join(l.cfg.Registry, ","), "domains", strings.Join(l.cfg.LB.Domains, ","),
		"strategy", l.cfg.LB.Strategy, "zone", l.cfg.LB.Zone, "tls", l.cfg.LB.TLS != nil)
	return nil
}

func (l *LoadBalancer) serve(ln net.Listener, serve func(net.Listener) error, what string) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := serve(ln); err != nil {
			l.errCh <- fmt.Errorf("lb: %s: %w", what, err)
		}
	}()
}

// Addr returns the proxy's bound address.
func (l *LoadBalancer) Addr() string { return l.ln.Addr().String() }

// AdminAddr returns the admin listener's bound address, or "".
func (l *LoadBalancer) AdminAddr() string {
	if l.adminLn == nil {
		return ""
	}
	return l.adminLn.Addr().String()
}

// Balancer returns the running balancer.
func (l *LoadBalancer) Balancer() *lb.Balancer { return l.bal }

// Err delivers errors that stop the load balancer while it runs.
func (l *LoadBalancer) Err() <-chan error { return l.errCh }

// Shutdown stops accepting connections, lets requests in flight finish
// until ctx ends, and stops following the registry.
func (l *LoadBalancer) Shutdown(ctx context.Context) error {
	l.once.Do(func() {
		l.err = l.bal.Shutdown(ctx)
		// Listeners that were bound but never served.
		for _, ln := range []net.Listener{l.ln, l.adminLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		l.wg.Wait()
	})
	return l.err
}

// lbFlags are the balancer settings shared by `beacon lb` and the agent's
// embedded balancer, in the string forms flags take.
type lbFlags struct {
	domains    []string
	strategies []string
	hashKeys   []string
	services   []string
	// allowLoopback, denyCIDRs and denyAddrs are the dial guard's settings
	// (docs/security.md, "Check and proxy targets").
	allowLoopback bool
	denyCIDRs     []string
	denyAddrs     []string
}

// apply parses the flags into cfg.
func (f *lbFlags) apply(cfg *lb.Config) error {
	if f.domains != nil {
		cfg.Domains = nil
		for _, d := range splitList(f.domains) {
			cfg.Domains = append(cfg.Domains, strings.Trim(strings.ToLower(d), "."))
		}
	}
	cfg.Services = append(cfg.Services, splitList(f.services)...)
	if err := f.applyGuard(cfg); err != nil {
		return err
	}
	for _, s := range splitList(f.strategies) {
		svc, name, per := strings.Cut(s, "=")
		if !per {
			svc, name = "", s
		}
		st, err := lb.ParseStrategy(name)
		if err != nil {
			return err
		}
		if !per {
			cfg.Strategy = st
			continue
		}
		if cfg.Strategies == nil {
			cfg.Strategies = map[string]lb.Strategy{}
		}
		cfg.Strategies[svc] = st
	}
	for _, s := range splitList(f.hashKeys) {
		svc, key, per := strings.Cut(s, "=")
		if !per {
			svc, key = "", s
		}
		k, err := lb.ParseHashKey(key)
		if err != nil {
			return err
		}
		if !per {
			cfg.HashKey = k
			continue
		}
		if cfg.HashKeys == nil {
			cfg.HashKeys = map[string]lb.HashKey{}
		}
		cfg.HashKeys[svc] = k
	}
	return cfg.Validate()
}

// splitList flattens repeated and comma-separated flag values.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
