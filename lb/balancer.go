package lb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/connlimit"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Balancer is a load balancer that follows a Catalog: one follower per
// service keeps that service's routing Table current, and the proxy
// (Handler, Serve) routes requests through the tables. Its methods are safe
// for concurrent use.
type Balancer struct {
	cfg     Config
	catalog Catalog
	logger  hclog.Logger
	proxy   *proxy
	guard   *dialGuard
	metrics *metrics

	services atomic.Pointer[map[string]*service] // copy on write
	routes   atomic.Pointer[[]prefixRoute]       // longest prefix first
	changed  atomic.Pointer[chan struct{}]       // closed on every table swap
	listReg  atomic.Pointer[registryState]       // the service list's follower
	listIdx  atomic.Uint64                       // index of the service list applied
	routesMu sync.Mutex

	mu       sync.Mutex // guards the lifecycle and the services map's writers
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  bool
	draining atomic.Bool
	srvs     []stopper                  // the proxy's servers
	admins   []stopper                  // the admin servers, stopped last
	fast     atomic.Pointer[fastServer] // the last one Serve started (tests)
}

// prefixRoute maps a declared path prefix to its service.
type prefixRoute struct {
	routePrefix
	service string
}

// New checks cfg and returns a Balancer that is not running yet.
func New(cfg Config, catalog Catalog) (*Balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if catalog == nil {
		return nil, errors.New("lb: no catalog")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if cfg.Metrics == nil && cfg.Gatherer == nil {
		reg := prometheus.NewRegistry()
		cfg.Metrics, cfg.Gatherer = reg, reg
	}
	b := &Balancer{cfg: cfg, catalog: catalog, logger: logger}
	b.metrics = newMetrics(b)
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(b.metrics); err != nil {
			return nil, fmt.Errorf("lb: metrics: %w", err)
		}
	}
	empty := map[string]*service{}
	b.services.Store(&empty)
	b.routes.Store(&[]prefixRoute{})
	ch := make(chan struct{})
	b.changed.Store(&ch)
	b.listReg.Store(&registryState{})
	b.guard = newDialGuard(&b.cfg)
	b.proxy = newProxy(b)
	return b, nil
}

// Start starts following the catalog. It returns at once; tables appear as
// the first reads answer (WaitForIndex waits for them).
func (b *Balancer) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return errors.New("lb: already started")
	}
	b.started = true
	b.ctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if len(b.cfg.Services) > 0 {
		b.listReg.Store(&registryState{Connected: true})
		b.setServicesLocked(b.cfg.Services, 0)
		return nil
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		readLoop(b.ctx, &b.cfg, b.logger.With("follower", "services"), &b.listReg, func(ctx context.Context, index uint64) (uint64, Source, func(), error) {
			l, err := b.catalog.Services(ctx, index)
			if err != nil {
				return 0, Source{}, nil, err
			}
			return l.Index, l.Source, func() { b.setServices(l.Names, l.Index) }, nil
		})
	}()
	return nil
}

// setServices starts followers for new services and stops those of
// services that are gone.
func (b *Balancer) setServices(names []string, index uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setServicesLocked(names, index)
}

// setServicesLocked is setServices with b.mu held (Start holds it).
func (b *Balancer) setServicesLocked(names []string, index uint64) {
	if b.ctx.Err() != nil {
		return
	}
	cur := *b.services.Load()
	next := make(map[string]*service, len(names))
	for _, n := range names {
		if s, ok := cur[n]; ok {
			next[n] = s
			continue
		}
		b.logger.Debug("following service", "service", n)
		s := newService(b, n)
		ctx, cancel := context.WithCancel(b.ctx)
		s.cancel = cancel
		next[n] = s
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			s.run(ctx)
		}()
	}
	var gone []*service
	for n, s := range cur {
		if _, ok := next[n]; !ok {
			gone = append(gone, s)
		}
	}
	b.services.Store(&next)
	for _, s := range gone {
		b.logger.Debug("service gone: no longer following it", "service", s.name)
		s.cancel()
	}
	if len(gone) > 0 || len(next) != len(cur) {
		// A declared prefix may no longer (or now) shadow a service's path.
		b.rebuildRoutes()
	}
	b.listIdx.Store(index)
	b.notify()
}

// notify wakes WaitForIndex callers.
func (b *Balancer) notify() {
	ch := make(chan struct{})
	old := b.changed.Swap(&ch)
	close(*old)
}

