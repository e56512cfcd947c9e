package cmd

import (
	"context"
	"fmt"
	"time"

	"github.com/beaconhq/beacon/lb"
	"github.com/beaconhq/beacon/lb/registry"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

type lbOptions struct {
	cfg             registry.Config
	flags           lb.Options
	registry        []string
	shutdownTimeout time.Duration
	logLevel        string
	logJSON         bool
}

func newLBCmd(f *Factory, runF func(context.Context, *lbOptions) error) *cobra.Command {
	opts := &lbOptions{cfg: registry.DefaultConfig(), shutdownTimeout: 30 * time.Second, logLevel: "info"}
	c := &cobra.Command{
		Use:   "lb",
		Short: "Run a load balancer that follows the registry",
		Long: `Run a reverse proxy that follows the registry and routes to healthy instances.

A request goes to SERVICE when its Host is SERVICE.DOMAIN (--domain), when its
path starts with a prefix an instance declares in its meta (route_prefix), or
when its path is /SERVICE/... (the /SERVICE prefix is stripped). Several
balancers may follow the same cluster. docs/lb.md describes every option.

  beacon lb --registry 10.0.0.1:8750,10.0.0.2:8750,10.0.0.3:8750
  beacon lb --strategy least-requests --strategy cart=hash --hash-key cart=cookie:session --zone eu-1
  curl -H 'Host: web.service.beacon' localhost:8080/    # or: curl localhost:8080/web/`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			opts.cfg.Registry = lb.SplitList(opts.registry)
			if len(opts.cfg.Registry) == 0 {
				opts.cfg.Registry = lb.SplitList([]string{f.Addr})
			}
			opts.cfg.Token = f.Token
			tc, err := f.TLS.config()
			if err != nil {
				return usageError{err}
			}
			opts.cfg.RegistryTLS = tc
			if !c.Flags().Changed("domain") {
				opts.flags.Domains = nil
			}
			if err := opts.flags.Apply(&opts.cfg.LB); err != nil {
				return usageError{err}
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runLB(c.Context(), f, opts)
		},
	}
	fl := c.Flags()
	lc := &opts.cfg.LB
	fl.StringArrayVar(&opts.registry, "registry", nil, "registry node HTTP address (repeatable or comma-separated; default --addr)")
	fl.StringVar(&opts.cfg.Listen, "listen", opts.cfg.Listen, "proxy listen address")
	fl.StringVar(&opts.cfg.AdminAddr, "admin-addr", opts.cfg.AdminAddr, `admin address: /lb/status, /metrics, /healthz, /readyz ("" disables)`)
	fl.DurationVar(&opts.cfg.RegistryWait, "registry-wait", opts.cfg.RegistryWait, "longest wait of a blocking read of the registry")
	fl.StringArrayVar(&opts.flags.Domains, "domain", lc.Domains, "host routing domain: SERVICE.DOMAIN goes to SERVICE (repeatable)")
	fl.BoolVar(&lc.PathRouting, "path-routing", lc.PathRouting, "route /SERVICE/... to SERVICE, stripping /SERVICE")
	fl.StringArrayVar(&opts.flags.Services, "service", nil, "follow only these services (repeatable; default: every service)")
	fl.StringArrayVar(&opts.flags.Strategies, "strategy", nil, "round-robin, weighted, least-requests, random or hash; SERVICE=STRATEGY for one service (repeatable)")
	fl.StringArrayVar(&opts.flags.HashKeys, "hash-key", nil, "key of the hash strategy: ip, header:NAME or cookie:NAME; SERVICE=KEY for one service")
	fl.StringVar(&lc.Zone, "zone", lc.Zone, "this balancer's zone: prefer instances with meta zone=ZONE")
	fl.IntVar(&lc.ZoneMinHealthy, "zone-min-healthy", lc.ZoneMinHealthy, "spill over to other zones when fewer are passing in ours")
	fl.Float64Var(&lc.PanicThreshold, "panic-threshold", lc.PanicThreshold, "route to every instance when fewer than this share pass (0 disables)")
	fl.BoolVar(&lc.FallbackToWarning, "fallback-warning", lc.FallbackToWarning, "route to warning instances when none is passing (instead of 503)")
	fl.DurationVar(&lc.SlowStart, "slow-start", lc.SlowStart, "ramp a newly passing instance to its full weight over this window (0 disables)")
	fl.Float64Var(&lc.SlowStartMinShare, "slow-start-min-share", lc.SlowStartMinShare, "share of its weight a newly passing instance starts with")
	fl.IntVar(&lc.MaxRetries, "max-retries", lc.MaxRetries, "further instances a failed request may be tried on")
	fl.IntSliceVar(&lc.RetryStatuses, "retry-status", lc.RetryStatuses, "statuses after which idempotent requests are retried")
	fl.Float64Var(&lc.RetryBudgetRatio, "retry-budget-ratio", lc.RetryBudgetRatio, "retries may add this share of the requests")
	fl.Float64Var(&lc.RetryBudgetMinPerSecond, "retry-budget-min", lc.RetryBudgetMinPerSecond, "retries allowed per second whatever the ratio")
	fl.IntVar(&lc.RetryBufferBytes, "retry-buffer", lc.RetryBufferBytes, "request body bytes kept to retry idempotent requests")
	fl.IntVar(&lc.EjectAfter, "eject-after", lc.EjectAfter, "consecutive failures that eject an instance (0 disables)")
	fl.BoolVar(&lc.EjectOn5xx, "eject-on-5xx", lc.EjectOn5xx, "count every 5xx answer as a failure for ejection (false: only connection failures and the retry statuses)")
	fl.DurationVar(&lc.EjectBase, "eject-base", lc.EjectBase, "first ejection time, doubled for each ejection in a row")
	fl.DurationVar(&lc.EjectMax, "eject-max", lc.EjectMax, "longest ejection time")
	fl.Float64Var(&lc.MaxEjectedShare, "max-ejected-share", lc.MaxEjectedShare, "share of a service's instances that may be ejected at once")
	fl.DurationVar(&lc.DialTimeout, "dial-timeout", lc.DialTimeout, "upstream connect timeout")
	fl.DurationVar(&lc.ResponseHeaderTimeout, "response-header-timeout", lc.ResponseHeaderTimeout, "upstream response header timeout")
	fl.DurationVar(&lc.UpstreamIdleTimeout, "upstream-idle-timeout", lc.UpstreamIdleTimeout, "how long idle upstream connections are kept")
	fl.DurationVar(&lc.RequestTimeout, "request-timeout", lc.RequestTimeout, "bound of a whole proxied request, retries included (0: none)")
	fl.DurationVar(&lc.ReadHeaderTimeout, "read-header-timeout", lc.ReadHeaderTimeout, "client request header timeout")
	fl.DurationVar(&lc.IdleTimeout, "idle-timeout", lc.IdleTimeout, "client keep-alive idle timeout")
	fl.BoolVar(&lc.PassHost, "pass-host", lc.PassHost, "forward the client's Host header (else the instance's host:port)")
	fl.BoolVar(&lc.DisableFastPath, "no-fast-path", lc.DisableFastPath, "serve every request through net/http's server (same answers, about 1.7x the CPU per request; docs/lb.md)")
	fl.BoolVar(&opts.flags.AllowLoopback, "lb-allow-loopback", false, "connect to loopback instances (127.0.0.0/8, ::1); off, they get 502 (docs/security.md)")
	fl.StringArrayVar(&opts.flags.DenyCIDRs, "lb-deny-cidr", nil, "CIDR never connected to, besides 169.254.0.0/16 and fe80::/10 (repeatable)")
	fl.IntVar(&lc.MaxHops, "max-hops", lc.MaxHops, "answer 508 to a request that has passed this many Beacon balancers (a loop)")
	fl.IntVar(&lc.MaxConnsPerClient, "admin-max-conns-per-client", lc.MaxConnsPerClient, "connections one client IP may hold open on the admin address (0: no cap)")
	fl.StringVar(&opts.cfg.TLSCert, "tls-cert", "", "serve TLS with this certificate (PEM)")
	fl.StringVar(&opts.cfg.TLSKey, "tls-key", "", "private key of --tls-cert (PEM)")
	fl.DurationVar(&opts.shutdownTimeout, "shutdown-timeout", opts.shutdownTimeout, "on SIGTERM, how long requests in flight may take to finish")
	fl.StringVar(&opts.logLevel, "log-level", opts.logLevel, "trace, debug, info, warn or error")
	fl.BoolVar(&opts.logJSON, "log-json", false, "log JSON lines")
	return c
}

// runLB runs a load balancer until ctx ends (SIGINT or SIGTERM) or it fails.
func runLB(ctx context.Context, f *Factory, opts *lbOptions) error {
	level := hclog.LevelFromString(opts.logLevel)
	if level == hclog.NoLevel {
		return usageError{fmt.Errorf("unknown log level %q", opts.logLevel)}
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "beacon-lb", Level: level, JSONFormat: opts.logJSON, Output: f.Err, TimeFormat: time.RFC3339Nano,
	})
	l, err := registry.New(opts.cfg, logger)
	if err != nil {
		return usageError{err}
	}
	if err := l.Start(ctx); err != nil {
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down: finishing requests in flight", "timeout", opts.shutdownTimeout)
	case runErr = <-l.Err():
	}
	sctx, cancel := context.WithTimeout(context.Background(), opts.shutdownTimeout)
	defer cancel()
	if err := l.Shutdown(sctx); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}
