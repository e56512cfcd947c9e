package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/beaconhq/beacon/fsm"
)

// AuthConfig turns token authentication on and says what anonymous clients
// may do. The zero value leaves the API open (every request allowed), as a
// dev cluster runs.
type AuthConfig struct {
	// ManagementTokenHash is the SHA-256 of the management token. Non-nil
	// turns auth on: every request is then checked against the policy of its
	// route (see routePolicies). The token itself is never kept.
	ManagementTokenHash []byte
	// AnonymousRead lets requests without a token read (GET routes). Off,
	// they get 401. Anonymous requests never write.
	AnonymousRead bool
}

// Enabled reports whether tokens are checked.
func (c AuthConfig) Enabled() bool { return c.ManagementTokenHash != nil }

// HashToken returns the SHA-256 of a token secret, the form in which tokens
// are stored and compared.
func HashToken(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Policies of tokens (fsm.Token.Policy), and the accessor names of the two
// identities that are not stored tokens.
const (
	PolicyManagement = "management"
	PolicyRead       = "read"
	PolicyWrite      = "write"

	AccessorManagement = "management"
	AccessorAnonymous  = "anonymous"
)

// identity is who a request comes from, once its token is checked.
type identity struct {
	// err is why the request's credentials were refused; routes that need
	// no token ignore it, every other route answers with it.
	err      error
	accessor string
	// policy is PolicyManagement, PolicyRead, PolicyWrite, or "" for an
	// anonymous request.
	policy   string
	prefixes []string
	// hash is a stored token's SHA-256 (hex), and tokens the catalog it
	// was found in, so that a request that outlives its authentication (a
	// blocking query) can ask whether the token still exists (revoked).
	// Empty for the management token and anonymous clients.
	hash   string
	tokens *fsm.Store
}

func (id identity) anonymous() bool { return id.policy == "" }

// revoked reports whether the identity's token has been deleted since the
// request was authenticated. The management token (a setting) and
// anonymous clients are never revoked; tokens cannot be edited, only
// deleted, so a token still found grants what it granted.
func (id identity) revoked() bool {
	return id.hash != "" && id.tokens != nil && id.tokens.TokenBySecretHash(id.hash) == nil
}

// canWrite reports whether the identity may write to service.
func (id identity) canWrite(service string) bool {
	switch id.policy {
	case PolicyManagement:
		return true
	case PolicyWrite:
		for _, p := range id.prefixes {
			if strings.HasPrefix(service, p) {
				return true
			}
		}
	}
	return false
}

type identityKey struct{}

// identityFrom returns the identity the middleware gave the request ctx
// belongs to (requestContext), or the anonymous one.
func identityFrom(ctx context.Context) identity {
	if id, ok := ctx.Value(identityKey{}).(*identity); ok {
		return *id
	}
	return identity{}
}

// Errors of authentication and authorization. 401 means "say who you are"
// (no token); 403 means "you are not allowed" (a wrong token, or a token
// whose policy does not cover the request).
var (
	errTokenRequired = &statusError{http.StatusUnauthorized, "unauthenticated", "a token is required: send it as \"Authorization: Bearer TOKEN\" or \"X-Beacon-Token: TOKEN\""}
	errBadAuthHeader = &statusError{http.StatusUnauthorized, "unauthenticated", "the Authorization header must be \"Bearer TOKEN\""}
	errInvalidToken  = &statusError{http.StatusForbidden, "invalid_token", "token not recognised"}
	errTokenInURL    = &statusError{http.StatusBadRequest, "token_in_url", "tokens are never accepted in the URL (they end up in logs and histories): send the Authorization or X-Beacon-Token header"}
	errTwoTokens     = &statusError{http.StatusBadRequest, "invalid", "the Authorization and X-Beacon-Token headers carry different tokens"}
)

func denied(msg string) error {
	return &statusError{http.StatusForbidden, "permission_denied", "permission denied: " + msg}
}

// BearerToken returns the token of h's "Authorization: Bearer TOKEN"
// headers, or "" when there is none. A header of another form is a 401; a
// request with two Authorization headers naming different tokens is a 400
// (which one would count is a matter of which reader one asks), as is one
// whose Authorization and X-Beacon-Token disagree.
func BearerToken(h http.Header) (string, error) {
	var bearer string
	for _, v := range h.Values("Authorization") {
		if v == "" {
			continue
		}
		scheme, tok, ok := strings.Cut(v, " ")
		tok = strings.TrimSpace(tok)
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return "", errBadAuthHeader
		}
		if bearer != "" && subtle.ConstantTimeCompare([]byte(bearer), []byte(tok)) != 1 {
			return "", errTwoHeaders("Authorization")
		}
		bearer = tok
	}
	return bearer, nil
}

