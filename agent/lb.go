package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/beaconhq/beacon/lb"
)

// The embedded load balancer (LBAddr) follows the agent's own replicated
// store (storeCatalog), so it needs no network round trip to see a change,
// and keeps routing from the local copy while the agent is cut off from its
// leader. Its listeners are run by lb.Server, as the standalone balancer's,
// and, like it, it serves its series on its admin address from a registry
// of its own (lb.Config.Metrics left unset), apart from the agent's.

// lbConfig builds the embedded balancer's configuration from the agent's.
func (c Config) lbConfig() (lb.Config, error) {
	cfg := lb.DefaultConfig()
	cfg.Zone = c.LBZone
	o := lb.Options{Strategies: c.LBStrategy, AllowLoopback: c.LBAllowLoopback, DenyCIDRs: c.LBDenyCIDR,
		DenyAddrs: []string{c.HTTPAddr, c.RaftAddr, c.GossipAddr}} // never its own agent's ports
	if len(c.LBDomain) > 0 {
		o.Domains = c.LBDomain
	}
	if err := o.Apply(&cfg); err != nil {
		return cfg, fmt.Errorf("agent: load balancer: %w", err)
	}
	return cfg, nil
}

// startLB starts the embedded balancer when LBAddr is set.
func (a *Agent) startLB(ctx context.Context) error {
	if a.cfg.LBAddr == "" {
		return nil
	}
	cfg, err := a.cfg.lbConfig()
	if err != nil {
		return err
	}
	cfg.Logger = a.logger.Named("lb")
	cat := &storeCatalog{store: a.fsm.Store(), leader: a.node, name: "local:" + a.cfg.Node, wait: time.Minute}
	srv, err := lb.NewServer(cfg, cat)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx, a.cfg.LBAddr, a.cfg.LBAdminAddr); err != nil {
		return fmt.Errorf("agent: load balancer: %w", err)
	}
	a.lb = srv
	if addr := srv.AdminAddr(); addr != "" {
		a.lbAdmin.Store(&addr)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case err := <-srv.Err():
			a.errCh <- fmt.Errorf("agent: %w", err)
		case <-a.stopping:
		}
	}()
	a.logger.Info("load balancer started", "listen", srv.Addr(), "admin", srv.AdminAddr())
	return nil
}

// stopLB lets the embedded balancer's requests in flight finish and stops it.
func (a *Agent) stopLB(ctx context.Context) error {
	if a.lb == nil {
		return nil
	}
	return a.lb.Shutdown(ctx)
}

// LB returns the embedded load balancer, or nil without LBAddr.
func (a *Agent) LB() *lb.Balancer {
	if a.lb == nil {
		return nil
	}
	return a.lb.Balancer()
}

// LBAddr returns the embedded load balancer's bound address, or "".
func (a *Agent) LBAddr() string {
	if a.lb == nil {
		return ""
	}
	return a.lb.Addr()
}

// LBAdminAddr returns the embedded load balancer's admin address, or "".
func (a *Agent) LBAdminAddr() string {
	if a.lb == nil {
		return ""
	}
	return a.lb.AdminAddr()
}
