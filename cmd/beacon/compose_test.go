package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// TestComposeClusterEndToEnd drives docker-compose.yml the way docs/compose.md
// tells a newcomer to: it builds the image from a static binary, starts the
// cluster, and uses the beacon CLI from the host against the published
// ports. It runs without -short wherever a Docker engine answers (skipped,
// saying so, where none does; under CI=true a missing engine fails the
// test). Each run uses its own compose project, subnet, host ports and image
// tag, and removes its containers, network, volumes and image even when it
// fails.
func TestComposeClusterEndToEnd(t *testing.T) {
	dc := startCompose(t)
	ctx := context.Background()

	// A leader, agreed on by the three agents.
	leader := dc.waitForLeader(3)
	t.Logf("leader: %s", leader)

	// Register through n2, discover through n3 (and n1), from the host.
	dc.register("n2", "e2e", "e2e-1", "10.0.0.1", 8001)
	dc.eventually(20*time.Second, "e2e-1 on n3", func() bool { return dc.hasInstances("n3", "e2e", "e2e-1") })
	if got := dc.discover("n1", "e2e", "--consistent"); len(got) != 1 || got[0].Address != "10.0.0.1" || got[0].Port != 8001 {
		t.Fatalf("consistent discover through n1: %+v", got)
	}

	// The demo instances registered themselves through the agents.
	dc.eventually(60*time.Second, "web-1, web-2 and web-3 registered", func() bool {
		return dc.hasInstances("n1", "web", "web-1", "web-2", "web-3")
	})

	// Route through LB1 (path routing) and LB2 (host routing) to a healthy
	// demo instance.
	dc.eventually(60*time.Second, "3 healthy web instances", func() bool {
		return len(dc.discover("n1", "web", "--healthy")) == 3
	})
	for _, lb := range []struct{ svc, host, path string }{
		{"lb1", "", "/web/"},
		{"lb2", "web.service.beacon", "/"},
	} {
		dc.eventually(60*time.Second, lb.svc+" routing to a demo instance", func() bool {
			body, err := dc.httpGet(ctx, dc.port(lb.svc, 8080), lb.path, lb.host)
			return err == nil && strings.Contains(body, "instance web-")
		})
	}

	// The operator's scripts find the ports Docker picked (every port
	// variable is 0 here): smoke.sh passes against this project.
	if _, err := exec.LookPath("bash"); err == nil {
		sctx, cancel := context.WithTimeout(ctx, 4*time.Minute) // smoke.sh bounds itself to ~2 min
		defer cancel()
		smoke := exec.CommandContext(sctx, "bash", filepath.Join(dc.root, "scripts", "smoke.sh"))
		smoke.Env = append(append([]string{}, dc.env...),
			"BEACON_PROJECT="+dc.project, "COMPOSE=docker-compose", "BEACON_BIN="+beaconBin)
		out, err := smoke.CombinedOutput()
		if err != nil {
			t.Fatalf("scripts/smoke.sh with Docker-picked ports: %v\n%s", err, out)
		}
		t.Logf("scripts/smoke.sh with Docker-picked ports:\n%s", out)
	}

	// Kill the leader; writes keep going through the survivors.
	killed := leader
	dc.docker("kill", dc.container(killed))
	survivors := dc.others(killed)
	for i := 2; i <= 6; i++ {
		dc.register(survivors[i%2], "e2e", fmt.Sprintf("e2e-%d", i), "10.0.0.1", 8000+i)
	}
	newLeader := dc.waitForLeaderAmong(survivors)
	if newLeader == killed {
		t.Fatalf("%s was killed but is still the leader", killed)
	}
	for _, n := range survivors {
		dc.eventually(20*time.Second, "six e2e instances on "+n, func() bool { return len(dc.discover(n, "e2e")) == 6 })
	}

	// The load balancers keep routing without the killed agent.
	for _, lb := range []string{"lb1", "lb2"} {
		dc.eventually(30*time.Second, lb+" routing with "+killed+" down", func() bool {
			body, err := dc.httpGet(ctx, dc.port(lb, 8080), "/web/", "")
			return err == nil && strings.Contains(body, "instance web-")
		})
	}

	// The killed node comes back from its volume and catches up.
	dc.docker("start", dc.container(killed))
	dc.eventually(60*time.Second, killed+" back with six e2e instances", func() bool {
		return dc.hasInstances(killed, "e2e", "e2e-1", "e2e-2", "e2e-3", "e2e-4", "e2e-5", "e2e-6")
	})
	leader = dc.waitForLeader(3)

	// Partition a follower off the network: it cannot take writes, and
	// neither can it serve a consistent read; the majority can.
	isolated := dc.others(leader)[0]
	ip := dc.ip(isolated)
	dc.docker("network", "disconnect", dc.network(), dc.container(isolated))
	reconnected := false
	defer func() {
		if !reconnected {
			_, _ = dc.try("docker", "network", "connect", "--ip", ip, "--alias", isolated, dc.network(), dc.container(isolated))
		}
	}()
	dc.register(leader, "e2e", "majority-1", "10.0.0.2", 9001)
	// The write must fail. If it was refused outright (no leader), it must
	// never appear; if its outcome is unknown (a forwarded request lost in
	// the cut, or a timeout), it may be applied once the network is back.
	refusedOutright := false
	if out, err := dc.exec(isolated, "register", "e2e", "isolated-1", "--address", "10.0.0.3", "--port", "9002"); err == nil {
		t.Fatalf("a write through the isolated node %s succeeded:\n%s", isolated, out)
	} else {
		refusedOutright = strings.Contains(out, "no_leader") || strings.Contains(out, "not_leader")
		t.Logf("write through the isolated node failed, as it must (refused outright: %v): %s", refusedOutright, strings.TrimSpace(out))
	}
	if out, err := dc.exec(isolated, "discover", "e2e", "--consistent"); err == nil {
		t.Fatalf("a consistent read through the isolated node %s succeeded:\n%s", isolated, out)
	}
	if out, err := dc.exec(isolated, "discover", "e2e"); err != nil || strings.Contains(out, "majority-1") {
		t.Fatalf("a local read on the isolated node should work and miss the majority's write: %v\n%s", err, out)
	}

	// Reconnect at the same address and name: it converges (sees the
	// majority's write, never the write it refused).
	dc.docker("network", "connect", "--ip", ip, "--alias", isolated, dc.network(), dc.container(isolated))
	reconnected = true
	dc.eventually(60*time.Second, isolated+" converged after the partition", func() bool {
		return dc.hasInstances(isolated, "e2e", "majority-1") && dc.leaderOf(isolated) != ""
	})
	if refusedOutright && (dc.hasInstances(isolated, "e2e", "isolated-1") || dc.hasInstances(leader, "e2e", "isolated-1")) {
		t.Fatal("the write refused during the partition appeared after it")
	}

	// A fourth agent that joins nobody by itself: `beacon join` adds it,
	// `beacon leave` removes it.
	dc.compose("--profile", "join-demo", "up", "-d", "--no-deps", "n4")
	dc.eventually(60*time.Second, "n4's API", func() bool {
		_, err := dc.try(beaconBin, "--addr", dc.port("n4", 8750), "health", "--path", "/healthz")
		return err == nil
	})
	if peers := dc.voters(dc.port("n4", 8750)); peers != 0 {
		t.Fatalf("n4 has %d raft peers before joining", peers)
	}
	// Through the node that was partitioned: its service name resolves again.
	dc.cli("n4", "join", isolated+":8752")
	dc.eventually(60*time.Second, "4 voters after n4 joined", func() bool { return dc.voters(dc.port(leader, 8750)) == 4 })
	dc.eventually(30*time.Second, "the catalog on n4", func() bool { return dc.hasInstances("n4", "e2e", "majority-1") })
	dc.cli("n4", "leave")
	dc.eventually(60*time.Second, "3 voters after n4 left", func() bool { return dc.voters(dc.port(leader, 8750)) == 3 })
	dc.eventually(30*time.Second, "n4 seen as left", func() bool {
		out, err := dc.try(beaconBin, "--addr", dc.port(leader, 8750), "members", "-o", "json")
		var ms []struct{ Name, Status string }
		if err != nil || json.Unmarshal([]byte(out), &ms) != nil {
			return false
		}
		for _, m := range ms {
			if m.Name == "n4" {
				return m.Status == "left"
			}
		}
		return false
	})

	// A recreated container (as compose recreates one whose image or
	// configuration changed between two `make up`s): compose carries an
	// anonymous volume over to it by name, and down -v then leaves it (the
	// image used to declare VOLUME /data, which gave lb1 one).
	dc.compose("up", "-d", "--no-deps", "--force-recreate", "lb1")
	// Every volume the project's containers mount. Anonymous volumes carry
	// no compose label: the label filter below would not see them.
	ids := strings.Fields(dc.docker("ps", "-aq", "--filter", "label=com.docker.compose.project="+dc.project))
	mounted := strings.Fields(dc.docker(append([]string{"inspect", "-f", `{{range .Mounts}}{{if eq .Type "volume"}}{{println .Name}}{{end}}{{end}}`}, ids...)...))

	// Down: nothing of this project is left behind.
	dc.down()
	for _, what := range [][]string{
		{"ps", "-a", "-q"}, {"network", "ls", "-q"}, {"volume", "ls", "-q"},
	} {
		args := append(what, "--filter", "label=com.docker.compose.project="+dc.project)
		if out := strings.TrimSpace(dc.mustRun("docker", args...)); out != "" {
			t.Errorf("docker %s after down: %s", strings.Join(what, " "), out)
		}
	}
	for _, v := range mounted {
		if _, err := dc.try("docker", "volume", "inspect", v); err == nil {
			t.Errorf("volume %s, mounted by a container of the project, is left after down", v)
			dc.try("docker", "volume", "rm", v)
		}
	}
}

