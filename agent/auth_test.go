package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

const (
	testManagementToken = "test-management-token-0123456789"
	testClusterSecret   = "test-cluster-secret-abcdef-0123456789"
)

// withAuth turns auth on in every agent of a test cluster.
func withAuth(anonymousRead bool, more ...func(*agent.Config)) agenttest.Option {
	return agenttest.WithConfig(func(c *agent.Config) {
		c.ManagementToken = testManagementToken
		c.ClusterSecret = testClusterSecret
		c.AnonymousRead = anonymousRead
		for _, fn := range more {
			fn(c)
		}
	})
}

// withToken makes the cluster's clients send tok.
func withToken(tok string) agenttest.Option {
	return agenttest.WithClient(func(c *client.Config) { c.Token = tok })
}

// rawResult is one raw HTTP exchange.
type rawResult struct {
	status int
	header http.Header
	body   []byte
	err    client.ErrorBody
}

// rawDo sends one request with the token in the Authorization header (none
// if tok is "") and decodes an error body if there is one.
func rawDo(t *testing.T, hc *http.Client, method, url, tok, body string) rawResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := rawResult{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &r.err); err != nil {
			t.Fatalf("%s %s: status %d with a body that is not a JSON error: %q", method, url, resp.StatusCode, b)
		}
	}
	return r
}

// retryRaw503 repeats fn while it answers 503 (an election on a loaded
// machine), for up to 30 s, and returns its last answer.
func retryRaw503(t *testing.T, fn func() rawResult) rawResult {
	t.Helper()
	var r rawResult
	_ = wait.Poll(30*time.Second, 100*time.Millisecond, func() (bool, string) {
		r = fn()
		return r.status != http.StatusServiceUnavailable, ""
	})
	return r
}

// createToken creates a token through the API with the management token.
func createToken(t *testing.T, cl *client.Client, req client.TokenRequest) *client.TokenCreated {
	t.Helper()
	var tok *client.TokenCreated
	agenttest.Retry503(t, fmt.Sprintf("create token %+v", req), func() (err error) {
		tok, err = cl.CreateToken(context.Background(), &req)
		return err
	})
	return tok
}

// identities a request can come from.
const (
	whoNone       = "no token"
	whoWrong      = "a wrong token"
	whoRead       = "a read-only token"
	whoPrefix     = "a write token for web-"
	whoManagement = "the management token"
)

// expectation for one request: 0 means allowed (any answer but the auth
// errors), otherwise the status and code of the refusal.
type expectation struct {
	status int
	code   string
}

var (
	allowed         = expectation{}
	unauthenticated = expectation{http.StatusUnauthorized, "unauthenticated"}
	invalidToken    = expectation{http.StatusForbidden, "invalid_token"}
	permDenied      = expectation{http.StatusForbidden, "permission_denied"}
)

// expectFor says what a request by who on a route of policy pol gets; inPrefix
// says whether the route's service starts with web-.
func expectFor(pol, who string, inPrefix, anonymousRead bool) expectation {
	if pol == "open" {
		return allowed
	}
	switch who {
	case whoNone:
		if pol == "read" && anonymousRead {
			return allowed
		}
		return unauthenticated
	case whoWrong:
		return invalidToken
	case whoManagement:
		return allowed
	}
	switch pol {
	case "read":
		return allowed
	case "service-write", "check-write":
		if who == whoPrefix && inPrefix {
			return allowed
		}
		return permDenied
	}
	return permDenied // management
}

// exampleRequest turns a route pattern into a request against the fixtures: the
// services web-a (instance web-a-1, TTL check web-a:web-a-1:ttl) and db
// (db-1, db:db-1:ttl).
func exampleRequest(pattern, service string) (method, path, body string) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = http.MethodGet, "/no/such/route"
	}
	inst := service + "-1"
	if service == "web-a" {
		inst = "web-a-1"
	}
	id := inst
	if strings.HasPrefix(path, "/v1/checks/") {
		id = service + ":" + inst + ":ttl"
	}
	if strings.HasPrefix(path, "/v1/cluster/peers/") {
		id = "no-such-peer"
	}
	path = strings.NewReplacer("{service}", service, "{id}", id,
		"{accessor}", "00000000-0000-4000-8000-000000000000").Replace(path)
	for strings.Contains(path, "{") { // a parameter added by a later route
		i, j := strings.Index(path, "{"), strings.Index(path, "}")
		path = path[:i] + "x" + path[j+1:]
	}
	if path == "/debug/pprof/profile" {
		path += "?seconds=1"
	}
	if method != http.MethodGet && method != http.MethodHead {
		body = "{}"
	}
	return method, path, body
}

