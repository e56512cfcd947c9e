package lb

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBalancerStartedWithServicesServes starts a balancer limited to one
// service (beacon lb --service NAME): Start used to hold the lifecycle lock
// and call setServices, which took it again, so Start never returned.
func TestBalancerStartedWithServicesServes(t *testing.T) {
	cat := newMemCatalog()
	web := startBackend(t, "web")
	idx := cat.Set("web", web.backend())
	cat.Set("other", startBackend(t, "other").backend())
	cfg := DefaultConfig()
	cfg.Services = []string{"web"}
	cfg.AllowLoopback = true
	b, err := New(cfg, cat)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- b.Start(context.Background()) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start with Config.Services did not return within 10s (deadlock)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
		<-done
	})
	waitTable(t, b, "web", idx)
	c := newClient(t)
	if code, body, _ := get(t, c, "http://"+ln.Addr().String()+"/web/"); code != 200 || body != "web" {
		t.Fatalf("GET /web/: %d %q", code, body)
	}
	if code, _, _ := get(t, c, "http://"+ln.Addr().String()+"/other/"); code != 404 {
		t.Fatalf("GET /other/ on a balancer limited to web: %d, want 404", code)
	}
}

// TestRoutePrefixesCannotHijackAnotherServicesPaths: a prefix outside
// /SERVICE is honoured only from an instance the management token
// registered (Backend.Trusted), and never when it would shadow another
// service's path, whoever registered it.
func TestRoutePrefixesCannotHijackAnotherServicesPaths(t *testing.T) {
	cat := newMemCatalog()
	web, api, evil, shop := startBackend(t, "web"), startBackend(t, "api"), startBackend(t, "api-evil"), startBackend(t, "shop")
	evilRec := evil.backend()
	evilRec.Meta = map[string]string{MetaRoutePrefix: "/web"} // a write token for "api" tried this
	apiRec := api.backend()
	apiRec.Meta = map[string]string{MetaRoutePrefix: "/api/v2"}
	trustedShadow := shop.backend()
	trustedShadow.ID = "shop-2"
	trustedShadow.Meta = map[string]string{MetaRoutePrefix: "/web/admin"}
	trustedShadow.Trusted = true
	untrustedShop := shop.backend()
	untrustedShop.Meta = map[string]string{MetaRoutePrefix: "/store"}
	cat.Set("web", web.backend())
	cat.Set("api", apiRec, evilRec)
	last := cat.Set("shop", untrustedShop, trustedShadow)
	b, url := startBalancer(t, cat, nil)
	waitTable(t, b, "web", 1)
	waitTable(t, b, "api", 1)
	waitTable(t, b, "shop", last)
	c := newClient(t)
	for i := 0; i < 6; i++ {
		if code, body, _ := get(t, c, url+"/web/login", "Cookie", "session=secret"); code != 200 || body != "web" {
			t.Fatalf("GET /web/login went to %q (%d), want web", body, code)
		}
		if code, body, _ := get(t, c, url+"/web/admin"); code != 200 || body != "web" {
			t.Fatalf("GET /web/admin went to %q (%d): a trusted prefix shadowed web", body, code)
		}
	}
	if code, _, _ := get(t, c, url+"/store/x"); code != 404 {
		t.Fatalf("an untrusted prefix outside /shop routed: %d", code)
	}
	if code, body, _ := get(t, c, url+"/api/v2/x"); code != 200 || (body != "api" && body != "api-evil") {
		t.Fatalf("a prefix inside /api: %d %q", code, body)
	}
	st := b.Status()
	for _, r := range st.Routes {
		if r.Prefix != "/api/v2" {
			t.Fatalf("routes %+v: only /api/v2 may be declared", st.Routes)
		}
	}
	// Trusted and not shadowing anything: routed.
	good := shop.backend()
	good.Meta = map[string]string{MetaRoutePrefix: "/store"}
	good.Trusted = true
	idx := cat.Set("shop", good)
	waitTable(t, b, "shop", idx)
	eventually(t, func() bool { code, body, _ := get(t, c, url+"/store/x"); return code == 200 && body == "shop" }, "the trusted /store prefix")
	// A service appearing later is no longer shadowed by a trusted prefix
	// declared before it.
	shadow := shop.backend()
	shadow.Meta = map[string]string{MetaRoutePrefix: "/late"}
	shadow.Trusted = true
	idx = cat.Set("shop", shadow)
	waitTable(t, b, "shop", idx)
	eventually(t, func() bool { _, body, _ := get(t, c, url+"/late/x"); return body == "shop" }, "the trusted /late prefix")
	late := startBackend(t, "late")
	idx = cat.Set("late", late.backend())
	waitTable(t, b, "late", idx)
	eventually(t, func() bool { _, body, _ := get(t, c, url+"/late/x"); return body == "late" }, "/late going to the new service late")
}

