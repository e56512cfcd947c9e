package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// Limits on input. They are part of the public contract (docs/api.md).
const (
	MaxIDLen          = fsm.MaxNameLen
	MaxServiceLen     = 63
	MaxAddressLen     = 255
	MaxTags           = 64
	MaxTagLen         = 128
	MaxMetaKeys       = 64
	MaxMetaKeyLen     = 128
	MaxMetaValueLen   = 512
	MaxVersionLen     = 64
	MaxWeight         = 10000
	MaxChecks         = 16
	MaxCheckNameLen   = 64
	MaxCheckHeaders   = 32
	MaxHeaderValueLen = 1024
	MaxThreshold      = 100
	MaxJSONDepth      = 16

	MinCheckInterval     = 100 * time.Millisecond
	MaxCheckInterval     = 24 * time.Hour
	DefaultCheckInterval = 10 * time.Second
	DefaultCheckTimeout  = 5 * time.Second
	MinDeregisterAfter   = time.Second
)

var labelPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// The character classes of IDs, metadata keys and versions: a letter or
// digit, then letters, digits and the class's punctuation. Checked by hand,
// not by regular expression: a registration checks three of them, and the
// expressions took ~1 µs of a registration's CPU (FuzzCharClasses holds each
// to its expression). IDs share theirs with node names (fsm.NameChars).
func validIDChars(v string) bool      { return fsm.NameChars(v) }
func validMetaKeyChars(v string) bool { return alnumThen(v, "._/-") }
func validVersionChars(v string) bool { return alnumThen(v, ".+_-") }

// alnumThen reports whether v is a letter or digit followed by letters,
// digits and bytes of punct (ASCII only).
func alnumThen(v, punct string) bool {
	if v == "" || !alnum(v[0]) {
		return false
	}
	for i := 1; i < len(v); i++ {
		if c := v[i]; !alnum(c) && strings.IndexByte(punct, c) < 0 {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }

// MaxPeerRefLen is the longest Raft server ID or cluster address that
// remove-peer takes, in bytes. Server IDs are node names, held to MaxIDLen
// now; a server named before that rule may have a longer one.
const MaxPeerRefLen = 1024

// validatePeerRef checks the ID or cluster address of a Raft server to
// remove. It is not held to the rule of node names (fsm.ValidateName): a
// server named before the rule existed must still be removable. It must be
// 1-MaxPeerRefLen bytes of printable UTF-8: no control characters, nor the
// invisible ones fsm.EscapeControl escapes. A server whose ID holds them is
// removed by its address.
func validatePeerRef(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "is required")
	case len(v) > MaxPeerRefLen:
		return invalid(field, "longer than %d bytes", MaxPeerRefLen)
	case fsm.EscapeControl(v) != v:
		if field == "id" {
			return invalid(field, "holds control or invisible characters; remove such a server by its address (DELETE /v1/cluster/peers?address=HOST:PORT, beacon operator raft remove-peer --address)")
		}
		return invalid(field, "holds control or invisible characters")
	}
	return nil
}

// validateID applies the rule of instance IDs and node names, which the
// agent and the cluster apply too (fsm.ValidateName).
func validateID(field, v string) error {
	if err := fsm.ValidateName(v); err != nil {
		return invalid(field, "%s", err)
	}
	return nil
}

func validateService(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "is required")
	case utf8.RuneCountInString(v) > MaxServiceLen:
		return invalid(field, "longer than %d characters", MaxServiceLen)
	case !serviceName(v):
		return invalid(field, "must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit")
	}
	return nil
}

// serviceName reports whether v matches ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$
// (its length is checked apart). Every discovery read checks its service
// name: this costs a tenth of the regular expression's time.
func serviceName(v string) bool {
	if v == "" || v[0] == '-' || v[len(v)-1] == '-' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// printableMax reports whether s is printable and at most n characters.
// Limits count characters (code points), as docs/api.md states them, not
// bytes: "é" is one character of two bytes. The 64 KiB body limit is what
// bounds the bytes a request can hold.
func printableMax(s string, n int) bool {
	return utf8.RuneCountInString(s) <= n && printable(s)
}

// printable reports whether s is valid UTF-8 without control characters,
// format characters (bidirectional overrides, zero-width characters, the
// byte order mark) or line and paragraph separators: what an operator reads
// in a listing is then what is stored.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < utf8.RuneSelf {
			if r < 0x20 || r == 0x7f {
				return false
			}
			continue
		}
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return false
		}
	}
	return true
}

