package dns_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/miekg/dns"
	"go.uber.org/goleak"

	beacondns "github.com/beaconhq/beacon/api/dns"
	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fresh is a settable Freshness (and diverger).
type fresh struct {
	lc       atomic.Int64
	diverged atomic.Bool
}

func (f *fresh) LastContact() time.Duration { return time.Duration(f.lc.Load()) }
func (f *fresh) Diverged() bool             { return f.diverged.Load() }

type env struct {
	t     *testing.T
	fsm   *fsm.FSM
	index uint64
	fresh *fresh
	srv   *beacondns.Server
}

func newEnv(t *testing.T, mutate func(*beacondns.Config)) *env {
	t.Helper()
	e := &env{t: t, fsm: fsm.New(nil), fresh: &fresh{}}
	cfg := beacondns.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := beacondns.New(cfg, e.fsm.Store(), e.fresh)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	e.srv = srv
	return e
}

func (e *env) apply(cmd []byte) {
	e.t.Helper()
	e.index++
	res := e.fsm.Apply(&raft.Log{Index: e.index, Type: raft.LogCommand, Data: cmd}).(fsm.ApplyResult)
	if res.Err != nil {
		e.t.Fatal(res.Err)
	}
}

// register adds an instance; health "" means passing (no checks).
func (e *env) register(id, service, addr string, port, weight int, health fsm.Health, tags ...string) {
	e.t.Helper()
	e.apply(fsmtest.Register(e.t, id, service, func(r *fsm.RegisterRequest) {
		r.Address, r.Port, r.Weight, r.Tags = addr, port, weight, tags
		if health != "" {
			r.Checks = []fsm.CheckDefinition{fsmtest.TTLCheck("ttl", health)}
		}
	}))
}

func (e *env) query(name string, qtype uint16, net string, edns uint16) *dns.Msg {
	e.t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: net, Timeout: 5 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, e.srv.Addr())
	if err != nil {
		e.t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], net, err)
	}
	return r
}

func (e *env) udp(name string, qtype uint16) *dns.Msg { return e.query(name, qtype, "udp", 0) }

func addrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%s:%d/%d", r.Target, r.Port, r.Weight))
		}
	}
	sort.Strings(out)
	return out
}

// web is the catalog most tests query.
func web(e *env) {
	e.register("w1", "web", "10.0.0.1", 8080, 1, "", "v1", "EU")
	e.register("w2", "web", "10.0.0.2", 8081, 5, fsm.Passing, "v2")
	e.register("w3", "web", "10.0.0.3", 8082, 1, fsm.Critical, "v2")
	e.register("w4", "web", "fd00::4", 8083, 2, "", "v2")
	e.register("w5", "web", "web5.example.com", 8084, 3, "", "v2")
	e.register("w6", "web", "10.0.0.6", 8085, 1, "", "v2")
	e.apply(fsmtest.Maintenance(e.t, "web", "w6", fsm.ModeMaintenance))
	e.register("d1", "down", "10.0.1.1", 80, 1, fsm.Critical, "v1")
}

