package consul

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
)

// Writer commits encoded fsm commands through the cluster and returns once
// this node has applied them (read-your-writes).
type Writer interface {
	Apply(ctx context.Context, cmd []byte) (uint64, error)
}

// Cluster is what the Consul endpoints need of the cluster. The agent's
// adapter for the native API (api.Cluster) satisfies it.
type Cluster interface {
	Writer
	// ConsistentIndex confirms leadership with a quorum and waits until this
	// node has applied everything acknowledged before the call.
	ConsistentIndex(ctx context.Context) (uint64, error)
	KnownLeader() bool
	LastContact() time.Duration
	// LastIndex is the last index in this node's Raft log.
	LastIndex() uint64
	Status() client.ClusterStatus
	Members() []client.Member
	Join(addrs []string) (int, error)
	Leave(ctx context.Context) error
	ForceLeave(ctx context.Context, node string) error
}

// TTLReporter takes TTL check reports (the agent's health subsystem).
type TTLReporter interface {
	ReportTTL(ctx context.Context, id string, status fsm.Health, output string, metrics map[string]float64) (uint64, error)
}

// Authorizer checks a token against what a request needs (api.Server).
type Authorizer interface {
	Authorize(secret string, access api.Access, service string) error
	// RegisterRulesFor returns the rules a registration made with the
	// token secret follows (the native API's: api.Server.RegisterRulesFor).
	RegisterRulesFor(secret string) api.RegisterRules
}

// Config is the Consul endpoints' configuration.
type Config struct {
	// Datacenter is the one datacenter this cluster presents ("dc1" by
	// default); ?dc= naming another gets a 400.
	Datacenter string
	// NodeName is this agent's name: the Consul node of what it registers.
	NodeName string
	// NodeAddress is the address other agents and clients reach this agent
	// at (host only); registrations without an Address take it.
	NodeAddress string
	// DefaultWait and MaxWait bound blocking queries (Consul's defaults are
	// 5m and 10m); a jitter of up to wait/16 is added.
	DefaultWait time.Duration
	MaxWait     time.Duration
	// MaxBodyBytes caps request bodies.
	MaxBodyBytes int64
	// MaxBlockingQueries caps the Consul blocking queries this node holds
	// at once (apart from the native API's own cap); one more gets a 429.
	MaxBlockingQueries int
	// CheckDenyCIDRs are address ranges checks may not target (as
	// api.Config), when Auth is nil; with Auth, the API's rules apply
	// (Authorizer.RegisterRulesFor).
	CheckDenyCIDRs []netip.Prefix
	// TTL takes TTL reports; without it the check update routes answer 503.
	TTL TTLReporter
	// Auth checks tokens; nil lets every request through (auth off).
	Auth   Authorizer
	Logger hclog.Logger
	// Version is reported as Config.Version in /v1/agent/self.
	Version string
}

// DefaultConfig returns the defaults: datacenter dc1, Consul's waits.
func DefaultConfig() Config {
	return Config{
		Datacenter:   "dc1",
		DefaultWait:  5 * time.Minute,
		MaxWait:      10 * time.Minute,
		MaxBodyBytes: 64 << 10,
		Version:      "1.21.0",

		MaxBlockingQueries: api.DefaultMaxBlockingQueries,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Datacenter == "" || strings.ContainsAny(c.Datacenter, " /?&#"):
		return errors.New("consul: datacenter must be a non-empty name")
	case c.NodeName == "":
		return errors.New("consul: node name is required")
	case c.DefaultWait <= 0 || c.MaxWait < c.DefaultWait:
		return errors.New("consul: need 0 < default wait <= max wait")
	case c.MaxBodyBytes <= 0:
		return errors.New("consul: max body bytes must be positive")
	case c.MaxBlockingQueries <= 0:
		return errors.New("consul: max blocking queries must be positive")
	}
	return nil
}

