package cmd

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/beaconhq/beacon/lb"
)

// agentLB is a load balancer embedded in an agent (--lb-addr): it follows
// the agent's own replicated store, so it needs no network round trip to
// see a change, and keeps routing from the local copy while the agent is cut
// off from its leader.
type agentLB struct {
	bal     *lb.Balancer
	ln      net.Listener
	adminLn net.Listener
	done    chan struct{}
}

// lbConfig builds the embedded balancer's configuration from the agent's.
func (c *AgentConfig) lbConfig() (lb.Config, error) {
	cfg := lb.DefaultConfig()
	cfg.Zone = c.LBZone
	f := lbFlags{strategies: c.LBStrategy}
	if len(c.LBDomain) > 0 {
		f.domains = c.LBDomain
	}
	if err := f.apply(&cfg); err != nil {
		return cfg, fmt.Errorf("agent: load balancer: %w", err)
	}
	return cfg, nil
}

// startLB starts the embedded balancer when --lb-addr is set.
func (a *Agent) startLB(ctx context.Context) error {
	if a.cfg.LBAddr == "" {
		return nil
	}
	cfg, err := a.cfg.lbConfig()
	if err != nil {
		return err
	}
	cfg.Logger = a.logger.Named("lb")
	lm := newLBMetrics()
	lm.observe(&cfg)
	cat := &storeCatalog{store: a.fsm.Store(), leader: a.node, name: "local:" + a.cfg.Node, wait: time.Minute}
	bal, err := lb.New(cfg, cat)
	if err != nil {
		return err
	}
	lm.bal = bal
	l := &agentLB{bal: bal, done: make(chan struct{})}
	if l.ln, err = net.Listen("tcp", a.cfg.LBAddr); err != nil {
		return fmt.Errorf("agent: load balancer listen on %s: %w", a.cfg.LBAddr, err)
	}
	if a.cfg.LBAdminAddr != "" {
		if l.adminLn, err = net.Listen("tcp", a.cfg.LBAdminAddr); err != nil {
			l.ln.Close()
			return fmt.Errorf("agent: load balancer admin listen on %s: %w", a.cfg.LBAdminAddr, err)
		}
	}
	if err := bal.Start(ctx); err != nil {
		return err
	}
	a.lb = l
	if l.adminLn != nil {
		addr := l.adminLn.Addr().String()
		a.lbAdmin.Store(&addr)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := bal.Serve(l.ln); err != nil {
			a.errCh <- fmt.Errorf("agent: load balancer: %w", err)
		}
	}()
	if l.adminLn != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := bal.ServeAdmin(l.adminLn); err != nil {
				a.errCh <- fmt.Errorf("agent: load balancer admin: %w", err)
			}
		}()
	}
	a.logger.Info("load balancer started", "listen", l.ln.Addr().String(), "admin", a.cfg.LBAdminAddr)
	return nil
}

// stopLB lets the embedded balancer's requests in flight finish and stops it.
func (a *Agent) stopLB(ctx context.Context) error {
	if a.lb == nil {
		return nil
	}
	err := a.lb.bal.Shutdown(ctx)
	a.lb.ln.Close()
	if a.lb.adminLn != nil {
		a.lb.adminLn.Close()
	}
	return err
}

// LB returns the embedded load balancer, or nil without --lb-addr.
func (a *Agent) LB() *lb.Balancer {
	if a.lb == nil {
		return nil
	}
	return a.lb.bal
}

// LBAddr returns the embedded load balancer's bound address, or "".
func (a *Agent) LBAddr() string {
	if a.lb == nil {
		return ""
	}
	return a.lb.ln.Addr().String()
}

// LBAdminAddr returns the embedded load balancer's admin address, or "".
func (a *Agent) LBAdminAddr() string {
	if a.lb == nil || a.lb.adminLn == nil {
		return ""
	}
	return a.lb.adminLn.Addr().String()
}