func TestRecords(t *testing.T) {
	e := newEnv(t, func(c *beacondns.Config) { c.TTL = 7 * time.Second })
	web(e)
	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		want  []string
	}{
		{"A lists the healthy IPv4 instances", "web.service.beacon.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1", "10.0.0.2"}},
		{"AAAA lists the healthy IPv6 instances", "web.service.beacon.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00::4"}},
		{"SRV lists every healthy instance with its port and weight", "web.service.beacon.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"0a000001.addr.beacon.:8080/1", "0a000002.addr.beacon.:8081/5",
			"fd000000000000000000000000000004.addr.beacon.:8083/2", "web5.example.com.:8084/3"}},
		{"a tag label filters by tag", "v2.web.service.beacon.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.2"}},
		{"tags match without regard to case", "eu.web.service.beacon.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1"}},
		{"names match without regard to case", "WEB.Service.BEACON.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1", "10.0.0.2"}},
		{"the RFC 2782 form with _tcp means any tag", "_web._tcp.service.beacon.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"0a000001.addr.beacon.:8080/1", "0a000002.addr.beacon.:8081/5",
			"fd000000000000000000000000000004.addr.beacon.:8083/2", "web5.example.com.:8084/3"}},
		{"the RFC 2782 form with a tag filters by it", "_web._v1.service.beacon.", dns.TypeSRV, dns.RcodeSuccess, []string{"0a000001.addr.beacon.:8080/1"}},
		{"an unknown service is NXDOMAIN", "nope.service.beacon.", dns.TypeA, dns.RcodeNameError, nil},
		{"a tag no instance carries is NXDOMAIN", "v9.web.service.beacon.", dns.TypeA, dns.RcodeNameError, nil},
		{"a service whose instances are all unhealthy is an empty answer", "down.service.beacon.", dns.TypeA, dns.RcodeSuccess, nil},
		{"a type without records is an empty answer", "web.service.beacon.", dns.TypeMX, dns.RcodeSuccess, nil},
		{"an addr name answers the address it encodes", "0a000002.addr.beacon.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.2"}},
		{"an IPv6 addr name answers AAAA", "fd000000000000000000000000000004.addr.beacon.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00::4"}},
		{"a bad addr name is NXDOMAIN", "zz.addr.beacon.", dns.TypeA, dns.RcodeNameError, nil},
		{"other names in the zone are NXDOMAIN", "web.node.beacon.", dns.TypeA, dns.RcodeNameError, nil},
		{"too many labels are NXDOMAIN", "a.v2.web.service.beacon.", dns.TypeA, dns.RcodeNameError, nil},
		{"names outside the zone are refused", "example.com.", dns.TypeA, dns.RcodeRefused, nil},
	}
	for _, tc := range tests {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+" over "+transport, func(t *testing.T) {
				r := e.query(tc.qname, tc.qtype, transport, 0)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if got := addrs(r); !slices.Equal(got, tc.want) {
					t.Errorf("got %v, want %v", got, tc.want)
				}
				for _, rr := range r.Answer {
					if rr.Header().Ttl != 7 {
						t.Errorf("TTL %d, want 7: %s", rr.Header().Ttl, rr)
					}
				}
				if r.Rcode != dns.RcodeRefused && len(r.Answer) == 0 {
					soa, ok := firstSOA(r)
					if !ok || soa.Minttl != 7 || soa.Hdr.Ttl != 7 {
						t.Errorf("negative answer without an SOA of TTL 7: %v", r.Ns)
					}
				}
				if r.Truncated {
					t.Errorf("small answer truncated")
				}
			})
		}
	}
	t.Run("SRV answers carry the addresses of IP targets", func(t *testing.T) {
		r := e.udp("web.service.beacon.", dns.TypeSRV)
		var extra []string
		for _, rr := range r.Extra {
			extra = append(extra, rr.Header().Name+" "+strings.Fields(rr.String())[4])
		}
		sort.Strings(extra)
		want := []string{"0a000001.addr.beacon. 10.0.0.1", "0a000002.addr.beacon. 10.0.0.2", "fd000000000000000000000000000004.addr.beacon. fd00::4"}
		if !slices.Equal(extra, want) {
			t.Errorf("extra %v, want %v", extra, want)
		}
	})
	t.Run("the answer echoes the question as asked", func(t *testing.T) {
		r := e.udp("WeB.service.beacon.", dns.TypeA)
		if len(r.Answer) == 0 || r.Answer[0].Header().Name != "WeB.service.beacon." || !r.Authoritative {
			t.Errorf("answer %v (aa %t)", r.Answer, r.Authoritative)
		}
	})
}

func firstSOA(m *dns.Msg) (*dns.SOA, bool) {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa, true
		}
	}
	return nil, false
}