// HeaderToken returns the token of h's name headers (X-Beacon-Token,
// X-Consul-Token), or ""; two of them naming different tokens are a 400.
func HeaderToken(h http.Header, name string) (string, error) {
	var tok string
	for _, v := range h.Values(name) {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		if tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(v)) != 1 {
			return "", errTwoHeaders(name)
		}
		tok = v
	}
	return tok, nil
}

func errTwoHeaders(name string) error {
	return &statusError{http.StatusBadRequest, "invalid", "the request carries two " + name + " headers with different tokens"}
}

// requestToken extracts the token a request carries, or "".
func requestToken(r *http.Request, q url.Values) (string, error) {
	for _, k := range []string{"token", "access_token"} {
		if q.Has(k) {
			return "", errTokenInURL
		}
	}
	bearer, err := BearerToken(r.Header)
	if err != nil {
		return "", err
	}
	x, err := HeaderToken(r.Header, "X-Beacon-Token")
	if err != nil {
		return "", err
	}
	if bearer != "" && x != "" && subtle.ConstantTimeCompare([]byte(bearer), []byte(x)) != 1 {
		return "", errTwoTokens
	}
	if bearer != "" {
		return bearer, nil
	}
	return x, nil
}

// authenticate finds who a request comes from. With auth off, everyone is
// the anonymous identity and every route allows it.
//
// Comparisons: the management token's hash is compared with
// subtle.ConstantTimeCompare. Stored tokens are found by the hash of the
// presented secret through the catalog's index: the time that lookup takes
// depends only on the SHA-256 of the guess, which tells an attacker nothing
// about any secret (finding a secret from its hash is a preimage attack).
// The secret itself is never compared, logged or kept.
func (s *Server) authenticate(r *http.Request, q url.Values) identity {
	id, err := s.identify(r, q)
	if err != nil {
		return identity{err: err, accessor: AccessorAnonymous}
	}
	return id
}

func (s *Server) identify(r *http.Request, q url.Values) (identity, error) {
	tok, err := requestToken(r, q)
	if err != nil {
		return identity{}, err
	}
	return s.identifyToken(tok)
}

// identifyToken finds the identity of a token secret ("" for none).
func (s *Server) identifyToken(tok string) (identity, error) {
	auth := s.cfg.Auth
	if !auth.Enabled() {
		return identity{accessor: AccessorAnonymous, policy: PolicyManagement}, nil
	}
	if tok == "" {
		return identity{accessor: AccessorAnonymous}, nil
	}
	return s.identifySecret(tok)
}

// identifySecret finds the identity of a presented token secret (auth on).
func (s *Server) identifySecret(tok string) (identity, error) {
	auth := s.cfg.Auth
	h := HashToken(tok)
	if subtle.ConstantTimeCompare(h, auth.ManagementTokenHash) == 1 {
		return identity{accessor: AccessorManagement, policy: PolicyManagement}, nil
	}
	hexHash := hex.EncodeToString(h)
	t := s.store.TokenBySecretHash(hexHash)
	if t == nil {
		// A token created through this node a moment ago may be
		// committed but not applied here yet (waitAcked).
		s.waitAcked(context.Background())
		t = s.store.TokenBySecretHash(hexHash)
	}
	if t == nil || subtle.ConstantTimeCompare([]byte(t.SecretHash), []byte(hexHash)) != 1 {
		return identity{}, errInvalidToken
	}
	switch t.Policy {
	case PolicyRead, PolicyWrite:
		return identity{accessor: t.Accessor, policy: t.Policy, prefixes: t.Prefixes, hash: hexHash, tokens: s.store}, nil
	}
	// A policy this version does not know grants nothing.
	return identity{}, errInvalidToken
}

// policy is what a route requires of the identity.
type policy int

const (
	// policyOpen: anyone, even with anonymous reads off (liveness and
	// readiness probes carry no token).
	policyOpen policy = iota
	// policyRead: any valid token, or anonymous when AnonymousRead.
	policyRead
	// policyServiceWrite: the management token, or a write token with a
	// prefix of the route's {service}.
	policyServiceWrite
	// policyCheckWrite: as policyServiceWrite, for the service of check {id}.
	policyCheckWrite
	// policyManagement: the management token only.
	policyManagement
)

