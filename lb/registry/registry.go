// Package registry is a load balancer following a Beacon cluster over its
// HTTP API (`beacon lb` as a library): Catalog presents the cluster, reached
// through api/client with fail-over between agents, as an lb.Catalog, and
// Balancer runs an lb.Server over it. It imports only lb and api/client, so
// a Go program can embed a balancer without the server.
package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/lb"
	"github.com/hashicorp/go-hclog"
)

// Config is the configuration of a standalone load balancer (`beacon lb`).
type Config struct {
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

// DefaultConfig returns the documented defaults of `beacon lb`.
func DefaultConfig() Config {
	return Config{
		Registry:     []string{"127.0.0.1:8750"},
		Listen:       ":8080",
		AdminAddr:    "127.0.0.1:8081",
		RegistryWait: 30 * time.Second,
		LB:           lb.DefaultConfig(),
	}
}

// Balancer is `beacon lb` as a library: a balancer following a registry
// cluster through the Go client, with its proxy and admin listeners. main
// and the tests both use it.
type Balancer struct {
	cfg    Config
	logger hclog.Logger
	cat    *Catalog
	srv    *lb.Server
}

// New checks cfg and builds a load balancer that is not running.
func New(cfg Config, logger hclog.Logger) (*Balancer, error) {
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
	cat, err := NewCatalog(cfg.Registry, cfg.Token, cfg.RegistryWait, cfg.RegistryTLS)
	if err != nil {
		return nil, err
	}
	cfg.LB.Logger = logger
	srv, err := lb.NewServer(cfg.LB, cat)
	if err != nil {
		return nil, err
	}
	return &Balancer{cfg: cfg, logger: logger, cat: cat, srv: srv}, nil
}

// Start binds the listeners, starts following the registry and serves.
//
// First it reads the cluster's members once (best effort, within 5 s) and
// refuses to dial the agents it follows: the registry addresses and every
// member's API, cluster and gossip addresses (docs/security.md).
func (l *Balancer) Start(ctx context.Context) error {
	l.refuseAgents(ctx)
	if err := l.srv.Start(ctx, l.cfg.Listen, l.cfg.AdminAddr); err != nil {
		return err
	}
	l.logger.Info("load balancer started", "listen", l.Addr(), "admin", l.AdminAddr(),
		"registry", strings.Join(l.cfg.Registry, ","), "domains", strings.Join(l.cfg.LB.Domains, ","),
		"strategy", l.cfg.LB.Strategy, "zone", l.cfg.LB.Zone, "tls", l.cfg.LB.TLS != nil)
	return nil
}

// Addr returns the proxy's bound address.
func (l *Balancer) Addr() string { return l.srv.Addr() }

// AdminAddr returns the admin listener's bound address, or "".
func (l *Balancer) AdminAddr() string { return l.srv.AdminAddr() }

// Balancer returns the running balancer.
func (l *Balancer) Balancer() *lb.Balancer { return l.srv.Balancer() }

// Err delivers errors that stop the load balancer while it runs.
func (l *Balancer) Err() <-chan error { return l.srv.Err() }

// Shutdown stops accepting connections, lets requests in flight finish
// until ctx ends, and stops following the registry.
func (l *Balancer) Shutdown(ctx context.Context) error { return l.srv.Shutdown(ctx) }

// refuseAgents adds the agents' addresses to the balancer's refused
// endpoints. What cannot be read is logged; the registry addresses are
// refused in any case.
func (l *Balancer) refuseAgents(ctx context.Context) {
	addrs := append([]string(nil), l.cfg.Registry...)
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	var ms []client.Member
	_, err := l.cat.read(mctx, func(c *client.Client) (*client.QueryMeta, error) {
		var err error
		ms, err = c.Members(mctx)
		return &client.QueryMeta{KnownLeader: true}, err
	})
	cancel()
	if err != nil {
		l.logger.Warn("cannot read the cluster's members: only the registry addresses are refused as upstreams", "error", err)
	}
	for _, m := range ms {
		addrs = append(addrs, m.HTTPAddr, m.ClusterAddr, m.GossipAddr)
	}
	for _, ap := range lb.ResolveAddrPorts(addrs) {
		l.srv.Balancer().Refuse(ap, "a Beacon agent's port")
	}
}
