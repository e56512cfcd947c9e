package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// These tests drive the built binary the way the README tells a newcomer to:
// three `beacon agent` processes on loopback, and the CLI against them.

var beaconBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "beacon-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	beaconBin = filepath.Join(dir, "beacon")
	build := exec.Command("go", "build", "-o", beaconBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build beacon:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	name string
	args []string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	// addrFile is the agent's --addr-file; http, cluster and gossip are the
	// addresses it bound (on port 0 the first time), read from it.
	addrFile              string
	http, cluster, gossip string
}

type procCluster struct {
	t     *testing.T
	procs []*proc
}

// onPortZero returns the agent arguments that bind every listener on a port
// the kernel picks and write the bound addresses to p.addrFile (in dir),
// where waitAddrs reads them: nothing picks a free port beforehand, so no
// other process can take it first (docs/operations.md, "Ports the kernel
// picks").
func onPortZero(p *proc, dir string) []string {
	p.addrFile = filepath.Join(dir, p.name+".addrs.json")
	return []string{"--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--addr-file", p.addrFile}
}

// waitAddrs waits until p's agent serves and has written its address file,
// and records the addresses it bound.
func (pc *procCluster) waitAddrs(p *proc) {
	pc.t.Helper()
	wait.For(pc.t, 60*time.Second, 20*time.Millisecond, func() (bool, string) {
		af, err := agent.ReadAddrFile(p.addrFile)
		if err != nil {
			return false, fmt.Sprintf("%s's address file: %v", p.name, err)
		}
		p.http, p.cluster, p.gossip = af.HTTP.Bind, af.Cluster.Bind, af.Gossip.Bind
		return true, ""
	})
}

// restart starts p again (it was killed) from its data dir, on the
// addresses it bound before, as a restarted server keeps its configured
// ports and its peers know it by them, joining the running agents' gossip
// as a restarted server configured with --join would.
func (pc *procCluster) restart(p *proc) {
	pc.t.Helper()
	if err := os.Remove(p.addrFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		pc.t.Fatal(err)
	}
	var args []string
	for i := 0; i < len(p.args); i++ {
		if p.args[i] == "--join" {
			i++
			continue
		}
		args = append(args, p.args[i])
		if i+1 < len(p.args) {
			switch p.args[i] {
			case "--http-addr":
				args, i = append(args, p.http), i+1
			case "--raft-addr":
				args, i = append(args, p.cluster), i+1
			case "--gossip-addr":
				args, i = append(args, p.gossip), i+1
			}
		}
	}
	for _, q := range pc.procs {
		if q != p && q.cmd != nil {
			args = append(args, "--join", q.gossip)
		}
	}
	p.args = args
	pc.start(p)
	pc.waitAddrs(p)
}

func startProcCluster(t *testing.T, n int) *procCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts processes")
	}
	pc := &procCluster{t: t}
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, p := range pc.procs {
			pc.kill(p, syscall.SIGKILL)
		}
		if t.Failed() {
			for _, p := range pc.procs {
				t.Logf("--- log of %s ---\n%s", p.name, p.log.String())
			}
		}
	}) // registered first: a failed start leaves no process behind
	// The first agent starts alone; the others join the gossip address it
	// bound.
	var joins []string
	for i := 0; i < n; i++ {
		p := &proc{name: fmt.Sprintf("n%d", i+1)}
		p.args = append([]string{"agent", "--node", p.name, "--data-dir", filepath.Join(dir, p.name),
			"--bootstrap-expect", fmt.Sprint(n), "--cluster-secret", "e2e-cluster-secret-0123456789abcdef"}, onPortZero(p, dir)...)
		p.args = append(p.args, joins...)
		pc.procs = append(pc.procs, p)
		pc.start(p)
		if i == 0 {
			pc.waitAddrs(p)
			joins = []string{"--join", p.gossip}
		}
	}
	for _, p := range pc.procs[1:] {
		pc.waitAddrs(p)
	}
	return pc
}

func (pc *procCluster) start(p *proc) {
	p.log = &bytes.Buffer{}
	p.cmd = exec.Command(beaconBin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		pc.t.Fatal(err)
	}
}

func (pc *procCluster) kill(p *proc, sig syscall.Signal) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}