// composeCluster is one run of docker-compose.yml under its own project.
type composeCluster struct {
	t       *testing.T
	root    string
	project string
	image   string
	env     []string
	downed  bool
}

// requireDocker skips the test when no Docker engine (or docker-compose)
// answers, and fails it instead under CI=true.
func requireDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("compose end-to-end test: skipped with -short")
	}
	problem := ""
	for _, tool := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			problem = tool + " is not installed"
			break
		}
	}
	if problem == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
			problem = fmt.Sprintf("no Docker engine answers (docker info: %v: %s)", err, strings.TrimSpace(string(out)))
		}
	}
	if problem == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true, so the compose end-to-end test must run, but %s", problem)
	}
	t.Skipf("skipping the compose end-to-end test: %s (it runs, and must pass, under CI=true)", problem)
}

func randomID() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<40))
	return fmt.Sprintf("%010x", n)
}

func startCompose(t *testing.T) *composeCluster {
	t.Helper()
	requireDocker(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	id := randomID()
	dc := &composeCluster{t: t, root: root, project: "beacon-e2e-" + id, image: "beacon-e2e:" + id}
	t.Cleanup(dc.cleanup)
	dc.buildImage()

	env := append(os.Environ(),
		"BEACON_IMAGE="+dc.image,
		"BEACON_CLUSTER_SECRET=e2e-cluster-secret-"+randomID()+randomID(),
		"BEACON_LOG_LEVEL=debug",
	)
	for _, v := range []string{"N1", "N2", "N3", "N4", "LB1", "LB2", "LB1_ADMIN", "LB2_ADMIN", "N1_DNS", "N2_DNS", "N3_DNS", "N4_DNS"} {
		env = append(env, "BEACON_"+v+"_PORT=0") // Docker picks free host ports
	}
	// A subnet no other Docker network uses; another run may take the same
	// one at the same moment, so a refused network is retried elsewhere.
	for attempt := 0; ; attempt++ {
		dc.env = append(append([]string{}, env...), "BEACON_NET="+dc.freeSubnet())
		out, err := dc.try("docker-compose", dc.composeArgs("up", "-d")...)
		if err == nil {
			break
		}
		if attempt < 3 && strings.Contains(out, "overlap") {
			dc.try("docker-compose", dc.composeArgs("down", "-v", "--remove-orphans")...)
			continue
		}
		t.Fatalf("docker-compose up: %v\n%s", err, out)
	}
	return dc
}

// buildImage builds the image the way `make image` does, from a static
// binary and the repository's Dockerfile, in a context of its own.
func (dc *composeCluster) buildImage() {
	t := dc.t
	dir := t.TempDir()
	for _, d := range []string{"bin", "dist/data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "bin", "beacon"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		ca = nil // the image then has an empty bundle, as `make image` warns
	}
	if err := os.WriteFile(filepath.Join(dir, "dist", "ca-certificates.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join(dc.root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker", "build", "--quiet", "--tag", dc.image, dir)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
}

// freeSubnet returns a prefix "10.87.X" whose /24 overlaps no Docker network.
func (dc *composeCluster) freeSubnet() string {
	used := dc.mustRun("sh", "-c", `docker network inspect $(docker network ls -q) -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}'`)
	var nets []*net.IPNet
	for _, s := range strings.Fields(used) {
		if _, n, err := net.ParseCIDR(s); err == nil {
			nets = append(nets, n)
		}
	}
	for range 200 {
		x, _ := rand.Int(rand.Reader, big.NewInt(150))
		prefix := fmt.Sprintf("10.87.%d", 100+x.Int64())
		_, cand, _ := net.ParseCIDR(prefix + ".0/24")
		free := true
		for _, n := range nets {
			free = free && !n.Contains(cand.IP) && !cand.Contains(n.IP)
		}
		if free {
			return prefix
		}
	}
	dc.t.Fatal("no free 10.87.X.0/24 subnet")
	return ""
}

func (dc *composeCluster) composeArgs(args ...string) []string {
	return append([]string{"-p", dc.project, "-f", filepath.Join(dc.root, "docker-compose.yml")}, args...)
}

// cleanup removes everything the run created; on failure it first logs the
// containers' state and recent logs.
func (dc *composeCluster) cleanup() {
	if dc.t.Failed() && dc.env != nil {
		out, _ := dc.try("docker-compose", dc.composeArgs("--profile", "join-demo", "ps")...)
		dc.t.Logf("--- docker-compose ps ---\n%s", out)
		out, _ = dc.try("docker-compose", dc.composeArgs("--profile", "join-demo", "logs", "--no-color", "--tail", "150")...)
		dc.t.Logf("--- docker-compose logs ---\n%s", out)
	}
	if !dc.downed && dc.env != nil {
		if out, err := dc.try("docker-compose", dc.composeArgs("--profile", "join-demo", "down", "-v", "--remove-orphans", "-t", "2")...); err != nil {
			dc.t.Errorf("cleanup: docker-compose down: %v\n%s", err, out)
		}
	}
	if out, err := dc.try("docker", "rmi", "-f", dc.image); err != nil && !strings.Contains(out, "No such image") {
		dc.t.Errorf("cleanup: docker rmi %s: %v\n%s", dc.image, err, out)
	}
}

func (dc *composeCluster) down() {
	dc.t.Helper()
	dc.compose("--profile", "join-demo", "down", "-v", "--remove-orphans", "-t", "5")
	dc.downed = true
}

// try runs a command with the run's environment and returns its standard
// output, and its standard error too when it fails (what a command says
// on stderr, such as discover's "index: N", is no part of its JSON).
func (dc *composeCluster) try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = dc.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func (dc *composeCluster) mustRun(name string, args ...string) string {
	dc.t.Helper()
	out, err := dc.try(name, args...)
	if err != nil {
		dc.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (dc *composeCluster) compose(args ...string) string {
	dc.t.Helper()
	return dc.mustRun("docker-compose", dc.composeArgs(args...)...)
}

func (dc *composeCluster) docker(args ...string) string {
	dc.t.Helper()
	return dc.mustRun("docker", args...)
}

// container returns the ID of a service's container.
func (dc *composeCluster) container(service string) string {
	dc.t.Helper()
	id := strings.TrimSpace(dc.compose("--profile", "join-demo", "ps", "-q", service))
	if id == "" {
		dc.t.Fatalf("no container for %s", service)
	}
	return id
}

func (dc *composeCluster) network() string { return dc.project + "_beacon" }

// ip returns a container's address on the project's network.
func (dc *composeCluster) ip(service string) string {
	dc.t.Helper()
	return strings.TrimSpace(dc.docker("inspect", "-f",
		fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, dc.network()), dc.container(service)))
}

// port returns the host address published for a service's container port.
// It is looked up each time: a restarted container may get another one.
func (dc *composeCluster) port(service string, p int) string {
	dc.t.Helper()
	out, err := dc.try("docker-compose", dc.composeArgs("--profile", "join-demo", "port", service, fmt.Sprint(p))...)
	addr := strings.TrimSpace(out)
	if err != nil || addr == "" || strings.HasSuffix(addr, ":0") {
		return "127.0.0.1:1" // not published (the container is not running): refuses connections
	}
	return addr
}

// exec runs the beacon CLI inside a service's container, against its own
// agent (for a container cut off the network, whose published port is gone).
func (dc *composeCluster) exec(service string, args ...string) (string, error) {
	return dc.try("docker", append([]string{"exec", dc.container(service), "/beacon", "--addr", "127.0.0.1:8750"}, args...)...)
}

// cli runs the beacon CLI on the host against a service's published API.
func (dc *composeCluster) cli(service string, args ...string) string {
	dc.t.Helper()
	return dc.mustRun(beaconBin, append([]string{"--addr", dc.port(service, 8750)}, args...)...)
}

func (dc *composeCluster) eventually(timeout time.Duration, what string, cond func() bool) {
	dc.t.Helper()
	wait.For(dc.t, timeout, 250*time.Millisecond, func() (bool, string) { return cond(), what })
}

func (dc *composeCluster) others(node string) []string {
	var out []string
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != node {
			out = append(out, n)
		}
	}
	return out
}

type composeStatus struct {
	Node, State, Leader string
	Peers               []struct{ ID, Suffrage string }
}

func (dc *composeCluster) status(addr string) (composeStatus, bool) {
	var st composeStatus
	out, err := dc.try(beaconBin, "--addr", addr, "status", "-o", "json")
	return st, err == nil && json.Unmarshal([]byte(out), &st) == nil
}

func (dc *composeCluster) leaderOf(service string) string {
	st, _ := dc.status(dc.port(service, 8750))
	return st.Leader
}

func (dc *composeCluster) voters(addr string) int {
	st, ok := dc.status(addr)
	if !ok {
		return -1
	}
	n := 0
	for _, p := range st.Peers {
		if p.Suffrage == "Voter" {
			n++
		}
	}
	return n
}

// waitForLeader waits until n1, n2 and n3 agree on a leader whose
// configuration has voters voters, and returns it.
func (dc *composeCluster) waitForLeader(voters int) string {
	dc.t.Helper()
	var leader string
	dc.eventually(90*time.Second, fmt.Sprintf("a leader agreed on by n1, n2 and n3, with %d voters", voters), func() bool {
		leader = ""
		for _, n := range []string{"n1", "n2", "n3"} {
			st, ok := dc.status(dc.port(n, 8750))
			if !ok || st.Leader == "" || (leader != "" && st.Leader != leader) {
				return false
			}
			leader = st.Leader
		}
		return dc.voters(dc.port(leader, 8750)) == voters
	})
	return leader
}

// waitForLeaderAmong waits until the given nodes agree on a leader among them.
func (dc *composeCluster) waitForLeaderAmong(nodes []string) string {
	dc.t.Helper()
	var leader string
	dc.eventually(60*time.Second, "a leader among "+strings.Join(nodes, ", "), func() bool {
		leader = ""
		for _, n := range nodes {
			st, ok := dc.status(dc.port(n, 8750))
			if !ok || st.Leader == "" || (leader != "" && st.Leader != leader) {
				return false
			}
			leader = st.Leader
		}
		for _, n := range nodes {
			if n == leader {
				return true
			}
		}
		return false
	})
	return leader
}

func (dc *composeCluster) discover(service, name string, extra ...string) []instance {
	out, err := dc.try(beaconBin, append([]string{"--addr", dc.port(service, 8750), "discover", name, "-o", "json"}, extra...)...)
	var insts []instance
	if err != nil || json.Unmarshal([]byte(out), &insts) != nil {
		return nil
	}
	return insts
}

func (dc *composeCluster) hasInstances(service, name string, ids ...string) bool {
	have := map[string]bool{}
	for _, i := range dc.discover(service, name) {
		have[i.ID] = true
	}
	for _, id := range ids {
		if !have[id] {
			return false
		}
	}
	return true
}

// register registers through one agent from the host, retrying while the
// cluster answers 503 (an election) or the agent is briefly unreachable:
// registration is idempotent.
func (dc *composeCluster) register(service, name, id, addr string, port int) {
	dc.t.Helper()
	wait.For(dc.t, 60*time.Second, 250*time.Millisecond, func() (bool, string) {
		out, err := dc.try(beaconBin, "--addr", dc.port(service, 8750), "register", name, id,
			"--address", addr, "--port", fmt.Sprint(port), "--tag", "e2e")
		if err == nil {
			return true, ""
		}
		if !strings.Contains(out, "HTTP 503") && !strings.Contains(out, "no agent answered") && !strings.Contains(out, "no agent reachable") {
			dc.t.Fatalf("register %s through %s: %v\n%s", id, service, err, out)
		}
		return false, fmt.Sprintf("register %s through %s: %v\n%s", id, service, err, out)
	})
}

// httpGet fetches path from addr, with a Host header if host is set.
func (dc *composeCluster) httpGet(ctx context.Context, addr, path, host string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(b), err
}
