package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/beaconhq/beacon/fsm"
)

// Result is the outcome of one probe.
type Result struct {
	Status fsm.Health
	Output string
}

// userAgent is sent by HTTP and gRPC probes.
const userAgent = "Beacon-Health-Check/1"

// maxGRPCResponse caps what a gRPC probe reads; a health response is a few bytes.
const maxGRPCResponse = 16 << 10

// Prober runs the active checks (HTTP, TCP, gRPC). It never runs a command,
// never follows an HTTP redirect, reads at most MaxOutput bytes of a response
// body, and refuses at connect time every address in its deny list, so a
// host name that resolves into a denied range is refused too. It is safe for
// concurrent use.
type Prober struct {
	deny      []netip.Prefix
	allow     []netip.Prefix
	local     []netip.Prefix // Config.LocalCIDRs
	safeOnly  bool           // Config.SafeMethodsOnly
	maxOutput int
	dialer    *net.Dialer
	http      *http.Client
	httpSkip  *http.Client // TLS verification off, for checks that ask for it
	grpc      *http.Client
}

// DeniedError is returned when a probe would connect to a denied address.
type DeniedError struct {
	Addr   netip.Addr
	Prefix netip.Prefix
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("health: target address %s is in a denied range (%s)", e.Addr, e.Prefix)
}

