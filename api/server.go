package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/connlimit"
	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Writer commits encoded fsm commands through the cluster. Apply returns
// once the write is applied on this node (read-your-writes).
type Writer interface {
	Apply(ctx context.Context, cmd []byte) (uint64, error)
}

// Consistency tells how fresh this node's catalog is, and can make it fresh.
type Consistency interface {
	// ConsistentIndex confirms leadership with a quorum and waits until this
	// node has applied everything acknowledged before the call.
	ConsistentIndex(ctx context.Context) (uint64, error)
	KnownLeader() bool
	// LastContact is how long ago this node heard from the leader (0 on it).
	LastContact() time.Duration
	// LastIndex is the index of the last entry in this node's Raft log,
	// committed or not: an index up to it will be applied here soon.
	LastIndex() uint64
}

// Membership is the cluster as operators see it.
type Membership interface {
	Status() client.ClusterStatus
	Members() []client.Member
	// Servers asks every Raft server for its own view of Raft (bounded per
	// server; a server that does not answer is listed with the reason).
	Servers(ctx context.Context) client.ClusterServers
	Join(addrs []string) (int, error)
	// Leave leaves the cluster gracefully; the agent then shuts down.
	Leave(ctx context.Context) error
	// RemovePeer removes server id from the Raft configuration.
	RemovePeer(ctx context.Context, id string) error
	// RemovePeerByAddress removes the server whose cluster address is addr
	// and returns its ID.
	RemovePeerByAddress(ctx context.Context, addr string) (string, error)
}

// Operator is what operators do to the whole cluster through any node.
type Operator interface {
	// Restore replaces every node's catalog with a snapshot archive's
	// content (checked again by the leader) and returns the catalog's index
	// after the restore, once this node has applied it.
	Restore(ctx context.Context, archive []byte) (uint64, error)
	// ForceLeave marks a failed member left and removes it from Raft.
	ForceLeave(ctx context.Context, node string) error
}

// StallReporter is optionally implemented by the Cluster: a follower that
// hears the leader but has stopped applying its log reports it, and /readyz
// answers 503 replication_stalled.
type StallReporter interface {
	ReplicationStalled() (bool, string)
}

// DivergenceReporter is optionally implemented by the Cluster: a server
// that applied entries the cluster never committed (a restore whose leader
// lost its leadership before any follower received it) reports it, and
// catalog reads on it answer 503 diverged (ReplicationStalled says why).
type DivergenceReporter interface {
	Diverged() bool
}

// Cluster is everything the API needs from the cluster.
type Cluster interface {
	Writer
	Consistency
	Membership
	Operator
}

