package main_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The issue's own check of client fail-over, with the real binary: one of
// three agents is paused (SIGSTOP: the kernel still completes TCP
// handshakes, nothing answers) and named first in BEACON_ADDR, and 20 mixed
// CLI commands (writes and reads, --consistent included) all succeed. Each
// costs at most one attempt timeout (2s) on the paused agent: a read moves
// on after it, and so does a write, which never sent its body there (it
// waits for "100 Continue"; deregister carries "{}" for that).
//
// The client starts with a random agent of the list, so about a third of
// the commands meet the paused agent first; the log says how many did.
func TestBinaryTwentyCLICommandsWithOneAgentPaused(t *testing.T) {
	pc := startProcCluster(t, 3)
	leader := pc.leader(3)
	var paused *proc
	var live []*proc
	for _, p := range pc.procs {
		if p != leader && paused == nil {
			paused = p
		} else {
			live = append(live, p)
		}
	}

	// Before the pause: an instance with a TTL check to report on.
	pc.eventually(30*time.Second, "registering web-0", func() bool {
		_, err := pc.try("--addr", leader.http, "register", "web", "web-0", "--address", "10.0.0.1", "--port", "8080", "--check-ttl", "1h")
		return err == nil
	})
	var checks []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(pc.cli("--addr", leader.http, "checks", "--service", "web", "-o", "json")), &checks); err != nil || len(checks) != 1 {
		t.Fatalf("checks of web: %v %+v", err, checks)
	}
	ttl := checks[0].ID

	addrs := paused.http
	for _, p := range live {
		addrs += "," + p.http
	}
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	pid := paused.cmd.Process.Pid
	cont := func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
	t.Cleanup(cont) // runs before the cluster's own cleanup kills the agents
	t.Logf("%s (pid %d) paused; BEACON_ADDR=%s", paused.name, pid, addrs)

	commands := [][]string{
		{"register", "web", "web-p1", "--address", "10.0.0.2", "--port", "9001"},
		{"status"},
		{"members"},
		{"services"},
		{"discover", "web"},
		{"discover", "web", "--consistent"},
		{"checks"},
		{"deregister", "web", "web-p1"},
		{"check", "pass", ttl, "--output", "ok"},
		{"register", "web", "web-p2", "--address", "10.0.0.2", "--port", "9002"},
		{"discover", "web", "--consistent"},
		{"deregister", "web", "web-p2"},
		{"status"},
		{"members"},
		{"services", "--consistent"},
		{"checks", "--service", "web", "--consistent"},
		{"register", "web", "web-p3", "--address", "10.0.0.2", "--port", "9003"},
		{"deregister", "web", "web-p3"},
		{"check", "warn", ttl, "--output", "slow"},
		{"deregister", "web", "web-p1"}, // again: deregistering is idempotent
	}
	const attempt = 2 * time.Second // the CLI's default --attempt-timeout
	var slowest time.Duration
	var slowestCmd string
	metPaused := 0
	for _, args := range commands {
		start := time.Now()
		out, err := pc.tryEnv([]string{"BEACON_ADDR=" + addrs}, args...)
		took := time.Since(start)
		cmdline := "beacon " + strings.Join(args, " ")
		if err != nil {
			t.Fatalf("%s with %s paused (first in BEACON_ADDR) failed after %s: %v\n%s", cmdline, paused.name, took, err, out)
		}
		t.Logf("%s: %s", cmdline, took.Round(time.Millisecond))
		if took >= attempt {
			metPaused++
		}
		if took > slowest {
			slowest, slowestCmd = took, cmdline
		}
		// A command that hung on the paused agent would wait for the
		// client's 30s timeout; one attempt there costs 2s.
		if took > 20*time.Second {
			t.Errorf("%s took %s", cmdline, took)
		}
	}
	t.Logf("20 CLI commands with %s paused: all succeeded; %d took at least one attempt timeout (%s); the slowest, %s, took %s",
		paused.name, metPaused, attempt, slowestCmd, slowest.Round(time.Millisecond))

	// The writes took effect: only web-0 is left, and its check was reported.
	var insts []instance
	if err := json.Unmarshal([]byte(pc.cli("--addr", leader.http, "discover", "web", "--consistent", "-o", "json")), &insts); err != nil {
		t.Fatal(err)
	}
	if len(insts) != 1 || insts[0].ID != "web-0" {
		t.Fatalf("after the commands, web has %+v; want web-0 alone", insts)
	}
	var st []struct {
		ID, Status, Output string
	}
	if err := json.Unmarshal([]byte(pc.cli("--addr", leader.http, "checks", "--service", "web", "--consistent", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Status != "warning" || st[0].Output != "slow" {
		t.Fatalf("the TTL check after the reports: %+v", st)
	}

	// Every server's view, asked with the paused agent in the list: the
	// agent that answers waits out the paused server (2 s), and the CLI
	// waits for that answer rather than giving up on it at the same
	// moment (several times, as the client starts with a random agent).
	for i := 0; i < 3; i++ {
		out, err := pc.tryEnv([]string{"BEACON_ADDR=" + addrs}, "operator", "raft", "servers", "-o", "json")
		if err != nil {
			t.Fatalf("operator raft servers with %s paused: %v\n%s", paused.name, err, out)
		}
		var view struct {
			Servers []struct {
				ID    string `json:"id"`
				Error string `json:"error"`
			} `json:"servers"`
		}
		if err := json.Unmarshal([]byte(out), &view); err != nil {
			t.Fatalf("operator raft servers: %v\n%s", err, out)
		}
		found := false
		for _, sv := range view.Servers {
			if sv.ID == paused.name {
				found = true
				if !strings.Contains(sv.Error, "no answer within") {
					t.Errorf("the paused %s is listed with %q, want no answer within", sv.ID, sv.Error)
				}
			} else if sv.Error != "" {
				t.Errorf("the live %s is listed with %q", sv.ID, sv.Error)
			}
		}
		if !found || len(view.Servers) != 3 {
			t.Errorf("operator raft servers lists %+v, want 3 servers with %s", view.Servers, paused.name)
		}
	}
	cont()
}

// tryEnv runs the beacon CLI with env added to this process's environment
// (and without BEACON_ADDR from it) and returns its output.
func (pc *procCluster) tryEnv(env []string, args ...string) (string, error) {
	cmd := exec.Command(beaconBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BEACON_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}
