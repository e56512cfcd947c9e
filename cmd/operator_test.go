package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// cli runs the CLI in-process against addr and returns its stdout.
func cli(ctx context.Context, t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	out, errOut, err := beacon(ctx, addr, args...)
	if errOut != "" {
		t.Logf("beacon %s: stderr:\n%s", strings.Join(args, " "), errOut)
	}
	return out, err
}

func mustBeacon(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, err := cli(context.Background(), t, addr, args...)
	if err != nil {
		t.Fatalf("beacon %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestOperatorCommandsAgainstAThreeNodeCluster(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	f := c.Follower()
	addr := c.Node(f).HTTPAddr()

	// list-peers: one row per server, one leader, all voters.
	// A follower may learn the configuration a moment after the leader.
	var out string
	var lines []string
	agenttest.Eventually(t, 10*time.Second, func() bool {
		out = mustBeacon(t, addr, "operator", "raft", "list-peers")
		lines = strings.Split(strings.TrimSpace(out), "\n")
		return len(lines) == 4
	}, "three peers on "+c.Node(f).Name)
	if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "ID ADDRESS STATE VOTER" {
		t.Fatalf("list-peers:\n%s", out)
	}
	leaders := 0
	for _, l := range lines[1:] {
		fs := strings.Fields(l)
		if fs[3] != "true" {
			t.Fatalf("not a voter: %q", l)
		}
		if fs[2] == "leader" {
			leaders++
			if fs[0] != c.Node(c.Leader()).Name {
				t.Fatalf("list-peers says %s leads, the cluster says %s", fs[0], c.Node(c.Leader()).Name)
			}
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders in:\n%s", leaders, out)
	}
	var peers []client.Peer
	if err := json.Unmarshal([]byte(mustBeacon(t, addr, "operator", "raft", "list-peers", "-o", "json")), &peers); err != nil || len(peers) != 3 {
		t.Fatalf("list-peers -o json: %v %+v", err, peers)
	}

	// servers: every server's own view, the same leader in each (a
	// follower that has not yet heard from the leader says "never").
	agenttest.Eventually(t, 30*time.Second, func() bool {
		out = mustBeacon(t, addr, "operator", "raft", "servers")
		lines = strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || !strings.HasPrefix(strings.Join(strings.Fields(lines[0]), " "), "ID ADDRESS STATE LEADER TERM COMMIT APPLIED LAST LAST CONTACT ANSWER") {
			return false
		}
		leader := c.Node(c.Leader()).Name
		for _, l := range lines[1:] {
			fs := strings.Fields(l)
			if len(fs) < 10 || fs[3] != leader || fs[8] == "never" || (fs[2] == "leader") != (fs[0] == leader) {
				return false
			}
		}
		return true
	}, "every server's view through "+c.Node(f).Name)
	t.Logf("operator raft servers:\n%s", out)
	var servers client.ClusterServers
	if err := json.Unmarshal([]byte(mustBeacon(t, addr, "operator", "raft", "servers", "-o", "json")), &servers); err != nil || len(servers.Servers) != 3 || servers.Node != c.Node(f).Name {
		t.Fatalf("servers -o json: %v %+v", err, servers)
	}

	// snapshot save, inspect, restore from files.
	agenttest.Register(t, c.Client(f), "web", "web-1", reg("10.0.0.1", 80))
	agenttest.Register(t, c.Client(f), "web", "web-2", reg("10.0.0.2", 80))
	file := filepath.Join(t.TempDir(), "backup.snap")
	if out := mustBeacon(t, addr, "snapshot", "save", file); !strings.Contains(out, "2 instances") {
		t.Fatalf("snapshot save: %q", out)
	}
	if out := mustBeacon(t, "127.0.0.1:1", "snapshot", "inspect", file); !strings.Contains(out, "instances:  2") {
		t.Fatalf("snapshot inspect (no agent needed):\n%s", out)
	}
	mustBeacon(t, addr, "deregister", "web", "web-1")
	agenttest.Register(t, c.Client(f), "db", "db-1", reg("10.0.0.5", 5432))
	other := c.Node(c.Follower(f)).HTTPAddr()
	if out := mustBeacon(t, other, "snapshot", "restore", file); !strings.Contains(out, "2 instances") {
		t.Fatalf("snapshot restore: %q", out)
	}
	for i := range c.Nodes() {
		agenttest.Eventually(t, 10*time.Second, func() bool {
			out, err := cli(context.Background(), t, c.Node(i).HTTPAddr(), "services")
			return err == nil && strings.Contains(out, "web") && !strings.Contains(out, "db")
		}, "the restored catalog on "+c.Node(i).Name)
	}

	// A damaged file is refused before it is sent, saying why.
	b, _ := os.ReadFile(file)
	bad := filepath.Join(t.TempDir(), "bad.snap")
	os.WriteFile(bad, b[:len(b)/2], 0o600)
	if _, err := cli(context.Background(), t, addr, "snapshot", "restore", bad); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("restore of a truncated file: %v", err)
	}

	// force-leave of an unknown node fails with the API's 404.
	if _, err := cli(context.Background(), t, addr, "force-leave", "nobody"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("force-leave nobody: %v", err)
	}

	// remove-peer of an ID that never was a peer fails with the API's 404.
	if _, err := cli(context.Background(), t, addr, "operator", "raft", "remove-peer", "n9"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("remove-peer n9: %v", err)
	}

	// remove-peer of a stopped server.
	gone := c.Follower(f)
	goneName := c.Node(gone).Name
	c.Stop(gone)
	c.WaitForLeader()
	wait.For(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		_, err := cli(context.Background(), t, addr, "operator", "raft", "remove-peer", goneName)
		if err != nil && !strings.Contains(err.Error(), "HTTP 503") {
			t.Fatalf("remove-peer %s: %v", goneName, err)
		}
		return err == nil, fmt.Sprintf("remove-peer %s: %v", goneName, err)
	})
	c.WaitForVoters(2)
}

func TestHealthExitsNonZeroUnlessTheEndpointAnswers2xx(t *testing.T) {
	ok := http.NewServeMux()
	ok.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ready") })
	ok.HandleFunc("GET /down", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no leader", 503) })
	srv := &http.Server{Handler: ok}
	ln := listen(t)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	ctx := context.Background()
	if out, err := cli(ctx, t, addr, "health"); err != nil || !strings.Contains(out, "healthy") {
		t.Fatalf("health of a ready agent: %v %q", err, out)
	}
	if _, err := cli(ctx, t, addr, "health", "--path", "/down"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("health of a 503: %v", err)
	}
	if _, err := cli(ctx, t, "127.0.0.1:1", "health"); err == nil {
		t.Fatal("health of nothing listening succeeded")
	}
}

func TestDemoRegistersItselfServesKeepsItsRegistrationAndDeregistersOnStop(t *testing.T) {
	c := agenttest.New(t, 1)
	node := c.Node(0).HTTPAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// The first agent refuses connections: the demo moves to the next.
		_, err := cli(ctx, t, "127.0.0.1:1,"+node, "demo", "--service", "web", "--id", "web-1",
			"--listen", "127.0.0.1:0", "--address", "127.0.0.1", "--version", "1.2.3", "--tag", "demo",
			"--sync-interval", "100ms")
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	cl := c.Client(0)
	var inst *client.Instance
	agenttest.Eventually(t, 20*time.Second, func() bool {
		inst, _, _ = cl.Instance(context.Background(), "web", "web-1", nil)
		return inst != nil
	}, "the demo to register")
	if inst.Address != "127.0.0.1" || inst.Version != "1.2.3" || len(inst.Checks) != 1 ||
		inst.Checks[0].HTTP != "http://127.0.0.1:"+strconv.Itoa(inst.Port)+"/healthz" {
		t.Fatalf("registration %+v", inst)
	}
	base := "http://127.0.0.1:" + strconv.Itoa(inst.Port)
	if body := get(t, base+"/"); !strings.Contains(body, "instance web-1 of service web") {
		t.Fatalf("page: %q", body)
	}
	if resp, err := http.Post(base+"/-/fail", "", nil); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("/healthz after /-/fail: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	// `beacon demo pass` and `demo fail` reach one instance directly (in
	// compose: exec in its container), not through a balancer that no
	// longer routes to it.
	instance := "127.0.0.1:" + strconv.Itoa(inst.Port)
	for _, step := range []struct {
		verb string
		code int
	}{{"pass", 200}, {"fail", 503}, {"pass", 200}} {
		if out, err := cli(context.Background(), t, node, "demo", step.verb, "--instance", instance); err != nil || !strings.Contains(out, instance) {
			t.Fatalf("demo %s --instance %s: %v %q", step.verb, instance, err, out)
		}
		if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != step.code {
			t.Fatalf("/healthz after demo %s: %v %v, want %d", step.verb, err, resp, step.code)
		} else {
			resp.Body.Close()
		}
	}
	if _, err := cli(context.Background(), t, node, "demo", "pass", "--instance", "127.0.0.1:1"); err == nil {
		t.Fatal("demo pass with no instance listening succeeded")
	}

	// Deregistered behind its back, it registers again.
	if _, err := cl.Deregister(context.Background(), "web", "web-1"); err != nil {
		t.Fatal(err)
	}
	agenttest.Eventually(t, 10*time.Second, func() bool {
		i, _, _ := cl.Instance(context.Background(), "web", "web-1", nil)
		return i != nil
	}, "the demo to register again")

	// Stopped (SIGTERM in a container), it deregisters and returns cleanly.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("demo returned %v", err)
	}
	done <- nil // for the cleanup
	if _, _, err := cl.Instance(context.Background(), "web", "web-1", nil); !client.IsNotFound(err) {
		t.Fatalf("after stop: %v, want not found", err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