// TestBalancerRefusesToDialWhatItShouldNot registers instances at
// addresses the balancer must never connect to and sees each refused at
// dial time (502) with nothing reaching the listener behind it.
func TestBalancerRefusesToDialWhatItShouldNot(t *testing.T) {
	target := startBackend(t, "target") // stands for this host's services
	agentPort := startBackend(t, "agent")
	cases := []struct {
		name, address string
		port          func(balancerPort int) int
		allowLoopback bool
		want          string
	}{
		{"0.0.0.0 (this host)", "0.0.0.0", func(int) int { return target.port }, true, "unspecified"},
		{":: (this host)", "::", func(int) int { return target.port }, true, "unspecified"},
		{"a loopback instance without the opt-in", "127.0.0.1", func(int) int { return target.port }, false, "loopback"},
		{"a name resolving to loopback without the opt-in", "localhost", func(int) int { return target.port }, false, "loopback"},
		{"the balancer's own listen address", "127.0.0.1", func(p int) int { return p }, true, "own listen"},
		{"an agent's port (DenyAddrs)", "127.0.0.1", func(int) int { return agentPort.port }, true, "agent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cat := newMemCatalog()
			b, url := startBalancer(t, cat, func(c *Config) {
				c.AllowLoopback = tc.allowLoopback
				c.MaxRetries = 0
				c.DenyAddrs = []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("0.0.0.0"), uint16(agentPort.port))}
			})
			_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
			bport, _ := strconv.Atoi(portStr)
			rec := target.backend()
			rec.Address, rec.Port = tc.address, tc.port(bport)
			idx := cat.Set("web", rec)
			waitTable(t, b, "web", idx)
			before, beforeAgent := target.hits.Load(), agentPort.hits.Load()
			code, body, _ := get(t, newClient(t), url+"/web/")
			if code != 502 || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want 502 naming %q", code, body, tc.want)
			}
			if target.hits.Load() != before || agentPort.hits.Load() != beforeAgent {
				t.Fatal("the refused address was reached")
			}
		})
	}
	t.Run("multicast and broadcast", func(t *testing.T) {
		g := newDialGuard(&Config{AllowLoopback: true})
		for _, a := range []string{"224.0.0.1:80", "[ff02::1]:80", "255.255.255.255:80", "0.0.0.0:80", "[::]:80", "[::ffff:0.0.0.0]:80"} {
			if err := g.check(netip.MustParseAddrPort(a)); err == nil {
				t.Errorf("%s allowed", a)
			}
		}
		if err := g.check(netip.MustParseAddrPort("10.1.2.3:80")); err != nil {
			t.Errorf("a private address refused: %v", err)
		}
	})
	t.Run("a wildcard listener covers every loopback address", func(t *testing.T) {
		g := newDialGuard(&Config{AllowLoopback: true, DenyAddrs: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:8750")}})
		for _, a := range []string{"127.0.0.1:8750", "127.9.9.9:8750", "[::1]:8750"} {
			if err := g.check(netip.MustParseAddrPort(a)); err == nil {
				t.Errorf("%s allowed", a)
			}
		}
		if err := g.check(netip.MustParseAddrPort("127.0.0.1:8751")); err != nil {
			t.Errorf("another port refused: %v", err)
		}
	})
}

// TestRoutingLoopBetweenBalancersEndsIn508 makes two balancers route a
// service to each other: the request stops after MaxHops with 508 instead
// of recursing until file descriptors run out.
func TestRoutingLoopBetweenBalancersEndsIn508(t *testing.T) {
	catA, catB := newMemCatalog(), newMemCatalog()
	a, urlA := startBalancer(t, catA, func(c *Config) { c.MaxRetries = 0 })
	b, urlB := startBalancer(t, catB, func(c *Config) { c.MaxRetries = 0 })
	at := func(u string) Backend {
		host, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
		p, _ := strconv.Atoi(port)
		return Backend{ID: "lb", Address: host, Port: p, Weight: 1, Status: Passing}
	}
	waitTable(t, a, "web", catA.Set("web", at(urlB)))
	waitTable(t, b, "web", catB.Set("web", at(urlA)))
	// Host routing forwards the Host header, so every hop routes it again.
	code, body, _ := get(t, newClient(t), urlA+"/x", "Host", "web.service.beacon")
	var eb ErrorBody
	_ = json.Unmarshal([]byte(body), &eb)
	if code != http.StatusLoopDetected || eb.Code != CodeLoop {
		t.Fatalf("got %d %q, want 508 %s", code, body, CodeLoop)
	}
	// A client cannot make a balancer forward a request past the limit.
	code, _, _ = get(t, newClient(t), urlA+"/x", "Host", "web.service.beacon", HeaderHops, strconv.Itoa(DefaultMaxHops))
	if code != http.StatusLoopDetected {
		t.Fatalf("a request arriving with %d hops: %d, want 508", DefaultMaxHops, code)
	}
}

// TestAdminPortCapsConnectionsPerClient holds the cap's worth of
// connections on the admin port and sees one more answered 429.
func TestAdminPortCapsConnectionsPerClient(t *testing.T) {
	b, _ := startBalancer(t, newMemCatalog(), func(c *Config) { c.MaxConnsPerClient = 4 })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.ServeAdmin(ln) }()
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	status := func(c net.Conn) int {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return 0
		}
		buf := make([]byte, 12)
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0
		}
		n, _ := strconv.Atoi(string(buf[9:12]))
		return n
	}
	for i := 0; i < 5; i++ {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		want := 200
		if i == 4 {
			want = 429
		}
		if got := status(c); got != want {
			t.Fatalf("connection %d: status %d, want %d", i+1, got, want)
		}
	}
}