// destructive routes are not run with a token that may run them: they
// would stop the agent under test.
var destructive = map[string]bool{"POST /v1/cluster/leave": true}

func registerFixtures(t *testing.T, base string) {
	t.Helper()
	for _, svc := range []string{"web-a", "db"} {
		inst := svc + "-1"
		body := `{"address":"10.9.0.1","port":8080,"checks":[{"name":"ttl","ttl":"1h"}]}`
		r := retryRaw503(t, func() rawResult {
			return rawDo(t, nil, http.MethodPut, base+"/v1/services/"+svc+"/instances/"+inst, testManagementToken, body)
		})
		if r.status != http.StatusOK {
			t.Fatalf("register fixture %s: %d %s", inst, r.status, r.body)
		}
	}
}

// TestEveryRouteEnforcesItsPolicy sends every route of a real agent's API
// (read from the agent, so routes added later are covered too) with no
// token, a wrong token, a read-only token, a write token limited to the
// prefix web- (on a service inside and one outside the prefix) and the
// management token, with anonymous reads on and off.
func TestEveryRouteEnforcesItsPolicy(t *testing.T) {
	for _, anon := range []bool{true, false} {
		t.Run(fmt.Sprintf("with anonymous reads %v", anon), func(t *testing.T) {
			c := agenttest.New(t, 1, withAuth(anon, func(c *agent.Config) { c.EnablePprof = true }), withToken(testManagementToken))
			base := "http://" + c.Node(0).HTTPAddr()
			read := createToken(t, c.Client(0), client.TokenRequest{Policy: "read", Description: "reader"})
			write := createToken(t, c.Client(0), client.TokenRequest{Policy: "write", Prefixes: []string{"web-"}})
			tokens := map[string]string{
				whoNone: "", whoWrong: "bcn_not-a-token-anyone-made", whoRead: read.Secret,
				whoPrefix: write.Secret, whoManagement: testManagementToken,
			}
			routes := c.Node(0).Agent.Routes()
			patterns := make([]string, 0, len(routes))
			for p := range routes {
				patterns = append(patterns, p)
			}
			sort.Strings(patterns)
			if len(patterns) < 15 {
				t.Fatalf("only %d routes: %v", len(patterns), patterns)
			}
			for _, pattern := range patterns {
				pol := routes[pattern]
				if pol == "mounted" {
					continue // another protocol's routes (api/consul) authorize themselves; their tests cover it
				}
				services := []string{"web-a"}
				if strings.Contains(pattern, "{service}") || strings.HasPrefix(pattern, "PUT /v1/checks/") {
					services = append(services, "db")
				}
				for _, svc := range services {
					registerFixtures(t, base)
					for _, who := range []string{whoNone, whoWrong, whoRead, whoPrefix, whoManagement} {
						want := expectFor(pol, who, svc == "web-a", anon)
						method, path, body := exampleRequest(pattern, svc)
						name := fmt.Sprintf("%s on %s (%s) by %s", method, path, pol, who)
						t.Run(name, func(t *testing.T) {
							if want == allowed && destructive[pattern] {
								t.Skip("would stop the agent under test")
							}
							r := retryRaw503(t, func() rawResult { return rawDo(t, nil, method, base+path, tokens[who], body) })
							if want == allowed {
								switch r.err.Code {
								case "unauthenticated", "invalid_token", "permission_denied":
									t.Fatalf("refused with %d %s: %s", r.status, r.err.Code, r.err.Error)
								}
								return
							}
							if r.status != want.status || r.err.Code != want.code {
								t.Fatalf("got %d %q (%s), want %d %q", r.status, r.err.Code, r.err.Error, want.status, want.code)
							}
							if r.status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
								t.Fatal("401 without WWW-Authenticate")
							}
						})
					}
				}
			}
		})
	}
}