func TestAnswersAreShuffled(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 10 {
		e.register(fmt.Sprintf("w%d", i), "web", fmt.Sprintf("10.0.0.%d", i+1), 80, 1, "")
	}
	orders := map[string]bool{}
	for range 30 {
		r := e.udp("web.service.beacon.", dns.TypeA)
		var order []string
		for _, rr := range r.Answer {
			order = append(order, rr.(*dns.A).A.String())
		}
		if len(order) != 10 {
			t.Fatalf("%d answers, want 10", len(order))
		}
		orders[strings.Join(order, ",")] = true
	}
	// 30 draws of 10! orders: the chance of fewer than 2 distinct ones is nil.
	if len(orders) < 2 {
		t.Errorf("30 answers all in one order")
	}
}

func TestTruncation(t *testing.T) {
	e := newEnv(t, func(c *beacondns.Config) { c.MaxUDPSize = 1232 })
	const n = 200
	for i := range n {
		e.register(fmt.Sprintf("w%d", i), "big", fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), 9000+i, 1, "")
	}
	tests := []struct {
		name      string
		transport string
		edns      uint16
		qtype     uint16
		truncated bool
		maxSize   int
	}{
		{"a UDP answer too big for 512 bytes keeps what fits and sets TC", "udp", 0, dns.TypeA, true, 512},
		{"a larger EDNS0 buffer fits more, still with TC", "udp", 1232, dns.TypeA, true, 1232},
		{"an EDNS0 size above the cap is held to the cap", "udp", 4096, dns.TypeA, true, 1232},
		{"TCP gets every record", "tcp", 0, dns.TypeA, false, dns.MaxMsgSize},
		{"TCP gets every SRV record", "tcp", 0, dns.TypeSRV, false, dns.MaxMsgSize},
		{"a UDP SRV answer is truncated too", "udp", 0, dns.TypeSRV, true, 512},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.query("big.service.beacon.", tc.qtype, tc.transport, tc.edns)
			if r.Truncated != tc.truncated {
				t.Errorf("TC = %t, want %t", r.Truncated, tc.truncated)
			}
			r.Compress = true // as sent
			b, err := r.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > tc.maxSize {
				t.Errorf("answer of %d bytes, over %d", len(b), tc.maxSize)
			}
			if tc.truncated && (len(r.Answer) == 0 || len(r.Answer) >= n) {
				t.Errorf("%d answers in a truncated reply, want some but not all", len(r.Answer))
			}
			if !tc.truncated && len(r.Answer) != n {
				t.Errorf("%d answers, want all %d", len(r.Answer), n)
			}
			if tc.edns > 0 && r.IsEdns0() == nil {
				t.Errorf("EDNS0 question answered without OPT")
			}
		})
	}
	t.Run("dropping only SRV target addresses is not truncation", func(t *testing.T) {
		f := newEnv(t, nil)
		// 10 SRV records fit in 512 bytes; their 10 addresses do not.
		for i := range 10 {
			f.register(fmt.Sprintf("s%d", i), "some", fmt.Sprintf("10.2.0.%d", i+1), 80, 1, "")
		}
		r := f.udp("some.service.beacon.", dns.TypeSRV)
		if len(r.Answer) != 10 || len(r.Extra) == 10 {
			t.Fatalf("%d SRV answers and %d addresses, want 10 and fewer", len(r.Answer), len(r.Extra))
		}
		if r.Truncated {
			t.Errorf("TC set though every SRV record is there")
		}
	})
}

