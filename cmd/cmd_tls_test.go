package cmd_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"

	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/cmd"
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
	for _, name := range []string{agent.ServerTLSName, "n1", "n1.example.com", "localhost", "10.1.2.3", "127.0.0.1"} {
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
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, DNSName: agent.ServerTLSName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
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

// TestCLITalksHTTPSWithCACertAndClientCertificate runs an agent that serves
// HTTPS and requires client certificates, with certificates made by `beacon
// tls`, and the CLI against it.
func TestCLITalksHTTPSWithCACertAndClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := filepath.Join(dir, "beacon-ca.pem"), filepath.Join(dir, "beacon-ca-key.pem")
	for _, args := range [][]string{
		{"tls", "ca", "create", "--dir", dir},
		{"tls", "cert", "create", "--node", "node1", "--dir", dir, "--ca", ca, "--ca-key", caKey},
		{"tls", "cert", "create", "--node", "cli", "--client", "--dir", dir, "--ca", ca, "--ca-key", caKey},
	} {
		if out, err := beaconCLI(t, nil, args...); err != nil {
			t.Fatalf("beacon %v: %v\n%s", args, err, out)
		}
	}
	c := agenttest.New(t, 1, agenttest.WithConfig(func(c *agent.Config) {
		c.TLSCertFile, c.TLSKeyFile = filepath.Join(dir, c.Node+".pem"), filepath.Join(dir, c.Node+"-key.pem")
		c.TLSCAFile, c.TLSHTTPClientCAFile = ca, ca
	}))
	env := map[string]string{
		"BEACON_ADDR": c.Node(0).HTTPAddr(), "BEACON_CACERT": ca,
		"BEACON_CLIENT_CERT": filepath.Join(dir, "cli.pem"), "BEACON_CLIENT_KEY": filepath.Join(dir, "cli-key.pem"),
	}
	agenttest.Retry503(t, "register", func() error {
		_, err := beaconCLI(t, env, "register", "web", "web-1", "--address", "127.0.0.1", "--port", "8080")
		return err
	})
	out, err := beaconCLI(t, env, "discover", "web")
	if err != nil || !strings.Contains(out, "web-1") {
		t.Fatalf("beacon discover over HTTPS: %v\n%s", err, out)
	}
	delete(env, "BEACON_CACERT")
	env["BEACON_ADDR"] = "https://" + c.Node(0).HTTPAddr()
	if out, err := beaconCLI(t, env, "discover", "web"); err == nil {
		t.Fatalf("the CLI trusted an unknown CA: %s", out)
	}
}

// TestTLSCertCreateTakesTheCAAsCACert: `tls cert create` names its CA
// --ca-cert, as the client flag does (it used to be the global client flag
// there, ignored, so the default ./beacon-ca.pem was read); --ca is an alias,
// and the two naming different files are refused.
func TestTLSCertCreateTakesTheCAAsCACert(t *testing.T) {
	dir := t.TempDir()
	if out, err := beaconCLI(t, nil, "tls", "ca", "create", "--dir", dir); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ca, caKey := filepath.Join(dir, "beacon-ca.pem"), filepath.Join(dir, "beacon-ca-key.pem")
	if out, err := beaconCLI(t, nil, "tls", "cert", "create", "--node", "n1", "--dir", dir, "--ca-cert", ca, "--ca-key", caKey); err != nil {
		t.Fatalf("--ca-cert: %v %s", err, out)
	}
	if out, err := beaconCLI(t, nil, "tls", "cert", "create", "--node", "n2", "--dir", dir, "--ca", ca, "--ca-key", caKey); err != nil {
		t.Fatalf("--ca: %v %s", err, out)
	}
	if out, err := beaconCLI(t, nil, "tls", "cert", "create", "--node", "n3", "--dir", dir, "--ca", ca, "--ca-cert", ca, "--ca-key", caKey); err != nil {
		t.Fatalf("--ca and --ca-cert naming the same file: %v %s", err, out)
	}
	if _, err := beaconCLI(t, nil, "tls", "cert", "create", "--node", "n4", "--dir", dir, "--ca", ca, "--ca-cert", filepath.Join(dir, "other.pem"), "--ca-key", caKey); err == nil || !strings.Contains(err.Error(), "alias") {
		t.Fatalf("--ca and --ca-cert naming different files: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(parseCert(t, ca))
	for _, n := range []string{"n1", "n2", "n3"} {
		if _, err := parseCert(t, filepath.Join(dir, n+".pem")).Verify(x509.VerifyOptions{Roots: roots, DNSName: n}); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}