func TestTokensAreSentAsBearerOrXBeaconTokenButNeverInTheURL(t *testing.T) {
	c := agenttest.New(t, 1, withAuth(false), withToken(testManagementToken))
	base := "http://" + c.Node(0).HTTPAddr()
	read := createToken(t, c.Client(0), client.TokenRequest{Policy: "read"})
	cases := []struct {
		name    string
		header  map[string]string
		query   string
		status  int
		code    string
		allowed bool
	}{
		{name: "a bearer token is accepted", header: map[string]string{"Authorization": "Bearer " + read.Secret}, allowed: true},
		{name: "the bearer scheme is case-insensitive", header: map[string]string{"Authorization": "bearer " + read.Secret}, allowed: true},
		{name: "an X-Beacon-Token header is accepted", header: map[string]string{"X-Beacon-Token": read.Secret}, allowed: true},
		{name: "both headers with the same token are accepted", header: map[string]string{"Authorization": "Bearer " + read.Secret, "X-Beacon-Token": read.Secret}, allowed: true},
		{name: "both headers with different tokens are refused", header: map[string]string{"Authorization": "Bearer " + read.Secret, "X-Beacon-Token": testManagementToken}, status: 400, code: "invalid"},
		{name: "basic auth is refused", header: map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, status: 401, code: "unauthenticated"},
		{name: "an empty bearer is refused", header: map[string]string{"Authorization": "Bearer "}, status: 401, code: "unauthenticated"},
		{name: "a token in the query string is refused", query: "?token=" + read.Secret, status: 400, code: "token_in_url"},
		{name: "an access_token in the query string is refused", query: "?access_token=" + read.Secret, status: 400, code: "token_in_url"},
		{name: "a token in the URL is refused even with a valid header", header: map[string]string{"X-Beacon-Token": read.Secret}, query: "?token=x", status: 400, code: "token_in_url"},
		{name: "a revoked-looking token is refused with 403", header: map[string]string{"X-Beacon-Token": read.Secret + "x"}, status: 403, code: "invalid_token"},
		{name: "no token is refused with 401 when anonymous reads are off", status: 401, code: "unauthenticated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, base+"/v1/services"+tc.query, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var eb client.ErrorBody
			_ = json.NewDecoder(resp.Body).Decode(&eb)
			if tc.allowed {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("got %d %+v, want 200", resp.StatusCode, eb)
				}
				return
			}
			if resp.StatusCode != tc.status || eb.Code != tc.code {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, eb, tc.status, tc.code)
			}
		})
	}
}

// TestTokensReplicateSoEveryNodeEnforcesThem creates a token through one
// follower, uses it on another node, deletes it through a third and sees
// every node refuse it.
func TestTokensReplicateSoEveryNodeEnforcesThem(t *testing.T) {
	c := agenttest.New(t, 3, withAuth(false), withToken(testManagementToken))
	c.WaitForVoters(3)
	ctx := context.Background()
	f := c.Follower()
	tok := createToken(t, c.Client(f), client.TokenRequest{Policy: "write", Prefixes: []string{"pay"}, Description: "payments deployer"})
	if !strings.HasPrefix(tok.Secret, "bcn_") || tok.Accessor == "" || tok.Index == 0 {
		t.Fatalf("created %+v", tok)
	}
	c.WaitForIndex(tok.Index)
	for i := range c.Nodes() {
		base := "http://" + c.Node(i).HTTPAddr()
		r := retryRaw503(t, func() rawResult {
			return rawDo(t, nil, http.MethodPut, base+"/v1/services/payments/instances/p-"+fmt.Sprint(i), tok.Secret, `{"address":"10.0.0.9","port":443}`)
		})
		if r.status != http.StatusOK {
			t.Fatalf("node %d: write with the new token: %d %s", i, r.status, r.body)
		}
		if r := rawDo(t, nil, http.MethodPut, base+"/v1/services/web/instances/w-1", tok.Secret, `{"address":"10.0.0.9","port":443}`); r.status != http.StatusForbidden {
			t.Fatalf("node %d: write outside the prefix: %d %s", i, r.status, r.body)
		}
	}
	// The list shows it without secret or hash.
	list, err := c.Client(0).Tokens(ctx)
	if err != nil || len(list) != 1 || list[0].Accessor != tok.Accessor || list[0].Description != "payments deployer" {
		t.Fatalf("list: %v %+v", err, list)
	}
	raw := rawDo(t, nil, http.MethodGet, "http://"+c.Node(0).HTTPAddr()+"/v1/tokens", testManagementToken, "")
	if bytes.Contains(raw.body, []byte(tok.Secret)) || bytes.Contains(raw.body, []byte("secret")) || bytes.Contains(raw.body, []byte("hash")) {
		t.Fatalf("token list leaks: %s", raw.body)
	}
	other := (f + 1) % 3
	idx, err := c.Client(other).DeleteToken(ctx, tok.Accessor)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitForIndex(idx)
	for i := range c.Nodes() {
		r := rawDo(t, nil, http.MethodGet, "http://"+c.Node(i).HTTPAddr()+"/v1/services", tok.Secret, "")
		if r.status != http.StatusForbidden || r.err.Code != "invalid_token" {
			t.Fatalf("node %d after delete: %d %s", i, r.status, r.body)
		}
	}
}

