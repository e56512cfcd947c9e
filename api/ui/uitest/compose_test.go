package uitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
	"github.com/chromedp/chromedp"
)

// The compose cluster of `make up` (docker-compose.yml: three agents, two
// load balancers, three demo instances of "web"), started by the test under
// its own compose project name, subnet and kernel-picked host ports, so that
// it cannot collide with a `make up` cluster on the same machine.

// repoRoot is the Beacon repository this nested module lives in.
const repoRoot = "../../.."

// skipOrFail skips the test, or fails it when CI is set (CI must run it).
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s, and CI is set: the compose browser test must run in CI", msg)
	}
	t.Skip(msg)
}

// run runs a command with a bound on its duration and returns its output
// (stdout and stderr together).
func run(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: still running after %v", name, strings.Join(args, " "), timeout)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), err
}

// composeCluster is one compose project of docker-compose.yml.
type composeCluster struct {
	t       *testing.T
	project string
	command []string // "docker compose" (v2) or "docker-compose"
	env     []string
	image   string
	paused  []string // containers paused and not yet resumed
	agents  []string // host:port of n1, n2, n3's API
	lbs     []string // host:port of lb1, lb2's proxy
	admins  []string // host:port of lb1, lb2's admin
}

// composeCommand finds Compose: v2 as a docker plugin, else docker-compose.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		skipOrFail(t, "compose browser test skipped: no docker on PATH")
	}
	if _, err := run(30*time.Second, nil, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		skipOrFail(t, "compose browser test skipped: the docker daemon does not answer: %v", err)
	}
	if _, err := run(30*time.Second, nil, "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	skipOrFail(t, "compose browser test skipped: neither `docker compose` nor docker-compose is installed")
	return nil
}

// beaconBinary is BEACON_BINARY (make test-nested sets it to bin/beacon),
// or a static binary built here.
func beaconBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BEACON_BINARY"); p != "" {
		return p
	}
	out := filepath.Join(t.TempDir(), "beacon")
	root, _ := filepath.Abs(repoRoot)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/beacon")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build beacon (set BEACON_BINARY to skip this): %v\n%s", err, b)
	}
	return out
}

