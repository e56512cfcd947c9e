package cmd_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/cluster/clustertest"
	"github.com/beaconhq/beacon/cmd"
	"github.com/beaconhq/beacon/fsm"
)

// beaconCLI runs the beacon command line in-process.
func beaconCLI(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	f := &cmd.Factory{Out: &out, Err: &errb, Getenv: func(k string) string { return env[k] }}
	root := cmd.NewRootCmd(f)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String() + errb.String(), err
}

// pki makes, with `beacon tls`, a CA and server certificates for
// node1..node4 and a client certificate "cli" in one directory, and a second
// CA with its own node4 certificate in another.
func pki(t *testing.T) (dir, rogue string) {
	t.Helper()
	dir, rogue = t.TempDir(), t.TempDir()
	must := func(args ...string) {
		t.Helper()
		if out, err := beaconCLI(t, nil, args...); err != nil {
			t.Fatalf("beacon %v: %v\n%s", args, err, out)
		}
	}
	must("tls", "ca", "create", "--dir", dir)
	for i := 1; i <= 4; i++ {
		must("tls", "cert", "create", "--node", fmt.Sprintf("node%d", i), "--dir", dir,
			"--ca", filepath.Join(dir, "beacon-ca.pem"), "--ca-key", filepath.Join(dir, "beacon-ca-key.pem"))
	}
	must("tls", "cert", "create", "--node", "cli", "--client", "--dir", dir,
		"--ca", filepath.Join(dir, "beacon-ca.pem"), "--ca-key", filepath.Join(dir, "beacon-ca-key.pem"))
	must("tls", "ca", "create", "--dir", rogue, "--common-name", "Rogue CA")
	must("tls", "cert", "create", "--node", "node4", "--dir", rogue,
		"--ca", filepath.Join(rogue, "beacon-ca.pem"), "--ca-key", filepath.Join(rogue, "beacon-ca-key.pem"))
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

func TestTLSCommandsMakeCertificatesThatVerify(t *testing.T) {
	dir := t.TempDir()
	if out, err := beaconCLI(t, nil, "tls", "ca", "create", "--dir", dir); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ca, caKey := filepath.Join(dir, "beacon-ca.pem"), filepath.Join(dir, "beacon-ca-key.pem")
	if out, err := beaconCLI(t, nil, "tls", "cert", "create", "--node", "n1", "--ip", "10.1.2.3", "--dns", "n1.example.com", "--dir", dir, "--ca", ca, "--ca-key", caKey); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := beaconCLI(t, nil, "tls", "cert", "create", "--node", "ops", "--client", "--dir", dir, "--ca", ca, "--ca-key", caKey); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	roots := x509.NewCertPool()
	roots.AddCert(parseCert(t, ca))
	srv := parseCert(t, filepath.Join(dir, "n1.pem"))
	for _, name := range []string{cmd.ServerTLSName, "n1", "n1.example.com", "localhost", "10.1.2.3", "127.0.0.1"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %q: %v", name, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a server certificate must also authenticate the server as a client (nodes dial each other): %v", err)
	}
	cli := parseCert(t, filepath.Join(dir, "ops.pem"))
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, DNSName: cmd.ServerTLSName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a client certificate must not pass as a server's")
	}
	if srv.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", srv.PublicKeyAlgorithm)
	}
	for _, f := range []string{"beacon-ca-key.pem", "n1-key.pem", "ops-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", f, st.Mode().Perm(), err)
		}
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem")); err != nil {
		t.Errorf("key pair: %v", err)
	}
	// Nothing is overwritten, and names cannot escape the directory.
	if _, err := beaconCLI(t, nil, "tls", "ca", "create", "--dir", dir); err == nil {
		t.Error("a second CA overwrote the first")
	}
	if _, err := beaconCLI(t, nil, "tls", "cert", "create", "--node", "../evil", "--dir", dir, "--ca", ca, "--ca-key", caKey); err == nil {
		t.Error("a node name with a path was accepted")
	}
}

func TestKeygenMakesAValidGossipKey(t *testing.T) {
	out, err := beaconCLI(t, nil, "keygen")
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil || len(key) != 32 {
		t.Fatalf("keygen printed %q (%v)", out, err)
	}
	out2, _ := beaconCLI(t, nil, "keygen")
	if out2 == out {
		t.Fatal("two keys are the same")
	}
}