// validateHost accepts an IP address or a host name: dot-separated labels
// of 1-63 letters, digits and '-' that neither start nor end with '-', the
// last of which is not all digits (so 10.0.0.999 is refused as the typo it
// is, and 2852039166 cannot pass for an address).
func validateHost(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "is required")
	case utf8.RuneCountInString(v) > MaxAddressLen:
		return invalid(field, "longer than %d characters", MaxAddressLen)
	case net.ParseIP(v) != nil:
		return nil
	}
	labels := strings.Split(v, ".")
	for _, l := range labels {
		if !labelPattern.MatchString(l) {
			return invalid(field, "must be an IP address or a host name")
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return invalid(field, "must be an IP address or a host name")
	}
	return nil
}

// validateCheckHost refuses check targets that are literal addresses no
// check can probe: multicast and unspecified. Ranges an operator denies
// (by default the link-local ones, where cloud metadata services answer)
// are refused by checkDenied, and names by the health checker at connect
// time, on the address they resolve to.
func validateCheckHost(field, host string) error {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	ip = ip.Unmap()
	if ip.IsMulticast() || ip.IsUnspecified() {
		return invalid(field, "must not be a multicast or unspecified address")
	}
	return nil
}

func validateHostPort(field, v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return invalid(field, "must be host:port")
	}
	if err := validateHost(field, host); err != nil {
		return err
	}
	if p, err := parsePort(port); err != nil || p == 0 {
		return invalid(field, "port must be 1-65535")
	}
	return nil
}

func validateCheckHostPort(field, v string) error {
	if err := validateHostPort(field, v); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(v)
	return validateCheckHost(field, host)
}

func parsePort(s string) (int, error) {
	var p int
	if _, err := fmt.Sscanf(s, "%d", &p); err != nil || p < 0 || p > 65535 || fmt.Sprint(p) != s {
		return 0, errors.New("bad port")
	}
	return p, nil
}

// registerPolicy is what a registration may do beyond the rules every
// registration follows.
type registerPolicy struct {
	// privileged: the management token (or any client with auth off and
	// Config.TrustOpenRegistrations): route prefixes outside /SERVICE and
	// checks aimed at any host.
	privileged bool
	// deny are the ranges no check may target; allow the ranges any check
	// may target besides the instance's own address.
	deny, allow []netip.Prefix
	// local (auth on, not privileged): the addresses of the servers' own
	// host (Config.CheckLocalCIDRs); no active check may be aimed there,
	// neither by its target nor by its instance's address.
	local []netip.Prefix
	// safeMethodsOnly (auth on, not privileged): HTTP checks may only
	// use GET, HEAD or OPTIONS.
	safeMethodsOnly bool
	// registered reports whether a service of that name is in the catalog.
	registered func(service string) bool
}

