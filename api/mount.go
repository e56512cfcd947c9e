package api

import (
	"net/http"
	"net/netip"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// This file is what the API offers to packages that serve another protocol
// on its listener (api/consul): mounting their handler behind the API's
// middleware, the API's token checks, its validation of registrations and
// its error bodies. They use it so that one registration, one token and one
// error look the same whichever protocol carried them.

// Mount serves h for the ServeMux pattern (e.g. "/v1/catalog/") on this
// API's listener, behind the API's middleware (metrics, the write rate
// limit) but without a route policy: h authorizes its own requests (with
// Authorize). Mount must be called before Serve; patterns must not collide
// with the API's own routes (ServeMux panics if they do).
func (s *Server) Mount(pattern string, h http.Handler) {
	s.table.handleOpen(pattern, h, nil)
}

// TokenFunc returns the token secret a request carries ("" for none) where
// a mounted protocol's clients send it.
type TokenFunc func(r *http.Request) (string, error)

// MountWithToken is Mount for a protocol whose clients send their token
// their own way (Consul's X-Consul-Token): the request's identity (the
// audit log's accessor, the denial log's) is that of the token token
// returns, the one h authorizes with, rather than of Beacon's headers.
func (s *Server) MountWithToken(pattern string, h http.Handler, token TokenFunc) {
	s.table.handleOpen(pattern, h, token)
}

// handleOpen registers h for pattern with the open policy; a token, if
// given, identifies the request in place of Beacon's headers.
func (rt *router) handleOpen(pattern string, h http.Handler, token TokenFunc) {
	rt.patterns = append(rt.patterns, pattern)
	rt.mounted = append(rt.mounted, pattern)
	rt.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st := stateFrom(r.Context()); st != nil {
			st.route = pattern
		}
		// Mounted protocols read the catalog: refused on a diverged server,
		// and read-your-writes as on the API's own routes (waitAcked).
		if rt.s.diverged() {
			writeError(w, errDiverged)
			return
		}
		if !rt.s.waitAcked(r.Context()) {
			writeError(w, errNotCaughtUp)
			return
		}
		if token != nil {
			rt.s.reidentify(r, token)
		}
		h.ServeHTTP(w, r)
	}))
}

// reidentify replaces the identity and the actor's accessor the middleware
// found for r (from Beacon's headers) with those of the token token returns.
func (s *Server) reidentify(r *http.Request, token TokenFunc) {
	id := identity{accessor: AccessorAnonymous}
	tok, err := token(r)
	if err == nil {
		id, err = s.identifyToken(tok)
	}
	if err != nil {
		id = identity{err: err, accessor: AccessorAnonymous}
	}
	if p, ok := r.Context().Value(identityKey{}).(*identity); ok {
		*p = id
	}
	if a, ok := r.Context().Value(actorKey{}).(*Actor); ok {
		a.Accessor = id.accessor
	}
}

// Access is what a request mounted with Mount needs of its token.
type Access int

// Accesses, from least to most.
const (
	// AccessRead: any valid token, or none when anonymous reads are on.
	AccessRead Access = iota
	// AccessServiceWrite: the management token or a write token with a
	// prefix of the service named.
	AccessServiceWrite
	// AccessManagement: the management token.
	AccessManagement
)

// ErrTokenRequired is Authorize's error for a request without a token
// where one is needed. Its message names Beacon's own headers; a mounted
// protocol may answer with one naming its own.
var ErrTokenRequired error = errTokenRequired

