package api

import (
	"context"
	"maps"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// router is the API's ServeMux with every route wrapped in the check of its
// policy (auth.go): routes() registers handlers on it exactly as on a
// ServeMux, and no route can escape authorization.
type router struct {
	s        *Server
	mux      *http.ServeMux
	patterns []string
	// mounted are the patterns added with Mount (open policy).
	mounted []string
}

func (s *Server) newRouter() *router {
	rt := &router{s: s, mux: http.NewServeMux()}
	s.table = rt
	return rt
}

// HandleFunc registers h for pattern, behind pattern's policy.
func (rt *router) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	rt.Handle(pattern, http.HandlerFunc(h))
}

// Handle registers h for pattern, behind pattern's policy.
func (rt *router) Handle(pattern string, h http.Handler) {
	p := policyFor(pattern)
	rt.patterns = append(rt.patterns, pattern)
	forwardOnly := forwardOnlyRoutes[pattern]
	rt.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The catch-all answers what no route took: its requests stay
		// "unmatched" (docs/metrics.md), as those cleanPath refuses do.
		if st := stateFrom(r.Context()); st != nil && pattern != catchAll {
			st.route = pattern
		}
		if catalogReads[pattern] && rt.s.diverged() {
			writeError(w, errDiverged)
			return
		}
		if !forwardOnly && !rt.s.waitAcked(r.Context()) {
			writeError(w, errNotCaughtUp)
			return
		}
		if err := rt.s.authorize(r, p); err != nil {
			rt.s.deny(w, r, err)
			return
		}
		if err := rt.s.site.checkBody(r); err != nil {
			writeError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// catchAll is the pattern of the handler that answers 404 or 405 for
// requests no route matched (routes).
const catchAll = "/"

// forwardOnlyRoutes read nothing of this node's catalog: they encode a write
// and send it to the leader. Every other route first waits until this node
// has applied the writes it acknowledged (waitAcked).
var forwardOnlyRoutes = map[string]bool{
	"PUT /v1/services/{service}/instances/{id}":    true,
	"DELETE /v1/services/{service}/instances/{id}": true,
}

// ackedWaitMax bounds how long a request waits for this node to apply the
// writes it acknowledged. Past it (this node lost its leader right after the
// write) the request fails with 503 rather than answer without the write.
const ackedWaitMax = 2 * time.Second

var errNotCaughtUp = &statusError{http.StatusServiceUnavailable, "not_caught_up",
	"this node has not applied a write it acknowledged yet (it may have lost contact with the leader); retry, or ask another node"}

// waitAcked keeps read-your-writes on this node: a write this node
// acknowledged once the leader had committed it (cluster.Node.ApplyAcked)
// may not be applied here yet, and a request after it must see it. It
// reports whether the node has applied every write it acknowledged.
// catalogReads answer from this node's catalog: a diverged server refuses
// them (the cluster's status, members and servers stay readable, so that an
// operator can look at it).
var catalogReads = map[string]bool{
	"GET /v1/services":                          true,
	"GET /v1/services/{service}/instances":      true,
	"GET /v1/services/{service}/instances/{id}": true,
	"GET /v1/checks":                            true,
	"GET /v1/snapshot":                          true,
	"GET /v1/ui/watch":                          true,
	"GET /v1/ui/summary":                        true,
	"GET /v1/ui/transitions":                    true,
	"GET /v1/ui/lbs":                            true,
}

var errDiverged = &statusError{http.StatusServiceUnavailable, "diverged",
	"this server applied entries the cluster never committed and cannot serve the catalog (its /readyz and log say more); ask another node"}

// diverged reports whether the cluster says this server diverged
// (DivergenceReporter).
func (s *Server) diverged() bool {
	d, ok := s.cluster.(DivergenceReporter)
	return ok && d.Diverged()
}

func (s *Server) waitAcked(ctx context.Context) bool {
	return s.store == nil || s.store.WaitAcked(ctx, ackedWaitMax)
}

// ServeHTTP implements http.Handler.
func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.mux.ServeHTTP(w, r) }

// Routes returns the patterns of every registered route, in order, with
// the policy each needs ("open", "read", "service-write", "check-write",
// "management"). Tests and docs use it.
func (s *Server) Routes() map[string]string {
	out := map[string]string{}
	for _, p := range s.table.patterns {
		out[p] = policyFor(p).String()
	}
	for _, p := range s.table.mounted {
		out[p] = "mounted"
	}
	return out
}

// securityRoutes adds the routes of tokens, metrics and profiling.
func (s *Server) securityRoutes(mux *router) {
	mux.HandleFunc("POST /v1/tokens", s.handleTokenCreate)
	mux.HandleFunc("GET /v1/tokens", s.handleTokenList)
	mux.HandleFunc("DELETE /v1/tokens/{accessor}", s.handleTokenDelete)
	mux.HandleFunc("GET /metrics", s.handleMetrics)
	if s.cfg.EnablePprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		// The command line may hold secrets (--management-token): not served.
		mux.HandleFunc("GET /debug/pprof/cmdline", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, &statusError{http.StatusNotFound, "not_served", "the command line is not served: it may hold secrets"})
		})
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
}

