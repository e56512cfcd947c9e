package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecureClusterOfProcesses runs three `beacon agent` processes the way
// docs/security.md tells an operator to: secrets from the environment, TLS
// from `beacon tls` files, and the CLI over HTTPS with tokens.
func TestSecureClusterOfProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	logOf := func(p *proc) string { return filepath.Join(dir, p.name+".log") }
	pc := &procCluster{t: t}
	pc.cli("tls", "ca", "create", "--dir", dir)
	for i := 1; i <= 3; i++ {
		pc.cli("tls", "cert", "create", "--node", fmt.Sprintf("n%d", i), "--dir", dir,
			"--ca", filepath.Join(dir, "beacon-ca.pem"), "--ca-key", filepath.Join(dir, "beacon-ca-key.pem"))
	}
	gossipKey := strings.TrimSpace(pc.cli("keygen"))
	const mgmt, secret = "e2e-management-token-4f9a1c", "e2e-cluster-secret-77c2-0123456789abcdef"
	agentEnv := append(os.Environ(), "BEACON_MANAGEMENT_TOKEN="+mgmt, "BEACON_CLUSTER_SECRET="+secret,
		"BEACON_GOSSIP_KEY="+gossipKey, "BEACON_LOG_JSON=true", "BEACON_TLS_CA_FILE="+filepath.Join(dir, "beacon-ca.pem"))

	// Every listener on a port the kernel picks; the first agent starts
	// alone and the others join the gossip address it bound.
	t.Cleanup(func() {
		for _, p := range pc.procs {
			pc.kill(p, syscall.SIGTERM)
		}
		if t.Failed() {
			for _, p := range pc.procs {
				t.Logf("--- log of %s ---\n%s", p.name, readLog(t, logOf(p)))
			}
		}
	}) // registered first: a failed start leaves no process behind
	var joins []string
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("n%d", i+1)
		p := &proc{name: name}
		p.args = append([]string{"agent", "--node", name, "--data-dir", filepath.Join(dir, name),
			"--bootstrap-expect", "3",
			"--tls-cert-file", filepath.Join(dir, name+".pem"), "--tls-key-file", filepath.Join(dir, name+"-key.pem")}, onPortZero(p, dir)...)
		p.args = append(p.args, joins...)
		pc.procs = append(pc.procs, p)
		startWithEnv(pc, p, agentEnv, logOf(p))
		if i == 0 {
			pc.waitAddrs(p)
			joins = []string{"--join", p.gossip}
		}
	}
	for _, p := range pc.procs[1:] {
		pc.waitAddrs(p)
	}

	cli := func(token string, args ...string) (string, error) {
		cmd := exec.Command(beaconBin, args...)
		cmd.Env = append(os.Environ(), "BEACON_ADDR="+pc.procs[1].http, "BEACON_CACERT="+filepath.Join(dir, "beacon-ca.pem"), "BEACON_TOKEN="+token)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	pc.eventually(60*time.Second, "a leader with three peers, over HTTPS", func() bool {
		out, err := cli("", "status", "-o", "json")
		var st status
		return err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Leader != "" && len(st.Peers) == 3
	})

	out, err := cli(mgmt, "token", "create", "--policy", "write", "--prefix", "web", "-o", "json")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	var tok struct{ Accessor, Secret string }
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Secret == "" {
		t.Fatalf("token create printed %q", out)
	}
	pc.eventually(30*time.Second, "a registration with the write token", func() bool {
		_, err := cli(tok.Secret, "register", "web", "web-1", "--address", "10.0.0.1", "--port", "8080")
		return err == nil
	})
	if out, err := cli(tok.Secret, "register", "db", "db-1", "--address", "10.0.0.2", "--port", "5432"); err == nil || !strings.Contains(out, "permission_denied") {
		t.Fatalf("a write outside the token's prefix: %v\n%s", err, out)
	}
	if out, err := cli("", "register", "web", "web-2", "--address", "10.0.0.1", "--port", "8080"); err == nil || !strings.Contains(out, "unauthenticated") {
		t.Fatalf("an anonymous write: %v\n%s", err, out)
	}
	if out, err := cli("", "discover", "web"); err != nil || !strings.Contains(out, "web-1") {
		t.Fatalf("an anonymous read: %v\n%s", err, out)
	}
	if out, err := pc.try("--addr", "http://"+pc.procs[1].http, "services"); err == nil {
		t.Fatalf("plain HTTP to an HTTPS agent worked: %s", out)
	}

	// An agent with auth and no cluster secret refuses to start.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad := exec.CommandContext(ctx, beaconBin, "agent", "--node", "bad", "--data-dir", filepath.Join(dir, "bad"),
		"--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--management-token", mgmt)
	var badOut bytes.Buffer
	bad.Stdout, bad.Stderr = &badOut, &badOut
	err = bad.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(badOut.String(), "--cluster-secret") || strings.Contains(badOut.String(), mgmt) {
		t.Fatalf("agent with auth and no secret: %v\n%s", err, badOut.String())
	}

	// Every node logs JSON; the leader's audit line names the token; no
	// secret appears anywhere.
	pc.eventually(10*time.Second, "the audit line", func() bool {
		for _, p := range pc.procs {
			for _, line := range strings.Split(readLog(t, logOf(p)), "\n") {
				if strings.Contains(line, `"@module":"beacon.audit"`) && strings.Contains(line, `"accessor":"`+tok.Accessor+`"`) && strings.Contains(line, `"op":"register"`) {
					return true
				}
			}
		}
		return false
	})
	for _, p := range pc.procs {
		for _, s := range []string{mgmt, secret, gossipKey, tok.Secret} {
			if strings.Contains(readLog(t, logOf(p)), s) {
				t.Errorf("%s logged a secret", p.name)
			}
		}
	}
}

// startWithEnv starts p with env as its environment and its output in
// logFile (a file, so the test can read it while the process writes).
func startWithEnv(pc *procCluster, p *proc, env []string, logFile string) {
	f, err := os.Create(logFile)
	if err != nil {
		pc.t.Fatal(err)
	}
	defer f.Close()
	p.log = &bytes.Buffer{}
	p.cmd = exec.Command(beaconBin, p.args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		pc.t.Fatal(err)
	}
}

func readLog(t *testing.T, file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