// Server serves Consul's API for one node. Its handler is safe for
// concurrent use; it holds no state of its own beyond its config.
type Server struct {
	cfg     Config
	store   *fsm.Store
	cluster Cluster
	logger  hclog.Logger
	mux     *http.ServeMux
	// blocking counts the blocking queries waiting now.
	blocking atomic.Int64
}

// New returns the Consul endpoints over the node's store and cluster.
func New(cfg Config, store *fsm.Store, cl Cluster) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	s := &Server{cfg: cfg, store: store, cluster: cl, logger: cfg.Logger}
	s.mux = s.routes()
	return s, nil
}

// Prefixes are the path prefixes the Consul endpoints occupy; the agent
// mounts Handler on each (api.Server.Mount). None collides with Beacon's
// own routes.
var Prefixes = []string{"/v1/agent/", "/v1/catalog/", "/v1/health/", "/v1/status/", "/v1/kv/"}

// Handler returns the http.Handler of the Consul endpoints.
func (s *Server) Handler() http.Handler { return s.mux }

// route is one endpoint with the access it needs. service, if set, names
// the service a write concerns (for write tokens with prefixes); routes
// whose service is only known from the body authorize in the handler.
type route struct {
	pattern string
	access  api.Access
	h       handler
}

// handler is an endpoint's function: the request with its query parsed once.
type handler func(w http.ResponseWriter, r *http.Request, q url.Values)

// routes lists every endpoint in one place (docs/consul.md has the table).
func (s *Server) routes() *http.ServeMux {
	rs := []route{
		// Catalog.
		{"GET /v1/catalog/services", api.AccessRead, s.handleCatalogServices},
		{"GET /v1/catalog/service/{name}", api.AccessRead, s.handleCatalogService},
		{"GET /v1/catalog/nodes", api.AccessRead, s.handleCatalogNodes},
		{"GET /v1/catalog/node/{node}", api.AccessRead, s.handleCatalogNode},
		{"GET /v1/catalog/node-services/{node}", api.AccessRead, s.handleCatalogNodeServices},
		{"GET /v1/catalog/datacenters", api.AccessRead, s.handleDatacenters},
		{"PUT /v1/catalog/register", api.AccessRead, s.handleCatalogRegister},
		{"PUT /v1/catalog/deregister", api.AccessRead, s.handleCatalogDeregister},
		// Health.
		{"GET /v1/health/service/{name}", api.AccessRead, s.handleHealthService},
		{"GET /v1/health/checks/{name}", api.AccessRead, s.handleHealthChecks},
		{"GET /v1/health/state/{state}", api.AccessRead, s.handleHealthState},
		{"GET /v1/health/node/{node}", api.AccessRead, s.handleHealthNode},
		// Agent.
		{"GET /v1/agent/self", api.AccessRead, s.handleAgentSelf},
		{"GET /v1/agent/members", api.AccessRead, s.handleAgentMembers},
		{"GET /v1/agent/services", api.AccessRead, s.handleAgentServices},
		{"GET /v1/agent/service/{id}", api.AccessRead, s.handleAgentService},
		{"GET /v1/agent/checks", api.AccessRead, s.handleAgentChecks},
		// Writes whose service is known only from the body or the catalog
		// check the write token inside the handler (AccessRead here just
		// rejects a bad token early).
		{"PUT /v1/agent/service/register", api.AccessRead, s.handleAgentRegister},
		{"PUT /v1/agent/service/deregister/{id}", api.AccessRead, s.handleAgentDeregister},
		{"PUT /v1/agent/service/maintenance/{id}", api.AccessRead, s.handleAgentMaintenance},
		{"PUT /v1/agent/maintenance", api.AccessRead, s.handleNodeMaintenance},
		{"PUT /v1/agent/check/pass/{id}", api.AccessRead, s.handleCheckVerb(fsm.Passing)},
		{"PUT /v1/agent/check/warn/{id}", api.AccessRead, s.handleCheckVerb(fsm.Warning)},
		{"PUT /v1/agent/check/fail/{id}", api.AccessRead, s.handleCheckVerb(fsm.Critical)},
		{"PUT /v1/agent/check/update/{id}", api.AccessRead, s.handleCheckUpdate},
		{"PUT /v1/agent/join/{addr}", api.AccessManagement, s.handleJoin},
		{"PUT /v1/agent/leave", api.AccessManagement, s.handleLeave},
		{"PUT /v1/agent/force-leave/{node}", api.AccessManagement, s.handleForceLeave},
		// Status.
		{"GET /v1/status/leader", api.AccessRead, s.handleStatusLeader},
		{"GET /v1/status/peers", api.AccessRead, s.handleStatusPeers},
		// KV: Beacon has none. Reads answer as Consul does for an absent
		// key; writes are refused (kv.go).
		{"GET /v1/kv/{key...}", api.AccessRead, s.handleKVRead},
		{"PUT /v1/kv/{key...}", api.AccessRead, s.handleKVWrite},
		{"DELETE /v1/kv/{key...}", api.AccessRead, s.handleKVWrite},
	}
	mux := http.NewServeMux()
	patterns := make([]string, len(rs))
	for i, r := range rs {
		mux.HandleFunc(r.pattern, s.guard(r.access, r.h))
		patterns[i] = r.pattern
	}
	// Anything else under the Consul prefixes: a 405 for a served path
	// with another method, else a clear 404.
	for _, p := range Prefixes {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			if allow := allowed(patterns, r.URL.Path); len(allow) > 0 {
				w.Header().Set("Allow", strings.Join(allow, ", "))
				writeError(w, api.StatusError(http.StatusMethodNotAllowed, "method_not_allowed",
					"method "+r.Method+" not allowed on "+r.URL.Path+": use "+strings.Join(allow, " or ")))
				return
			}
			s.handleUnsupported(w, r, nil)
		})
	}
	return mux
}

