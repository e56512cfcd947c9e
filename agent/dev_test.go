package agent

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// A dev agent binds loopback unless told otherwise: an --http-addr (or
// --dns-addr) naming another host is kept, as `docker run -p ... agent --dev
// --http-addr 0.0.0.0:8750` needs (it was rewritten to 127.0.0.1:8750, so
// the published port answered nothing). Raft and gossip stay on loopback.
func TestDevKeepsAnAddressBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		http, wantHTTP string
		beyond         bool
	}{
		{"", "127.0.0.1:8750", false},
		{"127.0.0.1:8750", "127.0.0.1:8750", false}, // the default
		{"127.0.0.1:18999", "127.0.0.1:18999", false},
		{"localhost:9000", "127.0.0.1:9000", false},
		{"[::1]:9000", "127.0.0.1:9000", false},
		{"0.0.0.0:8750", "0.0.0.0:8750", true},
		{"10.1.2.3:8750", "10.1.2.3:8750", true},
		{"[::]:8750", "[::]:8750", true},
		{":8750", ":8750", true},
		{"0.0.0.0", "0.0.0.0:8750", true},
	} {
		c := DefaultConfig()
		c.Dev = true
		c.HTTPAddr = tc.http
		c.RaftAddr, c.GossipAddr = "0.0.0.0:8751", "0.0.0.0:8752"
		exposed := c.applyDev()
		if c.HTTPAddr != tc.wantHTTP {
			t.Errorf("--dev --http-addr %q: binds %q, want %q", tc.http, c.HTTPAddr, tc.wantHTTP)
		}
		if got := len(exposed) > 0; got != tc.beyond {
			t.Errorf("--dev --http-addr %q: reported beyond loopback %v (%q), want %v", tc.http, got, exposed, tc.beyond)
		}
		if c.RaftAddr != "127.0.0.1:8751" || c.GossipAddr != "127.0.0.1:8752" {
			t.Errorf("--dev: raft %q and gossip %q, want them on 127.0.0.1", c.RaftAddr, c.GossipAddr)
		}
	}

	c := DefaultConfig()
	c.Dev, c.DNSAddr = true, "0.0.0.0:8753"
	if exposed := c.applyDev(); c.DNSAddr != "0.0.0.0:8753" || len(exposed) != 1 || exposed[0] != "dns=0.0.0.0:8753" {
		t.Errorf("--dev --dns-addr 0.0.0.0:8753: binds %q, reported %q", c.DNSAddr, exposed)
	}
	c = DefaultConfig()
	c.Dev, c.DNSAddr = true, "127.0.0.1:8753"
	if exposed := c.applyDev(); c.DNSAddr != "127.0.0.1:8753" || len(exposed) != 0 {
		t.Errorf("--dev --dns-addr 127.0.0.1:8753: binds %q, reported %q", c.DNSAddr, exposed)
	}
}

// The dev agent that listens beyond loopback says so on its log (stderr),
// and that it has no authentication; one on loopback says nothing of it.
func TestDevBeyondLoopbackWarns(t *testing.T) {
	newDev := func(httpAddr, token string) string {
		var buf bytes.Buffer
		c := DefaultConfig()
		c.Dev, c.HTTPAddr, c.ManagementToken = true, httpAddr, token
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
		if _, err := New(c); err != nil {
			t.Fatalf("New(--dev --http-addr %s): %v", httpAddr, err)
		}
		return buf.String()
	}
	out := newDev("0.0.0.0:8750", "")
	for _, want := range []string{"[WARN]", "beyond loopback", "no authentication", "http=0.0.0.0:8750"} {
		if !strings.Contains(out, want) {
			t.Errorf("--dev --http-addr 0.0.0.0:8750 logged %q, want it to contain %q", out, want)
		}
	}
	if out := newDev("0.0.0.0:8750", "a-management-token-of-some-length-0123456789"); !strings.Contains(out, "beyond loopback") || strings.Contains(out, "no authentication") {
		t.Errorf("--dev --http-addr 0.0.0.0:8750 with a management token logged %q", out)
	}
	if out := newDev("127.0.0.1:8750", ""); strings.Contains(out, "beyond loopback") {
		t.Errorf("--dev on loopback logged %q", out)
	}
}

// TestAnEmptyHostBindsAndAcceptsEveryInterface: --http-addr :8750 binds
// every interface, as 0.0.0.0:8750 does, so a request's Host may name any
// of their addresses (auth off: the DNS-rebinding rule).
func TestAnEmptyHostBindsAndAcceptsEveryInterface(t *testing.T) {
	ifas := interfaceAddrs()
	if len(ifas) == 0 {
		t.Skip("no interface addresses here")
	}
	for _, addr := range []string{":8750", "0.0.0.0:8750", "[::]:8750"} {
		own := (&Config{Node: "n1", HTTPAddr: addr}).ownHosts()
		for _, ia := range ifas {
			if !slices.Contains(own, ia) {
				t.Errorf("--http-addr %s: %s is not among the agent's own hosts %v", addr, ia, own)
			}
		}
	}
}