// hostileTokenInputs are answered with a 4xx and change nothing.
func TestHostileInputsToTokenRoutesChangeNothing(t *testing.T) {
	c := agenttest.New(t, 1, withAuth(false), withToken(testManagementToken))
	base := "http://" + c.Node(0).HTTPAddr()
	keep := createToken(t, c.Client(0), client.TokenRequest{Policy: "read", Description: "kept"})
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	manyPrefixes := `{"policy":"write","prefixes":[` + strings.TrimSuffix(strings.Repeat(`"a",`, 65), ",") + `]}`
	cases := []struct {
		name, method, path, body string
		status                   int
	}{
		{"an empty body", "POST", "/v1/tokens", "", 400},
		{"a body that is not JSON", "POST", "/v1/tokens", "policy=read", 400},
		{"a JSON array", "POST", "/v1/tokens", `["read"]`, 400},
		{"deeply nested JSON", "POST", "/v1/tokens", `{"policy":` + deep + `}`, 400},
		{"an oversized body", "POST", "/v1/tokens", `{"policy":"read","description":"` + strings.Repeat("x", 70<<10) + `"}`, 413},
		{"an unknown field", "POST", "/v1/tokens", `{"policy":"read","secret":"chosen-by-me"}`, 400},
		{"a client-chosen accessor", "POST", "/v1/tokens", `{"policy":"read","accessor":"mine"}`, 400},
		{"the management policy", "POST", "/v1/tokens", `{"policy":"management"}`, 400},
		{"an unknown policy", "POST", "/v1/tokens", `{"policy":"admin"}`, 400},
		{"a policy of the wrong type", "POST", "/v1/tokens", `{"policy":1}`, 400},
		{"prefixes on a read token", "POST", "/v1/tokens", `{"policy":"read","prefixes":["web"]}`, 400},
		{"a write token without prefixes", "POST", "/v1/tokens", `{"policy":"write"}`, 400},
		{"a prefix with upper case", "POST", "/v1/tokens", `{"policy":"write","prefixes":["Web"]}`, 400},
		{"a prefix with a slash", "POST", "/v1/tokens", `{"policy":"write","prefixes":["web/../db"]}`, 400},
		{"a prefix with a NUL", "POST", "/v1/tokens", `{"policy":"write","prefixes":["web\u0000"]}`, 400},
		{"a prefix starting with a dash", "POST", "/v1/tokens", `{"policy":"write","prefixes":["-web"]}`, 400},
		{"a prefix longer than a service name", "POST", "/v1/tokens", `{"policy":"write","prefixes":["` + strings.Repeat("a", 64) + `"]}`, 400},
		{"a duplicate prefix", "POST", "/v1/tokens", `{"policy":"write","prefixes":["web","web"]}`, 400},
		{"too many prefixes", "POST", "/v1/tokens", manyPrefixes, 400},
		{"prefixes that are not strings", "POST", "/v1/tokens", `{"policy":"write","prefixes":[1,2]}`, 400},
		{"a description with control characters", "POST", "/v1/tokens", `{"policy":"read","description":"a\u001b[31mred"}`, 400},
		{"a description with a newline (log injection)", "POST", "/v1/tokens", `{"policy":"read","description":"x\n2026 [INFO] audit: write accepted"}`, 400},
		{"an over-long description", "POST", "/v1/tokens", `{"policy":"read","description":"` + strings.Repeat("d", 257) + `"}`, 400},
		{"invalid UTF-8", "POST", "/v1/tokens", "{\"policy\":\"read\",\"description\":\"\xff\xfe\"}", 400},
		{"duplicate keys", "POST", "/v1/tokens", `{"policy":"read","policy":"write","prefixes":[""]}`, 400},
		{"trailing data", "POST", "/v1/tokens", `{"policy":"read"} {"policy":"read"}`, 400},
		{"a path trick in the accessor", "DELETE", "/v1/tokens/..%2f..%2fv1%2fservices", "", 400},
		{"a dot-dot accessor (cleaned away by the router)", "DELETE", "/v1/tokens/..", "", 404},
		{"control characters in the accessor", "DELETE", "/v1/tokens/a%0Ab", "", 400},
		{"an over-long accessor", "DELETE", "/v1/tokens/" + strings.Repeat("a", 200), "", 400},
		{"the management accessor", "DELETE", "/v1/tokens/management", "", 400},
		{"a token list with a bad index", "GET", "/v1/tokens?index=-1", "", 400},
		{"a token list with a bad wait", "GET", "/v1/tokens?index=1&wait=forever", "", 400},
	}
	before, err := c.Client(0).Tokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, _ := c.Client(0).Status(context.Background())
	for _, tc := range cases {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			r := rawDo(t, nil, tc.method, base+tc.path, testManagementToken, tc.body)
			if r.status != tc.status {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tc.status)
			}
		})
	}
	after, err := c.Client(0).Tokens(context.Background())
	if err != nil || len(after) != len(before) || after[0].Accessor != keep.Accessor || after[0].ModifyIndex != before[0].ModifyIndex {
		t.Fatalf("tokens changed: before %+v after %+v (%v)", before, after, err)
	}
	if st2, _ := c.Client(0).Status(context.Background()); st2.CommitIndex > st.CommitIndex+2 {
		// +2: the leader may record node states meanwhile.
		t.Fatalf("commit index moved from %d to %d", st.CommitIndex, st2.CommitIndex)
	}
}

