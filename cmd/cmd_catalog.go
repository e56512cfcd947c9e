package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/spf13/cobra"
)

type registerOptions struct {
	f        *Factory
	file     string
	service  string
	id       string
	reg      client.Registration
	meta     []string
	checkTTL time.Duration
	interval time.Duration
}

// registerFile is the JSON of `beacon register -f FILE`: a registration plus
// the service and id it is for.
type registerFile struct {
	Service string `json:"service"`
	ID      string `json:"id"`
	client.Registration
}

func newRegisterCmd(f *Factory, runF func(context.Context, *registerOptions) error) *cobra.Command {
	opts := &registerOptions{f: f}
	var httpCheck, tcpCheck string
	c := &cobra.Command{
		Use:   "register [SERVICE ID]",
		Short: "Register or update an instance",
		Long: `Register or update an instance, from flags or from a JSON file:

  beacon register web web-1 --address 10.0.0.5 --port 8080 --tag v2 --meta zone=a --check-http http://10.0.0.5:8080/health
  beacon register -f web-1.json     # {"service":"web","id":"web-1","address":"10.0.0.5","port":8080,...}`,
		RunE: func(c *cobra.Command, args []string) error {
			switch {
			case opts.file != "" && len(args) == 0:
			case opts.file == "" && len(args) == 2:
				opts.service, opts.id = args[0], args[1]
			default:
				return usageError{fmt.Errorf("give SERVICE ID and flags, or -f FILE. Usage: %s (%s --help)", c.UseLine(), c.CommandPath())}
			}
			meta, err := parseMeta(opts.f.Err, opts.meta)
			if err != nil {
				return err
			}
			if meta != nil {
				opts.reg.Meta = meta
			}
			iv := client.Duration(opts.interval)
			if httpCheck != "" {
				opts.reg.Checks = append(opts.reg.Checks, client.CheckDefinition{HTTP: httpCheck, Interval: iv})
			}
			if tcpCheck != "" {
				opts.reg.Checks = append(opts.reg.Checks, client.CheckDefinition{TCP: tcpCheck, Interval: iv})
			}
			if opts.checkTTL > 0 {
				opts.reg.Checks = append(opts.reg.Checks, client.CheckDefinition{TTL: client.Duration(opts.checkTTL)})
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runRegister(c.Context(), opts)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&opts.file, "file", "f", "", "JSON file with service, id and the registration")
	fl.StringVar(&opts.reg.Address, "address", "", "instance address (IP or host name)")
	fl.IntVar(&opts.reg.Port, "port", 0, "instance port")
	fl.StringArrayVar(&opts.reg.Tags, "tag", nil, "tag (repeatable)")
	fl.StringArrayVar(&opts.meta, "meta", nil, "metadata key=value (repeatable)")
	fl.StringVar(&opts.reg.Version, "version", "", "instance version")
	fl.IntVar(&opts.reg.Weight, "weight", 0, "weight for weighted balancing (default 1)")
	fl.StringVar(&opts.reg.Node, "node", "", "Beacon node the instance runs beside")
	fl.StringVar(&httpCheck, "check-http", "", "HTTP health check URL")
	fl.StringVar(&tcpCheck, "check-tcp", "", "TCP health check host:port")
	fl.DurationVar(&opts.checkTTL, "check-ttl", 0, "TTL health check period")
	fl.DurationVar(&opts.interval, "check-interval", 0, "interval of the HTTP/TCP check (default 10s)")
	return c
}

func runRegister(ctx context.Context, opts *registerOptions) error {
	if opts.file != "" {
		b, err := os.ReadFile(opts.file)
		if err != nil {
			return err
		}
		var rf registerFile
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rf); err != nil {
			return usageError{fmt.Errorf("%s: %w", opts.file, err)}
		}
		opts.service, opts.id, opts.reg = rf.Service, rf.ID, rf.Registration
	}
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	idx, err := cl.Register(ctx, opts.service, opts.id, &opts.reg)
	if err != nil {
		return err
	}
	return opts.f.Print(client.WriteResult{Index: idx}, func(w io.Writer) {
		fmt.Fprintf(w, "registered %s/%s at index %d\n", opts.service, opts.id, idx)
	})
}

type deregisterOptions struct {
	f           *Factory
	service, id string
}

func newDeregisterCmd(f *Factory, runF func(context.Context, *deregisterOptions) error) *cobra.Command {
	opts := &deregisterOptions{f: f}
	return &cobra.Command{
		Use:   "deregister SERVICE ID",
		Short: "Deregister an instance",
		Args:  exactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			opts.service, opts.id = args[0], args[1]
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runDeregister(c.Context(), opts)
		},
	}
}

