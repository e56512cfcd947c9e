package agent_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// httpsAgent starts one agent serving HTTPS with a certificate of dir's CA
// (no client certificate required), auth on, and a client that trusts the
// CA; noFastPath serves every request through net/http
// (--http-no-fast-path).
func httpsAgent(t *testing.T, dir string, noFastPath bool) (*agenttest.Cluster, *tls.Config) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(parseCert(t, filepath.Join(dir, "beacon-ca.pem")))
	tc := &tls.Config{RootCAs: pool}
	c := agenttest.New(t, 1, withAuth(false, func(c *agent.Config) {
		c.TLSCertFile = filepath.Join(dir, c.Node+".pem")
		c.TLSKeyFile = filepath.Join(dir, c.Node+"-key.pem")
		c.TLSCAFile = filepath.Join(dir, "beacon-ca.pem")
		c.HTTPNoFastPath = noFastPath
	}), agenttest.WithClient(func(c *client.Config) {
		c.Token = testManagementToken
		c.Addresses = []string{"https://" + c.Addresses[0]}
		c.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}))
	c.WaitForLeader()
	return c, tc
}

// TestTheAgentsOwnHTTPSOriginIsNotCrossSite: a browser's write from the
// agent's own page over HTTPS (the web UI's maintenance button) carries
// Origin https://HOST:PORT; it passes, and Origin http://HOST:PORT (another
// origin) is refused, with the fast path and without. The TLS layer used
// to sit under the connection cap's wrapper, where net/http did not see it:
// Request.TLS was nil, so the agent took its own origin for http://.
func TestTheAgentsOwnHTTPSOriginIsNotCrossSite(t *testing.T) {
	dir, _ := pki(t)
	for _, noFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("noFastPath=%v", noFast), func(t *testing.T) {
			c, tc := httpsAgent(t, dir, noFast)
			agenttest.Register(t, c.Client(0), "web", "web-1", reg("127.0.0.1", 8080))
			host := c.Node(0).HTTPAddr()
			tr := &http.Transport{TLSClientConfig: tc}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: time.Minute}
			put := func(origin string) rawResult {
				req, _ := http.NewRequest(http.MethodPut, "https://"+host+"/v1/services/web/instances/web-1/maintenance", strings.NewReader(`{"mode":"none"}`))
				req.Header.Set("Authorization", "Bearer "+testManagementToken)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Origin", origin)
				req.Header.Set("Sec-Fetch-Site", "same-origin")
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				r := rawResult{status: resp.StatusCode, header: resp.Header, body: b}
				_ = json.Unmarshal(b, &r.err)
				return r
			}
			if r := retryRaw503(t, func() rawResult { return put("https://" + host) }); r.status != http.StatusOK {
				t.Fatalf("the agent's own https origin: %d %s", r.status, r.body)
			}
			if r := put("http://" + host); r.status != http.StatusForbidden || r.err.Code != "cross_site" {
				t.Fatalf("an http:// origin on the HTTPS agent: %d %s, want 403 cross_site", r.status, r.body)
			}
		})
	}
}

// TestOwnOriginOverTLSAfterAParkedQuery: a request pipelined behind a
// blocking query over TLS is served, once the query has been answered, by
// the server that resumes parked connections, on a wrapper holding the
// bytes read ahead: it too knows the connection is TLS.
func TestOwnOriginOverTLSAfterAParkedQuery(t *testing.T) {
	dir, _ := pki(t)
	c, tc := httpsAgent(t, dir, false)
	idx := agenttest.Register(t, c.Client(0), "web", "web-1", reg("127.0.0.1", 8080))
	host := c.Node(0).HTTPAddr()
	conn, err := tls.Dial("tcp", host, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"mode":"none"}`
	auth := "Authorization: Bearer " + testManagementToken + "\r\n"
	// Both requests in one write: the second is read ahead with the first.
	reqs := fmt.Sprintf("GET /v1/services/web/instances?index=%d&wait=1m HTTP/1.1\r\nHost: %s\r\n%s\r\n", idx, host, auth) +
		fmt.Sprintf("PUT /v1/services/web/instances/web-1/maintenance HTTP/1.1\r\nHost: %s\r\n%sOrigin: https://%s\r\nSec-Fetch-Site: same-origin\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", host, auth, host, len(body), body)
	if _, err := io.WriteString(conn, reqs); err != nil {
		t.Fatal(err)
	}
	srv := c.Node(0).Agent.API()
	agenttest.Eventually(t, 30*time.Second, func() bool { return srv.BlockingStats().Parked == 1 }, "the query to park")
	agenttest.Register(t, c.Client(0), "web", "web-2", reg("127.0.0.1", 8081))
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(conn)
	for i, want := range []string{"web-2", `"index"`} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Fatalf("answer %d: %d %s", i, resp.StatusCode, b)
		}
	}
}

// TestPlainHTTPToTheHTTPSAPIGetsAJSON400: a plain HTTP request on the HTTPS
// port is answered 400 with a JSON error (code https_required, marked as
// the agent's), not an empty reply, with the fast path and without; the Go
// client reports it as the agent's error.
func TestPlainHTTPToTheHTTPSAPIGetsAJSON400(t *testing.T) {
	dir, _ := pki(t)
	for _, noFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("noFastPath=%v", noFast), func(t *testing.T) {
			c, _ := httpsAgent(t, dir, noFast)
			host := c.Node(0).HTTPAddr()
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(time.Minute))
			if _, err := fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("plain HTTP on the HTTPS port: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var eb client.ErrorBody
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(client.HeaderAgent) == "" ||
				resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &eb) != nil ||
				eb.Code != "https_required" || !strings.Contains(eb.Error, "HTTP request to an HTTPS server") {
				t.Fatalf("plain HTTP on the HTTPS port: %d %v %s", resp.StatusCode, resp.Header, b)
			}

			cl, err := client.New(client.Config{Addresses: []string{"http://" + host}, Token: testManagementToken})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = cl.Services(context.Background(), nil)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || ce.Code != "https_required" {
				t.Fatalf("the client over http:// to the HTTPS agent: %v", err)
			}
			// HTTPS still works on the same port.
			if _, _, err := c.Client(0).Services(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}
