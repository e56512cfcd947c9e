package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// loopbackTarget is an HTTP server on 127.0.0.1 standing for what listens
// only on a server's loopback (another agent's API, a local admin port):
// it counts the requests that reach it.
type loopbackTarget struct {
	hits atomic.Int64
	srv  *httptest.Server
	port string
}

func newLoopbackTarget(t *testing.T) *loopbackTarget {
	lt := &loopbackTarget{}
	lt.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lt.hits.Add(1)
		w.Write([]byte("loopback-only page"))
	}))
	t.Cleanup(lt.srv.Close)
	_, lt.port, _ = net.SplitHostPort(lt.srv.Listener.Addr().String())
	return lt
}

// checkOf waits until the check id (any of the service's when "") has a
// result (an output), and returns it.
func checkOf(t *testing.T, cl *client.Client, service, id string) client.Check {
	t.Helper()
	var got client.Check
	agenttest.Eventually(t, 30*time.Second, func() bool {
		cs, _, err := cl.Checks(context.Background(), client.CheckFilter{Service: service}, nil)
		if err != nil {
			return false
		}
		for _, c := range cs {
			if (id == "" || c.ID == id) && c.Output != "" {
				got = c
				return true
			}
		}
		return false
	}, "a result of check "+id)
	return got
}

// TestTenantChecksCannotProbeTheServersOwnHost (docs/security.md,
// "Health-check targets"): with auth on, a write token cannot aim a health
// check at the loopback of the server that runs it, through the Beacon API
// or the Consul API, nor send another method than GET, HEAD or OPTIONS; the
// management token (or --check-allow-loopback) can. Nothing reaches the
// loopback target of a refused check.
func TestTenantChecksCannotProbeTheServersOwnHost(t *testing.T) {
	lt := newLoopbackTarget(t)
	c := agenttest.New(t, 1, withAuth(true), withToken(testManagementToken))
	tenant := createToken(t, c.Client(0), client.TokenRequest{Policy: "write", Prefixes: []string{"api-"}, Description: "tenant"}).Secret
	base := "http://" + c.Node(0).HTTPAddr()
	put := func(tok, path, body string) rawResult {
		return retryRaw503(t, func() rawResult { return rawDo(t, nil, http.MethodPut, base+path, tok, body) })
	}
	native := func(addr, check string) string {
		return fmt.Sprintf(`{"address":%q,"port":%s,"checks":[%s]}`, addr, lt.port, check)
	}
	httpCheck := func(host string) string {
		return fmt.Sprintf(`{"http":"http://%s/","interval":"200ms"}`, net.JoinHostPort(host, lt.port))
	}

	refused := []struct{ name, path, body, says string }{
		{"a loopback instance with an HTTP check", "/v1/services/api-a/instances/i", native("127.0.0.1", httpCheck("127.0.0.1")), "--check-allow-loopback"},
		{"a loopback instance with a TCP check", "/v1/services/api-a/instances/i", native("127.0.0.1", `{"tcp":"127.0.0.1:`+lt.port+`","interval":"1s"}`), "--check-allow-loopback"},
		{"another loopback address", "/v1/services/api-a/instances/i", native("127.0.0.2", httpCheck("127.0.0.2")), "loopback"},
		{"IPv4-mapped loopback", "/v1/services/api-a/instances/i", native("::ffff:127.0.0.1", httpCheck("::ffff:127.0.0.1")), "loopback"},
		{"the name localhost", "/v1/services/api-a/instances/i", native("localhost", httpCheck("localhost")), "localhost"},
		{"a POST check", "/v1/services/api-a/instances/i", native("198.51.100.10", `{"http":"http://198.51.100.10:`+lt.port+`/v1/cluster/leave","method":"POST","interval":"1s"}`), "GET, HEAD or OPTIONS"},
		{"Consul: a loopback service", "/v1/agent/service/register",
			`{"Name":"api-c","Address":"127.0.0.1","Port":` + lt.port + `,"Check":{"HTTP":"http://127.0.0.1:` + lt.port + `/","Interval":"1s"}}`, "--check-allow-loopback"},
		{"Consul: no address (this agent's own)", "/v1/agent/service/register",
			`{"Name":"api-c","Port":` + lt.port + `,"Check":{"TCP":"127.0.0.1:` + lt.port + `","Interval":"1s"}}`, "--check-allow-loopback"},
		{"Consul: a PUT check", "/v1/agent/service/register",
			`{"Name":"api-c","Address":"198.51.100.10","Port":80,"Check":{"HTTP":"http://198.51.100.10:80/","Method":"PUT","Interval":"1s"}}`, "GET, HEAD or OPTIONS"},
	}
	for _, tc := range refused {
		t.Run("a write token is refused: "+tc.name, func(t *testing.T) {
			r := put(tenant, tc.path, tc.body)
			if r.status != http.StatusForbidden || r.err.Code != "permission_denied" || !strings.Contains(r.err.Error, tc.says) {
				t.Fatalf("got %d %+v, want 403 permission_denied saying %q", r.status, r.err, tc.says)
			}
		})
	}
	t.Run("a write token may register a loopback instance without active checks", func(t *testing.T) {
		if r := put(tenant, "/v1/services/api-t/instances/i", native("127.0.0.1", `{"ttl":"30s"}`)); r.status != http.StatusOK {
			t.Fatalf("got %d %+v", r.status, r.err)
		}
	})
	t.Run("the management token may aim checks at loopback", func(t *testing.T) {
		if r := put(testManagementToken, "/v1/services/api-m/instances/i", native("127.0.0.1", httpCheck("127.0.0.1"))); r.status != http.StatusOK {
			t.Fatalf("got %d %+v", r.status, r.err)
		}
		if ch := checkOf(t, c.Client(0), "api-m", "api-m:i:http"); ch.Status != "passing" {
			t.Fatalf("management check: %s %q", ch.Status, ch.Output)
		}
		if r := put(testManagementToken, "/v1/agent/service/register",
			`{"Name":"api-cm","ID":"cm","Address":"127.0.0.1","Port":`+lt.port+`,"Check":{"HTTP":"http://127.0.0.1:`+lt.port+`/","Interval":"1s"}}`); r.status != http.StatusOK {
			t.Fatalf("Consul path: got %d %+v", r.status, r.err)
		}
		if ch := checkOf(t, c.Client(0), "api-cm", ""); ch.Status != "passing" {
			t.Fatalf("Consul management check: %s %q", ch.Status, ch.Output)
		}
	})
	t.Run("a name that resolves to loopback is refused when the check runs", func(t *testing.T) {
		host, _ := os.Hostname()
		addrs, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
		if err != nil || len(addrs) == 0 || strings.HasSuffix(strings.ToLower(host), "localhost") {
			t.Skipf("this host's name %q does not resolve (%v)", host, err)
		}
		for _, a := range addrs {
			if !a.Unmap().IsLoopback() {
				t.Skipf("this host's name %q resolves to %v, not only to loopback", host, addrs)
			}
		}
		// A target of its own: the management check above probes lt.
		lt := newLoopbackTarget(t)
		body := fmt.Sprintf(`{"address":%q,"port":%s,"checks":[{"http":"http://%s/","interval":"200ms"}]}`, host, lt.port, net.JoinHostPort(host, lt.port))
		if r := put(tenant, "/v1/services/api-n/instances/i", body); r.status != http.StatusOK {
			t.Fatalf("got %d %+v", r.status, r.err)
		}
		ch := checkOf(t, c.Client(0), "api-n", "api-n:i:http")
		if ch.Status != "critical" || !strings.Contains(ch.Output, "this server's own") {
			t.Fatalf("got %s %q, want critical naming the rule", ch.Status, ch.Output)
		}
		if n := lt.hits.Load(); n != 0 {
			t.Fatalf("the loopback target was reached %d times", n)
		}
	})
	t.Run("no refused registration reached the catalog", func(t *testing.T) {
		for _, s := range []string{"api-a", "api-c"} {
			insts, _, err := c.Client(0).Instances(context.Background(), s, nil)
			if err != nil && !strings.Contains(err.Error(), "404") {
				t.Fatal(err)
			}
			if len(insts) != 0 {
				t.Fatalf("%s: %+v", s, insts)
			}
		}
	})
}

