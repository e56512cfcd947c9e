package cmd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/health"
	"github.com/beaconhq/beacon/lb"
	"github.com/hashicorp/go-hclog"
)

// hardenAPI puts the settings of docs/security.md ("Web pages", "Check and
// proxy targets", "Limits") into the API configuration.
func (a *Agent) hardenAPI(ac *api.Config, hc health.Config) error {
	ac.CheckAllowCIDRs = hc.AllowCIDRs
	ac.TrustOpenRegistrations = a.cfg.TrustOpenRegistrations
	ac.MaxConnsPerClient = a.cfg.HTTPMaxConnsPerClient
	ac.Site.AllowedOrigins = splitList(a.cfg.HTTPAllowedOrigin)
	ac.Site.AllowedHosts = append(a.cfg.ownHosts(), splitList(a.cfg.HTTPAllowedHost)...)
	if a.cfg.TrustOpenRegistrations && a.cfg.ManagementToken == "" {
		a.logger.Warn("--trust-open-registrations: any client may route other services' paths and point checks at any host")
	}
	return nil
}

// ownHosts are the names and addresses a request's Host may carry to reach
// this agent with auth off: its node name, the machine's host name, and
// the addresses it binds and advertises (every interface's when it binds
// 0.0.0.0 or ::).
func (c *AgentConfig) ownHosts() []string {
	out := []string{c.Node}
	if h, err := os.Hostname(); err == nil {
		out = append(out, h)
	}
	if c.Advertise != "" {
		out = append(out, c.Advertise)
	}
	if host, _, err := net.SplitHostPort(c.HTTPAddr); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
			out = append(out, interfaceAddrs()...)
		} else if host != "" {
			out = append(out, host)
		}
	}
	return out
}

func interfaceAddrs() []string {
	var out []string
	ifas, _ := net.InterfaceAddrs()
	for _, ia := range ifas {
		if pn, ok := ia.(*net.IPNet); ok {
			out = append(out, pn.IP.String())
		}
	}
	return out
}

// ownAddrs are the agent's API, cluster and gossip addresses, which its
// embedded load balancer never dials.
func (c *AgentConfig) ownAddrs() []string {
	return []string{c.HTTPAddr, c.RaftAddr, c.GossipAddr}
}

// parseCIDRs parses repeated or comma-separated CIDR flags.
func parseCIDRs(what string, vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range splitList(vals) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s CIDR %q: %w", what, s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// applyGuard puts the dial guard's flags into cfg: --lb-deny-cidr ranges
// are added to the default deny list; denyAddrs (host:port, a name is
// resolved now) are endpoints never dialled.
func (f *lbFlags) applyGuard(cfg *lb.Config) error {
	cfg.AllowLoopback = cfg.AllowLoopback || f.allowLoopback
	deny, err := parseCIDRs("lb: deny", f.denyCIDRs)
	if err != nil {
		return err
	}
	cfg.DenyCIDRs = append(cfg.DenyCIDRs, deny...)
	cfg.DenyAddrs = append(cfg.DenyAddrs, resolveAddrPorts(f.denyAddrs)...)
	return nil
}

// resolveAddrPorts turns host:port strings into addresses, resolving names
// (each within a second; what does not resolve is skipped).
func resolveAddrPorts(addrs []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range addrs {
		s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
		host, port, err := net.SplitHostPort(strings.TrimSuffix(s, "/"))
		if err != nil {
			continue
		}
		var p uint16
		if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p == 0 {
			continue
		}
		if host == "" {
			host = "0.0.0.0"
		}
		if a, err := netip.ParseAddr(host); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), p))
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		cancel()
		for _, a := range ips {
			out = append(out, netip.AddrPortFrom(a.Unmap(), p))
		}
		_ = err
	}
	return out
}

// refuseAgents makes a standalone balancer refuse to dial the agents it
// follows: their API addresses (the registry list) and, from the cluster's
// member list, every member's API, cluster and gossip addresses. Best
// effort, once at start; what cannot be read is logged.
func refuseAgents(ctx context.Context, bal *lb.Balancer, registry []string, members func(context.Context) ([]client.Member, error), logger hclog.Logger) {
	addrs := append([]string(nil), registry...)
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ms, err := members(mctx)
	cancel()
	if err != nil {
		logger.Warn("cannot read the cluster's members: only the registry addresses are refused as upstreams", "error", err)
	}
	for _, m := range ms {
		addrs = append(addrs, m.HTTPAddr, m.ClusterAddr, m.GossipAddr)
	}
	for _, ap := range resolveAddrPorts(addrs) {
		bal.Refuse(ap, "a Beacon agent's port")
	}
}