// buildRegister validates a registration and turns it into a command.
func buildRegister(service, id string, r *client.Registration, now time.Time, pol registerPolicy) (*fsm.RegisterRequest, error) {
	if err := validateService("service", service); err != nil {
		return nil, err
	}
	if err := validateID("id", id); err != nil {
		return nil, err
	}
	if err := validateHost("address", r.Address); err != nil {
		return nil, err
	}
	if err := validateInstanceAddr("address", r.Address); err != nil {
		return nil, err
	}
	if r.Port < 1 || r.Port > 65535 {
		return nil, invalid("port", "must be 1-65535")
	}
	if len(r.Tags) > MaxTags {
		return nil, invalid("tags", "more than %d tags", MaxTags)
	}
	for i, t := range r.Tags {
		if t == "" || !printableMax(t, MaxTagLen) {
			return nil, invalid(fmt.Sprintf("tags[%d]", i), "must be 1-%d printable characters", MaxTagLen)
		}
	}
	if err := validateMeta("meta", r.Meta); err != nil {
		return nil, err
	}
	if p, ok := r.Meta[metaRoutePrefix]; ok {
		if err := validateRoutePrefix(service, p, pol.privileged, pol.registered); err != nil {
			return nil, err
		}
	}
	if r.Version != "" && (len(r.Version) > MaxVersionLen || !validVersionChars(r.Version)) {
		return nil, invalid("version", "must be at most %d characters of letters, digits, '.', '+', '_' or '-'", MaxVersionLen)
	}
	weight := r.Weight
	if weight == 0 {
		weight = 1
	}
	if weight < 1 || weight > MaxWeight {
		return nil, invalid("weight", "must be 1-%d", MaxWeight)
	}
	if r.Node != "" {
		if err := validateID("node", r.Node); err != nil {
			return nil, err
		}
	}
	if len(r.Checks) > MaxChecks {
		return nil, invalid("checks", "more than %d checks", MaxChecks)
	}
	req := &fsm.RegisterRequest{
		ID: id, Service: service, Address: r.Address, Port: r.Port,
		Tags: r.Tags, Meta: r.Meta, Version: r.Version, Weight: weight, Node: r.Node,
		Trusted: pol.privileged, Time: now.UnixNano(),
	}
	names := map[string]bool{}
	for i := range r.Checks {
		def, err := buildCheck(fmt.Sprintf("checks[%d]", i), &r.Checks[i], i, pol.deny)
		if err != nil {
			return nil, err
		}
		if err := checkHostRule(fmt.Sprintf("checks[%d]", i), &def, r.Address, pol); err != nil {
			return nil, err
		}
		if err := checkTargetScope(fmt.Sprintf("checks[%d]", i), &def, r.Address, pol); err != nil {
			return nil, err
		}
		def.AnyTarget = pol.privileged
		if names[def.Name] {
			return nil, invalid(fmt.Sprintf("checks[%d].name", i), "duplicate check name %q", def.Name)
		}
		names[def.Name] = true
		req.Checks = append(req.Checks, def)
	}
	return req, nil
}

// validateMeta applies the limits of an instance's meta to m: at most
// MaxMetaKeys keys of metadata-key characters, values of printable
// characters. Errors name field, or field.KEY for a value.
func validateMeta(field string, m map[string]string) error {
	if len(m) > MaxMetaKeys {
		return invalid(field, "more than %d keys", MaxMetaKeys)
	}
	for k, v := range m {
		if len(k) > MaxMetaKeyLen || !validMetaKeyChars(k) {
			return invalid(field, "key %q: 1-%d letters, digits, '.', '_', '/' or '-'", truncateForError(k), MaxMetaKeyLen)
		}
		if !printableMax(v, MaxMetaValueLen) {
			return invalid(field+"."+k, "value must be at most %d printable characters", MaxMetaValueLen)
		}
	}
	return nil
}

// metaRoutePrefix is the meta key load balancers read a route prefix from
// (lb.MetaRoutePrefix).
const metaRoutePrefix = "route_prefix"

// validateInstanceAddr refuses instance addresses no proxy may dial: the
// unspecified addresses (0.0.0.0 and :: mean "this host" to a dialer),
// multicast and the IPv4 broadcast address.
func validateInstanceAddr(field, host string) error {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return invalid(field, "must not be an unspecified, multicast or broadcast address")
	}
	return nil
}

// validateRoutePrefix checks a declared route prefix (meta route_prefix):
// it must lie inside the service's own path, /SERVICE or below, unless the
// registration is privileged; even then it may not be "/" (every request)
// nor take another service's path, which the load balancers also refuse.
func validateRoutePrefix(service, p string, privileged bool, registered func(string) bool) error {
	n := "/" + strings.Trim(p, "/")
	if n == "/" {
		return invalid("meta."+metaRoutePrefix, "must name a path below /, e.g. /%s/v2", service)
	}
	if !canonicalPath(n) {
		// As the API's own paths (routes): /web/../api is not below /web.
		return invalid("meta."+metaRoutePrefix, "must not hold \".\", \"..\" or empty segments, nor escapes that decode to them or to \"/\"")
	}
	first, _, _ := strings.Cut(n[1:], "/")
	if first == service {
		return nil
	}
	if !privileged {
		return &statusError{http.StatusForbidden, "permission_denied",
			fmt.Sprintf("permission denied: meta.%s %q lies outside /%s; only the management token may route other paths to a service", metaRoutePrefix, truncateForError(p), service)}
	}
	if registered != nil && registered(first) {
		// It would capture /first, the path of a registered service:
		// refused even for the management token. (A service registered
		// later takes its path back: the balancers check again.)
		return invalid("meta."+metaRoutePrefix, "%q would shadow the path of service %q", truncateForError(p), first)
	}
	return nil
}

