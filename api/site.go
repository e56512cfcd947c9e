package api

import (
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/beaconhq/beacon/api/client"
)

// SiteConfig protects an agent from being driven by web pages: a browser
// sends a cross-site "simple request" (a form post, a text/plain body)
// without asking first, and a page on an attacker's domain that resolves to
// 127.0.0.1 (DNS rebinding) talks to a local agent as a same-origin page.
// Three rules close both doors (docs/security.md, "Web pages"):
//
//   - a request whose Sec-Fetch-Site is cross-site or same-site, or whose
//     Origin is neither the agent's own origin nor in AllowedOrigins, is
//     refused with 403 cross_site (browsers send these headers; the CLI, the
//     Go client and curl do not);
//   - a request with a body must declare a media type the route accepts
//     (application/json unless BodyTypes says otherwise), else 415;
//   - with auth off, the Host header must name a loopback address,
//     "localhost", or one of AllowedHosts (the agent's own names and
//     addresses, filled in by the agent), else 403 host_not_allowed.
type SiteConfig struct {
	// AllowedHosts are the host names and addresses (without port) a
	// request's Host may carry when auth is off, besides loopback and
	// localhost. "*" accepts any Host (a trusted lab).
	AllowedHosts []string
	// AllowedOrigins are further origins (scheme://host[:port]) whose
	// browser requests are accepted, for a dashboard served elsewhere.
	AllowedOrigins []string
	// BodyTypes maps a path prefix to the media types its request bodies
	// may have; the longest matching prefix wins. A path no prefix matches
	// takes application/json only. An empty list accepts any type (or
	// none): the package that serves such paths decides, and the Origin,
	// Sec-Fetch-Site and Host rules still protect them.
	BodyTypes map[string][]string
}

// DefaultBodyTypes are the routes whose bodies are not JSON: a snapshot
// restore uploads the archive as is.
func DefaultBodyTypes() map[string][]string {
	return map[string][]string{
		"/v1/snapshot": {client.SnapshotContentType, "application/octet-stream", "application/gzip"},
	}
}

// Site errors.
var (
	errCrossSite      = &statusError{http.StatusForbidden, "cross_site", "cross-site requests are refused: a web page may not drive this agent (see docs/security.md)"}
	errHostNotAllowed = &statusError{http.StatusForbidden, "host_not_allowed", "the Host header names neither this agent nor loopback (DNS rebinding protection; --http-allowed-host adds names)"}
)

// siteGuard applies a SiteConfig.
type siteGuard struct {
	hosts     map[string]bool
	anyHost   bool
	origins   map[string]bool
	bodyTypes map[string][]string
	checkHost bool

	// seen remembers hostAllowed's answer for Host values as sent (at most
	// maxSeenHosts of them): normalizing a Host allocated on every request.
	seen  sync.Map // string -> bool
	nseen atomic.Int32
}

// maxSeenHosts bounds siteGuard.seen: a client sending ever new Host
// values only misses the cache.
const maxSeenHosts = 256

func newSiteGuard(cfg SiteConfig, authOn bool) *siteGuard {
	g := &siteGuard{hosts: map[string]bool{}, origins: map[string]bool{}, bodyTypes: cfg.BodyTypes, checkHost: !authOn}
	if g.bodyTypes == nil {
		g.bodyTypes = DefaultBodyTypes()
	}
	for _, h := range cfg.AllowedHosts {
		if h == "*" {
			g.anyHost = true
		}
		g.hosts[normalizeHost(h)] = true
	}
	for _, o := range cfg.AllowedOrigins {
		g.origins[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	return g
}

// SiteMiddleware returns next behind the rules of cfg, for handlers served
// beside the API (the API's own routes have them already). authOn says
// whether tokens are checked (the Host rule applies only without).
func SiteMiddleware(cfg SiteConfig, authOn bool, next http.Handler) http.Handler {
	g := newSiteGuard(cfg, authOn)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.check(r); err != nil {
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// check returns why r is refused, or nil: checkOrigin, then checkBody.
func (g *siteGuard) check(r *http.Request) error {
	if err := g.checkOrigin(r); err != nil {
		return err
	}
	return g.checkBody(r)
}

// checkOrigin applies the Host, Sec-Fetch-Site and Origin rules. The API
// runs it before authentication; the media type rule runs once the route
// has authorized the request, so a request a route refuses anyway gets
// that refusal.
func (g *siteGuard) checkOrigin(r *http.Request) error {
	if g.checkHost && !g.anyHost && !g.hostAllowed(r.Host) {
		return errHostNotAllowed
	}
	switch strings.ToLower(r.Header.Get("Sec-Fetch-Site")) {
	case "", "same-origin", "none":
	default:
		return errCrossSite
	}
	if o := r.Header.Get("Origin"); o != "" && !g.sameOrigin(r, o) && !g.origins[strings.ToLower(o)] {
		return errCrossSite
	}
	return nil
}

func (g *siteGuard) hostAllowed(host string) bool {
	if host == "" {
		return true // HTTP/1.0 without Host: not a browser
	}
	if ok, found := g.seen.Load(host); found {
		return ok.(bool)
	}
	ok := g.hostAllowedNow(host)
	if g.nseen.Load() < maxSeenHosts {
		if _, loaded := g.seen.LoadOrStore(host, ok); !loaded {
			g.nseen.Add(1)
		}
	}
	return ok
}

// hostAllowedNow is hostAllowed without the cache.
func (g *siteGuard) hostAllowedNow(host string) bool {
	h := normalizeHost(host)
	if h == "localhost" || strings.HasSuffix(h, ".localhost") || g.hosts[h] {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// normalizeHost lowercases a host, drops its port, brackets and trailing
// dot, and writes an IP address in its canonical form.
func normalizeHost(h string) string {
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().WithZone("").String()
	}
	return h
}

// sameOrigin reports whether origin is the agent's own, as the request
// reached it.
func (g *siteGuard) sameOrigin(r *http.Request, origin string) bool {
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	return strings.EqualFold(origin, scheme+r.Host)
}

// checkBody refuses a body whose media type the route does not accept
// (415), and one that declares no type. Requests without a body pass (a
// browser's bodiless POST carries Origin and Sec-Fetch-Site).
func (g *siteGuard) checkBody(r *http.Request) error {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	ct := r.Header.Get("Content-Type")
	allowed := []string{"application/json"}
	best := -1
	for p, types := range g.bodyTypes {
		if (r.URL.Path == p || strings.HasPrefix(r.URL.Path, strings.TrimSuffix(p, "/")+"/")) && len(p) > best {
			best, allowed = len(p), types
		}
	}
	if len(allowed) == 0 {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(allowed, mt) {
		return &statusError{http.StatusUnsupportedMediaType, "unsupported_media_type",
			"the request body must be sent with Content-Type: " + strings.Join(allowed, " or ")}
	}
	return nil
}
