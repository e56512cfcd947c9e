package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/spf13/cobra"
)

type checksOptions struct {
	f      *Factory
	qf     queryFlags
	filter client.CheckFilter
}

func newChecksCmd(f *Factory, runF func(context.Context, *checksOptions) error) *cobra.Command {
	opts := &checksOptions{f: f}
	c := &cobra.Command{
		Use:   "checks",
		Short: "List health checks with their status and owner",
		Long: `List health checks with their status, the node that runs them and their last output.

  beacon checks                              # every check
  beacon checks --service web --status critical
  beacon checks --status flapping
  beacon checks --owner n2                   # the checks node n2 probes
  beacon checks --owner '(leader)'           # the TTL checks (the leader keeps their timers)`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			switch opts.filter.Status {
			case "", "passing", "warning", "critical", "flapping":
			default:
				return usageError{fmt.Errorf("--status must be passing, warning, critical or flapping")}
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runChecks(c.Context(), opts)
		},
	}
	opts.qf.register(c, false)
	fl := c.Flags()
	fl.StringVar(&opts.filter.Service, "service", "", "only checks of this service")
	fl.StringVar(&opts.filter.Instance, "instance", "", "only checks of this instance")
	fl.StringVar(&opts.filter.Owner, "owner", "", "only checks run by this node; '(leader)': the TTL checks, whose timers the leader keeps")
	fl.StringVar(&opts.filter.Status, "status", "", "only checks with this status: passing, warning, critical (flapping included) or flapping")
	return c
}

func runChecks(ctx context.Context, opts *checksOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	q, err := opts.qf.options(opts.f.Err)
	if err != nil {
		return err
	}
	checks, _, err := cl.Checks(ctx, opts.filter, q)
	if err != nil {
		return err
	}
	if checks == nil {
		checks = []client.Check{}
	}
	return opts.f.Print(checks, func(w io.Writer) {
		fmt.Fprintln(w, "CHECK\tSERVICE\tTYPE\tSTATUS\tOWNER\tSINCE\tOUTPUT")
		for _, c := range checks {
			status := c.Status
			if c.Flapping {
				// Status is critical while flapping (what routing does);
				// say what the results themselves are.
				status += " (flapping; results " + c.ResultStatus + ")"
			}
			owner := c.Owner
			switch {
			case c.Type == "ttl":
				owner = client.OwnerLeader // the leader keeps the timer; --owner matches it
			case owner == "":
				owner = "-" // not assigned yet (no alive server)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", esc(c.ID), esc(c.Service), esc(c.Type), esc(status), esc(owner),
				c.StatusSince.Local().Format(time.DateTime), oneLine(c.Output, 60))
		}
	})
}