func TestWritesBeyondTheRateLimitGet429WithRetryAfter(t *testing.T) {
	c := agenttest.New(t, 1, agenttest.WithConfig(func(c *agent.Config) {
		c.WriteRateLimit, c.WriteBurst = 1, 3
	}))
	base := "http://" + c.Node(0).HTTPAddr()
	var limited rawResult
	ok := 0
	for i := 0; i < 20; i++ {
		r := rawDo(t, nil, http.MethodPut, base+"/v1/services/web/instances/w-1", "", `{"address":"10.0.0.1","port":80}`)
		if r.status == http.StatusTooManyRequests {
			limited = r
			break
		}
		ok++
	}
	if limited.status != http.StatusTooManyRequests {
		t.Fatalf("20 writes at once were never limited")
	}
	if ok < 3 {
		t.Fatalf("only %d writes before the limit, want the burst of 3", ok)
	}
	if limited.err.Code != "rate_limited" || limited.header.Get("Retry-After") == "" {
		t.Fatalf("429 without code or Retry-After: %+v %v", limited.err, limited.header)
	}
	// Reads are not limited.
	for i := 0; i < 10; i++ {
		if r := rawDo(t, nil, http.MethodGet, base+"/v1/services", "", ""); r.status != http.StatusOK {
			t.Fatalf("read %d: %d", i, r.status)
		}
	}
}

func TestPprofIsOffByDefaultAndNeedsTheManagementToken(t *testing.T) {
	t.Run("off by default", func(t *testing.T) {
		c := agenttest.New(t, 1)
		if r := rawDo(t, nil, http.MethodGet, "http://"+c.Node(0).HTTPAddr()+"/debug/pprof/", "", ""); r.status != http.StatusNotFound {
			t.Fatalf("got %d", r.status)
		}
	})
	t.Run("on with auth", func(t *testing.T) {
		c := agenttest.New(t, 1, withAuth(true, func(c *agent.Config) { c.EnablePprof = true }))
		base := "http://" + c.Node(0).HTTPAddr()
		if r := rawDo(t, nil, http.MethodGet, base+"/debug/pprof/", "", ""); r.status != http.StatusUnauthorized {
			t.Fatalf("anonymous: %d", r.status)
		}
		if r := rawDo(t, nil, http.MethodGet, base+"/debug/pprof/goroutine?debug=1", testManagementToken, ""); r.status != http.StatusOK || !bytes.Contains(r.body, []byte("goroutine")) {
			t.Fatalf("management: %d", r.status)
		}
		// The command line may hold secrets: not served.
		if r := rawDo(t, nil, http.MethodGet, base+"/debug/pprof/cmdline", testManagementToken, ""); r.status == http.StatusOK {
			t.Fatalf("cmdline served")
		}
	})
}