// TestCheckAllowLoopbackLetsWriteTokensProbeLoopback: --check-allow-loopback
// is the opt-in of a single-host setup with auth on (for loopback; the
// method rule stays).
func TestCheckAllowLoopbackLetsWriteTokensProbeLoopback(t *testing.T) {
	lt := newLoopbackTarget(t)
	c := agenttest.New(t, 1, withAuth(true, func(c *agent.Config) { c.CheckAllowLoopback = true }), withToken(testManagementToken))
	tenant := createToken(t, c.Client(0), client.TokenRequest{Policy: "write", Prefixes: []string{"api-"}}).Secret
	body := fmt.Sprintf(`{"address":"127.0.0.1","port":%s,"checks":[{"http":"http://127.0.0.1:%s/","interval":"200ms"}]}`, lt.port, lt.port)
	r := retryRaw503(t, func() rawResult {
		return rawDo(t, nil, http.MethodPut, "http://"+c.Node(0).HTTPAddr()+"/v1/services/api-a/instances/i", tenant, body)
	})
	if r.status != http.StatusOK {
		t.Fatalf("got %d %+v", r.status, r.err)
	}
	if ch := checkOf(t, c.Client(0), "api-a", "api-a:i:http"); ch.Status != "passing" {
		t.Fatalf("got %s %q", ch.Status, ch.Output)
	}
	if lt.hits.Load() == 0 {
		t.Fatal("the target was never probed")
	}
}