// canonicalPath reports whether the absolute path p has no ".", ".." or
// empty segment, as written or once its escapes are decoded (%2e%2e), no
// escaped "/" (%2F, which would make one segment two after decoding), and
// no malformed escape.
func canonicalPath(p string) bool {
	for _, seg := range strings.Split(p[1:], "/") {
		d, err := url.PathUnescape(seg)
		if err != nil || d == "" || d == "." || d == ".." || strings.Contains(d, "/") {
			return false
		}
	}
	return true
}

// checkTargetScope keeps an unprivileged check on its own instance: an IP
// literal target must be the instance's address (when that is an IP
// literal too) or lie in an allowed range. A host name, on either side, is
// resolved and compared by the prober when the check runs (health.Prober),
// which refuses a target that does not resolve to the instance.
func checkTargetScope(field string, def *fsm.CheckDefinition, instAddr string, pol registerPolicy) error {
	if pol.privileged || def.Type == fsm.CheckTTL {
		return nil
	}
	host, err := checkTargetHost(field, def)
	if err != nil {
		return err
	}
	target, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	target = target.Unmap().WithZone("")
	for _, p := range pol.allow {
		if p.Contains(target) {
			return nil
		}
	}
	inst, err := netip.ParseAddr(instAddr)
	if err != nil || inst.Unmap().WithZone("") == target {
		return nil
	}
	return &statusError{http.StatusForbidden, "permission_denied",
		fmt.Sprintf("permission denied: %s targets %s, not the instance's address %s; only the management token (or --check-allow-cidr) lets a check probe another host", field, target, instAddr)}
}

// checkTargetHost returns the host an active check's target names.
func checkTargetHost(field string, def *fsm.CheckDefinition) (string, error) {
	if def.Type == fsm.CheckHTTP {
		u, err := url.Parse(def.Target)
		if err != nil {
			return "", invalid(field+".http", "must be a URL")
		}
		return u.Hostname(), nil
	}
	if h, _, err := net.SplitHostPort(def.Target); err == nil {
		return h, nil
	}
	return def.Target, nil
}

// checkHostRule keeps the active checks of a registration without the
// management token (with auth on) off the host of the server that runs
// them: neither the check's target nor its instance's address (which the
// check is bound to) may be one of pol.local (loopback, unspecified, the
// agent's own addresses) unless it lies in an allowed range, nor the name
// localhost; and an HTTP check may only read (GET, HEAD, OPTIONS). The
// prober applies the same rules when the check runs, on the resolved
// address, so a host name cannot lead around them (health.Config.LocalCIDRs).
func checkHostRule(field string, def *fsm.CheckDefinition, instAddr string, pol registerPolicy) error {
	if pol.privileged || def.Type == fsm.CheckTTL {
		return nil
	}
	if pol.safeMethodsOnly && def.Type == fsm.CheckHTTP && !safeMethod(def.Method) {
		return &statusError{http.StatusForbidden, "permission_denied",
			fmt.Sprintf("permission denied: %s.method %s: with auth on, only the management token may register a check that sends another method than GET, HEAD or OPTIONS", field, def.Method)}
	}
	if len(pol.local) == 0 {
		return nil
	}
	target, err := checkTargetHost(field, def)
	if err != nil {
		return err
	}
	for _, h := range [...]struct{ what, host string }{{"its instance's address", instAddr}, {"its target", target}} {
		if why, ok := localHost(h.host, pol.local, pol.allow); ok {
			return &statusError{http.StatusForbidden, "permission_denied",
				fmt.Sprintf("permission denied: %s would probe %s (%s), the host of the Beacon server that runs it (%s); with auth on, only the management token may aim a check there (or run the agents with --check-allow-loopback)", field, truncateForError(h.host), h.what, why)}
		}
	}
	return nil
}