// rebuildRoutes recomputes the declared prefix routes from every table.
func (b *Balancer) rebuildRoutes() {
	b.routesMu.Lock()
	defer b.routesMu.Unlock()
	owner := map[string]prefixRoute{}
	for name, s := range *b.services.Load() {
		t := s.table.Load()
		if t == nil {
			continue
		}
		for _, p := range t.prefixes {
			if other := shadowed(p.prefix, name, b.services.Load()); other != "" {
				b.logger.Warn("route prefix ignored: it would shadow another service's path", "prefix", p.prefix, "service", name, "shadowed", other)
				continue
			}
			if o, ok := owner[p.prefix]; ok && o.service != name {
				// Two services claim the prefix: the first name wins, the
				// same on every balancer.
				b.logger.Warn("route prefix declared by two services", "prefix", p.prefix, "services", o.service+","+name)
				if o.service < name {
					continue
				}
			}
			owner[p.prefix] = prefixRoute{routePrefix: p, service: name}
		}
	}
	routes := make([]prefixRoute, 0, len(owner))
	for _, r := range owner {
		routes = append(routes, r)
	}
	sort.Slice(routes, func(i, j int) bool {
		if len(routes[i].prefix) != len(routes[j].prefix) {
			return len(routes[i].prefix) > len(routes[j].prefix)
		}
		return routes[i].prefix < routes[j].prefix
	})
	b.routes.Store(&routes)
}

// shadowed returns the followed service other than owner whose path
// (/SERVICE and below) prefix would capture, or "". A prefix inside
// owner's own namespace shadows nobody.
func shadowed(prefix, owner string, services *map[string]*service) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(prefix, "/"), "/")
	if first == owner {
		return ""
	}
	if _, ok := (*services)[first]; ok {
		return first
	}
	return ""
}

// service returns the followed service name, or nil.
func (b *Balancer) service(name string) *service { return (*b.services.Load())[name] }

// Table returns the current routing table of service, or nil when the
// service is not followed or its first read has not answered.
func (b *Balancer) Table(service string) *Table {
	if s := b.service(service); s != nil {
		return s.table.Load()
	}
	return nil
}

// WaitForIndex waits until service's table was built from index or later,
// or the service list read at index or later no longer has the service (its
// last instance left; the balancer answers for it as for any unknown name).
func (b *Balancer) WaitForIndex(ctx context.Context, service string, index uint64) error {
	for {
		ch := *b.changed.Load()
		if s := b.service(service); s != nil {
			if t := s.table.Load(); t != nil && t.index >= index {
				return nil
			}
		} else if len(b.cfg.Services) == 0 && b.listIdx.Load() >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lb: waiting for %s at index %d: %w", service, index, ctx.Err())
		case <-ch:
		}
	}
}

// Changed returns a channel that is closed at the next change of any table
// or of the set of services followed.
func (b *Balancer) Changed() <-chan struct{} { return *b.changed.Load() }

// Handler returns the proxy's http.Handler.
func (b *Balancer) Handler() http.Handler { return b.proxy }