// oneLine shortens s to one line of at most n runes for tables.
//
// Control characters (terminal escapes among them) are printed escaped
// (fsm.EscapeControl): check output comes from the services checked.
func oneLine(s string, n int) string {
	s = fsm.EscapeControl(strings.Join(strings.Fields(s), " "))
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

type checkOptions struct {
	f       *Factory
	verb    string
	id      string
	output  string
	metrics []string
}

func newCheckCmd(f *Factory, runF func(context.Context, *checkOptions) error) *cobra.Command {
	opts := &checkOptions{f: f}
	c := &cobra.Command{
		Use:   "check pass|warn|fail CHECK-ID",
		Short: "Report the state of a TTL check",
		Long: `Report the state of a TTL check (IDs are SERVICE:INSTANCE:NAME, see beacon checks),
with optional output and custom numeric health metrics:

  beacon check pass web:web-1:ttl --output "ok" --metric load=0.4 --metric queue=12
  beacon check fail web:web-1:ttl --output "database unreachable"`,
		Args: exactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			opts.verb, opts.id = args[0], args[1]
			switch opts.verb {
			case "pass", "warn", "fail":
			default:
				return usageError{fmt.Errorf("first argument must be pass, warn or fail, not %q", opts.verb)}
			}
			for _, m := range opts.metrics {
				if _, _, err := parseMetric(m); err != nil {
					return usageError{err}
				}
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runCheck(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.output, "output", "", "output to record with the report")
	c.Flags().StringArrayVar(&opts.metrics, "metric", nil, "custom health metric name=number (repeatable)")
	return c
}

func parseMetric(s string) (string, float64, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", 0, fmt.Errorf("--metric %q: want name=number", s)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return "", 0, fmt.Errorf("--metric %q: %q is not a number", s, v)
	}
	return k, f, nil
}

func runCheck(ctx context.Context, opts *checkOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	u := &client.TTLUpdate{Output: opts.output}
	for _, m := range opts.metrics {
		k, v, _ := parseMetric(m)
		if u.Metrics == nil {
			u.Metrics = map[string]float64{}
		}
		u.Metrics[k] = v
	}
	idx, err := cl.ReportTTL(ctx, opts.id, opts.verb, u)
	if err != nil {
		return err
	}
	return opts.f.Print(client.WriteResult{Index: idx}, func(w io.Writer) {
		fmt.Fprintf(w, "check %s: %s reported\n", opts.id, opts.verb)
	})
}

type maintOptions struct {
	f           *Factory
	action      string
	service, id string
	reason      string
	deadline    time.Duration
}

func newMaintCmd(f *Factory, runF func(context.Context, *maintOptions) error) *cobra.Command {
	opts := &maintOptions{f: f}
	c := &cobra.Command{
		Use:   "maint enable|disable|drain SERVICE ID",
		Short: "Put an instance in maintenance, drain it, or return it to service",
		Long: `Take an instance out of service and put it back:

  beacon maint enable web web-1 --reason "kernel upgrade"   # no traffic until disabled
  beacon maint disable web web-1                            # back in service (ends draining too)
  beacon maint drain web web-1 --deadline 2m                # no new requests; deregistered in 2m`,
		Args: exactArgs(3),
		RunE: func(c *cobra.Command, args []string) error {
			opts.action, opts.service, opts.id = args[0], args[1], args[2]
			switch opts.action {
			case "enable", "disable":
				if c.Flags().Changed("deadline") {
					return usageError{errors.New("--deadline is only for drain")}
				}
				if opts.action == "disable" && opts.reason != "" {
					return usageError{errors.New("--reason is only for enable")}
				}
			case "drain":
				if opts.deadline <= 0 {
					return usageError{errors.New("drain needs --deadline, such as --deadline 2m")}
				}
				if opts.reason != "" {
					return usageError{errors.New("--reason is only for enable")}
				}
			default:
				return usageError{fmt.Errorf("first argument must be enable, disable or drain, not %q", opts.action)}
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runMaint(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.reason, "reason", "", "why the instance is in maintenance (enable)")
	c.Flags().DurationVar(&opts.deadline, "deadline", 0, "drain: deregister the instance this long from now")
	return c
}

func runMaint(ctx context.Context, opts *maintOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	req := &client.MaintenanceRequest{Reason: opts.reason}
	switch opts.action {
	case "enable":
		req.Mode = client.ModeMaintenance
	case "disable":
		req.Mode = client.ModeNone
	case "drain":
		req.Mode, req.Deadline = client.ModeDrain, client.Duration(opts.deadline)
	}
	idx, err := cl.Maintenance(ctx, opts.service, opts.id, req)
	if err != nil {
		return err
	}
	return opts.f.Print(client.WriteResult{Index: idx}, func(w io.Writer) {
		switch opts.action {
		case "enable":
			fmt.Fprintf(w, "%s/%s is in maintenance\n", opts.service, opts.id)
		case "disable":
			fmt.Fprintf(w, "%s/%s is back in service\n", opts.service, opts.id)
		case "drain":
			fmt.Fprintf(w, "%s/%s is draining; deregistered in %s\n", opts.service, opts.id, opts.deadline)
		}
	})
}
