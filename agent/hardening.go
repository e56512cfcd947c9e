package agent

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/health"
	"github.com/beaconhq/beacon/lb"
)

// hardenAPI puts the settings of docs/security.md ("Web pages", "Check and
// proxy targets", "Limits") into the API configuration.
func (a *Agent) hardenAPI(ac *api.Config, hc health.Config) error {
	ac.CheckAllowCIDRs = hc.AllowCIDRs
	ac.CheckLocalCIDRs = hc.LocalCIDRs
	ac.TrustOpenRegistrations = a.cfg.TrustOpenRegistrations
	ac.MaxConnsPerClient = a.cfg.HTTPMaxConnsPerClient
	ac.DisableFastPath = a.cfg.HTTPNoFastPath
	ac.Site.AllowedOrigins = lb.SplitList(a.cfg.HTTPAllowedOrigin)
	ac.Site.AllowedHosts = append(a.cfg.ownHosts(), lb.SplitList(a.cfg.HTTPAllowedHost)...)
	if a.cfg.TrustOpenRegistrations && a.cfg.ManagementToken == "" {
		a.logger.Warn("--trust-open-registrations: any client may route other services' paths and point checks at any host")
	}
	return nil
}

// ownHosts are the names and addresses a request's Host may carry to reach
// this agent with auth off: its node name, the machine's host name, and
// the addresses it binds and advertises (every interface's when it binds
// 0.0.0.0 or ::, or an empty host as in ":8750", which binds them all too).
func (c *Config) ownHosts() []string {
	out := []string{c.Node}
	if h, err := os.Hostname(); err == nil {
		out = append(out, h)
	}
	if c.Advertise != "" {
		out = append(out, c.Advertise)
	}
	if host, _, err := net.SplitHostPort(c.HTTPAddr); err == nil {
		if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
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

// hostCIDRs are the addresses that reach this host, which a check
// registered without the management token may not probe when auth is on
// (health.Config.LocalCIDRs, api.Config.CheckLocalCIDRs): loopback (the
// balancer's list), the unspecified addresses (a dial to 0.0.0.0 reaches
// this host), every interface's address (read once, at start) and the
// advertise address.
func (c *Config) hostCIDRs() []netip.Prefix {
	out := append(lb.LoopbackCIDRs(), netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128"))
	addrs := interfaceAddrs()
	if c.Advertise != "" {
		addrs = append(addrs, c.Advertise)
	}
	for _, s := range addrs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		a = a.Unmap().WithZone("")
		if p := netip.PrefixFrom(a, a.BitLen()); !a.IsLoopback() && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// parseCIDRs parses repeated or comma-separated CIDR settings.
func parseCIDRs(what string, vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range lb.SplitList(vals) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("agent: %s CIDR %q: %w", what, s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
