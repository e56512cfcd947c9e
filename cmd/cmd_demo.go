package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/api/client"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

// `beacon demo` is a small HTTP service for tours and tests: it answers with
// a page naming the instance that served the request, registers itself with
// an HTTP health check through the agents it is given, keeps that
// registration in place, and deregisters on SIGTERM or SIGINT.

type demoOptions struct {
	f             *Factory
	listen        string
	service       string
	id            string
	address       string
	port          int
	tags          []string
	version       string
	checkInterval time.Duration
	syncInterval  time.Duration
}

func newDemoCmd(f *Factory, runF func(context.Context, *demoOptions) error) *cobra.Command {
	opts := &demoOptions{f: f}
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run a demo HTTP service that registers itself",
		Long: `Run a small HTTP service that registers itself in Beacon with an HTTP health
check, through the agents given by --addr (comma-separated; it moves to the
next one when one fails), and deregisters when it gets SIGTERM or SIGINT.

  GET  /          a page naming the instance that answered
  GET  /healthz   200 while healthy, 503 after POST /-/fail (POST /-/pass heals)

'beacon demo fail' and 'beacon demo pass' send those POSTs to an instance
(127.0.0.1:8080 unless --instance says otherwise), for instance inside its
container: docker-compose -p beacon exec web2 /beacon demo pass

Every --sync-interval it checks that its registration is still there and
registers again if not (after a snapshot restore, say).

  beacon demo --addr n1:8750,n2:8750 --service web --id web-1 --listen :8080`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if opts.service == "" {
				return usageError{errors.New("--service is required")}
			}
			if opts.id == "" {
				host, _ := os.Hostname()
				opts.id = opts.service + "-" + host
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runDemo(c.Context(), opts)
		},
	}
	fl := c.Flags()
	fl.StringVar(&opts.listen, "listen", ":8080", "address to serve HTTP on")
	fl.StringVar(&opts.service, "service", "demo", "service name to register")
	fl.StringVar(&opts.id, "id", "", "instance ID (default SERVICE-HOSTNAME)")
	fl.StringVar(&opts.address, "address", "", "address to register (default: this host's first non-loopback IPv4)")
	fl.IntVar(&opts.port, "port", 0, "port to register (default: the listening port)")
	fl.StringArrayVar(&opts.tags, "tag", nil, "tag (repeatable)")
	fl.StringVar(&opts.version, "version", "", "version to register")
	fl.DurationVar(&opts.checkInterval, "check-interval", 2*time.Second, "interval of the registered HTTP check")
	fl.DurationVar(&opts.syncInterval, "sync-interval", 10*time.Second, "how often to verify the registration is still there")
	c.AddCommand(newDemoSwitchCmd(f, "fail"), newDemoSwitchCmd(f, "pass"))
	return c
}

// newDemoSwitchCmd is `beacon demo fail` or `beacon demo pass`: POST /-/fail
// or /-/pass to one demo instance. Once an instance fails, the load
// balancers stop sending it requests, so the POST that heals it cannot go
// through them; this command, run in the instance's container (the image
// has no shell or curl), reaches it on loopback.
func newDemoSwitchCmd(f *Factory, verb string) *cobra.Command {
	what := map[string]string{"fail": "make a demo instance's health check fail", "pass": "make a failed demo instance's health check pass again"}[verb]
	var instance string
	c := &cobra.Command{
		Use:   verb,
		Short: strings.ToUpper(what[:1]) + what[1:],
		Long: fmt.Sprintf(`%s%s: POST /-/%s to the instance at --instance (default
127.0.0.1:8080, what the compose demo services listen on). In docker compose,
run it inside the instance's container:

  docker-compose -p beacon exec web2 /beacon demo %s`, strings.ToUpper(what[:1]), what[1:], verb, verb),
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(c.Context(), 5*time.Second)
			defer cancel()
			url := "http://" + instance + "/-/" + verb
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
			if err != nil {
				return usageError{err}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("demo %s: %w (is a 'beacon demo' listening at %s?)", verb, err, instance)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("demo %s: POST %s answered %s: %s", verb, url, resp.Status, strings.TrimSpace(string(body)))
			}
			fmt.Fprintf(f.Out, "%s: %s\n", instance, strings.TrimSpace(string(body)))
			return nil
		},
	}
	c.Flags().StringVar(&instance, "instance", "127.0.0.1:8080", "host:port of the demo instance (its --listen address)")
	return c
}

// demoServer is the running demo service.
type demoServer struct {
	opts     *demoOptions
	logger   hclog.Logger
	host     string
	failing  atomic.Bool
	requests atomic.Int64
	cl       *client.Client
}