// handleMetrics: GET /metrics, the Prometheus exposition of the agent.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if s.metricsHandler == nil {
		writeError(w, &statusError{http.StatusNotFound, "metrics_disabled", "metrics are not enabled on this agent"})
		return
	}
	s.metricsHandler.ServeHTTP(w, r)
}

// requestState travels with a request through the middleware: the router
// records the matched route pattern in it for the metrics.
type requestState struct {
	route string
	query url.Values // the request's query, parsed once (queryOf)
	// lot, for a blocking query served by Serve, is where it may park
	// (Block); parked says it did: the lot counts it once it is answered.
	lot    *parkLot
	parked bool
}

// answered counts a request answered and returns its series (the caller
// observes the duration).
func (m *httpMetrics) answered(route, method string, status int) *routeMetrics {
	m.inflight.Dec()
	rm := m.of(route, method, status)
	rm.requests.Inc()
	return rm
}

// routeMetrics are the series of one route, method and status, resolved
// once: resolving labels hashes them and takes the vector's lock, twice per
// request (~2 % of a discovery read's CPU).
type routeMetrics struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

type routeKey struct {
	route, method string
	status        int
}

// maxRouteKeys bounds the resolved series kept: routes and methods are
// bounded (methodLabel), status codes nearly so.
const maxRouteKeys = 512

// of returns the series of route, method and status.
func (m *httpMetrics) of(route, method string, status int) *routeMetrics {
	method = methodLabel(method)
	k := routeKey{route, method, status}
	if rm := (*m.resolved.Load())[k]; rm != nil {
		return rm
	}
	rm := &routeMetrics{requests: m.requests.WithLabelValues(route, method, strconv.Itoa(status)),
		duration: m.duration.WithLabelValues(route, method)}
	m.resolveMu.Lock()
	defer m.resolveMu.Unlock()
	old := *m.resolved.Load()
	if len(old) < maxRouteKeys {
		next := make(map[routeKey]*routeMetrics, len(old)+1)
		maps.Copy(next, old)
		next[k] = rm
		m.resolved.Store(&next)
	}
	return rm
}

// methodLabel is the method label of a request: a method of RFC 9110 or
// PATCH as it is, any other "OTHER", so that a client sending made-up
// methods cannot grow the series without bound.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// queryOf returns r's query parameters, parsed once per request and shared
// by the middleware, the parameter check and the handler (each
// r.URL.Query() parses again and allocates a map: four parses per request
// cost a consistent read ~2 µs). Callers must not modify the map.
func queryOf(r *http.Request) url.Values {
	if st := stateFrom(r.Context()); st != nil {
		return st.queryOf(r)
	}
	return r.URL.Query()
}

// Query is queryOf for handlers mounted on the server (Mount): the query
// the middleware already parsed. Callers must not modify the map.
func Query(r *http.Request) url.Values { return queryOf(r) }

func (st *requestState) queryOf(r *http.Request) url.Values {
	if st.query == nil {
		if r.URL.RawQuery == "" {
			st.query = noQuery
		} else {
			st.query = r.URL.Query()
		}
	}
	return st.query
}

// noQuery is the query of every request without one (callers of queryOf do
// not modify the map): parsing an empty query allocated a map per request.
var noQuery = url.Values{}

type stateKey struct{}

// requestContext is a request's context below the middleware: its state,
// identity and actor in one allocation (three context.WithValue layers
// and the two structs boxed cost five on every request).
type requestContext struct {
	context.Context
	st    *requestState
	id    identity
	actor Actor
}

// Value returns the request's state, identity (*identity) and actor
// (*Actor) for their keys; anything else is the parent's.
//
// The fast path (fastserve.go) makes each request's requestContext empty
// (st nil) and the middleware fills it in: until then it holds nothing.
func (c *requestContext) Value(key any) any {
	if c.st != nil {
		switch key.(type) {
		case stateKey:
			return c.st
		case identityKey:
			return &c.id
		case actorKey:
			return &c.actor
		}
	}
	return c.Context.Value(key)
}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

// wrap is the middleware around the router: metrics, authentication, the
// write rate limit. Authorization happens per route, in the router.
func (s *Server) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := monoNow()
		st := &requestState{route: "unmatched"}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		blocking := r.Method == http.MethodGet && st.queryOf(r).Get("index") != ""
		if blocking {
			st.lot = s.lot.Load()
		}
		m := s.metrics
		m.inflight.Inc()
		defer func() {
			if st.parked {
				return // counted when it is answered (park.go)
			}
			rm := m.answered(st.route, r.Method, sw.status)
			if !blocking {
				rm.duration.Observe(time.Since(start).Seconds())
			}
		}()

		if err := s.site.checkOrigin(r); err != nil {
			s.metrics.denied.WithLabelValues(codeOf(err)).Inc()
			writeError(sw, err)
			return
		}
		id := s.authenticate(r, st.queryOf(r))
		actor := Actor{Accessor: id.accessor, Remote: r.RemoteAddr}
		if rc, ok := r.Context().(*requestContext); ok && rc.st == nil {
			// Made by the fast path for this request, not filled yet:
			// filled here, which spares a copy of the request.
			rc.st, rc.id, rc.actor = st, id, actor
		} else {
			r = r.WithContext(&requestContext{Context: r.Context(), st: st, id: id, actor: actor})
		}
		if s.limiter != nil && isWrite(r) && id.err == nil {
			if ok, wait := s.limiter.allow(remoteIP(r), start); !ok {
				m.rateLimited.Inc()
				sw.Header().Set("Retry-After", retryAfter(wait))
				writeError(sw, &statusError{http.StatusTooManyRequests, "rate_limited",
					"too many writes from this client; retry after " + retryAfter(wait) + "s"})
				return
			}
		}
		next.ServeHTTP(sw, r)
	})
}