// localHost reports whether host, an IP literal or a name, is one of the
// local ranges (and not in allow), or the name localhost (RFC 6761), and
// why.
func localHost(host string, local, allow []netip.Prefix) (string, bool) {
	if n := strings.TrimSuffix(strings.ToLower(host), "."); n == "localhost" || strings.HasSuffix(n, ".localhost") {
		return "localhost is loopback", true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", false
	}
	a = a.Unmap().WithZone("")
	for _, p := range allow {
		if p.Contains(a) {
			return "", false
		}
	}
	for _, p := range local {
		if p.Contains(a) {
			if a.IsLoopback() {
				return "loopback", true
			}
			return "an address of this host, " + p.String(), true
		}
	}
	return "", false
}

// safeMethod reports whether an HTTP check's method only reads.
func safeMethod(m string) bool {
	return m == "" || m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func truncateForError(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// buildCheck validates one check definition and fills in defaults.
func buildCheck(field string, c *client.CheckDefinition, i int, deny []netip.Prefix) (fsm.CheckDefinition, error) {
	var def fsm.CheckDefinition
	set := 0
	for _, v := range []bool{c.HTTP != "", c.TCP != "", c.GRPC != "", c.TTL != 0} {
		if v {
			set++
		}
	}
	if set != 1 {
		return def, invalid(field, "exactly one of http, tcp, grpc or ttl must be set")
	}
	switch {
	case c.HTTP != "":
		def.Type, def.Target = fsm.CheckHTTP, c.HTTP
		u, err := url.Parse(c.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return def, invalid(field+".http", "must be an http:// or https:// URL with a host")
		}
		if err := validateHost(field+".http", u.Hostname()); err != nil {
			return def, invalid(field+".http", "must be an http:// or https:// URL with an IP address or host name")
		}
		// The port is required (as for tcp and grpc targets), so a check
		// never probes a port the registrant did not name.
		if p, err := parsePort(u.Port()); err != nil || p == 0 {
			return def, invalid(field+".http", "must name a port 1-65535, e.g. http://10.0.0.5:8080/health")
		}
		if err := validateCheckHost(field+".http", u.Hostname()); err != nil {
			return def, err
		}
		if err := checkDenied(field+".http", u.Hostname(), deny); err != nil {
			return def, err
		}
		if !printableMax(c.HTTP, 2048) {
			return def, invalid(field+".http", "must be at most 2048 printable characters")
		}
		def.Method = strings.ToUpper(c.Method)
		if def.Method == "" {
			def.Method = http.MethodGet
		}
		switch def.Method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodOptions:
		default:
			return def, invalid(field+".method", "must be GET, HEAD, POST, PUT or OPTIONS")
		}
		if len(c.Header) > MaxCheckHeaders {
			return def, invalid(field+".header", "more than %d headers", MaxCheckHeaders)
		}
		for k, vs := range c.Header {
			if k == "" || !validMetaKeyChars(k) || len(k) > MaxMetaKeyLen {
				return def, invalid(field+".header", "bad header name %q", truncateForError(k))
			}
			for _, v := range vs {
				if !printableMax(v, MaxHeaderValueLen) {
					return def, invalid(field+".header."+k, "value must be at most %d printable characters", MaxHeaderValueLen)
				}
			}
		}
		def.Header = c.Header
		def.TLSSkipVerify = c.TLSSkipVerify
	case c.TCP != "":
		def.Type, def.Target = fsm.CheckTCP, c.TCP
		if err := validateCheckHostPort(field+".tcp", c.TCP); err != nil {
			return def, err
		}
		if err := checkDeniedHostPort(field+".tcp", c.TCP, deny); err != nil {
			return def, err
		}
	case c.GRPC != "":
		def.Type, def.Target, def.GRPCService = fsm.CheckGRPC, c.GRPC, c.GRPCService
		if err := validateCheckHostPort(field+".grpc", c.GRPC); err != nil {
			return def, err
		}
		if err := checkDeniedHostPort(field+".grpc", c.GRPC, deny); err != nil {
			return def, err
		}
		if !printableMax(c.GRPCService, 256) {
			return def, invalid(field+".grpc_service", "must be at most 256 printable characters")
		}
	default:
		def.Type = fsm.CheckTTL
		def.TTL = int64(c.TTL)
		if c.TTL < client.Duration(MinCheckInterval) || c.TTL > client.Duration(MaxCheckInterval) {
			return def, invalid(field+".ttl", "must be between %s and %s", MinCheckInterval, MaxCheckInterval)
		}
	}
	if c.Type != "" && c.Type != string(def.Type) {
		return def, invalid(field+".type", "is %q but the check's target is for %q", c.Type, def.Type)
	}
	def.Name = c.Name
	if def.Name == "" {
		def.Name = string(def.Type)
		if i > 0 {
			def.Name = fmt.Sprintf("%s-%d", def.Type, i)
		}
	}
	if len(def.Name) > MaxCheckNameLen || !validIDChars(def.Name) {
		return def, invalid(field+".name", "must be 1-%d letters, digits, '.', '_' or '-'", MaxCheckNameLen)
	}
	interval := time.Duration(c.Interval)
	if interval == 0 {
		interval = DefaultCheckInterval
	}
	if def.Type != fsm.CheckTTL && (interval < MinCheckInterval || interval > MaxCheckInterval) {
		return def, invalid(field+".interval", "must be between %s and %s", MinCheckInterval, MaxCheckInterval)
	}
	def.Interval = int64(interval)
	timeout := time.Duration(c.Timeout)
	if timeout == 0 {
		timeout = min(DefaultCheckTimeout, interval)
	}
	if timeout <= 0 || (def.Type != fsm.CheckTTL && timeout > interval) {
		return def, invalid(field+".timeout", "must be positive and at most the interval")
	}
	def.Timeout = int64(timeout)
	def.FailuresBeforeCritical, def.SuccessesBeforePassing = c.FailuresBeforeCritical, c.SuccessesBeforePassing
	if def.FailuresBeforeCritical == 0 {
		def.FailuresBeforeCritical = 1
	}
	if def.SuccessesBeforePassing == 0 {
		def.SuccessesBeforePassing = 1
	}
	if def.FailuresBeforeCritical < 1 || def.FailuresBeforeCritical > MaxThreshold {
		return def, invalid(field+".failures_before_critical", "must be 1-%d", MaxThreshold)
	}
	if def.SuccessesBeforePassing < 1 || def.SuccessesBeforePassing > MaxThreshold {
		return def, invalid(field+".successes_before_passing", "must be 1-%d", MaxThreshold)
	}
	def.InitialStatus = fsm.Health(c.InitialStatus)
	if def.InitialStatus == "" {
		def.InitialStatus = fsm.Critical
	}
	if !def.InitialStatus.Valid() {
		return def, invalid(field+".initial_status", "must be passing, warning or critical")
	}
	if c.DeregisterCriticalAfter != 0 && time.Duration(c.DeregisterCriticalAfter) < MinDeregisterAfter {
		return def, invalid(field+".deregister_critical_after", "must be at least %s", MinDeregisterAfter)
	}
	def.DeregisterCriticalAfter = int64(c.DeregisterCriticalAfter)
	return def, nil
}

// checkDenied rejects a check target host that is an IP literal in one of
// the denied ranges. Host names are checked by the prober at connect time,
// on the address they resolve to.
func checkDenied(field, host string, deny []netip.Prefix) error {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	a = a.Unmap().WithZone("")
	for _, p := range deny {
		if p.Contains(a) {
			return invalid(field, "target address %s is in a denied range (%s)", a, p)
		}
	}
	return nil
}

func checkDeniedHostPort(field, hostport string, deny []netip.Prefix) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return invalid(field, "must be host:port")
	}
	return checkDenied(field, host, deny)
}