func (p policy) String() string {
	return [...]string{"open", "read", "service-write", "check-write", "management"}[p]
}

// routePolicies lists what each route needs (docs/security.md has the same
// table). A route missing here gets defaultPolicy.
var routePolicies = map[string]policy{
	"GET /healthz": policyOpen,
	"GET /readyz":  policyOpen,

	"PUT /v1/services/{service}/instances/{id}":             policyServiceWrite,
	"DELETE /v1/services/{service}/instances/{id}":          policyServiceWrite,
	"PUT /v1/services/{service}/instances/{id}/maintenance": policyServiceWrite,
	"PUT /v1/checks/{id}/pass":                              policyCheckWrite,
	"PUT /v1/checks/{id}/warn":                              policyCheckWrite,
	"PUT /v1/checks/{id}/fail":                              policyCheckWrite,

	"GET /metrics": policyRead,
	// The web UI's files and the redirect to them hold no data: the page
	// must load to ask for a token. whoami tells it whether one is needed.
	"GET /{$}":          policyOpen,
	"GET /ui/":          policyOpen,
	"GET /v1/ui/whoami": policyOpen,
	// The catch-all only answers 404.
	"/": policyOpen,
}

// managementPrefixes are paths whose routes need the management token
// whatever their method: tokens, snapshots (they hold token hashes), operator
// commands, cluster changes and profiling.
var managementPrefixes = []string{"/v1/tokens", "/v1/snapshot", "/v1/operator", "/v1/cluster/join", "/v1/cluster/leave",
	"/v1/cluster/peers", "/v1/cluster/force-leave", "/debug/"}

// defaultPolicy is the policy of a route not listed in routePolicies: the
// management token for the management paths and for every method that
// changes something, read for GET and HEAD. A route added without thought
// is therefore closed rather than open.
func defaultPolicy(pattern string) policy {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = "", pattern
	}
	for _, p := range managementPrefixes {
		if strings.HasPrefix(path, p) {
			return policyManagement
		}
	}
	if method == http.MethodGet || method == http.MethodHead {
		return policyRead
	}
	return policyManagement
}

// policyFor returns the policy of a route pattern.
func policyFor(pattern string) policy {
	if p, ok := routePolicies[pattern]; ok {
		return p
	}
	return defaultPolicy(pattern)
}

// authorize checks the request's identity against the route's policy.
func (s *Server) authorize(r *http.Request, p policy) error {
	if p == policyOpen {
		return nil
	}
	id := identityFrom(r.Context())
	if id.err != nil {
		return id.err
	}
	if !s.cfg.Auth.Enabled() {
		return nil
	}
	switch p {
	case policyRead:
		if id.anonymous() && !s.cfg.Auth.AnonymousRead {
			return errTokenRequired
		}
		return nil
	case policyServiceWrite:
		if id.anonymous() {
			return errTokenRequired
		}
		if service := r.PathValue("service"); !id.canWrite(service) {
			return denied("this token cannot write service " + quote(service))
		}
		return nil
	case policyCheckWrite:
		if id.anonymous() {
			return errTokenRequired
		}
		if id.policy == PolicyManagement {
			return nil
		}
		c := s.store.Check(nil, r.PathValue("id"))
		if c == nil {
			if id.policy == PolicyWrite {
				return nil // the handler answers 404
			}
			return denied("this token cannot write")
		}
		if !id.canWrite(c.Service) {
			return denied("this token cannot write service " + quote(c.Service))
		}
		return nil
	case policyManagement:
		if id.anonymous() {
			return errTokenRequired
		}
		if id.policy != PolicyManagement {
			return denied("this route needs the management token")
		}
		return nil
	}
	return denied("unknown policy")
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return `"` + s + `"`
}

// remoteIP returns the client's IP as the TCP connection shows it.
// Forwarding headers are not trusted: anyone can set them.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Actor is who made a request, for the audit log: the token's accessor
// (never its secret) and the client's address. Writes reach the Writer with
// the Actor in their context (ActorFrom); cmd passes it on to the cluster,
// which logs the write on the leader.
type Actor struct {
	Accessor string
	Remote   string
}

type actorKey struct{}

// ActorFrom returns the Actor of the request ctx belongs to, if any.
func ActorFrom(ctx context.Context) (Actor, bool) {
	if a, ok := ctx.Value(actorKey{}).(*Actor); ok {
		return *a, true
	}
	return Actor{}, false
}

// isWrite reports whether a request may change state (anything but GET,
// HEAD and OPTIONS).
func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}
