package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// TestChecksProbeOnlyTheirInstanceUnlessAllowed: a check registered without
// the management token connects only to its instance's address (a host
// name resolved at probe time) or an allowed range; the refusal happens
// before connecting, so the target never sees the probe.
func TestChecksProbeOnlyTheirInstanceUnlessAllowed(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("secret page"))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	target := "http://127.0.0.1:" + port + "/metrics"
	p := NewScopedProber(nil, nil, 4096)
	allowing := NewScopedProber(nil, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, 4096)
	cases := []struct {
		name     string
		p        *Prober
		instance string
		any      bool
		pass     bool
	}{
		{"another host's address is refused", p, "127.0.0.2", false, false},
		{"an instance without address gets nothing", p, "", false, false},
		{"an unresolvable instance name gets nothing", p, "no-such-host.invalid", false, false},
		{"the instance's own address is probed", p, "127.0.0.1", false, true},
		{"an instance name that resolves to the target is probed", p, "localhost", false, true},
		{"a management check (AnyTarget) probes any host", p, "127.0.0.2", true, true},
		{"an allowed range is probed", allowing, "127.0.0.2", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			c := httpCheck(target)
			c.AnyTarget = tc.any
			r := tc.p.ProbeFor(context.Background(), c, tc.instance)
			if tc.pass != (r.Status == fsm.Passing) {
				t.Fatalf("got %s %q", r.Status, r.Output)
			}
			if !tc.pass && hits.Load() != before {
				t.Fatalf("the refused target was reached: %q", r.Output)
			}
			if !tc.pass && tc.instance == "127.0.0.2" && !strings.Contains(r.Output, "not the instance's address") {
				t.Fatalf("output %q does not say why", r.Output)
			}
		})
	}
	t.Run("a TCP check to another host is refused too", func(t *testing.T) {
		c := &fsm.Check{Target: srv.Listener.Addr().String(), CheckDefinition: &fsm.CheckDefinition{Type: fsm.CheckTCP, Timeout: int64(time.Second)}}
		if r := p.ProbeFor(context.Background(), c, "10.0.0.1"); r.Status != fsm.Critical {
			t.Fatalf("got %s %q", r.Status, r.Output)
		}
	})
}

// TestChecksWithoutTheManagementTokenNeverProbeThisHost: with the host
// rule on (auth on: Config.LocalCIDRs, Config.SafeMethodsOnly), a check not
// registered with the management token connects to no address of the host
// running it, even when its instance is registered there or at a name that
// resolves there, and sends no method but GET, HEAD or OPTIONS; the
// refusal happens before connecting.
func TestChecksWithoutTheManagementTokenNeverProbeThisHost(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("loopback-only page"))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	local := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("0.0.0.0/32")}
	p := NewScopedProber(nil, nil, 4096).restrict(local, true)
	allowing := NewScopedProber(nil, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, 4096).restrict(local, true)
	cases := []struct {
		name     string
		p        *Prober
		target   string
		method   string
		instance string
		any      bool
		pass     bool
		says     string
	}{
		{"an instance at 127.0.0.1 is refused", p, "127.0.0.1", "GET", "127.0.0.1", false, false, "this server's own"},
		{"a name that resolves to loopback is refused", p, "localhost", "GET", "localhost", false, false, "this server's own"},
		{"a POST is refused before connecting", p, "127.0.0.1", "POST", "127.0.0.1", false, false, "method POST is refused"},
		{"a management check (AnyTarget) probes this host", p, "127.0.0.1", "POST", "127.0.0.1", true, true, ""},
		{"an allowed range is probed", allowing, "127.0.0.1", "HEAD", "127.0.0.1", false, true, ""},
		{"without the rule, the instance's loopback address is probed", NewScopedProber(nil, nil, 4096), "127.0.0.1", "PUT", "127.0.0.1", false, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			c := httpCheck("http://" + net.JoinHostPort(tc.target, port) + "/")
			c.Method, c.AnyTarget = tc.method, tc.any
			r := tc.p.ProbeFor(context.Background(), c, tc.instance)
			if tc.pass != (r.Status == fsm.Passing) {
				t.Fatalf("got %s %q", r.Status, r.Output)
			}
			if !tc.pass && (hits.Load() != before || !strings.Contains(r.Output, tc.says)) {
				t.Fatalf("refused probe: %d hits, output %q (want it to say %q)", hits.Load()-before, r.Output, tc.says)
			}
		})
	}
	t.Run("a TCP check to this host is refused too", func(t *testing.T) {
		c := &fsm.Check{Target: srv.Listener.Addr().String(), CheckDefinition: &fsm.CheckDefinition{Type: fsm.CheckTCP, Timeout: int64(time.Second)}}
		if r := p.ProbeFor(context.Background(), c, "127.0.0.1"); r.Status != fsm.Critical || !strings.Contains(r.Output, "this server's own") {
			t.Fatalf("got %s %q", r.Status, r.Output)
		}
	})
}

// TestHTTPCheckOutputIsAShortEscapedExcerpt: the output keeps the status
// line and at most MaxHTTPExcerpt bytes of the body, with control
// characters (terminal escapes, newlines) escaped.
func TestHTTPCheckOutputIsAShortEscapedExcerpt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("\x1b[31mred\x07\nline2\u009b" + strings.Repeat("x", 8192)))
	}))
	defer srv.Close()
	r := NewProber(nil, 4096).Probe(context.Background(), httpCheck(srv.URL+"/"))
	if r.Status != fsm.Passing || !strings.Contains(r.Output, "200 OK") {
		t.Fatalf("got %s %q", r.Status, r.Output)
	}
	if !strings.Contains(r.Output, `\x1b[31mred\x07\x0aline2\u009b`) {
		t.Fatalf("control characters not escaped: %q", r.Output)
	}
	if strings.ContainsAny(r.Output, "\x1b\x07\n\u009b") {
		t.Fatalf("raw control characters in %q", r.Output)
	}
	if n := strings.Count(r.Output, "x"); n > MaxHTTPExcerpt {
		t.Fatalf("%d body bytes kept, want at most %d", n, MaxHTTPExcerpt)
	}
}

func TestEscapeControl(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, ünïcode ✓": "plain text, ünïcode ✓",
		"a\tb\r\nc":             `a\x09b\x0d\x0ac`,
		"\x1b]0;title\x07":      `\x1b]0;title\x07`,
		"\u0085\u009b\x7f":      `\u0085\u009b\x7f`,
		"bad \xff utf8":         `bad \xff utf8`,
	} {
		if got := fsm.EscapeControl(in); got != want {
			t.Errorf("EscapeControl(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEscapedOutputIsNeverCutInsideAnEscape: output is escaped, then held
// to the cap; the cut falls between two characters of the original, so it
// never leaves half an escape ("\x0") or half a character.
func TestEscapedOutputIsNeverCutInsideAnEscape(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"ab\ncd", 4, `ab`},
		{"ab\ncd", 6, `ab\x0a`},
		{"a\u0085", 6, `a`},
		{"é\xffé", 5, `é`},
		{"é\xffé", 6, `é\xff`},
		{strings.Repeat("é", 3), 5, "éé"},
		{"fits", 4, "fits"},
	} {
		if got := fsm.EscapeControlMax(tc.in, tc.n); got != tc.want {
			t.Errorf("EscapeControlMax(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
