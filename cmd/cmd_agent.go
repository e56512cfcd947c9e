package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

type agentOptions struct {
	configFile string
	cfg        agent.Config
}

func newAgentCmd(f *Factory, runF func(context.Context, *agentOptions) error) *cobra.Command {
	opts := &agentOptions{}
	flagValues := agent.DefaultConfig()
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run a Beacon server",
		Long: `Run a Beacon server: a Raft member that stores the catalog, serves the HTTP API
and takes part in gossip. Settings come from defaults, then --config FILE (JSON),
then BEACON_* environment variables, then flags.

  beacon agent --dev                                  # one in-memory node on 127.0.0.1:8750
  beacon agent --dev --http-addr 0.0.0.0:8750         # the same, reachable from the network (in a container); no authentication
  beacon agent --node n1 --data-dir /var/lib/beacon --bootstrap-expect 3 --join 10.0.0.2:8752`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := loadAgentConfig(opts.configFile, f.Getenv, c.Flags(), &flagValues)
			if err != nil {
				return usageError{err}
			}
			opts.cfg = cfg
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runAgent(c.Context(), f, opts)
		},
	}
	c.Flags().StringVar(&opts.configFile, "config", f.Getenv("BEACON_CONFIG"), "JSON config file (env BEACON_CONFIG)")
	registerAgentFlags(c.Flags(), &flagValues)
	return c
}

// runAgent runs an agent until ctx ends (SIGINT or SIGTERM) or it fails.
func runAgent(ctx context.Context, f *Factory, opts *agentOptions) error {
	level := hclog.LevelFromString(opts.cfg.LogLevel)
	if level == hclog.NoLevel {
		return usageError{fmt.Errorf("unknown log level %q", opts.cfg.LogLevel)}
	}
	// The log goes out in batches (agent.LogWriter): a leader writes an
	// audit line per accepted write.
	out := agent.NewLogWriter(f.Err)
	defer out.Close()
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "beacon", Level: level, JSONFormat: opts.cfg.LogJSON, Output: out,
		TimeFormat: time.RFC3339Nano,
	})
	cfg := opts.cfg
	cfg.Version, cfg.Logger = Version, logger
	a, err := agent.New(cfg)
	if err != nil {
		return usageError{err}
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case runErr = <-a.Err():
		if errors.Is(runErr, agent.ErrLeft) {
			runErr = nil
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}