// buildImage builds the image of the Makefile's `image` target (the
// repository's Dockerfile, FROM scratch around the static binary; nothing
// is pulled) under tag, and removes it when the test ends.
func buildImage(t *testing.T, tag string) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"bin", "dist/data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, filepath.Join(repoRoot, "Dockerfile"), filepath.Join(dir, "Dockerfile"), 0o644)
	copyFile(t, beaconBinary(t), filepath.Join(dir, "bin", "beacon"), 0o755)
	ca := filepath.Join(dir, "dist", "ca-certificates.crt")
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		copyFile(t, "/etc/ssl/certs/ca-certificates.crt", ca, 0o644)
	} else if err := os.WriteFile(ca, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = run(time.Minute, nil, "docker", "rmi", "--force", tag) })
	if _, err := run(5*time.Minute, []string{"DOCKER_BUILDKIT=0"}, "docker", "build", "--quiet", "--tag", tag, dir); err != nil {
		t.Fatalf("build the image: %v", err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// freeSubnet returns a 10.87.X prefix no docker network uses.
func freeSubnet(t *testing.T) string {
	t.Helper()
	ids, err := run(30*time.Second, nil, "docker", "network", "ls", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	used := ""
	if ids != "" {
		used, err = run(30*time.Second, nil, "docker", append([]string{"network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, strings.Fields(ids)...)...)
		if err != nil {
			t.Fatal(err)
		}
	}
	start := 120 + os.Getpid()%100
	for i := range 130 {
		prefix := fmt.Sprintf("10.87.%d", 120+(start-120+i)%130)
		if !strings.Contains(used, prefix+".") {
			return prefix
		}
	}
	t.Fatalf("no free 10.87.X/24 subnet among the docker networks: %s", used)
	return ""
}

// startCompose builds the image and starts docker-compose.yml's default
// services as a project of its own, and removes everything it created when
// the test ends (by the project's label, whatever state the test left).
func startCompose(t *testing.T) *composeCluster {
	t.Helper()
	command := composeCommand(t)
	project := fmt.Sprintf("beaconuitest%d", os.Getpid())
	c := &composeCluster{t: t, project: project, command: command, image: "beacon-uitest:" + project}
	start := time.Now()
	buildImage(t, c.image)
	t.Logf("image %s built in %v", c.image, time.Since(start).Round(time.Millisecond))
	c.env = []string{"BEACON_IMAGE=" + c.image, "BEACON_NET=" + freeSubnet(t), "BEACON_LOG_LEVEL=info"}
	// Host port 0: the kernel picks each published port (read back below).
	for _, v := range []string{"N1_PORT", "N2_PORT", "N3_PORT", "N4_PORT", "N1_DNS_PORT", "N2_DNS_PORT", "N3_DNS_PORT", "N4_DNS_PORT",
		"LB1_PORT", "LB1_ADMIN_PORT", "LB2_PORT", "LB2_ADMIN_PORT"} {
		c.env = append(c.env, "BEACON_"+v+"=0")
	}
	t.Cleanup(c.down)
	start = time.Now()
	if _, err := c.compose(5*time.Minute, "up", "--detach", "--no-build"); err != nil {
		t.Fatalf("compose up: %v", err)
	}
	t.Logf("compose up took %v", time.Since(start).Round(time.Millisecond))
	for _, svc := range []string{"n1", "n2", "n3"} {
		c.agents = append(c.agents, c.port(svc, 8750))
	}
	for _, svc := range []string{"lb1", "lb2"} {
		c.lbs = append(c.lbs, c.port(svc, 8080))
		c.admins = append(c.admins, c.port(svc, 8081))
	}
	t.Logf("compose project %s: agents %v, load balancers %v (admin %v)", project, c.agents, c.lbs, c.admins)
	return c
}

// compose runs a Compose command on the project.
func (c *composeCluster) compose(timeout time.Duration, args ...string) (string, error) {
	full := append(slices.Clone(c.command[1:]), "--project-name", c.project, "--file", filepath.Join(repoRoot, "docker-compose.yml"))
	return run(timeout, c.env, c.command[0], append(full, args...)...)
}

// container returns the ID of a service's container.
func (c *composeCluster) container(service string) string {
	c.t.Helper()
	id, err := c.compose(time.Minute, "ps", "--quiet", service)
	if err != nil || id == "" {
		c.t.Fatalf("the container of %s: %q %v", service, id, err)
	}
	return id
}

// port returns the host address published for a service's port.
func (c *composeCluster) port(service string, port int) string {
	c.t.Helper()
	out, err := c.compose(time.Minute, "port", service, strconv.Itoa(port))
	if err != nil || out == "" {
		c.t.Fatalf("the published port %d of %s: %q %v", port, service, out, err)
	}
	return strings.Replace(strings.Fields(out)[0], "0.0.0.0:", "127.0.0.1:", 1)
}

// pause freezes a service's container (docker pause) until resume.
func (c *composeCluster) pause(service string) (resume func()) {
	c.t.Helper()
	id := c.container(service)
	if _, err := run(time.Minute, nil, "docker", "pause", id); err != nil {
		c.t.Fatal(err)
	}
	c.paused = append(c.paused, id)
	return func() {
		c.t.Helper()
		if _, err := run(time.Minute, nil, "docker", "unpause", id); err != nil {
			c.t.Fatal(err)
		}
		c.paused = slices.DeleteFunc(c.paused, func(p string) bool { return p == id })
	}
}

// kill kills a service's container (docker kill: SIGKILL, no goodbye) and
// returns when the kill was sent.
func (c *composeCluster) kill(service string) time.Time {
	c.t.Helper()
	id := c.container(service)
	at := time.Now()
	if _, err := run(time.Minute, nil, "docker", "kill", id); err != nil {
		c.t.Fatal(err)
	}
	return at
}

// down removes the project's containers, network and volumes: compose
// down first, then whatever still carries the project's label.
func (c *composeCluster) down() {
	if c.t.Failed() {
		if out, err := c.compose(time.Minute, "logs", "--no-color", "--tail", "40"); err == nil {
			c.t.Logf("compose logs (last 40 lines of each):\n%s", out)
		}
	}
	for _, id := range c.paused {
		_, _ = run(time.Minute, nil, "docker", "unpause", id)
	}
	if _, err := c.compose(2*time.Minute, "down", "--volumes", "--remove-orphans", "--timeout", "5"); err != nil {
		c.t.Logf("compose down: %v", err)
	}
	label := "label=com.docker.compose.project=" + c.project
	for _, kind := range [][]string{{"container", "ls", "--all"}, {"network", "ls"}, {"volume", "ls"}} {
		ids, err := run(time.Minute, nil, "docker", append(kind, "--quiet", "--filter", label)...)
		if err != nil || ids == "" {
			continue
		}
		rm := map[string][]string{"container": {"rm", "--force", "--volumes"}, "network": {"rm"}, "volume": {"rm", "--force"}}[kind[0]]
		if _, err := run(2*time.Minute, nil, "docker", append(append([]string{kind[0]}, rm...), strings.Fields(ids)...)...); err != nil {
			c.t.Errorf("remove the project's %ss: %v", kind[0], err)
		}
	}
}

// getJSON reads url into v.
func getJSON(url string, v any) error {
	hc := http.Client{Timeout: 15 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, v)
}

// waitUntil polls check (every 100 ms, as the shared Eventually does with
// its own interval) until it returns "" and fails with its last answer after
// timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, check func() string) {
	t.Helper()
	if err := wait.Poll(timeout, 100*time.Millisecond, func() (bool, string) {
		msg := check()
		return msg == "", msg
	}); err != nil {
		t.Fatalf("%v waiting for %s", err, what)
	}
}

// setHash moves the page to another view (#/...) without reloading it.
func setHash(fragment string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](`location.hash = ` + jsString(fragment))
}

// pageJSON evaluates a JavaScript expression that returns JSON text and
// decodes it into v.
func pageJSON(b *browser, expr string, v any) error {
	s := eval[string](b, `JSON.stringify(`+expr+`)`)
	return json.Unmarshal([]byte(s), v)
}

// number parses "1,234" as the page shows numbers.
func number(s string) (uint64, error) {
	return strconv.ParseUint(strings.ReplaceAll(strings.TrimSpace(s), ",", ""), 10, 64)
}

// serverRow is one row of the overview's Raft servers table.
type serverRow struct {
	ID, State, Leader, Term, Commit, Applied, Last, Contact, Answer string
}

const serverRowsJS = `[...document.querySelectorAll('table[aria-label="Raft servers"] tr[data-server]')].map((tr) => ({
  ID: tr.dataset.server, State: tr.dataset.state,
  Leader: tr.querySelector('td.leader').textContent, Term: tr.querySelector('td.term').textContent,
  Commit: tr.querySelector('td.commit').textContent, Applied: tr.querySelector('td.applied').textContent,
  Last: tr.querySelector('td.last').textContent, Contact: tr.querySelector('td.contact').textContent,
  Answer: tr.querySelector('td.answer').textContent }))`

// compareServers checks the overview's Raft servers table against two
// reads of the API, one before and one after reading the page: the same
// servers, roles, leaders, terms and errors, and every index between the
// two reads (indexes only grow).
func compareServers(rows []serverRow, before, after *client.ClusterServers) string {
	if len(rows) != len(after.Servers) || len(before.Servers) != len(after.Servers) {
		return fmt.Sprintf("the page shows %d servers, the API %d then %d", len(rows), len(before.Servers), len(after.Servers))
	}
	for i, r := range rows {
		b, a := before.Servers[i], after.Servers[i]
		if r.ID != a.ID || b.ID != a.ID {
			return fmt.Sprintf("row %d is %s, the API says %s", i, r.ID, a.ID)
		}
		if (a.View == nil) != (b.View == nil) || a.Error != b.Error {
			return fmt.Sprintf("%s changed between the API reads", a.ID)
		}
		if a.View == nil {
			if r.State != "no-answer" || r.Answer != a.Error {
				return fmt.Sprintf("%s: the page shows %q/%q, the API the error %q", a.ID, r.State, r.Answer, a.Error)
			}
			continue
		}
		v, bv := a.View, b.View
		if term, _ := number(r.Term); r.State != strings.ToLower(v.State) || r.Leader != v.Leader || term != v.Term ||
			bv.State != v.State || bv.Leader != v.Leader || bv.Term != v.Term {
			return fmt.Sprintf("%s: the page shows %s, leader %s, term %s; the API %s, leader %s, term %d", a.ID, r.State, r.Leader, r.Term, v.State, v.Leader, v.Term)
		}
		for _, idx := range []struct {
			name      string
			page      string
			low, high uint64
		}{{"commit", r.Commit, bv.CommitIndex, v.CommitIndex}, {"applied", r.Applied, bv.AppliedIndex, v.AppliedIndex}, {"last", r.Last, bv.LastIndex, v.LastIndex}} {
			n, err := number(idx.page)
			if err != nil || n < idx.low || n > idx.high {
				return fmt.Sprintf("%s: %s index %q on the page, the API %d then %d", a.ID, idx.name, idx.page, idx.low, idx.high)
			}
		}
		if (v.LastContactMS < 0) != (r.Contact == "never") {
			return fmt.Sprintf("%s: last contact %q on the page, %d ms in the API", a.ID, r.Contact, v.LastContactMS)
		}
	}
	return ""
}

// memberRow and instanceRow are rows of the overview's members table and
// of a service page.
type memberRow struct{ Name, Status string }
type instanceRow struct{ ID, Address, Health string }

// TestComposeClusterInTheBrowser is issue 17's check: the compose cluster
// of `make up`, opened in headless Chromium at each agent's /ui/ and read
// as a user would, compared with what each agent's API says; then a
// follower is paused (its row says it did not answer, with the API's
// error), a demo instance is killed and followed to critical on a page
// already open (output and timeline as the API has them; both load
// balancers stop routing to it), and an instance is drained from the UI
// and the drain read back through another agent's API.
func TestComposeClusterInTheBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("compose cluster: skipped with -short")
	}
	b := newBrowser(t, 1280, 900) // first: it skips (or fails in CI) without chromium
	c := startCompose(t)
	start := time.Now()
	api := func(i int, path string) string { return "http://" + c.agents[i] + path }

	// Every agent ready, and the three demo instances passing everywhere.
	waitUntil(t, 3*time.Minute, "three agents ready with web-1..3 passing", func() string {
		for i := range c.agents {
			var insts []client.Instance
			if err := getJSON(api(i, "/v1/services/web/instances"), &insts); err != nil {
				return err.Error()
			}
			passing := 0
			for _, in := range insts {
				if in.Status == client.StatusPassing {
					passing++
				}
			}
			if passing != 3 {
				return fmt.Sprintf("agent %d: %d of %d instances passing", i+1, passing, len(insts))
			}
		}
		return ""
	})
	waitUntil(t, 2*time.Minute, "both load balancers routing to the three", func() string {
		for i, admin := range c.admins {
			var st lbStatus
			if err := getJSON("http://"+admin+"/lb/status?service=web", &st); err != nil {
				return err.Error()
			}
			if got := st.routed("web"); len(got) != 3 {
				return fmt.Sprintf("lb%d routes to %v", i+1, got)
			}
		}
		return ""
	})
	t.Logf("cluster ready and routing %v after compose up returned", time.Since(start).Round(time.Millisecond))

	// One tab per agent, each on that agent's /ui/.
	tabs := []*browser{b, b.newTab(), b.newTab()}
	for i, tab := range tabs {
		tab.do(30*time.Second, chromedp.Navigate(api(i, "/ui/")))
	}
	for i, tab := range tabs {
		compareOverview(t, tab, api, i)
		compareServices(t, tab, api, i)
		compareService(t, tab, api, i, "web")
	}
	t.Logf("overview, services and web compared on the three agents (%v)", time.Since(start).Round(time.Millisecond))

	// --- a follower paused ---------------------------------------------------
	var status client.ClusterStatus
	if err := getJSON(api(0, "/v1/cluster/status"), &status); err != nil {
		t.Fatal(err)
	}
	leader := slices.Index([]string{"n1", "n2", "n3"}, status.Leader)
	if leader < 0 {
		t.Fatalf("leader %q", status.Leader)
	}
	follower := (leader + 1) % 3
	watcher := (leader + 2) % 3 // neither the paused one nor the leader
	fname := fmt.Sprintf("n%d", follower+1)
	resume := c.pause(fname)
	paused := time.Now()
	tab := tabs[watcher]
	tab.do(10*time.Second, setHash("#/"))
	var apiErr string
	var took int64
	waitUntil(t, 60*time.Second, "the paused "+fname+" shown without an answer, with the API's error", func() string {
		var s client.ClusterServers
		if err := getJSON(api(watcher, "/v1/cluster/servers"), &s); err != nil {
			return err.Error()
		}
		for _, sv := range s.Servers {
			if sv.ID == fname {
				apiErr, took = sv.Error, sv.TookMS
			}
		}
		if apiErr == "" {
			return "the API still has an answer from " + fname
		}
		var rows []serverRow
		if err := pageJSON(tab, serverRowsJS, &rows); err != nil {
			return err.Error()
		}
		for _, r := range rows {
			if r.ID == fname && r.State == "no-answer" && r.Answer == apiErr {
				return ""
			}
		}
		return fmt.Sprintf("the page shows %+v; the API says %q", rows, apiErr)
	})
	if !strings.Contains(apiErr, "no answer within 2s") {
		t.Errorf("the paused server's error is %q, want no answer within 2s", apiErr)
	}
	t.Logf("paused %s: %q (the API took %d ms for it), on the page %v after the pause", fname, apiErr, took, time.Since(paused).Round(time.Millisecond))
	tab.screenshot("paused-server")
	resume()
	waitUntil(t, 60*time.Second, fname+" answering again on the page", func() string {
		var rows []serverRow
		if err := pageJSON(tab, serverRowsJS, &rows); err != nil {
			return err.Error()
		}
		for _, r := range rows {
			if r.State == "no-answer" || r.Contact == "never" {
				return fmt.Sprintf("%+v", rows)
			}
		}
		return ""
	})

	// --- a demo instance killed --------------------------------------------
	const victim = "web-2"
	tab.do(10*time.Second, setHash("#/services/web/"+victim))
	tab.waitJS(30*time.Second, `document.querySelector('tr[data-check] .badge.passing') !== null`, victim+" passing")
	tab.do(5*time.Second, chromedp.Evaluate[chromedp.Void](`window.sameDocument = true`))
	killed := c.kill("web2")
	tab.waitJS(90*time.Second, `document.querySelector('tr[data-check] .badge.critical') !== null`, victim+" critical on the open page")
	t.Logf("%s critical on the open page %v after docker kill", victim, time.Since(killed).Round(time.Millisecond))
	waitUntil(t, 30*time.Second, "the page's check output and timeline as the API has them", func() string {
		var in client.Instance
		if err := getJSON(api(watcher, "/v1/services/web/instances/"+victim), &in); err != nil {
			return err.Error()
		}
		if in.Status != client.StatusCritical || len(in.Checks) != 1 || len(in.Transitions) == 0 {
			return fmt.Sprintf("the API: %s, %d checks, %d transitions", in.Status, len(in.Checks), len(in.Transitions))
		}
		var page struct {
			Output   string
			Timeline []struct{ To, Output string }
		}
		if err := pageJSON(tab, `{Output: document.querySelector('tr[data-check] pre.output')?.textContent ?? '',
		  Timeline: [...document.querySelectorAll('ol.timeline li')].map((li) => ({To: li.className.replace('to-', ''), Output: li.querySelector('pre.output')?.textContent ?? ''}))}`, &page); err != nil {
			return err.Error()
		}
		if page.Output != in.Checks[0].Output {
			return fmt.Sprintf("check output %q on the page, %q in the API", page.Output, in.Checks[0].Output)
		}
		if len(page.Timeline) != len(in.Transitions) {
			return fmt.Sprintf("%d transitions on the page, %d in the API", len(page.Timeline), len(in.Transitions))
		}
		for k, tr := range in.Transitions { // the page shows the newest first
			p := page.Timeline[len(page.Timeline)-1-k]
			if p.To != string(tr.To) || p.Output != tr.Output {
				return fmt.Sprintf("transition %d: page %+v, API %s %q", k, p, tr.To, tr.Output)
			}
		}
		return ""
	})
	if !eval[bool](tab, `window.sameDocument === true`) {
		t.Fatal("the instance page reloaded")
	}
	tab.screenshot("instance-killed")
	waitUntil(t, 60*time.Second, "both load balancers no longer routing to "+victim, func() string {
		for i, admin := range c.admins {
			var st lbStatus
			if err := getJSON("http://"+admin+"/lb/status?service=web", &st); err != nil {
				return err.Error()
			}
			if got := st.routed("web"); len(got) != 2 || slices.Contains(got, victim) {
				return fmt.Sprintf("lb%d routes to %v", i+1, got)
			}
		}
		return ""
	})
	for i, lb := range c.lbs {
		served := map[string]int{}
		for range 12 {
			id, err := viaLB(lb)
			if err != nil {
				t.Fatalf("lb%d: %v", i+1, err)
			}
			served[id]++
		}
		if served[victim] != 0 || len(served) != 2 {
			t.Fatalf("lb%d served %v after %s was killed", i+1, served, victim)
		}
		t.Logf("lb%d after the kill: %v", i+1, served)
	}
	tab.do(10*time.Second, setHash("#/lbs"))
	tab.waitJS(30*time.Second, `document.querySelectorAll('section.lb tr[data-instance="`+victim+`"][data-routed="false"]').length === 2 &&
	  document.querySelectorAll('section.lb tr[data-instance][data-routed="true"]').length === 4`, "both LBs' tables: "+victim+" not routed, the others routed")
	tab.screenshot("lbs-after-kill")

	// --- a drain from the UI, read back elsewhere ---------------------------
	const drained = "web-3"
	tab.do(10*time.Second, setHash("#/services/web/"+drained))
	tab.waitJS(30*time.Second, `document.querySelector('.actionbar button[data-action="drain"]') !== null`, "the actions of "+drained)
	clicked := time.Now()
	drainFromUI(tab, "10m")
	tab.waitJS(30*time.Second, `!document.querySelector('#confirm-dialog').open && document.querySelector('main .badge.draining') !== null`, "the drain shown")
	other := (watcher + 1) % 3
	var in client.Instance
	waitUntil(t, 30*time.Second, "the drain through n"+strconv.Itoa(other+1)+"'s API", func() string {
		if err := getJSON(api(other, "/v1/services/web/instances/"+drained), &in); err != nil {
			return err.Error()
		}
		if in.Draining == nil {
			return "not draining"
		}
		return ""
	})
	if d := in.Draining.Deadline.Sub(clicked); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("drain deadline %v after the click, want about 10m", d)
	}
	tab.screenshot("instance-drained")
	for i, tab := range tabs {
		if errs := tab.errors(); len(errs) > 0 {
			t.Errorf("console errors on n%d's page:\n%s", i+1, strings.Join(errs, "\n"))
		}
	}
	t.Logf("the whole check took %v", time.Since(start).Round(time.Millisecond))
}

// lbStatus is the part of a balancer's /lb/status the test reads.
type lbStatus struct {
	Services []struct {
		Service   string `json:"service"`
		Instances []struct {
			ID     string `json:"id"`
			Routed bool   `json:"routed"`
		} `json:"instances"`
	} `json:"services"`
}

// routed lists the instances of service the balancer routes to.
func (s *lbStatus) routed(service string) []string {
	var out []string
	for _, svc := range s.Services {
		if svc.Service != service {
			continue
		}
		for _, in := range svc.Instances {
			if in.Routed {
				out = append(out, in.ID)
			}
		}
	}
	return out
}

// viaLB sends one request for web through a balancer and returns the demo
// instance that answered.
func viaLB(lb string) (string, error) {
	hc := http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + lb + "/web/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /web/ through %s: %s", lb, resp.Status)
	}
	return resp.Header.Get("X-Demo-Instance"), nil
}