// cli runs the beacon CLI and returns stdout; it fails the test on error.
func (pc *procCluster) cli(args ...string) string {
	pc.t.Helper()
	out, err := pc.try(args...)
	if err != nil {
		pc.t.Fatalf("beacon %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (pc *procCluster) try(args ...string) (string, error) {
	cmd := exec.Command(beaconBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func (pc *procCluster) eventually(timeout time.Duration, what string, cond func() bool) {
	pc.t.Helper()
	wait.For(pc.t, timeout, 50*time.Millisecond, func() (bool, string) { return cond(), what })
}

type status struct {
	Node, State, Leader string
	Peers               []struct{ ID string }
}

func (pc *procCluster) status(p *proc) (status, bool) {
	var st status
	out, err := pc.try("--addr", p.http, "status", "-o", "json")
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		return st, false
	}
	return st, true
}

// leader waits until a running node leads with n peers and returns it.
func (pc *procCluster) leader(n int) *proc {
	pc.t.Helper()
	var l *proc
	pc.eventually(30*time.Second, "a leader", func() bool {
		for _, p := range pc.procs {
			if p.cmd == nil {
				continue
			}
			if st, ok := pc.status(p); ok && st.State == "Leader" && len(st.Peers) == n {
				l = p
				return true
			}
		}
		return false
	})
	return l
}

type instance struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	Status  string `json:"status"`
}

func (pc *procCluster) discover(p *proc, service string, extra ...string) []instance {
	pc.t.Helper()
	var out []instance
	if err := json.Unmarshal([]byte(pc.cli(append([]string{"--addr", p.http, "discover", service, "-o", "json"}, extra...)...)), &out); err != nil {
		pc.t.Fatal(err)
	}
	return out
}

// register retries while the cluster answers 503 (a leader election).
func (pc *procCluster) register(p *proc, service, id, addr string, port int) {
	pc.t.Helper()
	wait.For(pc.t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		out, err := pc.try("--addr", p.http, "register", service, id, "--address", addr, "--port", fmt.Sprint(port), "--tag", "e2e")
		if err == nil {
			return true, ""
		}
		if !strings.Contains(out, "HTTP 503") {
			pc.t.Fatalf("register %s: %v\n%s", id, err, out)
		}
		return false, fmt.Sprintf("register %s: %v\n%s", id, err, out)
	})
}

func TestBinaryThreeAgentsDrivenByTheCLI(t *testing.T) {
	pc := startProcCluster(t, 3)
	leader := pc.leader(3)
	var followers []*proc
	for _, p := range pc.procs {
		if p != leader {
			followers = append(followers, p)
		}
	}

	// Register through one follower, read from the others.
	pc.register(followers[0], "web", "web-1", "10.0.0.1", 8080)
	pc.eventually(10*time.Second, "web-1 on every node", func() bool {
		for _, p := range pc.procs {
			if len(pc.discover(p, "web")) != 1 {
				return false
			}
		}
		return true
	})
	if got := pc.discover(followers[1], "web", "--consistent"); len(got) != 1 || got[0].Address != "10.0.0.1" || got[0].Port != 8080 {
		t.Fatalf("consistent discover: %+v", got)
	}

	// SIGKILL the leader; writes continue through the survivors.
	pc.kill(leader, syscall.SIGKILL)
	newLeader := pc.leader(3)
	if newLeader == leader {
		t.Fatal("leader did not change")
	}
	for i := 2; i <= 5; i++ {
		pc.register(followers[i%2], "web", fmt.Sprintf("web-%d", i), "10.0.0.1", 8080+i)
	}

	// The old leader restarts from its data dir and catches up.
	pc.restart(leader)
	pc.eventually(30*time.Second, "the restarted node to catch up", func() bool {
		out, err := pc.try("--addr", leader.http, "discover", "web", "-o", "json")
		var insts []instance
		return err == nil && json.Unmarshal([]byte(out), &insts) == nil && len(insts) == 5
	})
	// It rejoined gossip through --join: its members list names everyone.
	var members string
	pc.eventually(30*time.Second, "every node in the restarted node's members list", func() bool {
		members = pc.cli("--addr", leader.http, "members")
		for _, p := range pc.procs {
			if !strings.Contains(members, p.name) {
				return false
			}
		}
		return true
	})

	// Deregister through the CLI; a bad registration is refused with a one-line error.
	pc.cli("--addr", followers[0].http, "deregister", "web", "web-1")
	out, err := pc.try("--addr", followers[0].http, "register", "web", "web-x", "--address", "10.0.0.1", "--port", "70000")
	if err == nil || !strings.Contains(out, "port") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("bad port: err %v, output %q", err, out)
	}
	if got := pc.discover(newLeader, "web", "--consistent"); len(got) != 4 {
		t.Fatalf("after deregister: %d instances", len(got))
	}
	// A paused agent: TestBinaryTwentyCLICommandsWithOneAgentPaused.
}

func TestBinaryDevAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	pc := &procCluster{t: t}
	p := &proc{name: "dev"}
	p.args = append([]string{"agent", "--dev"}, onPortZero(p, t.TempDir())...)
	pc.procs = []*proc{p}
	pc.start(p)
	t.Cleanup(func() { pc.kill(p, syscall.SIGTERM) })
	pc.waitAddrs(p)
	pc.leader(1)
	pc.register(p, "web", "w1", "127.0.0.1", 8080)
	if got := pc.discover(p, "web"); len(got) != 1 || got[0].ID != "w1" {
		t.Fatalf("dev discover: %+v", got)
	}
	if out := pc.cli("--addr", p.http, "version"); !strings.Contains(out, "beacon") {
		t.Fatalf("version: %q", out)
	}
}
