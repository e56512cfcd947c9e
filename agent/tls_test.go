package agent_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// pki makes a CA and server certificates for node1..node4 and a client
// certificate "cli" in one directory, and a second CA with its own node4
// certificate in another (what `beacon tls` makes).
func pki(t *testing.T) (dir, rogue string) {
	t.Helper()
	dir, rogue = t.TempDir(), t.TempDir()
	mkCA := func(dir, name string) {
		t.Helper()
		if _, _, err := agent.CreateCA(dir, 30, name); err != nil {
			t.Fatal(err)
		}
	}
	mkCert := func(dir, node string, isClient bool) {
		t.Helper()
		_, err := agent.CreateCert(agent.CertRequest{Node: node, Client: isClient, Dir: dir, Days: 30,
			CAFile: filepath.Join(dir, "beacon-ca.pem"), CAKeyFile: filepath.Join(dir, "beacon-ca-key.pem")})
		if err != nil {
			t.Fatal(err)
		}
	}
	mkCA(dir, "Beacon CA")
	for i := 1; i <= 4; i++ {
		mkCert(dir, fmt.Sprintf("node%d", i), false)
	}
	mkCert(dir, "cli", true)
	mkCA(rogue, "Rogue CA")
	mkCert(rogue, "node4", false)
	return dir, rogue
}

func parseCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secureCluster starts n agents with TLS everywhere (HTTPS with client
// certificates, mTLS on the cluster port), gossip encryption and tokens, and
// clients that use all of it.
func secureCluster(t *testing.T, n int, dir string, gossipKey string, logs *logCapture) *agenttest.Cluster {
	t.Helper()
	tc := clientTLS(t, dir)
	opts := []agenttest.Option{
		withAuth(false, func(c *agent.Config) {
			c.GossipKey = gossipKey
			c.TLSCertFile = filepath.Join(dir, c.Node+".pem")
			c.TLSKeyFile = filepath.Join(dir, c.Node+"-key.pem")
			c.TLSCAFile = filepath.Join(dir, "beacon-ca.pem")
			c.TLSHTTPClientCAFile = filepath.Join(dir, "beacon-ca.pem")
			c.TLSVerifyIncoming, c.TLSVerifyOutgoing, c.TLSVerifyServerHostname = true, true, true
		}),
		agenttest.WithClient(func(c *client.Config) {
			c.Token = testManagementToken
			c.Addresses = []string{"https://" + c.Addresses[0]}
			c.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		}),
	}
	if logs != nil {
		opts = append(opts, agenttest.WithLogWriter(logs))
	}
	return agenttest.New(t, n, opts...)
}

// clientTLS trusts the test CA and presents the "cli" client certificate.
func clientTLS(t *testing.T, dir string) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(parseCert(t, filepath.Join(dir, "beacon-ca.pem")))
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cli.pem"), filepath.Join(dir, "cli-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}
}

func newGossipKey(t *testing.T) string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(key)
}