// Config holds the API's limits and timeouts.
type Config struct {
	// MaxBodyBytes caps every request body (413 beyond).
	MaxBodyBytes int64
	// DefaultWait is a blocking query's wait when none is given; MaxWait
	// clamps any wait asked for. A random jitter of up to wait/16 is added.
	DefaultWait time.Duration
	MaxWait     time.Duration
	// MaxBlockingQueries caps the blocking queries this node holds at once;
	// one more is refused with 429 too_many_blocking_queries.
	MaxBlockingQueries int
	// ReadyMaxStale is how long without leader contact /readyz tolerates.
	ReadyMaxStale time.Duration
	// MaxSnapshotBytes caps the snapshot archive a restore uploads (413 beyond).
	MaxSnapshotBytes int64

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration

	// CheckDenyCIDRs are address ranges health checks may not target;
	// registrations whose check target is an IP literal in them get a 400
	// (the checker refuses resolved addresses in them at connect time too).
	CheckDenyCIDRs []netip.Prefix
	// CheckAllowCIDRs are ranges any registrant's health checks may target
	// besides the instance's own address (--check-allow-cidr). Without, a
	// check's target host must be the instance's address (or a name that
	// resolves to it when the check runs) unless the registration is
	// privileged (see TrustOpenRegistrations).
	CheckAllowCIDRs []netip.Prefix
	// CheckLocalCIDRs, with auth on, are the addresses of the servers'
	// own host (loopback, unspecified, the agent's own addresses; the
	// agent sets them unless --check-allow-loopback): a registration
	// without the management token whose active check targets one of them
	// (as an IP literal or the name localhost), or whose instance is
	// registered at one and has an active check, gets 403 unless the
	// address lies in CheckAllowCIDRs. The health checker refuses resolved
	// addresses in them at connect time too. With auth on, such a
	// registration's HTTP checks may also only use GET, HEAD or OPTIONS.
	CheckLocalCIDRs []netip.Prefix
	// TrustOpenRegistrations, with auth off, gives every registration what
	// only the management token gets with auth on: route prefixes outside
	// /SERVICE and checks aimed at any host. Off by default; for a trusted
	// lab that relied on it (--trust-open-registrations).
	TrustOpenRegistrations bool
	// Site holds the rules against cross-site requests and DNS rebinding
	// (site.go).
	Site SiteConfig
	// MaxConnsPerClient caps the connections one client IP holds open (an
	// IPv6 client counts per /64); one more is answered 429 and closed. 0
	// disables the cap.
	MaxConnsPerClient int
	// TTL takes TTL check reports (the agent's health subsystem). Without
	// it the TTL routes answer 503.
	TTL TTLReporter

	Logger hclog.Logger

	// Security and observability (docs/security.md, docs/metrics.md).

	// Auth turns token checks on (auth.go); the zero value leaves the API open.
	Auth AuthConfig
	// WriteRateLimit is the writes per second one client IP may make (an
	// IPv6 client counts per /64), with bursts of WriteBurst; beyond, 429
	// with Retry-After. 0 disables the limit.
	WriteRateLimit float64
	WriteBurst     int
	// Metrics, when set, receives the API's collectors; Gatherer is what
	// GET /metrics serves (the agent's whole registry).
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer
	// EnablePprof mounts net/http/pprof under /debug/pprof/ (management
	// token required when auth is on).
	EnablePprof bool
	// AuditLogger receives the audit lines of changes that are not Raft
	// writes (gossip joins); Raft writes are logged by the cluster's leader.
	AuditLogger hclog.Logger

	// TLS, when set, makes Serve serve HTTPS with it on the plain TCP
	// listener it is given. The TLS layer sits above the per-client
	// connection cap, so net/http sees each *tls.Conn: it handshakes,
	// fills Request.TLS (the agent's own origin is https://, site.go), and
	// a plain HTTP request gets a 400 (plainHTTPAnswer) instead of silence.
	TLS *tls.Config

	// DisableFastPath serves every request through net/http's server
	// (fastserve.go: the same answers; the fast path costs less CPU per
	// read; docs/api.md, "The request path").
	DisableFastPath bool

	// UILoadBalancers returns the admin addresses (host:port) of the load
	// balancers whose routing tables the web UI shows (GET /v1/ui/lbs
	// fetches http://ADDR/lb/status from each). It is called per request,
	// so it may name a listener bound after the API was built. Nil: none.
	UILoadBalancers func() []string
}

// DefaultMaxBlockingQueries is the default cap on concurrent blocking
// queries per node: well above the 10,000 a node is sized to hold.
const DefaultMaxBlockingQueries = 20000

// DefaultMaxSnapshotBytes is the default cap on an uploaded snapshot
// archive (gzip-compressed; 100,000 synthetic instances take 2.5 MB, see
// docs/api.md). A
// restore sent to a follower travels to the leader in one internal RPC frame,
// so it must stay below that frame limit too.
const DefaultMaxSnapshotBytes = 32 << 20

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:       64 << 10,
		DefaultWait:        5 * time.Minute,
		MaxWait:            10 * time.Minute,
		MaxBlockingQueries: DefaultMaxBlockingQueries,
		ReadyMaxStale:      5 * time.Second,
		MaxSnapshotBytes:   DefaultMaxSnapshotBytes,
		ReadHeaderTimeout:  10 * time.Second,
		ReadTimeout:        30 * time.Second,
		IdleTimeout:        30 * time.Second,
		MaxConnsPerClient:  connlimit.DefaultMaxPerClient,
		// The same default as the health checker's (health.DefaultDenyCIDRs):
		// the link-local ranges, where cloud metadata services answer.
		CheckDenyCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")},
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if c.MaxBodyBytes <= 0 {
		return errors.New("api: max body bytes must be positive")
	}
	if c.DefaultWait <= 0 || c.MaxWait < c.DefaultWait {
		return errors.New("api: need 0 < default wait <= max wait")
	}
	if c.MaxBlockingQueries <= 0 {
		return errors.New("api: max blocking queries must be positive")
	}
	if c.MaxSnapshotBytes <= 0 {
		return errors.New("api: max snapshot bytes must be positive")
	}
	if c.MaxConnsPerClient < 0 {
		return errors.New("api: max connections per client must not be negative")
	}
	return nil
}