// allowed are the methods of the patterns ("METHOD /path/{wildcard}")
// whose path matches path most closely (with the fewest wildcards, as the
// mux would pick: PUT for /v1/agent/service/register, not GET
// /v1/agent/service/{id}). The mux sends here only requests no pattern
// matched with their method, so any found are the methods to use instead.
func allowed(patterns []string, path string) []string {
	segs := strings.Split(path, "/")
	var out []string
	fewest := len(segs) + 1
	for _, p := range patterns {
		method, ppath, _ := strings.Cut(p, " ")
		psegs := strings.Split(ppath, "/")
		if len(psegs) != len(segs) {
			continue
		}
		match, wild := true, 0
		for i, ps := range psegs {
			if strings.HasPrefix(ps, "{") && segs[i] != "" {
				wild++
				continue
			}
			match = match && ps == segs[i]
		}
		switch {
		case !match || wild > fewest:
		case wild < fewest:
			out, fewest = []string{method}, wild
		case !slices.Contains(out, method):
			out = append(out, method)
		}
	}
	return out
}

// guard checks the token, the datacenter and the query before a handler.
func (s *Server) guard(access api.Access, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := api.Query(r)
		tok, err := requestToken(r, q)
		if err != nil {
			writeError(w, err)
			return
		}
		if s.cfg.Auth != nil {
			if err := s.cfg.Auth.Authorize(tok, access, ""); err != nil {
				writeError(w, consulAuthError(err))
				return
			}
		}
		if dc := q.Get("dc"); dc != "" && dc != s.cfg.Datacenter {
			writeError(w, api.StatusError(http.StatusBadRequest, "unknown_datacenter",
				"No path to datacenter: this cluster is datacenter "+quote(s.cfg.Datacenter)+", not "+quote(dc)))
			return
		}
		if err := tenancy(r, q); err != nil {
			writeError(w, err)
			return
		}
		h(w, r, q)
	}
}

// authorizeWrite checks that the request's token may write service.
func (s *Server) authorizeWrite(r *http.Request, service string) error {
	return s.authorize(r, api.AccessServiceWrite, service)
}