// TestSecureClusterFormsReplicatesAndFailsOver runs three agents with TLS on
// the API (client certificates required) and the cluster port (mTLS with
// server-name checks), encrypted gossip and tokens; it writes through a
// follower, reads everywhere, stops the leader and keeps writing. Then a
// fourth node with a certificate from another CA, and a fourth node with
// another gossip key, try to join and are refused.
func TestSecureClusterFormsReplicatesAndFailsOver(t *testing.T) {
	dir, rogue := pki(t)
	key := newGossipKey(t)
	logs := &logCapture{}
	c := secureCluster(t, 3, dir, key, logs)
	c.WaitForVoters(3)
	ctx := context.Background()

	f := c.Follower()
	idx := agenttest.Register(t, c.Client(f), "web", "web-1", reg("10.0.0.1", 8080))
	c.WaitForIndex(idx)
	for i := range c.Nodes() {
		var insts []client.Instance
		agenttest.Retry503(t, fmt.Sprintf("node %d over HTTPS", i), func() (err error) {
			insts, _, err = c.Client(i).Instances(ctx, "web", &client.QueryOptions{Consistent: true})
			return err
		})
		if len(insts) != 1 {
			t.Fatalf("node %d over HTTPS: %+v", i, insts)
		}
	}

	t.Run("plain HTTP and clients without a certificate are refused by the API", func(t *testing.T) {
		addr := c.Node(f).HTTPAddr()
		resp, err := http.Get("http://" + addr + "/v1/services")
		if err == nil {
			b := make([]byte, 64)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("plain HTTP got %d %q", resp.StatusCode, b[:n])
			}
		}
		noCert := clientTLS(t, dir)
		noCert.Certificates = nil
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: noCert}}
		if resp, err := hc.Get("https://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			t.Fatalf("a client without a certificate got %d", resp.StatusCode)
		}
	})

	t.Run("a node with a certificate from another CA is not let into Raft", func(t *testing.T) {
		bad := c.AddNodeWith("node4", func(cfg *agent.Config) {
			cfg.TLSCertFile = filepath.Join(rogue, "node4.pem")
			cfg.TLSKeyFile = filepath.Join(rogue, "node4-key.pem")
		})
		// Gossip (same key) lets it in; the cluster port does not.
		if _, err := c.Client(0).Join(ctx, []string{bad.Config.GossipAddr}); err != nil {
			t.Fatalf("join: %v", err)
		}
		agenttest.Eventually(t, 30*time.Second, func() bool {
			return len(logs.lines("not adding server to raft", "node=node4")) > 0 &&
				len(logs.lines("cluster tls handshake failed")) > 0
		}, "the leader to refuse node4 and log the TLS failure")
		c.WaitForVoters(3)
		// It is listed, as untrusted, and given no checks (issue 15): the
		// leader records it so in the catalog, and check owners are chosen
		// among the Raft members only.
		leader := c.Leader()
		agenttest.Eventually(t, 30*time.Second, func() bool {
			n := c.Node(leader).Agent.Store().Node("node4")
			return n != nil && n.Role == fsm.RoleUntrusted
		}, "the leader to record node4 as untrusted")
		ms, err := c.Client(0).Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Name == "node4" && m.Role != fsm.RoleUntrusted {
				t.Fatalf("node4 listed as %q, want untrusted", m.Role)
			}
		}
		for i := 0; i < 24; i++ {
			agenttest.Register(t, c.Client(0), "chk", fmt.Sprintf("chk-%d", i), &client.Registration{
				Address: "127.0.0.1", Port: 9, Checks: []client.CheckDefinition{{TCP: "127.0.0.1:9", Interval: client.Duration(time.Second)}},
			})
		}
		// node4 never catches up: read consistently rather than wait on every node.
		var checks []client.Check
		agenttest.Retry503(t, "checks", func() (err error) {
			checks, _, err = c.Client(0).Checks(ctx, client.CheckFilter{Service: "chk"}, &client.QueryOptions{Consistent: true})
			return err
		})
		if len(checks) != 24 {
			t.Fatalf("checks: %d, want 24", len(checks))
		}
		for _, ch := range checks {
			if ch.Owner == "node4" || ch.Owner == "" {
				t.Fatalf("check %s assigned to %q", ch.ID, ch.Owner)
			}
		}
		c.Stop(3)
	})

	t.Run("a node with another gossip key cannot join and the log says why", func(t *testing.T) {
		other := c.AddNodeWith("node5", func(cfg *agent.Config) {
			cfg.GossipKey = newGossipKey(t)
			cfg.TLSCertFile = filepath.Join(dir, "node4.pem")
			cfg.TLSKeyFile = filepath.Join(dir, "node4-key.pem")
		})
		_, err := c.Client(0).Join(ctx, []string{other.Config.GossipAddr})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != "join_failed" || !strings.Contains(ce.ErrorBody.Error, "gossip encryption key mismatch") {
			t.Fatalf("join with another key: %v", err)
		}
		agenttest.Eventually(t, 10*time.Second, func() bool {
			return len(logs.lines("[ERROR]", "gossip encryption key mismatch")) > 0
		}, "an error line naming the gossip key mismatch")
		ms, err := c.Client(0).Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Name == "node5" {
				t.Fatalf("node5 became a member: %+v", m)
			}
		}
		c.Stop(4)
	})

	t.Run("the cluster fails over and keeps replicating", func(t *testing.T) {
		old := c.Leader()
		c.Stop(old)
		nl := c.WaitForLeader()
		if nl == old {
			t.Fatal("leader did not change")
		}
		survivor := (old + 1) % 3
		if survivor == nl {
			survivor = (old + 2) % 3
		}
		idx := agenttest.Register(t, c.Client(survivor), "web", "web-2", reg("10.0.0.2", 8080))
		var insts []client.Instance
		agenttest.Retry503(t, "a consistent read after failover", func() (err error) {
			insts, _, err = c.Client(nl).Instances(ctx, "web", &client.QueryOptions{Consistent: true})
			return err
		})
		if len(insts) != 2 {
			t.Fatalf("after failover: %+v (index %d)", insts, idx)
		}
		c.Restart(old)
		c.WaitForIndex(idx)
	})
}

