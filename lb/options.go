package lb

import "strings"

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
