package lb

import (
	"net/netip"
	"strings"
	"testing"
)

// TestDenyListIsCheckedOnTheResolvedUpstreamAddress registers instances in a
// denied range, by IP and by a host name that resolves into it, and sees
// the balancer refuse to connect to them.
func TestDenyListIsCheckedOnTheResolvedUpstreamAddress(t *testing.T) {
	w := startBackend(t, "w")
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	cases := []struct {
		name    string
		address string
	}{
		{"an instance registered by IP in the range", "127.0.0.1"},
		{"an instance whose host name resolves into the range", "localhost"},
	}
	for _, tc := range cases {
		t.Run(tc.name+" gets no traffic", func(t *testing.T) {
			cat := newMemCatalog()
			rec := w.backend()
			rec.Address = tc.address
			idx := cat.Set("web", rec)
			b, url := startBalancer(t, cat, func(c *Config) { c.DenyCIDRs = loopback; c.MaxRetries = 0 })
			waitTable(t, b, "web", idx)
			before := w.hits.Load()
			code, body, _ := get(t, newClient(t), url+"/web/")
			if code != 502 || !strings.Contains(body, "deny list") {
				t.Fatalf("got %d %q, want 502 naming the deny list", code, body)
			}
			if w.hits.Load() != before {
				t.Fatal("the denied instance was reached")
			}
		})
	}
	t.Run("the default deny list denies link-local", func(t *testing.T) {
		d := DefaultConfig().DenyCIDRs
		ctl := denyControl(d)
		if err := ctl("tcp", "127.0.0.1:80", nil); err != nil {
			t.Fatalf("loopback denied: %v", err)
		}
		for _, a := range []string{"169.254.169.254:80", "[fe80::1]:80", "[::ffff:169.254.169.254]:80"} {
			if err := ctl("tcp", a, nil); err == nil {
				t.Errorf("%s allowed", a)
			}
		}
	})
}