func runDemo(ctx context.Context, opts *demoOptions) error {
	logger := hclog.New(&hclog.LoggerOptions{Name: "demo", Output: opts.f.Err, TimeFormat: time.RFC3339})
	ln, err := net.Listen("tcp", opts.listen)
	if err != nil {
		return err
	}
	if opts.port == 0 {
		opts.port = ln.Addr().(*net.TCPAddr).Port
	}
	if opts.address == "" {
		opts.address = agent.HostIP()
	}
	d := &demoServer{opts: opts, logger: logger}
	d.host, _ = os.Hostname()
	// --addr, --token, the TLS flags and --attempt-timeout apply; the
	// client's fail-over policy moves past an agent that is down or hangs.
	cc, err := opts.f.clientConfig()
	if err != nil {
		ln.Close()
		return err
	}
	cc.Timeout = 5 * time.Second
	if d.cl, err = client.New(cc); err != nil {
		ln.Close()
		return usageError{err}
	}

	srv := &http.Server{Handler: d.routes(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("serving", "listen", ln.Addr().String(), "service", opts.service, "id", opts.id,
		"registered_as", net.JoinHostPort(opts.address, strconv.Itoa(opts.port)))

	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		d.keepRegistered(ctx)
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	}
	<-regDone
	// Deregister first, so that load balancers stop sending traffic, then
	// stop serving the requests in flight.
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.retry(dctx, "deregister", func(ctx context.Context) error {
		_, err := d.cl.Deregister(ctx, opts.service, opts.id)
		if client.IsNotFound(err) {
			return nil
		}
		return err
	}); err != nil {
		logger.Error("cannot deregister", "error", err)
	} else {
		logger.Info("deregistered", "service", opts.service, "id", opts.id)
	}
	if err := srv.Shutdown(dctx); err != nil && runErr == nil {
		runErr = err
	}
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	return runErr
}

func (d *demoServer) registration() *client.Registration {
	url := "http://" + net.JoinHostPort(d.opts.address, strconv.Itoa(d.opts.port)) + "/healthz"
	return &client.Registration{
		Address: d.opts.address, Port: d.opts.port, Tags: d.opts.tags, Version: d.opts.version,
		Meta: map[string]string{"demo": "true", "host": d.host},
		Checks: []client.CheckDefinition{{
			Name: "http", HTTP: url,
			Interval: client.Duration(d.opts.checkInterval), Timeout: client.Duration(time.Second),
		}},
	}
}

// keepRegistered registers the instance (retrying until it succeeds) and
// then, every sync interval, registers it again if it is missing.
func (d *demoServer) keepRegistered(ctx context.Context) {
	register := func(ctx context.Context) error {
		_, err := d.cl.Register(ctx, d.opts.service, d.opts.id, d.registration())
		return err
	}
	if d.retry(ctx, "register", register) == nil {
		d.logger.Info("registered", "service", d.opts.service, "id", d.opts.id)
	}
	t := time.NewTicker(d.opts.syncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var missing bool
		err := d.retry(ctx, "check registration", func(ctx context.Context) error {
			_, _, err := d.cl.Instance(ctx, d.opts.service, d.opts.id, nil)
			missing = client.IsNotFound(err)
			if missing {
				return nil
			}
			return err
		})
		if err == nil && missing {
			d.logger.Warn("registration missing; registering again")
			if d.retry(ctx, "register", register) == nil {
				d.logger.Info("registered", "service", d.opts.service, "id", d.opts.id)
			}
		}
	}
}

// retry runs fn, with back-off, until it succeeds or ctx ends. Each run
// already tries every agent (the client's fail-over policy); retry waits
// for the cluster to come back when none answered. Bad requests (4xx other
// than 429) are not retried: they would fail again.
func (d *demoServer) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	backoff := 250 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status >= 400 && ce.Status < 500 && ce.Status != http.StatusTooManyRequests {
			d.logger.Error(what+" refused", "error", err)
			return err
		}
		d.logger.Warn(what+" failed; retrying", "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (d *demoServer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if d.failing.Load() {
			http.Error(w, "failing (POST /-/pass to heal)", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /-/fail", func(w http.ResponseWriter, r *http.Request) {
		d.failing.Store(true)
		d.logger.Info("health check will now fail")
		io.WriteString(w, "failing\n")
	})
	mux.HandleFunc("POST /-/pass", func(w http.ResponseWriter, r *http.Request) {
		d.failing.Store(false)
		d.logger.Info("health check will now pass")
		io.WriteString(w, "passing\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := d.requests.Add(1)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Demo-Instance", d.opts.id)
		fmt.Fprintf(w, "Hello from instance %s of service %s (host %s, registered as %s:%d).\n",
			d.opts.id, d.opts.service, d.host, d.opts.address, d.opts.port)
		fmt.Fprintf(w, "You asked for %s %s (Host: %s); this instance has served %d requests.\n",
			r.Method, r.URL.RequestURI(), r.Host, n)
	})
	return mux
}