func TestAgentRefusesInsecureOrInvalidSecuritySettings(t *testing.T) {
	base := func() agent.Config {
		return agent.Config{Node: "n1", DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0"}
	}
	cases := []struct {
		name   string
		mutate func(*agent.Config)
		want   string
		secret string
	}{
		{"auth without a cluster secret", func(c *agent.Config) { c.ManagementToken = testManagementToken }, "--cluster-secret", testManagementToken},
		{"a short management token", func(c *agent.Config) { c.ManagementToken, c.ClusterSecret = "short-tok", "s" }, "at least 16", "short-tok"},
		{"a gossip key that is not base64", func(c *agent.Config) { c.GossipKey = "not base64 at all!" }, "not valid base64", "not base64 at all!"},
		{"a gossip key of the wrong size", func(c *agent.Config) { c.GossipKey = "c2Vjb25kLWtleQ==" }, "16, 24 or 32", "c2Vjb25kLWtleQ=="},
		{"a TLS certificate without key", func(c *agent.Config) { c.TLSCertFile = "x.pem" }, "both", ""},
		{"a CA without certificate", func(c *agent.Config) { c.TLSCAFile = "ca.pem" }, "no --tls-cert-file", ""},
		{"a negative rate limit", func(c *agent.Config) { c.WriteRateLimit = -1 }, "negative", ""},
		{"a cluster secret under 32 bytes", func(c *agent.Config) { c.ClusterSecret = "thirty-one-bytes-long-secret-xx" }, "at least 32 bytes", "thirty-one-bytes-long-secret-xx"},
	}
	for _, tc := range cases {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			cfg := base()
			tc.mutate(&cfg)
			_, err := agent.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
	t.Run("dev mode with auth makes its own cluster secret", func(t *testing.T) {
		cfg := base()
		cfg.Dev, cfg.ManagementToken = true, testManagementToken
		if _, err := agent.New(cfg); err != nil {
			t.Fatal(err)
		}
	})
}

// logCapture is a bytes.Buffer safe for the agents' concurrent loggers.
type logCapture struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logCapture) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logCapture) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *logCapture) lines(substr ...string) []string {
	var out []string
	for _, l := range strings.Split(s.String(), "\n") {
		match := true
		for _, sub := range substr {
			match = match && strings.Contains(l, sub)
		}
		if match {
			out = append(out, l)
		}
	}
	return out
}