// decodeBody reads a JSON body of at most MaxBodyBytes into v. Unknown
// fields, duplicate keys, nesting deeper than MaxJSONDepth and trailing data
// are all rejected with a 400 that says what was wrong.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := readBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	return decodeJSON(body, v)
}

// readAll is io.ReadAll starting with room for size bytes (a declared
// Content-Length; unknown or 0: io.ReadAll's 512) and the read that finds
// the end: a registration body then takes one allocation of its own size.
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 || size > 1<<20 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, size+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// readBody reads a request body of at most limit bytes. A body that
// declares a larger Content-Length is refused with 413 before anything is
// read (a client announcing 1 GB gets its answer at once, not a 408 after
// ReadTimeout).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, mbe
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A client too slow to send its body within ReadTimeout.
			return nil, errBodyTimeout
		}
		return nil, &statusError{http.StatusBadRequest, "bad_body", "cannot read request body: " + err.Error()}
	}
	return body, nil
}

var durationType = reflect.TypeFor[client.Duration]()

// decodeJSON is the strict decoder behind decodeBody: body must be one
// JSON object, in UTF-8, that checkJSON accepts and whose fields all exist
// in v.
func decodeJSON(body []byte, v any) error {
	start := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(start) == 0:
		return &statusError{http.StatusBadRequest, "bad_json", "request body is empty; a JSON object is required"}
	case !utf8.Valid(body):
		return &statusError{http.StatusBadRequest, "bad_json", "request body is not valid UTF-8"}
	case start[0] != '{':
		return &statusError{http.StatusBadRequest, "bad_json", "request body must be a JSON object"}
	}
	if err := checkJSON(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			// The same field path on every Go release (typeerror.go).
			if verr := locateTypeError(body, reflect.TypeOf(v)); verr != nil {
				return verr
			}
		}
		switch {
		case errors.As(err, &ute) && ute.Field != "":
			if ute.Type == durationType {
				return invalid(ute.Field, "must be a duration string such as \"10s\"")
			}
			want := jsonKind(ute.Type)
			if want == "an integer" && strings.HasPrefix(ute.Value, "number") {
				want = "an integer in range" // a fraction, or too large
			}
			return invalid(ute.Field, "must be %s, not %s", want, truncateForError(ute.Value))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			// encoding/json names the key alone; the error's field is its
			// path (checks[0].bogus, docs/api.md).
			f := locateUnknownField(body, reflect.TypeOf(v))
			if f == "" {
				f = strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			}
			return invalid(f, "unknown field")
		}
		return &statusError{http.StatusBadRequest, "bad_json", "invalid JSON: " + err.Error()}
	}
	if dec.More() {
		return &statusError{http.StatusBadRequest, "bad_json", "unexpected data after the JSON value"}
	}
	return nil
}