// Server is the public HTTP API of one node.
type Server struct {
	cfg     Config
	store   *fsm.Store
	cluster Cluster
	logger  hclog.Logger
	handler http.Handler
	srv     *http.Server
	// resumed serves the connections parked queries were answered on
	// (park.go); lot is the parking lot of the running Serve.
	resumed *http.Server
	lot     atomic.Pointer[parkLot]
	// fast is the running Serve's fast path (fastserve.go), if on;
	// shutting is set by Shutdown. Under fastMu: a Shutdown that comes
	// before Serve has started the fast path must stop it too.
	fastMu   sync.Mutex
	fast     *fastServer
	shutting bool
	// arrival, if set (tests), sees every request as it reaches the API.
	arrival func(*http.Request)
	base    context.Context
	cancel  context.CancelFunc

	blocking blockingCounters
	// table is the route table inside handler's middleware (middleware.go).
	table          *router
	metrics        *httpMetrics
	metricsHandler http.Handler
	limiter        *writeLimiter
	audit          hclog.Logger
	site           *siteGuard
	// lbClient reads the /lb/status of Config.UILoadBalancers.
	lbClient *http.Client
}

// New returns a Server over the node's store and cluster.
func New(cfg Config, store *fsm.Store, cl Cluster) *Server {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{cfg: cfg, store: store, cluster: cl, logger: logger, lbClient: newLBClient()}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.initSecurity()
	routes := s.wrap(s.routes())
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every answer says it comes from a Beacon agent, so that a client
		// pointed at something else can tell (client.NotAgentError).
		w.Header().Set(client.HeaderAgent, "1")
		if s.cfg.TLS != nil {
			withTLSState(r)
		}
		if s.arrival != nil {
			s.arrival(r)
		}
		routes.ServeHTTP(w, r)
	})
	s.srv = s.newHTTPServer()
	s.resumed = s.newHTTPServer()
	return s
}

