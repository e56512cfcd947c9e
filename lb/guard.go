package lb

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

// HeaderHops counts the Beacon balancers a request has passed through. A
// balancer refuses with 508 a request that arrives having passed
// Config.MaxHops of them: an instance registered at a balancer's own
// address, or two balancers that route to each other, would otherwise make
// one request recurse until file descriptors run out.
const HeaderHops = "X-Beacon-Lb-Hops"

// CodeLoop is the error code of the 508 answer.
const CodeLoop = "loop_detected"

// DefaultMaxHops is the default of Config.MaxHops.
const DefaultMaxHops = 5

// LoopbackCIDRs returns the loopback ranges, 127.0.0.0/8 and ::1/128: the
// addresses the balancer refuses unless Config.AllowLoopback (netip's
// IsLoopback, as prefixes). The agent's rule for health checks
// (--check-allow-loopback) starts from the same list.
func LoopbackCIDRs() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// broadcast is the IPv4 limited broadcast address.
var broadcast = netip.MustParseAddr("255.255.255.255")

// dialGuard decides, at connect time and on the resolved address, whether
// the balancer may connect to an upstream address: never to an
// unspecified, multicast or broadcast address, to a denied range, to
// loopback (unless allowed), to a denied endpoint (the agents' API and
// cluster ports) or to one of the balancer's own listeners.
type dialGuard struct {
	deny          []netip.Prefix
	allowLoopback bool
	mu            sync.Mutex
	endpoints     atomic.Pointer[[]endpoint] // copy on write
}

// endpoint is an address and port the balancer never dials; an endpoint
// configured with an unspecified address covers every address of this
// host, and so is expanded into several.
type endpoint struct {
	addr netip.Addr
	port uint16
	// loopback matches every loopback address (a wildcard listener
	// answers on all of 127.0.0.0/8).
	loopback bool
	why      string
}

func newDialGuard(cfg *Config) *dialGuard {
	g := &dialGuard{deny: cfg.DenyCIDRs, allowLoopback: cfg.AllowLoopback}
	g.endpoints.Store(&[]endpoint{})
	for _, ap := range cfg.DenyAddrs {
		g.add(ap, "a Beacon agent's port (lb.Config.DenyAddrs)")
	}
	return g
}

// addListener refuses dials to a listener of this balancer.
func (g *dialGuard) addListener(a net.Addr, what string) {
	if ta, ok := a.(*net.TCPAddr); ok {
		g.add(ta.AddrPort(), "this balancer's own "+what+" address")
	}
}

func (g *dialGuard) add(ap netip.AddrPort, why string) {
	addrs := []netip.Addr{ap.Addr().Unmap().WithZone("")}
	wildcard := addrs[0].IsUnspecified()
	if wildcard {
		addrs = localAddrs()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	next := append([]endpoint(nil), *g.endpoints.Load()...)
	for _, a := range addrs {
		next = append(next, endpoint{addr: a, port: ap.Port(), loopback: wildcard, why: why})
	}
	g.endpoints.Store(&next)
}

// Refuse adds an endpoint the balancer never connects to (why ends the
// refusal's message): `beacon lb` adds the agents it follows once it has
// read their addresses. An unspecified address stands for this host.
func (b *Balancer) Refuse(ap netip.AddrPort, why string) { b.guard.add(ap, why) }

// localAddrs lists the addresses of this host's interfaces and the
// loopback addresses, which an unspecified listen address stands for.
func localAddrs() []netip.Addr {
	var out []netip.Addr
	ifas, _ := net.InterfaceAddrs()
	for _, ia := range ifas {
		if pn, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(pn.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// check returns why the balancer refuses to connect to ap, or nil.
func (g *dialGuard) check(ap netip.AddrPort) error {
	a := ap.Addr().Unmap().WithZone("")
	switch {
	case a.IsUnspecified():
		return fmt.Errorf("lb: upstream address %s is refused: unspecified (it would dial this host)", a)
	case a.IsMulticast() || a == broadcast:
		return fmt.Errorf("lb: upstream address %s is refused: multicast or broadcast", a)
	}
	for _, p := range g.deny {
		if p.Contains(a) {
			return fmt.Errorf("lb: upstream address %s is in the deny list (%s)", a, p)
		}
	}
	for _, e := range *g.endpoints.Load() {
		if e.port == ap.Port() && (e.addr == a || (e.loopback && a.IsLoopback())) {
			return fmt.Errorf("lb: upstream address %s is refused: %s", netip.AddrPortFrom(a, ap.Port()), e.why)
		}
	}
	if !g.allowLoopback && a.IsLoopback() {
		return fmt.Errorf("lb: upstream address %s is refused: loopback (allow with --lb-allow-loopback)", a)
	}
	return nil
}

// control is the upstream dialer's Control: it runs after name resolution,
// so no host name can lead around the guard.
func (g *dialGuard) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("lb: cannot check upstream address %q: %w", address, err)
	}
	return g.check(ap)
}

// denyControl refuses, at connect time, addresses in deny (and nothing
// else); the balancer itself uses a dialGuard.
func denyControl(deny []netip.Prefix) func(network, address string, c syscall.RawConn) error {
	g := &dialGuard{deny: deny, allowLoopback: true}
	g.endpoints.Store(&[]endpoint{})
	return func(network, address string, c syscall.RawConn) error {
		return g.control(context.Background(), network, address, c)
	}
}

// hops returns how many balancers r has passed through (0 when the header
// is missing or malformed).
func hops(r *http.Request) int {
	v := r.Header.Get(HeaderHops)
	if v == "" {
		return 0 // the common case, without Atoi's error value
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// refuseLoop answers 508 when r has passed max balancers already.
func refuseLoop(w http.ResponseWriter, r *http.Request, max int) bool {
	if max <= 0 || hops(r) < max {
		return false
	}
	writeError(w, http.StatusLoopDetected, ErrorBody{
		Error: fmt.Sprintf("the request has passed %d load balancers already (%s): a routing loop", hops(r), HeaderHops),
		Code:  CodeLoop,
	})
	return true
}