// TestAuditLogNamesWhoWhatAndIndexOnTheLeader writes through a follower and
// finds the leader's audit line with the token's accessor, the client's
// address, the receiving node and the Raft index.
func TestAuditLogNamesWhoWhatAndIndexOnTheLeader(t *testing.T) {
	logs := &logCapture{}
	c := agenttest.New(t, 3, withAuth(true), withToken(testManagementToken), agenttest.WithLogWriter(logs))
	c.WaitForVoters(3)
	f := c.Follower()
	tok := createToken(t, c.Client(f), client.TokenRequest{Policy: "write", Prefixes: []string{"web"}})
	base := "http://" + c.Node(f).HTTPAddr()
	var idx string
	r := retryRaw503(t, func() rawResult {
		return rawDo(t, nil, http.MethodPut, base+"/v1/services/web/instances/web-7", tok.Secret, `{"address":"10.0.0.7","port":8080}`)
	})
	if r.status != http.StatusOK {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	idx = r.header.Get("X-Beacon-Index")
	leader := c.Node(c.Leader()).Name
	want := []string{leader + ".audit: write accepted", "op=register", "index=" + idx, "accessor=" + tok.Accessor,
		"remote=127.0.0.1:", "via=" + c.Node(f).Name, "service=web", "instance=web-7"}
	agenttest.Eventually(t, 10*time.Second, func() bool { return len(logs.lines(want...)) == 1 }, "the leader's audit line "+strings.Join(want, " "))
	// The token change and deregistration are audited too; a refused write is not.
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines("audit: write accepted", "op=token-set", "accessor=management", "token="+tok.Accessor, "policy=write")) == 1
	}, "the token creation's audit line")
	if r := rawDo(t, nil, http.MethodDelete, base+"/v1/services/db/instances/db-1", tok.Secret, ""); r.status != http.StatusForbidden {
		t.Fatalf("deregister outside the prefix: %d", r.status)
	}
	r = retryRaw503(t, func() rawResult {
		return rawDo(t, nil, http.MethodDelete, base+"/v1/services/web/instances/web-7", tok.Secret, "")
	})
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines("audit: write accepted", "op=deregister", "instance=web-7", "accessor="+tok.Accessor)) == 1
	}, "the deregistration's audit line")
	if n := len(logs.lines("audit: write accepted", "service=db")); n != 0 {
		t.Fatalf("a refused write was audited")
	}
	// A TTL report that changes the check's status is a write: audited on
	// the leader with the check; maintenance too.
	r = retryRaw503(t, func() rawResult {
		return rawDo(t, nil, http.MethodPut, base+"/v1/services/web/instances/web-8", tok.Secret,
			`{"address":"10.0.0.8","port":8080,"checks":[{"name":"ttl","ttl":"1h"}]}`)
	})
	if r.status != http.StatusOK {
		t.Fatalf("register with a TTL check: %d %s", r.status, r.body)
	}
	r = retryRaw503(t, func() rawResult {
		return rawDo(t, nil, http.MethodPut, base+"/v1/checks/web:web-8:ttl/pass", tok.Secret, "")
	})
	if r.status != http.StatusOK {
		t.Fatalf("ttl pass: %d %s", r.status, r.body)
	}
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines(leader+".audit: write accepted", "op=check-update", "check=web:web-8:ttl", "status=passing", "accessor="+tok.Accessor, "via="+c.Node(f).Name)) == 1
	}, "the TTL report's audit line on the leader")
	// Heartbeats that change nothing write nothing and are not audited
	// (issue 19: ten passes gave ten "write accepted" lines). The audit line
	// is logged before the leader answers, so once the answers are in, any
	// line they would have made is there.
	for i := 0; i < 10; i++ {
		r = retryRaw503(t, func() rawResult {
			return rawDo(t, nil, http.MethodPut, base+"/v1/checks/web:web-8:ttl/pass", tok.Secret, "")
		})
		if r.status != http.StatusOK {
			t.Fatalf("ttl heartbeat: %d %s", r.status, r.body)
		}
	}
	if n := len(logs.lines("audit: write accepted", "op=check-update", "check=web:web-8:ttl")); n != 1 {
		t.Fatalf("%d audit lines for one TTL write and ten heartbeats, want 1", n)
	}
	r = retryRaw503(t, func() rawResult {
		return rawDo(t, nil, http.MethodPut, base+"/v1/services/web/instances/web-8/maintenance", tok.Secret, `{"mode":"maintenance","reason":"kernel upgrade"}`)
	})
	if r.status != http.StatusOK {
		t.Fatalf("maintenance: %d %s", r.status, r.body)
	}
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines("audit: write accepted", "op=maintenance", "instance=web-8", "accessor="+tok.Accessor)) == 1
	}, "the maintenance audit line")

	// A snapshot restore (management token) is audited on the leader.
	var archive bytes.Buffer
	if _, err := c.Client(f).SaveSnapshot(context.Background(), &archive, false); err != nil {
		t.Fatalf("save snapshot: %v", err)
	}
	if _, err := c.Client(f).RestoreSnapshot(context.Background(), archive.Bytes()); err != nil {
		t.Fatalf("restore snapshot: %v", err)
	}
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines("audit: write accepted", "op=snapshot-restore", "accessor=management", "via="+c.Node(f).Name)) == 1
	}, "the restore's audit line")

	// A join is audited on the node that received it.
	if _, err := c.Client(f).Join(context.Background(), []string{c.Node(0).Config.GossipAddr}); err != nil {
		t.Fatal(err)
	}
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines(c.Node(f).Name+".audit: join accepted", "accessor=management")) == 1
	}, "the join's audit line")
}