// compareOverview opens the overview on tab (agent i) and compares it with
// the agent's API: the Raft servers, the members and the counts.
func compareOverview(t *testing.T, tab *browser, api func(int, string) string, i int) {
	t.Helper()
	tab.do(10*time.Second, setHash("#/"))
	waitUntil(t, 60*time.Second, fmt.Sprintf("n%d's overview as its API says", i+1), func() string {
		var before, after client.ClusterServers
		var rows []serverRow
		if err := getJSON(api(i, "/v1/cluster/servers"), &before); err != nil {
			return err.Error()
		}
		if err := pageJSON(tab, serverRowsJS, &rows); err != nil {
			return err.Error()
		}
		if err := getJSON(api(i, "/v1/cluster/servers"), &after); err != nil {
			return err.Error()
		}
		if msg := compareServers(rows, &before, &after); msg != "" {
			return msg
		}
		var members []client.Member
		if err := getJSON(api(i, "/v1/cluster/members"), &members); err != nil {
			return err.Error()
		}
		var mrows []memberRow
		if err := pageJSON(tab, `[...document.querySelectorAll('table[aria-label="Members"] tbody tr')].map((tr) => ({
		  Name: tr.cells[0].firstChild.textContent, Status: tr.cells[1].textContent }))`, &mrows); err != nil {
			return err.Error()
		}
		if len(mrows) != len(members) {
			return fmt.Sprintf("%d members on the page, %d in the API", len(mrows), len(members))
		}
		for k, m := range members { // both sorted by name
			if mrows[k] != (memberRow{m.Name, m.Status}) {
				return fmt.Sprintf("member %d: page %+v, API %s %s", k, mrows[k], m.Name, m.Status)
			}
		}
		var sum map[string]uint64
		if err := getJSON(api(i, "/v1/ui/summary"), &sum); err != nil {
			return err.Error()
		}
		var cards map[string]string
		if err := pageJSON(tab, `Object.fromEntries([...document.querySelectorAll('.cards[aria-label="Counts"] .card')].map((c) => [c.querySelector('.k').textContent, c.querySelector('.v').textContent]))`, &cards); err != nil {
			return err.Error()
		}
		for card, key := range map[string]string{"Services": "services", "Instances": "instances", "Passing": "passing", "Critical": "critical"} {
			if n, err := number(cards[card]); err != nil || n != sum[key] {
				return fmt.Sprintf("%s: %q on the page, %d in the API", card, cards[card], sum[key])
			}
		}
		return ""
	})
}

