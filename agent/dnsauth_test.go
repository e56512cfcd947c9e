package agent_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// dnsQuery asks the agent's DNS server one question over UDP.
func dnsQuery(t *testing.T, n *agenttest.Node, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, n.Agent.DNSAddr())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// waitRcode waits (bounded) until a query for name gets rcode: a restarted
// node answers SERVFAIL until it has heard from its leader.
func waitRcode(t *testing.T, n *agenttest.Node, name string, rcode int) *dns.Msg {
	t.Helper()
	var r *dns.Msg
	agenttest.Eventually(t, 30*time.Second, func() bool {
		r = dnsQuery(t, n, name, dns.TypeA)
		return r.Rcode == rcode
	}, name+" answered "+dns.RcodeToString[rcode])
	return r
}

// TestDNSFollowsTheReadPolicy (docs/security.md, "DNS"): with anonymous
// reads off, DNS refuses every service query, as the HTTP API answers 401,
// unless the agent has a DNS token; it then answers with that token's
// rights, and stops once the token is deleted. With anonymous reads on, DNS
// answers without a token, as before.
func TestDNSFollowsTheReadPolicy(t *testing.T) {
	c := agenttest.New(t, 1, withAuth(false, func(cfg *agent.Config) { cfg.DNSAddr = "127.0.0.1:0" }), withToken(testManagementToken))
	idx := agenttest.Register(t, c.Client(0), "web", "web-1", &client.Registration{Address: "10.0.0.1", Port: 8080})
	c.WaitForIndex(idx)
	n := c.Node(0)

	if r := rawDo(t, nil, http.MethodGet, "http://"+n.HTTPAddr()+"/v1/services/web/instances", "", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("anonymous HTTP read: %d, want 401", r.status)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"web.service.beacon.", dns.TypeA}, {"_web._tcp.service.beacon.", dns.TypeSRV}, {"nothing.service.beacon.", dns.TypeA}} {
		if r := dnsQuery(t, n, q.name, q.qtype); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("anonymous reads off, no DNS token: %s got %s %v, want REFUSED", q.name, dns.RcodeToString[r.Rcode], r.Answer)
		}
	}
	if r := dnsQuery(t, n, "0a000001.addr.beacon.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("addr names carry no catalog data and stay answered: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}

	tok := createToken(t, c.Client(0), client.TokenRequest{Policy: "read", Description: "dns"})
	c.Stop(0)
	n.Config.DNSToken = tok.Secret
	c.Restart(0)
	c.WaitForLeader()
	if r := waitRcode(t, n, "web.service.beacon.", dns.RcodeSuccess); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.1" {
		t.Fatalf("with a DNS token: %v", r.Answer)
	}
	if r := dnsQuery(t, n, "nothing.service.beacon.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("with a DNS token, an unknown service: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}

	agenttest.Retry503(t, "delete the DNS token", func() error {
		_, err := c.Client(0).DeleteToken(context.Background(), tok.Accessor)
		return err
	})
	waitRcode(t, n, "web.service.beacon.", dns.RcodeRefused)

	c.Stop(0)
	n.Config.DNSToken, n.Config.AnonymousRead = "", true
	c.Restart(0)
	c.WaitForLeader()
	waitRcode(t, n, "web.service.beacon.", dns.RcodeSuccess)
}