func runDeregister(ctx context.Context, opts *deregisterOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	idx, err := cl.Deregister(ctx, opts.service, opts.id)
	if err != nil {
		return err
	}
	return opts.f.Print(client.WriteResult{Index: idx}, func(w io.Writer) {
		fmt.Fprintf(w, "deregistered %s/%s at index %d\n", opts.service, opts.id, idx)
	})
}

// queryFlags are the filter and consistency flags shared by reads.
type queryFlags struct {
	q    client.QueryOptions
	meta []string
}

func (qf *queryFlags) register(c *cobra.Command, filters bool) {
	fl := c.Flags()
	if filters {
		fl.BoolVar(&qf.q.Healthy, "healthy", false, "only healthy (passing, not in maintenance, not draining)")
		fl.StringArrayVar(&qf.q.Tags, "tag", nil, "require this tag (repeatable)")
		fl.StringArrayVar(&qf.meta, "meta", nil, "require meta key=value (repeatable)")
		fl.StringVar(&qf.q.Version, "version", "", `exact version or semver range (">=1.2.0 <2.0.0")`)
	}
	fl.BoolVar(&qf.q.Consistent, "consistent", false, "linearizable read (checked with the leader)")
	fl.DurationVar(&qf.q.MaxStale, "max-stale", 0, "accept a local answer at most this stale")
}

func (qf *queryFlags) options(stderr io.Writer) (*client.QueryOptions, error) {
	q := qf.q
	meta, err := parseMeta(stderr, qf.meta)
	if err != nil {
		return nil, err
	}
	q.Meta = meta
	return &q, nil
}

// parseMeta reads --meta flags. Every command writes key=value; key:value
// (the API's query form, and what discover took before) is accepted with a
// note on stderr saying how it was read.
func parseMeta(stderr io.Writer, flags []string) (map[string]string, error) {
	var out map[string]string
	for _, m := range flags {
		k, v, ok := strings.Cut(m, "=")
		if !ok {
			if k, v, ok = strings.Cut(m, ":"); ok && k != "" {
				fmt.Fprintf(stderr, "note: --meta %q read as %s=%s; write --meta key=value\n", m, k, v)
			}
		}
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("--meta %q: want key=value", m)}
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

type servicesOptions struct {
	f      *Factory
	qf     queryFlags
	prefix string
	limit  int
	cursor string
}

func newServicesCmd(f *Factory, runF func(context.Context, *servicesOptions) error) *cobra.Command {
	opts := &servicesOptions{f: f}
	c := &cobra.Command{
		Use:   "services",
		Short: "List services with their instance counts by health",
		Long: `List services with their instance counts by health. Filters keep the services
with at least one matching instance; pages are fetched until the list ends, or
until --limit services (then the cursor of the next page goes to stderr).

PASSING, WARNING and CRITICAL count the instances by health status, as the API
does; UNAVAILABLE counts those in maintenance or draining, whatever their
status. Those get no traffic: the routable instances are the passing ones not
unavailable (beacon discover SERVICE --healthy lists them).


  beacon services --prefix pay --tag v2 --meta zone=eu-1a
  beacon services --limit 100                 # first page; prints "next cursor: NAME"
  beacon services --limit 100 --cursor NAME   # the page after it`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runServices(c.Context(), opts)
		},
	}
	opts.qf.register(c, true)
	c.Flags().StringVar(&opts.prefix, "prefix", "", "only services whose names start with this")
	c.Flags().IntVar(&opts.limit, "limit", 0, "at most this many services (0: all, fetched page by page)")
	c.Flags().StringVar(&opts.cursor, "cursor", "", "start after this service name (the next cursor a limited listing printed)")
	return c
}

func runServices(ctx context.Context, opts *servicesOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	q, err := opts.qf.options(opts.f.Err)
	if err != nil {
		return err
	}
	q.Prefix, q.Cursor = opts.prefix, opts.cursor
	all := []client.ServiceSummary{}
	for {
		q.Limit = 500
		if opts.limit > 0 {
			q.Limit = min(500, opts.limit-len(all))
		}
		page, _, err := cl.Services(ctx, q)
		if err != nil {
			return err
		}
		all = append(all, page.Services...)
		if page.NextCursor == "" {
			break
		}
		if opts.limit > 0 && len(all) >= opts.limit {
			fmt.Fprintf(opts.f.Err, "next cursor: %s\n", fsm.EscapeControl(page.NextCursor))
			break
		}
		q.Cursor = page.NextCursor
	}
	return opts.f.Print(all, func(w io.Writer) {
		fmt.Fprintln(w, "SERVICE\tINSTANCES\tPASSING\tWARNING\tCRITICAL\tUNAVAILABLE\tTAGS")
		for _, s := range all {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", esc(s.Name), s.Instances, s.Passing, s.Warning, s.Critical, s.Unavailable, esc(strings.Join(s.Tags, ",")))
		}
	})
}