// Authorize checks a presented token secret ("" for none) against access;
// service names the service written for AccessServiceWrite. It returns nil
// when the request may go on, else an error WriteError renders as 401 or
// 403. With auth off every request is allowed.
func (s *Server) Authorize(secret string, access Access, service string) error {
	auth := s.cfg.Auth
	if !auth.Enabled() {
		return nil
	}
	var id identity
	var err error
	if secret == "" {
		id = identity{accessor: AccessorAnonymous}
	} else if id, err = s.identifySecret(secret); err != nil {
		return err
	}
	switch access {
	case AccessRead:
		if id.anonymous() && !auth.AnonymousRead {
			return errTokenRequired
		}
		return nil
	case AccessServiceWrite:
		if id.anonymous() {
			return errTokenRequired
		}
		if !id.canWrite(service) {
			return denied("this token cannot write service " + quote(service))
		}
		return nil
	default:
		if id.anonymous() {
			return errTokenRequired
		}
		if id.policy != PolicyManagement {
			return denied("this route needs the management token")
		}
		return nil
	}
}

// WriteError writes err as the API writes every error: a JSON body
// {"error", "code", "field"} with the status the error maps to.
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

// StatusError returns an error WriteError renders with status and code.
func StatusError(status int, code, msg string) error { return &statusError{status, code, msg} }

// Invalid returns a ValidationError (a 400) naming field.
func Invalid(field, format string, args ...any) error { return invalid(field, format, args...) }

// BuildRegister validates a registration exactly as PUT
// /v1/services/{service}/instances/{id} does for a client without the
// management token, and turns it into the fsm command: a route_prefix must
// stay inside /SERVICE, and a check's target must be the instance's address
// or lie in allow (the agent's --check-allow-cidr). Errors are
// *ValidationError naming the field (in the native API's field names), or
// 403s.
func BuildRegister(service, id string, r *client.Registration, now time.Time, deny []netip.Prefix, allow ...netip.Prefix) (*fsm.RegisterRequest, error) {
	return buildRegister(service, id, r, now, registerPolicy{deny: deny, allow: allow})
}

// RegisterRules are what a registration may do beyond the rules every
// registration follows, as the API decides them for the token that makes
// it (Server.RegisterRulesFor).
type RegisterRules struct{ pol registerPolicy }

// RegisterRulesFor returns the rules PUT /v1/services/{service}/instances/{id}
// applies to a registration made with the token secret ("" for none): with
// auth on, the management token may route other paths and aim checks at
// any host the deny list allows, at this host included; any other token
// keeps its checks on the instance's address, off the servers' own host
// (Config.CheckLocalCIDRs) and to GET, HEAD and OPTIONS. With auth off,
// every registration gets Config.TrustOpenRegistrations' rules. A token
// that is not valid gets an anonymous client's rules (its write is refused
// before they matter).
func (s *Server) RegisterRulesFor(secret string) RegisterRules {
	var id identity
	if s.cfg.Auth.Enabled() && secret != "" {
		if x, err := s.identifySecret(secret); err == nil {
			id = x
		}
	}
	return RegisterRules{s.registerPolicyOf(id)}
}

// BuildRegisterWith is BuildRegister under rules (RegisterRulesFor).
func BuildRegisterWith(service, id string, r *client.Registration, now time.Time, rules RegisterRules) (*fsm.RegisterRequest, error) {
	return buildRegister(service, id, r, now, rules.pol)
}

// ValidateService and ValidateID apply the native API's rules to a service
// name and an instance ID; field names the input in errors.
func ValidateService(field, v string) error { return validateService(field, v) }

// ValidateID: see ValidateService.
func ValidateID(field, v string) error { return validateID(field, v) }

// ValidateMeta applies the limits of an instance's meta (docs/api.md,
// Limits) to m; errors name field, or field.KEY for a value.
func ValidateMeta(field string, m map[string]string) error { return validateMeta(field, m) }

// ValidateHost applies the rule of an instance's address to v: an IP
// address or a host name, not an unspecified, multicast or broadcast
// address.
func ValidateHost(field, v string) error {
	if err := validateHost(field, v); err != nil {
		return err
	}
	return validateInstanceAddr(field, v)
}

// Printable reports whether s has no control or format characters.
func Printable(s string) bool { return printable(s) }