// secureCluster starts n agents with TLS everywhere (HTTPS with client
// certificates, mTLS on the cluster port), gossip encryption and tokens, and
// clients that use all of it.
func secureCluster(t *testing.T, n int, dir string, gossipKey string, logs *logCapture) *clustertest.Cluster {
	t.Helper()
	tc := clientTLS(t, dir)
	opts := []clustertest.Option{
		withAuth(false, func(c *cmd.AgentConfig) {
			c.GossipKey = gossipKey
			c.TLSCertFile = filepath.Join(dir, c.Node+".pem")
			c.TLSKeyFile = filepath.Join(dir, c.Node+"-key.pem")
			c.TLSCAFile = filepath.Join(dir, "beacon-ca.pem")
			c.TLSHTTPClientCAFile = filepath.Join(dir, "beacon-ca.pem")
			c.TLSVerifyIncoming, c.TLSVerifyOutgoing, c.TLSVerifyServerHostname = true, true, true
		}),
		clustertest.WithClient(func(c *client.Config) {
			c.Token = testManagementToken
			c.Addresses = []string{"https://" + c.Addresses[0]}
			c.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		}),
	}
	if logs != nil {
		opts = append(opts, clustertest.WithLogWriter(logs))
	}
	return clustertest.New(t, n, opts...)
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
	out, err := beaconCLI(t, nil, "keygen")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
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

	f := follower(c)
	idx := registerRetry(t, c.Client(f), "web", "web-1", reg("10.0.0.1", 8080))
	c.WaitForIndex(idx)
	for i := range c.Nodes() {
		insts, _, err := c.Client(i).Instances(ctx, "web", &client.QueryOptions{Consistent: true})
		if err != nil || len(insts) != 1 {
			t.Fatalf("node %d over HTTPS: %v %+v", i, err, insts)
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

	t.Run("the CLI talks HTTPS with --ca-cert and a client certificate", func(t *testing.T) {
		env := map[string]string{
			"BEACON_ADDR": c.Node(f).HTTPAddr(), "BEACON_TOKEN": testManagementToken,
			"BEACON_CACERT":      filepath.Join(dir, "beacon-ca.pem"),
			"BEACON_CLIENT_CERT": filepath.Join(dir, "cli.pem"), "BEACON_CLIENT_KEY": filepath.Join(dir, "cli-key.pem"),
		}
		out, err := beaconCLI(t, env, "discover", "web")
		if err != nil || !strings.Contains(out, "web-1") {
			t.Fatalf("beacon discover over HTTPS: %v\n%s", err, out)
		}
		delete(env, "BEACON_CACERT")
		env["BEACON_ADDR"] = "https://" + c.Node(f).HTTPAddr()
		if out, err := beaconCLI(t, env, "discover", "web"); err == nil {
			t.Fatalf("the CLI trusted an unknown CA: %s", out)
		}
	})

	t.Run("a node with a certificate from another CA is not let into Raft", func(t *testing.T) {
		bad := c.AddNodeWith("node4", func(cfg *cmd.AgentConfig) {
			cfg.TLSCertFile = filepath.Join(rogue, "node4.pem")
			cfg.TLSKeyFile = filepath.Join(rogue, "node4-key.pem")
		})
		// Gossip (same key) lets it in; the cluster port does not.
		if _, err := c.Client(0).Join(ctx, []string{bad.Config.GossipAddr}); err != nil {
			t.Fatalf("join: %v", err)
		}
		clustertest.Eventually(t, 30*time.Second, func() bool {
			return len(logs.lines("not adding server to raft", "node=node4")) > 0 &&
				len(logs.lines("cluster tls handshake failed")) > 0
		}, "the leader to refuse node4 and log the TLS failure")
		c.WaitForVoters(3)
		// It is listed, as untrusted, and given no checks (issue 15): the
		// leader records it so in the catalog, and check owners are chosen
		// among the Raft members only.
		leader := c.Leader()
		clustertest.Eventually(t, 30*time.Second, func() bool {
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
			registerRetry(t, c.Client(0), "chk", fmt.Sprintf("chk-%d", i), &client.Registration{
				Address: "127.0.0.1", Port: 9, Checks: []client.CheckDefinition{{TCP: "127.0.0.1:9", Interval: client.Duration(time.Second)}},
			})
		}
		// node4 never catches up: read consistently rather than wait on every node.
		checks, _, err := c.Client(0).Checks(ctx, client.CheckFilter{Service: "chk"}, &client.QueryOptions{Consistent: true})
		if err != nil || len(checks) != 24 {
			t.Fatalf("checks: %v (%d)", err, len(checks))
		}
		for _, ch := range checks {
			if ch.Owner == "node4" || ch.Owner == "" {
				t.Fatalf("check %s assigned to %q", ch.ID, ch.Owner)
			}
		}
		c.Stop(3)
	})

	t.Run("a node with another gossip key cannot join and the log says why", func(t *testing.T) {
		other := c.AddNodeWith("node5", func(cfg *cmd.AgentConfig) {
			cfg.GossipKey = newGossipKey(t)
			cfg.TLSCertFile = filepath.Join(dir, "node4.pem")
			cfg.TLSKeyFile = filepath.Join(dir, "node4-key.pem")
		})
		_, err := c.Client(0).Join(ctx, []string{other.Config.GossipAddr})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != "join_failed" || !strings.Contains(ce.ErrorBody.Error, "gossip encryption key mismatch") {
			t.Fatalf("join with another key: %v", err)
		}
		clustertest.Eventually(t, 10*time.Second, func() bool {
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
		idx := registerRetry(t, c.Client(survivor), "web", "web-2", reg("10.0.0.2", 8080))
		insts, _, err := c.Client(nl).Instances(ctx, "web", &client.QueryOptions{Consistent: true})
		if err != nil || len(insts) != 2 {
			t.Fatalf("after failover: %v %+v (index %d)", err, insts, idx)
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
	other := c.AddNodeWith("node4", func(cfg *cmd.AgentConfig) { cfg.GossipKey = newGossipKey(t) })
	_, _ = c.Client(0).Join(ctx, []string{other.Config.GossipAddr})
	clustertest.Eventually(t, 10*time.Second, func() bool { return len(logs.lines("gossip encryption key mismatch")) > 0 }, "the key mismatch to be logged")
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
	if len(all) < 10000 || !strings.Contains(all, "audit: write accepted") {
		t.Fatalf("too few logs captured (%d bytes) to mean anything", len(all))
	}
	for name, s := range secrets {
		if strings.Contains(all, s) {
			for _, l := range logs.lines(s) {
				t.Errorf("%s in the log: %s", name, l)
			}
		}
	}
}