// jsonKind names the JSON value that decodes into t.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a JSON " + t.String()
}

// checkJSON rejects what the standard decoder accepts silently: duplicate
// object keys, including keys that differ only in case (encoding/json
// matches field names case-insensitively, so {"port":1,"PORT":2} would set
// the port twice), and nesting deeper than MaxJSONDepth. A duplicate is
// reported with its path, such as "meta.zone" or "checks[1].http".
//
// It is a byte scanner, not a tokenizer: it runs on every write, and on the
// common path (keys without escapes) it allocates nothing. Syntax it does not
// need to understand (numbers, literals) is only skipped; decodeJSON's
// decoder, which runs next, checks it.
func checkJSON(body []byte) error {
	sc := jsonScanner{b: body}
	for {
		sc.space()
		if sc.i == len(sc.b) {
			return nil
		}
		if err := sc.value(0); err != nil {
			return err
		}
	}
}

// jsonScanner walks a JSON text. path holds, for each open container, where
// it is (an object key or an array index), to name a duplicate's field.
type jsonScanner struct {
	b    []byte
	i    int
	path []jsonStep
}

type jsonStep struct {
	key   string // in an object: the current key
	index int    // in an array: the current element
	array bool
}

func (sc *jsonScanner) syntax(what string) error {
	return &statusError{http.StatusBadRequest, "bad_json", fmt.Sprintf("invalid JSON: %s at offset %d", what, sc.i)}
}

