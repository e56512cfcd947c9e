package cmd

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
)

// TestTheCLISaysWhenTheAgentSpeaksHTTPS runs an agent that serves HTTPS
// and requires client certificates, and the CLI against it without each of
// the TLS options it needs: each mistake gets a hint that names the option,
// not "is an agent running there?".
func TestTheCLISaysWhenTheAgentSpeaksHTTPS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := filepath.Join(dir, "beacon-ca.pem"), filepath.Join(dir, "beacon-ca-key.pem")
	for _, args := range [][]string{
		{"tls", "ca", "create", "--dir", dir},
		{"tls", "cert", "create", "--node", "node1", "--dir", dir, "--ca", ca, "--ca-key", caKey},
		{"tls", "cert", "create", "--node", "cli", "--client", "--dir", dir, "--ca", ca, "--ca-key", caKey},
	} {
		if _, stderr, code := runCLI(t, args...); code != exitOK {
			t.Fatalf("beacon %v: %s", args, stderr)
		}
	}
	c := agenttest.New(t, 1, agenttest.WithConfig(func(c *agent.Config) {
		c.TLSCertFile, c.TLSKeyFile = filepath.Join(dir, c.Node+".pem"), filepath.Join(dir, c.Node+"-key.pem")
		c.TLSCAFile, c.TLSHTTPClientCAFile = ca, ca
	}))
	host := c.Node(0).HTTPAddr()
	plain := newFakeAgent(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"services":[]}`)) })
	plainHost := strings.TrimPrefix(plain.URL, "http://")

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"plain HTTP to the HTTPS agent", []string{"--addr", host, "services"},
			[]string{"https_required", "Hint: the agent serves HTTPS", "--ca-cert"}},
		{"beacon health over plain HTTP", []string{"health", "--addr", host},
			[]string{"not healthy", "https_required", "Hint: the agent serves HTTPS"}},
		{"https:// without the CA", []string{"--addr", "https://" + host, "services"},
			[]string{"certificate", "Hint: the agent's HTTPS certificate could not be verified", "--ca-cert"}},
		{"the CA without a client certificate", []string{"--addr", host, "--ca-cert", ca, "services"},
			[]string{"certificate required", "Hint: the agent refused the TLS handshake", "--client-cert"}},
		{"--ca-cert against a plain HTTP agent", []string{"--addr", plainHost, "--ca-cert", ca, "services"},
			[]string{"Hint: the agent serves plain HTTP", "http://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, tc.args...)
			if code != exitError || strings.Contains(stderr, "is an agent running there") {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Fatalf("stderr %q lacks %q", stderr, w)
				}
			}
		})
	}
	// With everything it needs, the CLI works.
	cert, key := filepath.Join(dir, "cli.pem"), filepath.Join(dir, "cli-key.pem")
	if _, stderr, code := runCLI(t, "--addr", host, "--ca-cert", ca, "--client-cert", cert, "--client-key", key, "health"); code != exitOK {
		t.Fatalf("health with every TLS option: %s", stderr)
	}
	// An agent's own server certificate is a client certificate too: the
	// secure compose file's agents present theirs to their health checks.
	cert, key = filepath.Join(dir, "node1.pem"), filepath.Join(dir, "node1-key.pem")
	if _, stderr, code := runCLI(t, "--addr", host, "--ca-cert", ca, "--client-cert", cert, "--client-key", key, "health"); code != exitOK {
		t.Fatalf("health with the agent's own certificate as the client's: %s", stderr)
	}
}