func TestStaleness(t *testing.T) {
	tests := []struct {
		name        string
		allowStale  bool
		lastContact time.Duration
		rcode       int
	}{
		{"a node in contact with the leader answers", false, 100 * time.Millisecond, dns.RcodeSuccess},
		{"the leader itself answers", false, 0, dns.RcodeSuccess},
		{"a node out of contact longer than max_stale answers SERVFAIL", false, 6 * time.Second, dns.RcodeServerFailure},
		{"a node that never heard from a leader answers SERVFAIL", false, time.Duration(1<<63 - 1), dns.RcodeServerFailure},
		{"with allow_stale a stale node answers", true, time.Hour, dns.RcodeSuccess},
		{"a diverged node answers SERVFAIL", false, 0, dns.RcodeServerFailure},
		{"a diverged node answers SERVFAIL even with allow_stale", true, 0, dns.RcodeServerFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *beacondns.Config) { c.MaxStale, c.AllowStale = 5*time.Second, tc.allowStale })
			e.register("w1", "web", "10.0.0.1", 80, 1, "")
			e.fresh.lc.Store(int64(tc.lastContact))
			e.fresh.diverged.Store(strings.Contains(tc.name, "diverged"))
			for _, transport := range []string{"udp", "tcp"} {
				if r := e.query("web.service.beacon.", dns.TypeA, transport, 0); r.Rcode != tc.rcode {
					t.Errorf("%s: rcode %s, want %s", transport, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
			}
			// Addresses do not depend on the catalog: always answered.
			if r := e.udp("0a000001.addr.beacon.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
				t.Errorf("addr: rcode %s", dns.RcodeToString[r.Rcode])
			}
		})
	}
}

func TestConfig(t *testing.T) {
	t.Run("an address without a port gets 8753", func(t *testing.T) {
		if got := beacondns.WithDefaultPort("127.0.0.1"); got != "127.0.0.1:8753" {
			t.Errorf("got %s", got)
		}
		if got := beacondns.WithDefaultPort("::1"); got != "[::1]:8753" {
			t.Errorf("got %s", got)
		}
		if got := beacondns.WithDefaultPort("127.0.0.1:53"); got != "127.0.0.1:53" {
			t.Errorf("got %s", got)
		}
	})
	bad := map[string]func(*beacondns.Config){
		"no address":          func(c *beacondns.Config) { c.Addr = "" },
		"an empty domain":     func(c *beacondns.Config) { c.Domain = "." },
		"a negative TTL":      func(c *beacondns.Config) { c.TTL = -time.Second },
		"no max stale":        func(c *beacondns.Config) { c.MaxStale = 0 },
		"a tiny UDP size":     func(c *beacondns.Config) { c.MaxUDPSize = 100 },
		"a malformed address": func(c *beacondns.Config) { c.Addr = "1.2.3.4:5:6" },
		"a bad port":          func(c *beacondns.Config) { c.Addr = "127.0.0.1:dns" },
	}
	for name, mutate := range bad {
		t.Run(name+" is refused", func(t *testing.T) {
			cfg := beacondns.DefaultConfig()
			cfg.Addr = "127.0.0.1:0"
			mutate(&cfg)
			if _, err := beacondns.New(cfg, fsm.NewStore(), &fresh{}); err == nil {
				t.Errorf("accepted")
			}
		})
	}
	t.Run("a custom domain is served", func(t *testing.T) {
		e := newEnv(t, func(c *beacondns.Config) { c.Domain = "disco.internal" })
		e.register("w1", "web", "10.0.0.1", 80, 1, "")
		if got := addrs(e.udp("web.service.disco.internal.", dns.TypeA)); !slices.Equal(got, []string{"10.0.0.1"}) {
			t.Errorf("got %v", got)
		}
		if r := e.udp("web.service.beacon.", dns.TypeA); r.Rcode != dns.RcodeRefused {
			t.Errorf("old domain: %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
	})
	t.Run("UDP and TCP share the bound port", func(t *testing.T) {
		e := newEnv(t, nil)
		if _, _, err := net.SplitHostPort(e.srv.Addr()); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", e.srv.Addr())
		if err != nil {
			t.Fatalf("tcp: %v", err)
		}
		c.Close()
	})
}