type discoverOptions struct {
	f       *Factory
	qf      queryFlags
	service string
	watch   bool
	index   uint64
	wait    time.Duration
	quiet   bool
}

func newDiscoverCmd(f *Factory, runF func(context.Context, *discoverOptions) error) *cobra.Command {
	opts := &discoverOptions{f: f}
	c := &cobra.Command{
		Use:   "discover SERVICE",
		Short: "List the instances of a service, with their status",
		Long: `List the instances of a service, with filters and a consistency mode:

  beacon discover web --healthy --tag v2 --meta zone=eu-1a --version '>=1.2.0 <2.0.0'
  beacon discover web --consistent            # linearizable, checked with the leader
  beacon discover web --max-stale 2s          # local unless this node is more stale
  beacon discover web --index 42 --wait 30s   # one blocking query: wait for a change past 42
  beacon discover web --watch                 # print the list again at every change (Ctrl-C ends)

Each answer's index goes to stderr ("index: N"; stdout keeps the table or the
JSON array): pass it to --index to wait for the next change; --quiet (-q)
leaves it out (errors are still printed). --wait needs --index (or --watch).
--watch follows the service with blocking queries and moves to the next agent
of --addr (comma-separated) when one fails.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.service = args[0]
			if opts.wait != 0 && opts.index == 0 && !opts.watch {
				// Without an index the agent answers at once: the wait
				// would be ignored without a word.
				return usageError{fmt.Errorf("--wait needs --index N (N > 0, the index of an earlier answer, printed on stderr as \"index: N\"), or --watch")}
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runDiscover(c.Context(), opts)
		},
	}
	opts.qf.register(c, true)
	c.Flags().BoolVarP(&opts.watch, "watch", "w", false, "keep watching and print each change")
	c.Flags().Uint64Var(&opts.index, "index", 0, "block until the result's index passes this one (a blocking query; each answer's index is printed on stderr)")
	c.Flags().DurationVar(&opts.wait, "wait", 0, "longest wait of a blocking query, with --index or --watch (default 5m on the agent, at most 10m)")
	c.Flags().BoolVarP(&opts.quiet, "quiet", "q", false, `do not print each answer's index on stderr ("index: N"); errors are still printed`)
	return c
}

func runDiscover(ctx context.Context, opts *discoverOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	q, err := opts.qf.options(opts.f.Err)
	if err != nil {
		return err
	}
	q.WaitTime = opts.wait
	if !opts.watch {
		q.WaitIndex = opts.index
		insts, meta, err := cl.Instances(ctx, opts.service, q)
		if err != nil {
			return err
		}
		if err := printInstances(opts.f, insts); err != nil {
			return err
		}
		if !opts.quiet {
			fmt.Fprintf(opts.f.Err, "index: %d\n", meta.Index)
		}
		return nil
	}
	updates, err := cl.Watch(ctx, opts.service, q)
	if err != nil {
		return err
	}
	for u := range updates {
		if err := printInstances(opts.f, u.Instances); err != nil {
			return err
		}
		if opts.f.Output != "json" {
			fmt.Fprintf(opts.f.Out, "--- index %d from %s ---\n", u.Meta.Index, u.Meta.Agent)
		} else if !opts.quiet {
			fmt.Fprintf(opts.f.Err, "index: %d\n", u.Meta.Index)
		}
	}
	return nil // interrupted
}

func printInstances(f *Factory, insts []client.Instance) error {
	if insts == nil {
		insts = []client.Instance{}
	}
	return f.Print(insts, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tADDRESS\tSTATUS\tHEALTHY\tWEIGHT\tVERSION\tTAGS")
		for _, i := range insts {
			status := i.Status
			switch {
			case i.Maintenance != nil:
				status += " (maintenance)"
			case i.Draining != nil:
				status += " (draining)"
			}
			fmt.Fprintf(w, "%s\t%s:%d\t%s\t%v\t%d\t%s\t%s\n", esc(i.ID), esc(i.Address), i.Port, esc(status), i.Healthy, i.Weight, esc(i.Version), esc(strings.Join(i.Tags, ",")))
		}
	})
}
