package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/lb/registry"
)

// hostileCase is one hostile request and the clean refusal it must get.
type hostileCase struct {
	name    string
	method  string
	path    string
	token   string // "" none, else the token sent
	body    string
	headers map[string]string // Content-Type defaults to application/json with a body
	host    string            // Host header, when set
	status  int
	code    string
}

func (hc hostileCase) send(t *testing.T, base string) rawResult {
	t.Helper()
	var rd io.Reader
	if hc.body != "" {
		rd = strings.NewReader(hc.body)
	}
	req, err := http.NewRequest(hc.method, base+hc.path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if hc.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hc.headers {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	if hc.token != "" {
		req.Header.Set("Authorization", "Bearer "+hc.token)
	}
	if hc.host != "" {
		req.Host = hc.host
	}
	cl := &http.Client{Timeout: 20 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", hc.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := rawResult{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &r.err); err != nil {
			t.Fatalf("%s: status %d with a body that is not a JSON error: %q", hc.name, resp.StatusCode, b)
		}
	}
	return r
}

// catalogState is what a hostile request must not change: every instance
// with its modify index and checks, and the services list's index.
func catalogState(t *testing.T, cl *client.Client) string {
	t.Helper()
	ctx := context.Background()
	list, meta, err := cl.Services(ctx, &client.QueryOptions{Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "index %d\n", meta.Index)
	for _, s := range list.Services {
		insts, _, err := cl.Instances(ctx, s.Name, &client.QueryOptions{Consistent: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range insts {
			fmt.Fprintf(&sb, "%s/%s %s:%d meta=%v trusted=%v modify=%d\n", s.Name, i.ID, i.Address, i.Port, i.Meta, i.Trusted, i.ModifyIndex)
		}
	}
	return sb.String()
}

func regBody(t *testing.T, r client.Registration) string {
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHostileRequestsToAThreeNodeClusterChangeNothing sends the hostile
// inputs of issue 15 to every node of a three-node cluster, with tokens and
// without: each gets a clean 4xx with a JSON error, the catalog does not
// change, and no agent is stopped by a cross-site request.
func TestHostileRequestsToAThreeNodeClusterChangeNothing(t *testing.T) {
	for _, auth := range []bool{true, false} {
		t.Run(fmt.Sprintf("auth=%v", auth), func(t *testing.T) {
			opts := []agenttest.Option{agenttest.WithConfig(func(c *agent.Config) {
				if auth {
					c.ManagementToken, c.ClusterSecret = testManagementToken, testClusterSecret
					c.AnonymousRead = true
				}
			})}
			if auth {
				opts = append(opts, withToken(testManagementToken))
			}
			c := agenttest.New(t, 3, opts...)
			c.WaitForVoters(3)
			writeAPI, mgmt := "", ""
			if auth {
				writeAPI = createToken(t, c.Client(0), client.TokenRequest{Policy: "write", Prefixes: []string{"api"}, Description: "api deployer"}).Secret
				mgmt = testManagementToken
			}
			agenttest.Register(t, c.Client(0), "web", "web-1", &client.Registration{Address: "10.0.0.1", Port: 80})
			idx := agenttest.Register(t, c.Client(0), "api", "api-1", &client.Registration{Address: "10.0.0.2", Port: 80, Meta: map[string]string{"route_prefix": "/api/v2"}})
			c.WaitForIndex(idx)
			agentPort := c.Node(1).HTTPAddr()
			// With the management token the prefix is refused for shadowing
			// web (400); without auth nobody may leave /api at all (403).
			shadowStatus, shadowCode := 400, "invalid"
			if !auth {
				shadowStatus, shadowCode = 403, "permission_denied"
			}

			cases := []hostileCase{
				{name: "a route prefix outside /api from a writer of api", method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: regBody(t, client.Registration{Address: "10.0.0.66", Port: 80, Meta: map[string]string{"route_prefix": "/web"}}), status: 403, code: "permission_denied"},
				{name: "a route prefix of / ", method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: regBody(t, client.Registration{Address: "10.0.0.66", Port: 80, Meta: map[string]string{"route_prefix": "/"}}), status: 400, code: "invalid"},
				{name: "a route prefix shadowing another service, even from the management token", method: "PUT", path: "/v1/services/api/instances/api-evil", token: mgmt,
					body: regBody(t, client.Registration{Address: "10.0.0.66", Port: 80, Meta: map[string]string{"route_prefix": "/web/login"}}), status: shadowStatus, code: shadowCode},
				{name: "a check aimed at an agent's metrics", method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: regBody(t, client.Registration{Address: "10.0.0.66", Port: 80, Checks: []client.CheckDefinition{{HTTP: "http://" + agentPort + "/metrics"}}}), status: 403, code: "permission_denied"},
				{name: "a TCP check aimed at another host", method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: regBody(t, client.Registration{Address: "10.0.0.66", Port: 80, Checks: []client.CheckDefinition{{TCP: "10.0.0.1:22"}}}), status: 403, code: "permission_denied"},
				{name: "a gRPC check aimed at another host", method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: regBody(t, client.Registration{Address: "10.0.0.66", Port: 80, Checks: []client.CheckDefinition{{GRPC: "127.0.0.1:8751"}}}), status: 403, code: "permission_denied"},
			}
			for _, addr := range []string{"0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "::ffff:0.0.0.0"} {
				cases = append(cases, hostileCase{name: "instance address " + addr, method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: regBody(t, client.Registration{Address: addr, Port: 80}), status: 400, code: "invalid"})
			}
			good := regBody(t, client.Registration{Address: "10.0.0.66", Port: 80})
			for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "not a type"} {
				cases = append(cases, hostileCase{name: "a body sent as " + ct, method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: good, headers: map[string]string{"Content-Type": ct}, status: 415, code: "unsupported_media_type"})
			}
			cases = append(cases,
				hostileCase{name: "a body without Content-Type", method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: good, headers: map[string]string{"Content-Type": ""}, status: 415, code: "unsupported_media_type"},
				hostileCase{name: "a TTL report as text/plain", method: "PUT", path: "/v1/checks/api:api-1:ttl/fail", token: writeAPI,
					body: `{"output":"x"}`, headers: map[string]string{"Content-Type": "text/plain"}, status: 415, code: "unsupported_media_type"},
				hostileCase{name: "a cross-site leave (text/plain simple request)", method: "POST", path: "/v1/cluster/leave", token: mgmt,
					body: "{}", headers: map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, status: 403, code: "cross_site"},
				hostileCase{name: "a cross-site leave without body", method: "POST", path: "/v1/cluster/leave", token: mgmt,
					headers: map[string]string{"Origin": "http://evil.example"}, status: 403, code: "cross_site"},
				hostileCase{name: "Sec-Fetch-Site cross-site", method: "POST", path: "/v1/cluster/leave", token: mgmt,
					headers: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: 403, code: "cross_site"},
				hostileCase{name: "Sec-Fetch-Site same-site", method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: good, headers: map[string]string{"Sec-Fetch-Site": "same-site"}, status: 403, code: "cross_site"},
				hostileCase{name: "a null Origin", method: "DELETE", path: "/v1/services/api/instances/api-1", token: writeAPI,
					headers: map[string]string{"Origin": "null"}, status: 403, code: "cross_site"},
				hostileCase{name: "a cross-site read", method: "GET", path: "/v1/services", token: mgmt,
					headers: map[string]string{"Origin": "http://evil.example"}, status: 403, code: "cross_site"},
				hostileCase{name: "a Content-Length above the limit", method: "PUT", path: "/v1/services/api/instances/api-evil", token: writeAPI,
					body: good, headers: map[string]string{"Content-Length": "104857600"}, status: 413, code: "too_large"},
			)
			if !auth {
				cases = append(cases,
					hostileCase{name: "a rebinding Host on a write", method: "POST", path: "/v1/cluster/leave", host: "evil.example:8750", status: 403, code: "host_not_allowed"},
					hostileCase{name: "a rebinding Host on a read", method: "GET", path: "/v1/services", host: "attacker.example", status: 403, code: "host_not_allowed"},
				)
			}
			before := catalogState(t, c.Client(0))
			for i, n := range c.Nodes() {
				base := "http://" + n.HTTPAddr()
				for _, hc := range cases {
					if hc.name == "a Content-Length above the limit" {
						r := oversized(t, n.HTTPAddr(), hc)
						if r != 413 {
							t.Errorf("node %d: %s: status %d, want 413 at once", i, hc.name, r)
						}
						continue
					}
					r := retryRaw503(t, func() rawResult { return hc.send(t, base) })
					if r.status != hc.status || r.err.Code != hc.code {
						t.Errorf("node %d: %s: got %d %q (%s), want %d %s", i, hc.name, r.status, r.err.Code, r.err.Error, hc.status, hc.code)
					}
				}
			}
			if after := catalogState(t, c.Client(0)); after != before {
				t.Fatalf("the catalog changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			for i, n := range c.Nodes() {
				if !n.Running() {
					t.Fatalf("node %d stopped", i)
				}
				if _, err := c.Client(i).Status(context.Background()); err != nil {
					t.Fatalf("node %d no longer answers: %v", i, err)
				}
			}
			t.Run("the Go client still works on every node", func(t *testing.T) {
				for i := range c.Nodes() {
					insts, _, err := c.Client(i).Instances(context.Background(), "web", &client.QueryOptions{Consistent: true})
					if err != nil || len(insts) != 1 {
						t.Fatalf("node %d: %v %+v", i, err, insts)
					}
				}
			})
			t.Run("an identical re-registration writes nothing and wakes no watcher", func(t *testing.T) {
				cl := c.Client(2)
				ctx := context.Background()
				reg := &client.Registration{Address: "10.0.0.1", Port: 80}
				inst, meta, err := cl.Instance(ctx, "web", "web-1", &client.QueryOptions{Consistent: true})
				if err != nil {
					t.Fatal(err)
				}
				woke := make(chan uint64, 1)
				go func() {
					_, m, err := c.Client(0).Instances(ctx, "web", &client.QueryOptions{WaitIndex: meta.Index, WaitTime: 2 * time.Second})
					if err != nil {
						woke <- 0
						return
					}
					woke <- m.Index
				}()
				idx := agenttest.Register(t, cl, "web", "web-1", reg)
				after, _, err := cl.Instance(ctx, "web", "web-1", &client.QueryOptions{Consistent: true})
				if err != nil {
					t.Fatal(err)
				}
				if after.ModifyIndex != inst.ModifyIndex {
					t.Fatalf("modify_index %d -> %d", inst.ModifyIndex, after.ModifyIndex)
				}
				if idx < inst.ModifyIndex {
					t.Fatalf("the answer's index %d is older than the instance's %d", idx, inst.ModifyIndex)
				}
				if got := <-woke; got != meta.Index {
					t.Fatalf("the watcher of web woke at index %d (was %d)", got, meta.Index)
				}
			})
		})
	}
}

// oversized sends headers announcing a body far above the limit, sends no
// body, and returns the status, which must come at once (not a 408 after
// the read timeout).
func oversized(t *testing.T, addr string, hc hostileCase) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	auth := ""
	if hc.token != "" {
		auth = "Authorization: Bearer " + hc.token + "\r\n"
	}
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%sContent-Length: 104857600\r\n\r\n", hc.method, hc.path, auth)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // the read timeout is 30 s
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: no answer within 10s: %v", hc.name, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAPICapsConnectionsPerClient holds the cap's worth of idle keep-alive
// connections to one agent and sees one more answered 429, while the
// agent keeps serving.
func TestAPICapsConnectionsPerClient(t *testing.T) {
	c := agenttest.New(t, 1, agenttest.WithConfig(func(c *agent.Config) { c.HTTPMaxConnsPerClient = 8 }))
	addr := c.Node(0).HTTPAddr()
	var conns []net.Conn
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	get := func(cn net.Conn) int {
		_ = cn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(cn, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(cn), nil)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := 0; i < 9; i++ {
		cn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cn)
		want := 200
		if i == 8 {
			want = 429
		}
		if got := get(cn); got != want {
			t.Fatalf("connection %d: %d, want %d", i+1, got, want)
		}
	}
	conns[0].Close()
	agenttest.Eventually(t, 10*time.Second, func() bool {
		cn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return false
		}
		defer cn.Close()
		return get(cn) == 200
	}, "a slot freed by a closed connection to be usable")
}

// TestLoadBalancerWithServiceFlagServesAndRefusesAgentPorts runs `beacon
// lb --service web` (which never served: Start deadlocked) against a
// three-node cluster, and registers (with the management token's
// privileges, auth being off here and the lab flag not needed for a plain
// address) an instance at an agent's API port: the balancer refuses to dial
// it.
func TestLoadBalancerWithServiceFlagServesAndRefusesAgentPorts(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "web") }), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	defer backend.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	agenttest.Register(t, c.Client(0), "web", "web-1", &client.Registration{Address: "127.0.0.1", Port: port})
	_, agentPort, _ := net.SplitHostPort(c.Node(1).HTTPAddr())
	ap, _ := strconv.Atoi(agentPort)
	idx := agenttest.Register(t, c.Client(0), "agent", "agent-1", &client.Registration{Address: "127.0.0.1", Port: ap})
	c.WaitForIndex(idx)
	var addrs []string
	for i := range c.Nodes() {
		addrs = append(addrs, c.Node(i).HTTPAddr())
	}
	l := startLB(t, "lb", addrs, func(cfg *registry.Config) { cfg.LB.Services = []string{"web", "agent"} })
	agenttest.Eventually(t, 30*time.Second, func() bool {
		code, body := httpGet(t, "http://"+l.Addr()+"/web/")
		return code == 200 && body == "web"
	}, "beacon lb --service web to route /web/")
	// Each service's routing table loads on its own: "web" routing says
	// nothing of "agent" (503 not_ready until its table is in).
	var code int
	var body string
	agenttest.Eventually(t, 30*time.Second, func() bool {
		code, body = httpGet(t, "http://"+l.Addr()+"/agent/v1/cluster/status")
		return code != http.StatusServiceUnavailable || !strings.Contains(body, `"not_ready"`)
	}, "beacon lb to load the routing table of service agent")
	if code != http.StatusBadGateway || !strings.Contains(body, "agent's port") {
		t.Fatalf("an instance at an agent's API port: %d %q, want 502 naming the agent's port", code, body)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