// authorize checks the request's token against access (service: see
// api.Authorizer).
func (s *Server) authorize(r *http.Request, access api.Access, service string) error {
	if s.cfg.Auth == nil {
		return nil
	}
	tok, err := requestToken(r, nil)
	if err != nil {
		return err
	}
	return consulAuthError(s.cfg.Auth.Authorize(tok, access, service))
}

// errTokenRequired is the 401 of a request without a token, naming the
// headers the Consul paths read (the API's names X-Beacon-Token, which
// they do not).
var errTokenRequired = api.StatusError(http.StatusUnauthorized, "unauthenticated",
	`a token is required: send it as "X-Consul-Token: TOKEN" or "Authorization: Bearer TOKEN"`)

// consulAuthError is err with the API's 401 replaced by errTokenRequired.
func consulAuthError(err error) error {
	if errors.Is(err, api.ErrTokenRequired) {
		return errTokenRequired
	}
	return err
}

// RequestToken is the token secret a request to the Consul paths carries
// (requestToken). The agent mounts the Consul handler with it
// (api.Server.MountWithToken) so that the request is identified, in the
// audit log too, by the token it was authorized with.
func RequestToken(r *http.Request) (string, error) { return requestToken(r, api.Query(r)) }

// requestToken is the token a request carries: X-Consul-Token or
// "Authorization: Bearer". Tokens in the URL (?token=) are refused, as on
// Beacon's own routes: they end up in logs.
func requestToken(r *http.Request, q url.Values) (string, error) {
	if q.Has("token") {
		return "", api.StatusError(http.StatusBadRequest, "token_in_url",
			"tokens are never accepted in the URL (they end up in logs); send the X-Consul-Token header")
	}
	x, err := api.HeaderToken(r.Header, "X-Consul-Token")
	if err != nil {
		return "", err
	}
	bearer, err := api.BearerToken(r.Header)
	if err != nil {
		return "", err
	}
	if x != "" && bearer != "" && x != bearer {
		return "", api.StatusError(http.StatusBadRequest, "invalid", "the Authorization and X-Consul-Token headers carry different tokens")
	}
	if x != "" {
		return x, nil
	}
	return bearer, nil
}

func (s *Server) handleUnsupported(w http.ResponseWriter, r *http.Request, q url.Values) {
	writeError(w, api.StatusError(http.StatusNotFound, "unsupported",
		"this Consul endpoint is not served by Beacon (see docs/consul.md): "+r.Method+" "+r.URL.Path))
}

func writeError(w http.ResponseWriter, err error) { api.WriteError(w, err) }

func invalid(field, format string, args ...any) error { return api.Invalid(field, format, args...) }

func notFound(msg string) error { return api.StatusError(http.StatusNotFound, "not_found", msg) }

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return `"` + s + `"`
}

// tenancy refuses a request for a namespace or an admin partition other
// than "default", by query (?ns=, ?partition=, as the Consul client sends
// its Namespace and Partition) or by header (X-Consul-Namespace,
// X-Consul-Partition). Beacon has one of each, so such a read would
// otherwise answer the default namespace's catalog as if it were the one
// asked for: Traefik's consulCatalog provider with `namespaces` set built
// one copy of every route per namespace listed. Consul CE refuses any
// namespace or partition with a 400 as well; Beacon accepts "default",
// as it does in registration bodies.
func tenancy(r *http.Request, q url.Values) error {
	for _, p := range [...]struct{ param, header, what string }{
		{"ns", "X-Consul-Namespace", "namespace"},
		{"partition", "X-Consul-Partition", "partition"},
	} {
		if err := onlyDefault(p.param, q[p.param], p.what); err != nil {
			return err
		}
		if err := onlyDefault(p.header, r.Header.Values(p.header), p.what); err != nil {
			return err
		}
	}
	return nil
}

func onlyDefault(field string, vals []string, what string) error {
	for _, v := range vals {
		if v != "" && v != "default" {
			return invalid(field, "Beacon has one %s, \"default\", not %s", what, quote(v))
		}
	}
	return nil
}