// Serve serves the proxy on ln until Shutdown: HTTP/1.1 and cleartext
// HTTP/2 (h2c), or TLS with HTTP/2 when Config.TLS is set. Without TLS the
// common HTTP/1.1 requests take the fast path (fastServer) unless
// Config.DisableFastPath; either way the fastServer tells h2c connections
// from HTTP/1 ones and hands them to two net/http servers, one for each.
func (b *Balancer) Serve(ln net.Listener) error {
	b.guard.addListener(ln.Addr(), "listen")
	newServer := func(protocols ...func(*http.Protocols, bool)) *http.Server {
		var p http.Protocols
		for _, set := range protocols {
			set(&p, true)
		}
		return &http.Server{
			Handler:           b.proxy,
			ReadHeaderTimeout: b.cfg.ReadHeaderTimeout,
			IdleTimeout:       b.cfg.IdleTimeout,
			MaxHeaderBytes:    1 << 20,
			ErrorLog:          b.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
			Protocols:         &p,
		}
	}
	var err error
	if b.cfg.TLS != nil {
		srv := newServer((*http.Protocols).SetHTTP1, (*http.Protocols).SetHTTP2)
		srv.TLSConfig = b.cfg.TLS.Clone()
		if !b.track(&b.srvs, srv) {
			return http.ErrServerClosed
		}
		err = srv.ServeTLS(ln, "", "")
	} else {
		// Not one server with HTTP/1 and UnencryptedHTTP2: it would wait
		// for 14 bytes of every connection before reading a request
		// (fastServer).
		srv := newServer((*http.Protocols).SetHTTP1)
		h2srv := newServer((*http.Protocols).SetUnencryptedHTTP2)
		fs := newFastServer(b, ln, srv, h2srv, b.cfg.DisableFastPath)
		b.fast.Store(fs)
		if !b.track(&b.srvs, fs) {
			return http.ErrServerClosed
		}
		err = fs.serve()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeAdmin serves the admin handler (status, metrics, health) on ln until
// Shutdown, which stops it last: /readyz answers 503 and /lb/status shows
// the shutdown while the requests in flight drain.
//
// The admin listener holds at most Config.MaxConnsPerClient connections
// per client IP (one more is answered 429 and closed) and closes idle
// keep-alive connections after Config.AdminIdleTimeout.
func (b *Balancer) ServeAdmin(ln net.Listener) error {
	b.guard.addListener(ln.Addr(), "admin")
	ln = connlimit.Wrap(ln, b.cfg.MaxConnsPerClient)
	srv := &http.Server{
		Handler:           b.AdminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       b.cfg.AdminIdleTimeout,
		ErrorLog:          b.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	if !b.track(&b.admins, srv) {
		return http.ErrServerClosed
	}
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// stopper is a server Shutdown stops: *http.Server or the fast path's.
type stopper interface {
	Shutdown(context.Context) error
	Close() error
}

// track adds srv to list (b.srvs or b.admins) for Shutdown to stop. It
// reports false once Shutdown has begun: srv must not serve.
func (b *Balancer) track(list *[]stopper, srv stopper) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.draining.Load() {
		return false
	}
	*list = append(*list, srv)
	return true
}

// Shutdown stops accepting connections on the proxy's listeners, lets the
// requests in flight finish (until ctx ends), stops the followers and
// closes the admin servers last. Readiness (/readyz on the admin handler)
// fails, and the status shows shutting_down, from the start of the shutdown
// until the admin servers close, so a load balancer or orchestrator in
// front can see the drain.
func (b *Balancer) Shutdown(ctx context.Context) error {
	b.draining.Store(true)
	b.mu.Lock()
	srvs, admins := b.srvs, b.admins
	b.srvs, b.admins = nil, nil
	b.mu.Unlock()
	errs := stopAll(ctx, srvs)
	b.mu.Lock()
	if b.cancel != nil {
		b.cancel()
	}
	b.mu.Unlock()
	b.wg.Wait()
	b.proxy.close()
	return errors.Join(append(errs, stopAll(ctx, admins)...)...)
}

// stopAll shuts the servers down in parallel, closing those that do not
// finish before ctx ends, and returns their errors.
func stopAll(ctx context.Context, srvs []stopper) []error {
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, srv := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
				_ = srv.Close()
			}
		}()
	}
	wg.Wait()
	return errs
}

// routeFor finds the service a request goes to and the prefix to strip.
func (b *Balancer) routeFor(r *http.Request) (svc *service, strip string) {
	return b.route(r.Host, r.URL.Path)
}

// route finds the service of a request to host (the Host header) for path
// (decoded) and the prefix to strip.
func (b *Balancer) route(host, path string) (svc *service, strip string) {
	services := *b.services.Load()
	if len(b.cfg.Domains) > 0 {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		for _, d := range b.cfg.Domains {
			// host is NAME.d (no string is built for ".d": this runs for
			// every request).
			if n := len(host) - len(d) - 1; n > 0 && host[n] == '.' && host[n+1:] == d && !strings.Contains(host[:n], ".") {
				name := host[:n]
				if s := services[name]; s != nil {
					return s, ""
				}
			}
		}
	}
	for _, rt := range *b.routes.Load() {
		// path is the prefix or starts with the prefix and a slash.
		if strings.HasPrefix(path, rt.prefix) && (len(path) == len(rt.prefix) || path[len(rt.prefix)] == '/') {
			if s := services[rt.service]; s != nil {
				if rt.strip {
					return s, rt.prefix
				}
				return s, ""
			}
		}
	}
	if b.cfg.PathRouting && len(path) > 1 {
		name, _, _ := strings.Cut(path[1:], "/")
		if s := services[name]; s != nil {
			if path[0] == '/' {
				return s, path[:1+len(name)] // "/" + name, not built again
			}
			return s, "/" + name
		}
	}
	return nil, ""
}