// TestNoSecretAppearsInAnyLogLine runs a secure cluster, exercises tokens
// (good, wrong, revoked, in the URL), joins with the wrong gossip key, and
// then greps every log line of every node for every secret, in any of the
// forms it travels in.
func TestNoSecretAppearsInAnyLogLine(t *testing.T) {
	dir, _ := pki(t)
	key := newGossipKey(t)
	logs := &logCapture{}
	c := secureCluster(t, 3, dir, key, logs)
	c.WaitForVoters(3)
	ctx := context.Background()
	tc := clientTLS(t, dir)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}

	write := createToken(t, c.Client(1), client.TokenRequest{Policy: "write", Prefixes: []string{"web"}})
	read := createToken(t, c.Client(2), client.TokenRequest{Policy: "read"})
	wrong := "bcn_WRONGTOKENTHATNOBODYMADE42"
	for i := range c.Nodes() {
		base := "https://" + c.Node(i).HTTPAddr()
		retryRaw503(t, func() rawResult {
			return rawDo(t, hc, http.MethodPut, base+"/v1/services/web/instances/w"+fmt.Sprint(i), write.Secret, `{"address":"10.0.0.1","port":80}`)
		})
		rawDo(t, hc, http.MethodPut, base+"/v1/services/db/instances/d1", write.Secret, `{"address":"10.0.0.1","port":80}`)
		rawDo(t, hc, http.MethodPut, base+"/v1/services/web/instances/w9", read.Secret, `{"address":"10.0.0.1","port":80}`)
		rawDo(t, hc, http.MethodGet, base+"/v1/services", wrong, "")
		rawDo(t, hc, http.MethodGet, base+"/v1/services?token="+read.Secret, "", "")
		rawDo(t, hc, http.MethodGet, base+"/v1/tokens", read.Secret, "")
		rawDo(t, hc, http.MethodGet, base+"/metrics", read.Secret, "")
	}
	if _, err := c.Client(0).DeleteToken(ctx, read.Accessor); err != nil {
		t.Fatal(err)
	}
	rawDo(t, hc, http.MethodGet, "https://"+c.Node(0).HTTPAddr()+"/v1/services", read.Secret, "")
	other := c.AddNodeWith("node4", func(cfg *agent.Config) { cfg.GossipKey = newGossipKey(t) })
	_, _ = c.Client(0).Join(ctx, []string{other.Config.GossipAddr})
	agenttest.Eventually(t, 10*time.Second, func() bool { return len(logs.lines("gossip encryption key mismatch")) > 0 }, "the key mismatch to be logged")
	otherKey := other.Config.GossipKey
	c.Stop(3)

	rawKey, _ := base64.StdEncoding.DecodeString(key)
	secrets := map[string]string{
		"management token": testManagementToken, "cluster secret": testClusterSecret,
		"gossip key": key, "gossip key (hex)": hex.EncodeToString(rawKey), "other gossip key": otherKey,
		"write token": write.Secret, "read token": read.Secret, "wrong token": wrong,
		"write token hash": hex.EncodeToString(api.HashToken(write.Secret)),
		"read token hash":  hex.EncodeToString(api.HashToken(read.Secret)),
		"management hash":  hex.EncodeToString(api.HashToken(testManagementToken)),
	}
	all := logs.String()
	// The lines the secrets would travel in were captured: the audit of
	// the token writes and registrations, and the denied requests.
	for _, want := range []string{"audit: write accepted", "op=token-set", "request denied", "code=token_in_url", "code=invalid_token"} {
		if !strings.Contains(all, want) {
			t.Fatalf("no %q in the %d bytes of logs captured: nothing to look for secrets in", want, len(all))
		}
	}
	for name, s := range secrets {
		if strings.Contains(all, s) {
			for _, l := range logs.lines(s) {
				t.Errorf("%s in the log: %s", name, l)
			}
		}
	}
}

// A blocking query over TLS is parked like one over plain HTTP: it waits
// out of net/http, is answered on its TLS connection when the catalog
// changes, and that connection serves the client's next request.
func TestBlockingQueryOverTLSIsParkedAndKeepsItsConnection(t *testing.T) {
	dir, _ := pki(t)
	c := secureCluster(t, 1, dir, newGossipKey(t), nil)
	c.WaitForLeader()
	ctx := context.Background()
	cl := c.Client(0)
	idx, err := cl.Register(ctx, "web", "web-1", &client.Registration{Address: "127.0.0.1", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	// One connection only: every request of this client takes it.
	tr := &http.Transport{TLSClientConfig: clientTLS(t, dir), MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	var dials atomic.Int32
	trace := &httptrace.ClientTrace{ConnectStart: func(string, string) { dials.Add(1) }}
	get := func(path string) (*http.Response, string, error) {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, "https://"+c.Node(0).HTTPAddr()+path, nil)
		req.Header.Set("Authorization", "Bearer "+testManagementToken)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, body, err := get(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", idx))
		done <- result{resp, body, err}
	}()
	srv := c.Node(0).Agent.API()
	agenttest.Eventually(t, 30*time.Second, func() bool {
		st := srv.BlockingStats()
		return st.Active == 1 && st.Parked == 1
	}, "the query to park")
	next, err := cl.Register(ctx, "web", "web-2", &client.Registration{Address: "127.0.0.1", Port: 8081})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the blocking query never returned")
	}
	if r.err != nil || r.resp.StatusCode != http.StatusOK || r.resp.Header.Get(api.HeaderIndex) != strconv.FormatUint(next, 10) || !strings.Contains(r.body, `"web-2"`) {
		t.Fatalf("the parked answer over TLS: %+v %s", r, r.body)
	}
	resp, body, err := get("/v1/services/web/instances")
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, `"web-2"`) {
		t.Fatalf("the next request: %v %v %s", err, resp, body)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections dialled, want 1 (the parked query's connection kept)", n)
	}
}