func (sc *jsonScanner) space() {
	for sc.i < len(sc.b) {
		switch sc.b[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// value scans one value at the given depth (the number of containers open).
func (sc *jsonScanner) value(depth int) error {
	sc.space()
	if sc.i == len(sc.b) {
		return sc.syntax("unexpected end of input")
	}
	switch c := sc.b[sc.i]; {
	case c == '{' || c == '[':
		if depth+1 > MaxJSONDepth {
			return &statusError{http.StatusBadRequest, "bad_json", fmt.Sprintf("JSON nested deeper than %d levels", MaxJSONDepth)}
		}
		if c == '{' {
			return sc.object(depth + 1)
		}
		return sc.array(depth + 1)
	case c == '"':
		_, _, err := sc.str()
		return err
	case c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n':
		start := sc.i
		for sc.i < len(sc.b) && !strings.ContainsRune(" \t\n\r,]}:", rune(sc.b[sc.i])) && sc.b[sc.i] != '"' {
			sc.i++
		}
		if sc.i == start {
			return sc.syntax("empty value")
		}
		return nil
	default:
		return sc.syntax(fmt.Sprintf("unexpected %q", c))
	}
}

// str scans a string starting at its opening quote and returns its raw
// contents and whether they hold escapes.
func (sc *jsonScanner) str() ([]byte, bool, error) {
	sc.i++ // the opening quote
	start, escaped := sc.i, false
	for sc.i < len(sc.b) {
		switch c := sc.b[sc.i]; {
		case c == '"':
			raw := sc.b[start:sc.i]
			sc.i++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			sc.i += 2
		case c < 0x20:
			return nil, false, sc.syntax("control character in string")
		default:
			sc.i++
		}
	}
	return nil, false, sc.syntax("unterminated string")
}

func (sc *jsonScanner) object(depth int) error {
	sc.i++ // '{'
	sc.path = append(sc.path, jsonStep{})
	defer func() { sc.path = sc.path[:len(sc.path)-1] }()
	// keys seen so far in this object, as raw bytes; escaped keys are
	// decoded first. Objects are small, so a linear scan beats a map.
	var keys [][]byte
	sc.space()
	if sc.i < len(sc.b) && sc.b[sc.i] == '}' {
		sc.i++
		return nil
	}
	for {
		sc.space()
		if sc.i == len(sc.b) || sc.b[sc.i] != '"' {
			return sc.syntax("object key is not a string")
		}
		raw, escaped, err := sc.str()
		if err != nil {
			return err
		}
		key := raw
		if escaped {
			var s string
			if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s); err != nil {
				return sc.syntax("bad escape in key")
			}
			key = []byte(s)
		}
		for _, k := range keys {
			if bytes.EqualFold(k, key) {
				return invalid(sc.field(string(key)), "duplicate key")
			}
		}
		keys = append(keys, key)
		sc.path[len(sc.path)-1].key = string(key)
		sc.space()
		if sc.i == len(sc.b) || sc.b[sc.i] != ':' {
			return sc.syntax("missing colon after key")
		}
		sc.i++
		if err := sc.value(depth); err != nil {
			return err
		}
		if done, err := sc.separator('}'); done || err != nil {
			return err
		}
	}
}

func (sc *jsonScanner) array(depth int) error {
	sc.i++ // '['
	sc.path = append(sc.path, jsonStep{array: true})
	defer func() { sc.path = sc.path[:len(sc.path)-1] }()
	sc.space()
	if sc.i < len(sc.b) && sc.b[sc.i] == ']' {
		sc.i++
		return nil
	}
	for n := 0; ; n++ {
		sc.path[len(sc.path)-1].index = n
		if err := sc.value(depth); err != nil {
			return err
		}
		if done, err := sc.separator(']'); done || err != nil {
			return err
		}
	}
}

// separator consumes the comma after a container's member, or its closing
// byte (then done is true).
func (sc *jsonScanner) separator(closing byte) (done bool, err error) {
	sc.space()
	if sc.i == len(sc.b) {
		return false, sc.syntax("unexpected end of input")
	}
	switch sc.b[sc.i] {
	case ',':
		sc.i++
		return false, nil
	case closing:
		sc.i++
		return true, nil
	}
	return false, sc.syntax(fmt.Sprintf("expected , or %c", closing))
}

// field names key inside the innermost open object, by its path.
func (sc *jsonScanner) field(key string) string {
	var p string
	for _, st := range sc.path[:len(sc.path)-1] {
		if st.array {
			p = fmt.Sprintf("%s[%d]", p, st.index)
		} else {
			p = joinPath(p, st.key)
		}
	}
	return joinPath(p, key)
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}
