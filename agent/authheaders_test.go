package agent_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// TestTwoTokensInOneRequestAreRefusedAndEvery401SaysHow: a request whose
// Authorization (or X-Beacon-Token, X-Consul-Token) headers name two
// different tokens is refused with 400, on Beacon's routes (the fast path's
// reads and net/http's writes) and the Consul paths alike, whichever comes
// first; the same token twice is accepted. Every 401, the Consul paths'
// too, carries WWW-Authenticate.
func TestTwoTokensInOneRequestAreRefusedAndEvery401SaysHow(t *testing.T) {
	c := agenttest.New(t, 1, withAuth(false), withToken(testManagementToken))
	c.WaitForLeader()
	base := "http://" + c.Node(0).HTTPAddr()
	read := createToken(t, c.Client(0), client.TokenRequest{Policy: "read"})
	do := func(method, path, body string, h http.Header) (int, http.Header, client.ErrorBody) {
		t.Helper()
		var rd *strings.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, base+path, nil)
		if rd != nil {
			req, _ = http.NewRequest(method, base+path, rd)
			req.Header.Set("Content-Type", "application/json")
		}
		for k, vs := range h {
			req.Header[k] = vs
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb client.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		return resp.StatusCode, resp.Header, eb
	}
	bearer := func(toks ...string) []string {
		out := make([]string, len(toks))
		for i, t := range toks {
			out[i] = "Bearer " + t
		}
		return out
	}
	reg := `{"address":"10.0.0.1","port":80}`
	consulReg := `{"Name":"web","ID":"web-c1","Address":"10.0.0.1","Port":80}`
	for _, route := range []struct{ method, path, body string }{
		{http.MethodGet, "/v1/services", ""},
		{http.MethodPut, "/v1/services/web/instances/web-1", reg},
		{http.MethodGet, "/v1/agent/services", ""},
		{http.MethodPut, "/v1/agent/service/register", consulReg},
	} {
		consul := strings.HasPrefix(route.path, "/v1/agent/")
		xName := "X-Beacon-Token"
		if consul {
			xName = "X-Consul-Token"
		}
		for _, tc := range []struct {
			name string
			h    http.Header
			want int
		}{
			{"two Authorization headers, the management token first", http.Header{"Authorization": bearer(testManagementToken, read.Secret)}, http.StatusBadRequest},
			{"two Authorization headers, the management token last", http.Header{"Authorization": bearer(read.Secret, testManagementToken)}, http.StatusBadRequest},
			{"two " + xName + " headers", http.Header{xName: {testManagementToken, read.Secret}}, http.StatusBadRequest},
			{"the same token twice", http.Header{"Authorization": bearer(testManagementToken, testManagementToken)}, http.StatusOK},
		} {
			t.Run(route.method+" "+route.path+": "+tc.name, func(t *testing.T) {
				var status int
				var eb client.ErrorBody
				agenttest.Eventually(t, 30*time.Second, func() bool {
					status, _, eb = do(route.method, route.path, route.body, tc.h)
					return status != http.StatusServiceUnavailable
				}, "an answer other than 503")
				if status != tc.want || (tc.want == http.StatusBadRequest && eb.Code != "invalid") {
					t.Fatalf("got %d %+v, want %d", status, eb, tc.want)
				}
			})
		}
		// No token on a write: 401 with WWW-Authenticate.
		if route.method == http.MethodPut {
			status, h, eb := do(route.method, route.path, route.body, nil)
			if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer ") {
				t.Fatalf("%s %s without a token: %d %+v, WWW-Authenticate %q", route.method, route.path, status, eb, h.Get("WWW-Authenticate"))
			}
		}
	}
}