func codeOf(err error) string {
	_, code, _ := statusOf(err)
	return code
}

// deny answers a request refused by authentication or authorization. The
// token is never logged.
func (s *Server) deny(w http.ResponseWriter, r *http.Request, err error) {
	_, code, _ := statusOf(err)
	s.metrics.denied.WithLabelValues(code).Inc()
	s.logger.Debug("request denied", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
		"accessor", identityFrom(r.Context()).accessor, "code", code)
	writeError(w, err)
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Flush lets streaming handlers flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.wrote = true
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// httpMetrics are the API's Prometheus series (docs/metrics.md).
type httpMetrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	inflight    prometheus.Gauge
	rateLimited prometheus.Counter
	denied      *prometheus.CounterVec

	// resolved holds the series resolved so far (of), replaced whole
	// under resolveMu when one is added.
	resolved  atomic.Pointer[map[routeKey]*routeMetrics]
	resolveMu sync.Mutex
}

func newHTTPMetrics() *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_http_requests_total",
			Help: "HTTP API requests answered, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "beacon_http_request_duration_seconds",
			Help:    "Time to answer an HTTP API request, by route pattern and method (blocking queries, which wait by design, excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beacon_http_requests_in_flight",
			Help: "HTTP API requests being served now, blocking queries included.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "beacon_http_rate_limited_total",
			Help: "Writes refused with 429 by the per-client write rate limit.",
		}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_http_denied_total",
			Help: "Requests refused by authentication or authorization, by error code (unauthenticated, invalid_token, permission_denied, token_in_url, invalid).",
		}, []string{"code"}),
	}
	m.resolved.Store(&map[routeKey]*routeMetrics{})
	// Series that alerts watch exist from the start, at zero.
	for _, code := range []string{"unauthenticated", "invalid_token", "permission_denied"} {
		m.denied.WithLabelValues(code)
	}
	return m
}

func (m *httpMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.inflight, m.rateLimited, m.denied}
}

// newMetricsHandler serves g in the Prometheus exposition formats: text,
// protobuf or OpenMetrics, as the scraper's Accept header asks (promhttp
// offers OpenMetrics only when told to).
func newMetricsHandler(g prometheus.Gatherer) http.Handler {
	if g == nil {
		return nil
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true})
}

// initSecurity builds the server's metrics, rate limiter and audit logger
// from its config. Registering twice in one registry is a programming error
// and panics.
func (s *Server) initSecurity() {
	s.metrics = newHTTPMetrics()
	if s.cfg.Metrics != nil {
		for _, c := range s.metrics.collectors() {
			s.cfg.Metrics.MustRegister(c)
		}
		s.cfg.Metrics.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "beacon_http_blocking_queries",
				Help: "Blocking queries (reads with ?index=) waiting on this node now.",
			}, func() float64 { return float64(s.BlockingStats().Active) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "beacon_http_blocking_queries_parked",
				Help: "Blocking queries waiting out of net/http on this node now (parked: no goroutine or connection buffers each).",
			}, func() float64 { return float64(s.BlockingStats().Parked) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "beacon_http_blocking_queries_rejected_total",
				Help: "Blocking queries refused with 429 because --max-blocking-queries were already waiting.",
			}, func() float64 { return float64(s.BlockingStats().Rejected) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "beacon_http_blocking_wakeups_total",
				Help: "Times a blocked query's watch fired and it re-ran (whether or not its result changed).",
			}, func() float64 { return float64(s.BlockingStats().Wakeups) }),
		)
	}
	s.metricsHandler = newMetricsHandler(s.cfg.Gatherer)
	s.limiter = newWriteLimiter(s.cfg.WriteRateLimit, s.cfg.WriteBurst)
	s.site = newSiteGuard(s.cfg.Site, s.cfg.Auth.Enabled())
	s.audit = s.cfg.AuditLogger
	if s.audit == nil {
		s.audit = s.logger.Named("audit")
	}
}

// auditJoin logs an accepted join. A join is a gossip action of the node
// that received it, not a Raft write, so that node logs it (without index).
func (s *Server) auditJoin(r *http.Request, addrs []string, contacted int) {
	a, _ := ActorFrom(r.Context())
	s.audit.Info("join accepted", "op", "join", "accessor", a.Accessor, "remote", a.Remote,
		"addresses", strings.Join(addrs, ","), "contacted", contacted)
}