// Denied returns the prefix of deny that contains addr, if any. IPv4-mapped
// IPv6 addresses are compared as IPv4 and zones are ignored.
func Denied(deny []netip.Prefix, addr netip.Addr) (netip.Prefix, bool) {
	addr = addr.Unmap().WithZone("")
	for _, p := range deny {
		if p.Contains(addr) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// NewProber returns a Prober that refuses the addresses in deny and keeps
// at most maxOutput bytes of output per probe.
func NewProber(deny []netip.Prefix, maxOutput int) *Prober {
	return NewScopedProber(deny, nil, maxOutput)
}

// NewScopedProber is NewProber with the ranges any check may target besides
// its instance's own address (Config.AllowCIDRs; see ProbeFor).
func NewScopedProber(deny, allow []netip.Prefix, maxOutput int) *Prober {
	p := &Prober{deny: deny, allow: allow, maxOutput: maxOutput}
	p.dialer = &net.Dialer{ControlContext: p.control}
	transport := func(skipVerify bool) *http.Transport {
		return &http.Transport{
			// No proxy: the deny list must see the target's own address.
			Proxy:                  nil,
			DialContext:            p.dialer.DialContext,
			DisableKeepAlives:      true, // each probe opens a fresh connection
			DisableCompression:     true,
			MaxResponseHeaderBytes: 64 << 10,
			TLSClientConfig:        &tls.Config{InsecureSkipVerify: skipVerify, MinVersion: tls.VersionTLS12}, //nolint:gosec // opt-in per check
		}
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	p.http = &http.Client{Transport: transport(false), CheckRedirect: noRedirect}
	p.httpSkip = &http.Client{Transport: transport(true), CheckRedirect: noRedirect}
	gt := transport(false)
	gt.Protocols = new(http.Protocols)
	gt.Protocols.SetUnencryptedHTTP2(true) // gRPC speaks HTTP/2 with prior knowledge
	p.grpc = &http.Client{Transport: gt, CheckRedirect: noRedirect}
	return p
}

// restrict sets the rules of checks not registered with the management
// token (Config.LocalCIDRs, Config.SafeMethodsOnly); it returns p.
func (p *Prober) restrict(local []netip.Prefix, safeMethodsOnly bool) *Prober {
	p.local, p.safeOnly = local, safeMethodsOnly
	return p
}

// control runs after name resolution and before connect: the address is an
// IP literal here, whatever the check's target said. Besides the deny list,
// a probe with a scope (ProbeFor) may connect neither to this host (the
// local ranges; an allowed range excepted) nor anywhere but its instance's
// addresses or an allowed range.
func (p *Prober) control(ctx context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("health: cannot parse dial address %q: %w", address, err)
	}
	if pfx, bad := Denied(p.deny, ap.Addr()); bad {
		return &DeniedError{Addr: ap.Addr(), Prefix: pfx}
	}
	if sc, ok := ctx.Value(scopeKey{}).(*scope); ok {
		// The host rule comes first: the instance's own address may be
		// 127.0.0.1, which the scope alone would let through.
		if pfx, local := Denied(p.local, ap.Addr()); local {
			if _, allowed := Denied(p.allow, ap.Addr()); !allowed {
				return &LocalError{Addr: ap.Addr().Unmap(), Prefix: pfx}
			}
		}
		if !sc.allows(ap.Addr(), p.allow) {
			return &ScopeError{Addr: ap.Addr().Unmap(), Instance: sc.instance}
		}
	}
	return nil
}

// LocalError is returned when a check not registered with the management
// token would connect to the host that runs it (Config.LocalCIDRs).
type LocalError struct {
	Addr   netip.Addr
	Prefix netip.Prefix
}

func (e *LocalError) Error() string {
	return fmt.Sprintf("health: target address %s is this server's own (loopback or one of its addresses, %s); only checks registered with the management token (or agents with --check-allow-loopback) may probe it", e.Addr, e.Prefix)
}

// safeMethod reports whether an HTTP check's method only reads.
func safeMethod(m string) bool {
	return m == "" || m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// ScopeError is returned when a check would connect to an address that is
// not its instance's (and not in an allowed range).
type ScopeError struct {
	Addr     netip.Addr
	Instance string
}

func (e *ScopeError) Error() string {
	return fmt.Sprintf("health: target address %s is not the instance's address %s (only checks registered with the management token, or --check-allow-cidr, may probe another host)", e.Addr, e.Instance)
}

// scope is what a check may connect to: its instance's addresses.
type scope struct {
	instance string
	addrs    []netip.Addr
}

type scopeKey struct{}

func (sc *scope) allows(a netip.Addr, allow []netip.Prefix) bool {
	a = a.Unmap().WithZone("")
	for _, x := range sc.addrs {
		if x == a {
			return true
		}
	}
	for _, p := range allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ProbeFor runs check c of an instance registered at instanceAddr: unless
// the check may target any host (fsm.CheckDefinition.AnyTarget, set for
// management-token registrations), the probe connects only to the
// addresses instanceAddr stands for (a host name is resolved now, at probe
// time) or to the prober's allowed ranges, never to this host's own
// addresses (Config.LocalCIDRs), and sends only GET, HEAD or OPTIONS when
// Config.SafeMethodsOnly; anything else is refused before connecting, and
// the check is critical.
func (p *Prober) ProbeFor(ctx context.Context, c *fsm.Check, instanceAddr string) Result {
	if c.AnyTarget || c.Type == fsm.CheckTTL {
		return p.Probe(ctx, c)
	}
	if p.safeOnly && c.Type == fsm.CheckHTTP && !safeMethod(c.Method) {
		return Result{fsm.Critical, fmt.Sprintf("health: method %s is refused: only checks registered with the management token may send other methods than GET, HEAD or OPTIONS", c.Method)}
	}
	sc := &scope{instance: instanceAddr}
	if a, err := netip.ParseAddr(instanceAddr); err == nil {
		sc.addrs = []netip.Addr{a.Unmap().WithZone("")}
	} else if instanceAddr != "" {
		rctx, cancel := context.WithTimeout(ctx, max(time.Duration(c.Timeout), time.Second))
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", instanceAddr)
		cancel()
		if err != nil {
			return Result{fsm.Critical, fmt.Sprintf("health: cannot resolve the instance's address %q: %v", instanceAddr, err)}
		}
		for _, a := range addrs {
			sc.addrs = append(sc.addrs, a.Unmap().WithZone(""))
		}
	}
	return p.Probe(context.WithValue(ctx, scopeKey{}, sc), c)
}

// Probe runs check c once, within c's timeout (and ctx). TTL checks are not
// probed; they report Critical here.
func (p *Prober) Probe(ctx context.Context, c *fsm.Check) Result {
	timeout := time.Duration(c.Timeout)
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var r Result
	switch c.Type {
	case fsm.CheckHTTP:
		r = p.probeHTTP(ctx, c)
	case fsm.CheckTCP:
		r = p.probeTCP(ctx, c.Target)
	case fsm.CheckGRPC:
		r = p.probeGRPC(ctx, c.Target, c.GRPCService)
	default:
		r = Result{Status: fsm.Critical, Output: fmt.Sprintf("check type %q is not probed", c.Type)}
	}
	r.Output = fsm.EscapeControlMax(r.Output, p.maxOutput)
	return r
}

// MaxHTTPExcerpt is how much of an HTTP check's response body its output
// keeps, after the status line: enough for "ok" or a short reason, too
// little to publish a page the check was pointed at.
const MaxHTTPExcerpt = 128

func (p *Prober) probeHTTP(ctx context.Context, c *fsm.Check) Result {
	method := c.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Target, nil)
	if err != nil {
		return Result{fsm.Critical, "bad request: " + err.Error()}
	}
	for k, vs := range c.Header {
		if http.CanonicalHeaderKey(k) == "Host" {
			if len(vs) > 0 {
				req.Host = vs[0]
			}
			continue
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "text/plain, text/*, */*")
	}
	cl := p.http
	if c.TLSSkipVerify {
		cl = p.httpSkip
	}
	resp, err := cl.Do(req)
	if err != nil {
		return Result{fsm.Critical, fmt.Sprintf("HTTP %s %s: %v", method, c.Target, unwrapURLError(err))}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxHTTPExcerpt))
	out := fmt.Sprintf("HTTP %s %s: %s Output: %s", method, c.Target, resp.Status, capOutput(string(body), MaxHTTPExcerpt))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return Result{fsm.Passing, out}
	case resp.StatusCode == http.StatusTooManyRequests:
		return Result{fsm.Warning, out}
	}
	return Result{fsm.Critical, out}
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (p *Prober) probeTCP(ctx context.Context, target string) Result {
	conn, err := p.dialer.DialContext(ctx, "tcp", target)
	if err != nil {
		return Result{fsm.Critical, fmt.Sprintf("TCP connect %s: %v", target, err)}
	}
	conn.Close()
	return Result{fsm.Passing, fmt.Sprintf("TCP connect %s: Success", target)}
}

// gRPC health serving statuses (grpc.health.v1.HealthCheckResponse.ServingStatus).
var servingStatus = map[uint64]string{0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}

// probeGRPC makes the unary call grpc.health.v1.Health/Check over HTTP/2
// without TLS, encoding the one-field request and decoding the one-field
// response by hand so that the agent does not link a gRPC stack.
func (p *Prober) probeGRPC(ctx context.Context, target, service string) Result {
	prefix := "gRPC " + target
	if service != "" {
		prefix += " service " + strconv.Quote(service)
	}
	var msg []byte
	if service != "" {
		msg = append([]byte{0x0a}, binary.AppendUvarint(nil, uint64(len(service)))...)
		msg = append(msg, service...)
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+target+"/grpc.health.v1.Health/Check", bytes.NewReader(frame))
	if err != nil {
		return Result{fsm.Critical, prefix + ": " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", userAgent)
	if dl, ok := ctx.Deadline(); ok {
		req.Header.Set("Grpc-Timeout", strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)+"m")
	}
	resp, err := p.grpc.Do(req)
	if err != nil {
		return Result{fsm.Critical, fmt.Sprintf("%s: %v", prefix, unwrapURLError(err))}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxGRPCResponse+1))
	if err != nil {
		return Result{fsm.Critical, fmt.Sprintf("%s: reading response: %v", prefix, err)}
	}
	if resp.StatusCode != http.StatusOK {
		return Result{fsm.Critical, fmt.Sprintf("%s: HTTP status %s", prefix, resp.Status)}
	}
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" {
		code = resp.Header.Get("Grpc-Status") // a trailers-only response
	}
	if code != "0" {
		m := resp.Trailer.Get("Grpc-Message")
		if m == "" {
			m = resp.Header.Get("Grpc-Message")
		}
		return Result{fsm.Critical, fmt.Sprintf("%s: rpc error: code %s: %s", prefix, code, m)}
	}
	status, err := decodeHealthResponse(body)
	if err != nil {
		return Result{fsm.Critical, fmt.Sprintf("%s: %v", prefix, err)}
	}
	name, ok := servingStatus[status]
	if !ok {
		name = strconv.FormatUint(status, 10)
	}
	if status == 1 {
		return Result{fsm.Passing, prefix + ": " + name}
	}
	return Result{fsm.Critical, prefix + ": " + name}
}

// decodeHealthResponse reads the status (field 1, varint) of one
// length-prefixed, uncompressed HealthCheckResponse message.
func decodeHealthResponse(b []byte) (uint64, error) {
	if len(b) < 5 {
		return 0, errors.New("short gRPC response")
	}
	if b[0] != 0 {
		return 0, errors.New("compressed gRPC response not supported")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if int(n) != len(b)-5 {
		return 0, errors.New("malformed gRPC response frame")
	}
	msg := b[5:]
	var status uint64
	for len(msg) > 0 {
		tag, k := binary.Uvarint(msg)
		if k <= 0 {
			return 0, errors.New("malformed gRPC response message")
		}
		msg = msg[k:]
		switch tag & 7 {
		case 0:
			v, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, errors.New("malformed gRPC response message")
			}
			msg = msg[k:]
			if tag>>3 == 1 {
				status = v
			}
		case 1:
			if len(msg) < 8 {
				return 0, errors.New("malformed gRPC response message")
			}
			msg = msg[8:]
		case 2:
			l, k := binary.Uvarint(msg)
			if k <= 0 || uint64(len(msg)-k) < l {
				return 0, errors.New("malformed gRPC response message")
			}
			msg = msg[k+int(l):]
		case 5:
			if len(msg) < 4 {
				return 0, errors.New("malformed gRPC response message")
			}
			msg = msg[4:]
		default:
			return 0, errors.New("malformed gRPC response message")
		}
	}
	return status, nil
}

// capOutput cuts s to at most n bytes without splitting a UTF-8 sequence.
func capOutput(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	// Drop a partial sequence at the end (at most UTFMax-1 bytes).
	for i := 0; i < utf8.UTFMax-1 && len(s) > 0; i++ {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}
