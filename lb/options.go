package lb

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Options are the balancer settings that the standalone balancer (`beacon
// lb`) and the one embedded in an agent both take as text, as flags give
// them. Each list may hold repeated and comma-separated values.
type Options struct {
	// Domains replaces Config.Domains when not nil.
	Domains []string
	// Strategies are STRATEGY (the default) or SERVICE=STRATEGY.
	Strategies []string
	// HashKeys are KEY (the default) or SERVICE=KEY.
	HashKeys []string
	// Services are added to Config.Services.
	Services []string
	// AllowLoopback sets Config.AllowLoopback when true; DenyCIDRs are
	// added to Config.DenyCIDRs; DenyAddrs (host:port, a name resolved now,
	// within a second) to Config.DenyAddrs.
	AllowLoopback bool
	DenyCIDRs     []string
	DenyAddrs     []string
}

// Apply parses o into cfg and validates the result.
func (o Options) Apply(cfg *Config) error {
	if o.Domains != nil {
		cfg.Domains = nil
		for _, d := range SplitList(o.Domains) {
			cfg.Domains = append(cfg.Domains, strings.Trim(strings.ToLower(d), "."))
		}
	}
	cfg.Services = append(cfg.Services, SplitList(o.Services)...)
	cfg.AllowLoopback = cfg.AllowLoopback || o.AllowLoopback
	for _, s := range SplitList(o.DenyCIDRs) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("lb: deny CIDR %q: %w", s, err)
		}
		cfg.DenyCIDRs = append(cfg.DenyCIDRs, p.Masked())
	}
	cfg.DenyAddrs = append(cfg.DenyAddrs, ResolveAddrPorts(o.DenyAddrs)...)
	for _, s := range SplitList(o.Strategies) {
		svc, name, per := strings.Cut(s, "=")
		if !per {
			svc, name = "", s
		}
		st, err := ParseStrategy(name)
		if err != nil {
			return err
		}
		if !per {
			cfg.Strategy = st
			continue
		}
		if cfg.Strategies == nil {
			cfg.Strategies = map[string]Strategy{}
		}
		cfg.Strategies[svc] = st
	}
	for _, s := range SplitList(o.HashKeys) {
		svc, key, per := strings.Cut(s, "=")
		if !per {
			svc, key = "", s
		}
		k, err := ParseHashKey(key)
		if err != nil {
			return err
		}
		if !per {
			cfg.HashKey = k
			continue
		}
		if cfg.HashKeys == nil {
			cfg.HashKeys = map[string]HashKey{}
		}
		cfg.HashKeys[svc] = k
	}
	return cfg.Validate()
}

// SplitList flattens repeated and comma-separated values, dropping empty
// ones.
func SplitList(vals []string) []string {
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

// ResolveAddrPorts turns host:port strings (an http:// or https:// prefix
// is ignored) into addresses, resolving names within a second each; what
// does not parse or resolve is skipped. An empty host is 0.0.0.0.
func ResolveAddrPorts(addrs []string) []netip.AddrPort {
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
		ips, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		cancel()
		for _, a := range ips {
			out = append(out, netip.AddrPortFrom(a.Unmap(), p))
		}
	}
	return out
}