// compareServices compares the services page of agent i with its API.
func compareServices(t *testing.T, tab *browser, api func(int, string) string, i int) {
	t.Helper()
	tab.do(10*time.Second, setHash("#/services"))
	waitUntil(t, 30*time.Second, fmt.Sprintf("n%d's services as its API says", i+1), func() string {
		var list client.ServiceList
		if err := getJSON(api(i, "/v1/services?limit=50"), &list); err != nil {
			return err.Error()
		}
		var rows [][]string
		if err := pageJSON(tab, `[...document.querySelectorAll('table[aria-label="Services"] tbody tr')].map((tr) => [tr.cells[0].textContent, tr.cells[2].textContent])`, &rows); err != nil {
			return err.Error()
		}
		if len(rows) != len(list.Services) {
			return fmt.Sprintf("page %v, API %+v", rows, list.Services)
		}
		for k, s := range list.Services {
			if n, err := number(rows[k][1]); rows[k][0] != s.Name || err != nil || n != uint64(s.Instances) {
				return fmt.Sprintf("row %d: page %v, API %s with %d instances", k, rows[k], s.Name, s.Instances)
			}
		}
		return ""
	})
}

// compareService compares a service's page on agent i with its API.
func compareService(t *testing.T, tab *browser, api func(int, string) string, i int, service string) {
	t.Helper()
	tab.do(10*time.Second, setHash("#/services/"+service))
	waitUntil(t, 30*time.Second, fmt.Sprintf("n%d's %s page as its API says", i+1, service), func() string {
		var insts []client.Instance
		if err := getJSON(api(i, "/v1/services/"+service+"/instances"), &insts); err != nil {
			return err.Error()
		}
		var rows []instanceRow
		if err := pageJSON(tab, `[...document.querySelectorAll('tr[data-instance]')].map((tr) => ({
		  ID: tr.dataset.instance, Address: tr.cells[1].textContent, Health: tr.cells[2].querySelector('.badge').textContent }))`, &rows); err != nil {
			return err.Error()
		}
		if len(rows) != len(insts) {
			return fmt.Sprintf("page %+v, API %d instances", rows, len(insts))
		}
		for k, in := range insts {
			want := instanceRow{in.ID, fmt.Sprintf("%s:%d", in.Address, in.Port), string(in.Status)}
			if rows[k] != want {
				return fmt.Sprintf("row %d: page %+v, API %+v", k, rows[k], want)
			}
		}
		return ""
	})
}