// Handler returns the API's http.Handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves the API on ln until Shutdown, with at most
// Config.MaxConnsPerClient connections per client IP, over TLS when
// Config.TLS is set (ln is then the plain TCP listener). Blocking queries that
// wait are parked out of net/http while they do (park.go). Serve may be
// called once.
func (s *Server) Serve(ln net.Listener) error {
	lot := newParkLot(s.base, ln.Addr(), s.metrics)
	if !s.lot.CompareAndSwap(nil, lot) {
		lot.close()
		lot.stopped()
		return errors.New("api: Serve called twice")
	}
	resumedDone := make(chan error, 1)
	go func() { resumedDone <- s.resumed.Serve(lot.resumed) }()
	var lim net.Listener
	if s.cfg.TLS != nil {
		lim = connlimit.WrapTLS(ln, s.cfg.MaxConnsPerClient, s.cfg.TLS, plainHTTPAnswer)
	} else {
		lim = connlimit.Wrap(ln, s.cfg.MaxConnsPerClient)
	}
	var err error
	if s.cfg.DisableFastPath {
		err = s.srv.Serve(lim)
	} else {
		f := newFastServer(s, lim)
		s.fastMu.Lock()
		if s.shutting {
			s.fastMu.Unlock()
			_ = lim.Close()
			err = http.ErrServerClosed
		} else {
			s.fast = f
			s.fastMu.Unlock()
			err = f.serve()
		}
	}
	// No more parking: queries parked now are ended by Shutdown (endAll)
	// or at their deadline, and their connections closed. The resumed
	// server stops with its listener (its error then says only that).
	lot.close()
	lot.stopped()
	<-resumedDone
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests, ends blocking queries with 503 (those
// waiting in handlers through their request contexts, which derive from the
// server's base context, cancelled first; parked ones through endAll) and
// waits for the requests in flight, parked ones included.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	lot := s.lot.Load()
	if lot != nil {
		lot.close()
		lot.endAll()
	}
	s.fastMu.Lock()
	s.shutting = true
	f := s.fast
	s.fastMu.Unlock()
	var err error
	if f != nil {
		err = f.shutdown(ctx)
	}
	err = errors.Join(err, s.srv.Shutdown(ctx))
	if lot != nil {
		err = errors.Join(err, lot.wait(ctx))
	}
	return errors.Join(err, s.resumed.Shutdown(ctx))
}

func (s *Server) newHTTPServer() *http.Server {
	return &http.Server{
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ConnContext:       connContext,
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		// Blocking queries hold a response for up to MaxWait plus jitter.
		WriteTimeout:   s.cfg.MaxWait + s.cfg.MaxWait/16 + 30*time.Second,
		IdleTimeout:    s.cfg.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       s.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

// routes lists every route of the API in one place. What http.ServeMux
// would answer by itself is answered with JSON errors like every other:
// an unknown path is 404, a known path asked with another method is 405
// with Allow, and a path that is not canonical (".", ".." or empty
// segments) is 404 rather than a redirect to its cleaned form, which would
// resend a write to a path the client did not name.
func (s *Server) routes() http.Handler {
	mux := s.newRouter() // a ServeMux that checks each route's policy (auth.go)
	// params refuses query parameters a route does not take (params.go).
	mux.HandleFunc("PUT /v1/services/{service}/instances/{id}", params(s.handleRegister))
	mux.HandleFunc("DELETE /v1/services/{service}/instances/{id}", params(s.handleDeregister))
	mux.HandleFunc("GET /v1/services/{service}/instances/{id}", params(s.handleInstance, readParams))
	mux.HandleFunc("GET /v1/services/{service}/instances", params(s.handleInstances, readParams, filterParams, pageParams))
	mux.HandleFunc("GET /v1/services", params(s.handleServices, readParams, filterParams, pageParams, []string{"prefix"}))
	mux.HandleFunc("PUT /v1/services/{service}/instances/{id}/maintenance", params(s.handleMaintenance))

	mux.HandleFunc("GET /v1/checks", params(s.handleChecks, readParams, checkParams, pageParams))
	mux.HandleFunc("PUT /v1/checks/{id}/pass", params(s.handleTTL("pass")))
	mux.HandleFunc("PUT /v1/checks/{id}/warn", params(s.handleTTL("warn")))
	mux.HandleFunc("PUT /v1/checks/{id}/fail", params(s.handleTTL("fail")))

	mux.HandleFunc("GET /v1/cluster/status", params(s.handleStatus))
	mux.HandleFunc("GET /v1/cluster/members", params(s.handleMembers))
	mux.HandleFunc("GET /v1/cluster/servers", params(s.handleServers))
	mux.HandleFunc("POST /v1/cluster/join", params(s.handleJoin))
	mux.HandleFunc("POST /v1/cluster/leave", params(s.handleLeave))
	mux.HandleFunc("DELETE /v1/cluster/peers/{id}", params(s.handleRemovePeer))
	mux.HandleFunc("DELETE /v1/cluster/peers", params(s.handleRemovePeerByAddress, []string{"address"}))
	mux.HandleFunc("POST /v1/cluster/force-leave/{node}", params(s.handleForceLeave))

	mux.HandleFunc("GET /v1/snapshot", params(s.handleSnapshotSave, []string{"stale"}))
	mux.HandleFunc("PUT /v1/snapshot", params(s.handleSnapshotRestore))

	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.securityRoutes(mux) // tokens, /metrics, pprof (middleware.go)
	s.uiRoutes(mux)       // the web UI and its reads (uiroutes.go)
	mux.HandleFunc(catchAll, func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux.mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, &statusError{http.StatusMethodNotAllowed, "method_not_allowed",
				fmt.Sprintf("method %s is not allowed here (allowed: %s)", r.Method, strings.Join(allow, ", "))})
			return
		}
		writeError(w, errNotFoundRoute)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.EscapedPath(); r.Method != http.MethodConnect && cleanPath(p) != p {
			writeError(w, errNotFoundRoute)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// allowedMethods lists the methods some route other than the catch-all
// serves at r's path.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodDelete, http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut} {
		probe := r.WithContext(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	return allow
}

// cleanPath is the canonical form of p as http.ServeMux computes it:
// rooted, without "." or ".." or empty segments, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}
