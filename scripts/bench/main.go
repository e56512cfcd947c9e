// Command bench measures a Beacon cluster the way docs/benchmarks.md
// describes: three agents on loopback (fsync on), committed registrations per
// second at 64 concurrent clients, discovery reads per second on one node and
// spread over three, leader failover time, dead-node detection time, RSS per
// node with 10k instances, the registration rate as the catalog grows to 100k
// (growth.go) and what 2,000 parked blocking queries cost (parked.go), with
// the servers' CPU time per request for every load (cpu.go). Every load loop
// is bounded in count and time.
//
//	go run ./scripts/bench -beacon bin/beacon [-etcd PATH] [-duration 10s]
//
// With -etcd, the same write and read loads run against a 3-member etcd
// cluster over its HTTP/JSON gateway, side by side, and the report gives
// Beacon/etcd ratios.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	beaconBin = flag.String("beacon", "bin/beacon", "beacon binary")
	etcdBin   = flag.String("etcd", "", "etcd binary for a side-by-side baseline (optional)")
	duration  = flag.Duration("duration", 10*time.Second, "length of each load phase")
	clients   = flag.Int("clients", 64, "concurrent clients")
	instances = flag.Int("instances", 10000, "catalog size for the memory measurement")
	trials    = flag.Int("trials", 5, "kills per failover and detection measurement")
	phases    = flag.String("phases", "write-rounds,write,seq,read,failover,detect,memory,growth,parked", "phases to run (also oneshot, oneshot-compose)")
	basePort  = flag.Int("port", 27000, "first port; agents use port+10*i+{0,1,2}")
	keep      = flag.Bool("keep", false, "keep the data directory")
	writeTo   = flag.String("write-to", "all", "where registrations go: all (spread over the nodes), leader, or follower")
	services  = flag.Int("write-services", 100, "registrations (and etcd's puts) go to this many services, bench-0 to bench-(N-1), in turn")
	ttlCheck  = flag.Bool("write-ttl-check", false, "every registration carries one TTL check (as Consul-API agents register with checks; a TTL check is never probed), and etcd's values the same JSON")
	rssSettle = flag.Duration("rss-settle", 0, "memory phase: after the last RSS reading, wait this long with the cluster idle and read every node's RSS again (0: no)")
	reportTTL = flag.Bool("report-ttl", false, "memory phase with -write-ttl-check: then report every TTL check passing once (as its agent would within the TTL) and read the RSS again")
	agentArgs = flag.String("agent-args", "", "extra flags for every beacon agent, space-separated (e.g. --memory-limit=auto)")
	profDir   = flag.String("profile-dir", "", "save each agent's CPU and allocation profiles of every load phase (PHASE.NODE.cpu.pprof, PHASE.NODE.allocs.pprof) and, after the memory phase, its heap profile in this directory (agents run with --enable-pprof)")
	// The oneshot-compose phase (oneshot.go).
	composeProject = flag.String("compose-project", "beacon-fo", "compose project of the oneshot-compose phase")
	composeImage   = flag.String("compose-image", "beacon:fo", "image of the oneshot-compose phase (make image IMAGE=...)")
	composePort    = flag.Int("compose-port", 29750, "oneshot-compose: host ports of the compose cluster start after this one (see newCompose)")
	composeFault   = flag.String("compose-fault", "kill", "oneshot-compose: how the leader stops: kill (docker kill) or pause (docker pause)")
	loadClient     = flag.String("client", "raw", "load loops' HTTP client: raw (a minimal keep-alive HTTP/1.1 client, rawclient.go) or go (net/http)")
	oneshotClient  = flag.String("oneshot-client", "http", "oneshot phases: the one-shot write is a plain HTTP request (http) or one `beacon register` run with BEACON_ADDR naming the follower alone (cli)")
)

func main() {
	flag.Parse()
	if *parkOnly != "" {
		if err := runParkOnly(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *loadClient != "raw" && *loadClient != "go" {
		fmt.Fprintln(os.Stderr, "bench: -client must be raw or go")
		os.Exit(2)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name  string
	value string
}

var results []result

func report(name, format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	results = append(results, result{name, v})
	fmt.Printf("%-48s %s\n", name, v)
}

func run() error {
	switch *composeFault {
	case "kill", "pause":
	default:
		return fmt.Errorf("-compose-fault %q: want kill or pause", *composeFault)
	}
	switch *oneshotClient {
	case "http", "cli":
	default:
		return fmt.Errorf("-oneshot-client %q: want http or cli", *oneshotClient)
	}
	dir, err := os.MkdirTemp("", "beacon-bench-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	fmt.Printf("# beacon bench: %d cores, %d clients (%s HTTP client), %s per phase, data in %s\n", numCPU(), *clients, *loadClient, *duration, dir)
	want := map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		want[strings.TrimSpace(p)] = true
	}

	if want["write-rounds"] {
		if err := benchWriteRounds(dir); err != nil {
			return err
		}
	}
	c := &cluster{dir: dir, bin: *beaconBin}
	defer c.stopAll()
	if want["write"] || want["seq"] || want["read"] || want["failover"] || want["detect"] || want["oneshot"] {
		if err := c.start(3); err != nil {
			return err
		}
	}
	var beaconW, beaconR float64
	var beaconF time.Duration
	var beaconM int
	if want["write"] {
		beaconW = benchLoad(c.servers(), fmt.Sprintf("beacon registrations, to %s", *writeTo), c.writeTargets(), registerReq, true)
	}
	var seqL, seqF time.Duration
	if want["seq"] {
		seqL, seqF = benchSequential(c.servers(), c.apis(), c.leader(), registerReq)
	}
	if want["read"] {
		beaconR = benchReads(c)
	}
	if want["failover"] {
		beaconF = benchFailover(c)
	}
	if want["detect"] {
		benchDetect(c)
	}
	if want["oneshot"] {
		benchOneShot(c)
	}
	if want["oneshot-compose"] {
		benchOneShotCompose()
	}
	c.stopAll()
	if want["memory"] {
		// A fresh cluster, so that the figure is the RSS with *instances
		// records and not with everything the earlier phases wrote.
		mc := &cluster{dir: filepath.Join(dir, "memory"), bin: *beaconBin}
		defer mc.stopAll()
		if err := mc.start(3); err != nil {
			return err
		}
		beaconM = benchMemory(mc)
		mc.stopAll()
	}
	var beaconG []chunk
	if want["growth"] {
		gc := &cluster{dir: filepath.Join(dir, "growth"), bin: *beaconBin}
		defer gc.stopAll()
		if err := gc.start(3); err != nil {
			return err
		}
		fillBeaconReads(gc)
		beaconG = benchGrowth(gc.servers(), gc.apis(), registerReq, func(label string) readRates {
			f := (max(gc.leader(), 0) + 1) % len(gc.procs)
			return readRates{
				local:      growthReads(gc.servers(), label+" discovery reads, one follower", gc.api(f), discoverReq),
				consistent: growthReads(gc.servers(), label+" consistent reads, one follower", gc.api(f), consistentReq),
			}
		})
		gc.stopAll()
	}
	if want["parked"] {
		pc := &cluster{dir: filepath.Join(dir, "parked"), bin: *beaconBin}
		defer pc.stopAll()
		if err := pc.start(3); err != nil {
			return err
		}
		parkedBeacon(pc)
		pc.stopAll()
	}

	if *etcdBin != "" {
		e := &etcdCluster{dir: filepath.Join(dir, "etcd"), bin: *etcdBin}
		if err := e.start(); err != nil {
			return fmt.Errorf("etcd baseline: %w", err)
		}
		defer e.stop()
		if want["write"] {
			// The same target as Beacon's (-write-to).
			w := benchWrites(e.servers(), e.writeTargets(), etcdPutReq)
			if w > 0 {
				report("ratio: beacon/etcd committed writes", "%.2f", beaconW/w)
			}
		}
		if want["seq"] {
			l := -1
			for deadline := time.Now().Add(30 * time.Second); l < 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				l = e.leader()
			}
			if l >= 0 {
				eL, eF := benchSequential(e.servers(), e.clientURLs(), l, etcdPutReq)
				if eL > 0 && eF > 0 && seqL > 0 {
					report("ratio: beacon/etcd sequential p50 (lower is better)", "to the leader %.2f, via a follower %.2f",
						seqL.Seconds()/eL.Seconds(), seqF.Seconds()/eF.Seconds())
				}
			}
		}
		if want["read"] {
			// etcd's default range is linearizable (a ReadIndex round);
			// serializable is its local read, like Beacon's default.
			ser := benchLoad(e.servers(), "etcd serializable reads, one follower", []string{e.clientURLs()[e.follower()]}, etcdSerializableReq, false)
			lin := benchLoad(e.servers(), "etcd linearizable reads, one follower", []string{e.clientURLs()[e.follower()]}, etcdRangeReq, false)
			if ser > 0 {
				report("ratio: beacon default / etcd serializable reads", "%.2f", beaconR/ser)
			}
			if lin > 0 {
				report("ratio: beacon consistent / etcd linearizable reads", "%.2f", beaconConsistent/lin)
			}
			if *etcdGRPC != "" {
				f := []string{e.clientURLs()[e.follower()]}
				gs := grpcLoad(e.servers(), "etcd serializable reads over gRPC (clientv3), one follower", f, false, "-op", "range", "-serializable")
				gl := grpcLoad(e.servers(), "etcd linearizable reads over gRPC (clientv3), one follower", f, false, "-op", "range")
				if gs > 0 && gl > 0 {
					report("ratio: beacon / etcd over gRPC, reads", "default / serializable %.2f, consistent / linearizable %.2f", beaconR/gs, beaconConsistent/gl)
				}
			}
		}
		if want["failover"] {
			if f := e.failover(); f > 0 && beaconF > 0 {
				report("ratio: beacon/etcd failover time (lower is better)", "%.2f", beaconF.Seconds()/f.Seconds())
			}
		}
		if want["memory"] {
			// A fresh etcd cluster too, for the same reason.
			e.stop()
			e = &etcdCluster{dir: filepath.Join(dir, "etcd-memory"), bin: *etcdBin}
			if err := e.start(); err != nil {
				return fmt.Errorf("etcd baseline: %w", err)
			}
			defer e.stop()
			if m := e.memory(); m > 0 && beaconM > 0 {
				report("ratio: beacon/etcd RSS (lower is better)", "%.2f", float64(beaconM)/float64(m))
			}
		}
		if want["growth"] {
			e.stop()
			e = &etcdCluster{dir: filepath.Join(dir, "etcd-growth"), bin: *etcdBin}
			if err := e.start(); err != nil {
				return fmt.Errorf("etcd baseline: %w", err)
			}
			defer e.stop()
			growthRatio(beaconG, benchGrowth(e.servers(), e.clientURLs(), etcdPutReq, func(label string) readRates {
				f := e.clientURLs()[e.follower()]
				return readRates{
					local:      growthReads(e.servers(), label+" serializable reads, one follower", f, etcdSerializableReq),
					consistent: growthReads(e.servers(), label+" linearizable reads, one follower", f, etcdRangeReq),
				}
			}))
		}
		if want["parked"] {
			e.stop()
			e = &etcdCluster{dir: filepath.Join(dir, "etcd-parked"), bin: *etcdBin}
			if err := e.start(); err != nil {
				return fmt.Errorf("etcd baseline: %w", err)
			}
			defer e.stop()
			parkedEtcd(e)
		}
	}
	return nil
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// ---- the Beacon cluster under test ----

type cluster struct {
	dir   string
	bin   string
	procs []*exec.Cmd
	names []string
}

func (c *cluster) port(i, k int) int { return *basePort + 10*i + k }
func (c *cluster) api(i int) string  { return fmt.Sprintf("http://127.0.0.1:%d", c.port(i, 0)) }
func (c *cluster) apis() []string {
	var out []string
	for i := range c.procs {
		out = append(out, c.api(i))
	}
	return out
}

func (c *cluster) start(n int) error {
	var tcp, udp []int
	for i := 0; i < n; i++ {
		tcp = append(tcp, c.port(i, 0), c.port(i, 1), c.port(i, 2))
		udp = append(udp, c.port(i, 2))
	}
	if err := checkPortsFree("beacon cluster", tcp, udp); err != nil {
		return err
	}
	c.procs = make([]*exec.Cmd, n)
	c.names = make([]string, n)
	for i := 0; i < n; i++ {
		c.names[i] = fmt.Sprintf("b%d", i+1)
		if err := c.startNode(i, n); err != nil {
			return err
		}
	}
	return c.waitLeader(30 * time.Second)
}

func (c *cluster) startNode(i, n int) error {
	args := []string{"agent", "--node", c.names[i], "--data-dir", filepath.Join(c.dir, c.names[i]),
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", c.port(i, 0)),
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", c.port(i, 1)),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", c.port(i, 2)),
		"--bootstrap-expect", strconv.Itoa(n), "--cluster-secret", "bench-cluster-secret-0123456789abcdef", "--log-level", "warn",
		// Every benchmark client shares 127.0.0.1: no per-client write limit,
		// and no per-client connection cap (the parked phase holds 2,000).
		"--write-rate-limit", "0", "--http-max-conns-per-client", "0",
		// Profiles (-profile-dir) and the parked phase's forced collection.
		"--enable-pprof"}
	args = append(args, strings.Fields(*agentArgs)...)
	for j := 0; j < n; j++ {
		if j != i {
			args = append(args, "--join", fmt.Sprintf("127.0.0.1:%d", c.port(j, 2)))
		}
	}
	cmd := exec.Command(c.bin, args...)
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(c.dir, c.names[i]+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	c.procs[i] = cmd
	return nil
}

func (c *cluster) stopAll() {
	for _, p := range c.procs {
		if p != nil && p.Process != nil {
			_ = p.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = p.Process.Kill()
				<-done
			}
		}
	}
	c.procs = nil
}

type status struct {
	Node, State, Leader string
	Peers               []struct{ ID string }
}

func getStatus(api string) (status, error) {
	var st status
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(api + "/v1/cluster/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// ours checks that each running node's API answers with the name this
// bench gave it: a foreign agent that took one of the ports would be
// measured otherwise. ready is false while a node does not answer yet.
func (c *cluster) ours() (ready bool, err error) {
	ready = true
	for i, p := range c.procs {
		if p == nil {
			continue
		}
		st, err := getStatus(c.api(i))
		if err != nil {
			ready = false
			continue
		}
		if st.Node != c.names[i] {
			return false, fmt.Errorf("%s answers as node %q, not %q: a foreign agent holds the port; refusing to measure it", c.api(i), st.Node, c.names[i])
		}
	}
	return ready, nil
}

// leader returns the index of the node that leads, per its own status.
func (c *cluster) leader() int {
	for i, p := range c.procs {
		if p == nil {
			continue
		}
		if st, err := getStatus(c.api(i)); err == nil && st.State == "Leader" {
			return i
		}
	}
	return -1
}

func (c *cluster) waitLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.leader(); l >= 0 {
			if st, _ := getStatus(c.api(l)); len(st.Peers) == len(c.procs) {
				// A node restarted by a trial may not answer yet: wait for it.
				if ready, err := c.ours(); err != nil || ready {
					return err
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no leader with %d peers within %s", len(c.procs), timeout)
}

// waitCaughtUp waits until every node has applied what the leader had
// applied when the wait began.
func (c *cluster) waitCaughtUp(timeout time.Duration) {
	var st struct {
		AppliedIndex uint64 `json:"applied_index"`
	}
	get := func(i int) uint64 {
		st.AppliedIndex = 0
		resp, err := http.Get(c.api(i) + "/v1/cluster/status")
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		return st.AppliedIndex
	}
	l := c.leader()
	if l < 0 {
		return
	}
	want := get(l)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		behind := false
		for i := range c.procs {
			behind = behind || get(i) < want
		}
		if !behind {
			return
		}
	}
}

// ---- load generation ----

var seq atomic.Int64

// a request maker returns method, URL path+query and body for request n.
type reqFunc func(base string, n int64) (string, string, []byte)

func registerReq(base string, n int64) (string, string, []byte) {
	body := fmt.Sprintf(`{"address":"10.%d.%d.%d","port":%d,"tags":["bench","v1"],"meta":{"zone":"z%d"},"version":"1.0.%d"%s}`,
		(n>>16)&255, (n>>8)&255, n&255, 1024+n%60000, n%3, n%10, checkJSON())
	return http.MethodPut, fmt.Sprintf("%s/v1/services/bench-%d/instances/i-%d", base, n%int64(max(*services, 1)), n), []byte(body)
}

// checkJSON is the registration's checks under -write-ttl-check.
func checkJSON() string {
	if !*ttlCheck {
		return ""
	}
	return `,"checks":[{"name":"ttl","ttl":"1h","initial_status":"passing"}]`
}

// ttlPassReq reports registration n's TTL check (-write-ttl-check) passing.
func ttlPassReq(base string, n int64) (string, string, []byte) {
	return http.MethodPut, fmt.Sprintf("%s/v1/checks/bench-%d:i-%d:ttl/pass", base, n%int64(max(*services, 1)), n), []byte(`{"output":"ok"}`)
}

func etcdPutReq(base string, n int64) (string, string, []byte) {
	key := fmt.Sprintf("/services/bench-%d/i-%d", n%int64(max(*services, 1)), n)
	val := fmt.Sprintf(`{"address":"10.%d.%d.%d","port":%d,"tags":["bench","v1"],"meta":{"zone":"z%d"},"version":"1.0.%d"%s}`,
		(n>>16)&255, (n>>8)&255, n&255, 1024+n%60000, n%3, n%10, checkJSON())
	body, _ := json.Marshal(map[string]string{"key": b64(key), "value": b64(val)})
	return http.MethodPost, base + "/v3/kv/put", body
}

func etcdRangeReq(base string, n int64) (string, string, []byte) {
	body, _ := json.Marshal(map[string]string{"key": b64("/read/"), "range_end": b64("/read0")})
	return http.MethodPost, base + "/v3/kv/range", body
}

func discoverReq(base string, n int64) (string, string, []byte) {
	return http.MethodGet, base + "/v1/services/read/instances", nil
}

func newHTTPClient() *http.Client {
	t := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// benchLoad runs *clients workers for *duration against the bases (client i
// uses bases[i%len]) and reports successful requests per second and latency.
func benchLoad(s servers, name string, bases []string, mk reqFunc, writes bool) float64 {
	rate, _ := benchLoadN(s, *clients, name, bases, mk, writes)
	return rate
}

// benchLoadN is benchLoad with n clients; it also returns the p50. It
// reports the servers' CPU time per successful request, and with
// -profile-dir saves each agent's CPU and allocation profiles of the phase.
func benchLoadN(s servers, n int, name string, bases []string, mk reqFunc, writes bool) (float64, time.Duration) {
	return benchLoadFor(s, n, name, bases, mk, writes, *duration)
}

// benchLoadFor is benchLoadN for d instead of -duration.
func benchLoadFor(s servers, n int, name string, bases []string, mk reqFunc, writes bool, d time.Duration) (float64, time.Duration) {
	hc := newHTTPClient()
	waitProfiles := startProfiles(s, name, d)
	cpu := startCPU(s)
	var ok, fail atomic.Int64
	lat := make([][]time.Duration, n)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			base := bases[w%len(bases)]
			var rc rawConn
			defer rc.close()
			for i := 0; i < 10_000_000 && ctx.Err() == nil; i++ {
				n := seq.Add(1)
				method, url, body := mk(base, n)
				t0 := time.Now()
				status, err := send(ctx, hc, &rc, method, url, body)
				if err != nil {
					if ctx.Err() == nil {
						fail.Add(1)
					}
					continue
				}
				if status != http.StatusOK {
					fail.Add(1)
					continue
				}
				ok.Add(1)
				lat[w] = append(lat[w], time.Since(t0))
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	cpuLine := cpu.perRequest(ok.Load())
	waitProfiles()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	rate := float64(ok.Load()) / el
	kind := "req/s"
	if writes {
		kind = "committed writes/s"
	}
	report(name, "%8.0f %s  p50 %s  p99 %s  (%d ok, %d failed)  %s", rate, kind, pct(all, 50), pct(all, 99), ok.Load(), fail.Load(), cpuLine)
	return rate, pct(all, 50)
}

// send makes one request of a load loop with the client -client names and
// returns the answer's status, its body read and discarded.
func send(ctx context.Context, hc *http.Client, rc *rawConn, method, url string, body []byte) (int, error) {
	if *loadClient == "raw" {
		return rc.do(ctx, method, url, body)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, rd)
	req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// benchSequential is one client writing one registration at a time, to the
// leader and through a follower: the latency a deploy script sees.
func benchSequential(s servers, bases []string, leader int, mk reqFunc) (toLeader, viaFollower time.Duration) {
	_, toLeader = benchLoadN(s, 1, s.name+" sequential writer (1 client), to the leader", []string{bases[leader]}, mk, true)
	_, viaFollower = benchLoadN(s, 1, s.name+" sequential writer (1 client), via a follower", []string{bases[(leader+1)%len(bases)]}, mk, true)
	return toLeader, viaFollower
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := len(d) * p / 100
	if i >= len(d) {
		i = len(d) - 1
	}
	return d[i].Round(10 * time.Microsecond)
}

func benchWrites(s servers, bases []string, mk reqFunc) float64 {
	to := "spread over 3 nodes"
	if len(bases) == 1 {
		to = "to " + *writeTo
	}
	return benchLoad(s, s.name+" registrations, "+to, bases, mk, true)
}

// benchReads fills a service with 10 instances and reads it.
func benchReads(c *cluster) float64 {
	fillBeaconReads(c)
	l := c.leader()
	f := (l + 1) % len(c.procs)
	one := benchLoad(c.servers(), "discovery reads, one follower (10 instances)", []string{c.api(f)}, discoverReq, false)
	benchLoad(c.servers(), "discovery reads, spread over 3 nodes", c.apis(), discoverReq, false)
	beaconConsistent = benchLoad(c.servers(), "consistent reads (?consistent), one follower", []string{c.api(f)}, consistentReq, false)
	return one
}

// fillBeaconReads registers the 10 instances of service "read" that the
// read loads ask for, and waits until every node has applied them.
func fillBeaconReads(c *cluster) {
	hc := newHTTPClient()
	for i := 0; i < 10; i++ {
		body := fmt.Sprintf(`{"address":"10.9.0.%d","port":8080,"tags":["v1"],"meta":{"zone":"a"},"version":"1.2.%d"}`, i, i)
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/services/read/instances/r-%d", c.api(0), i), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	// Wait until every node has applied the ten registrations.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n := 0
		for _, api := range c.apis() {
			var insts []json.RawMessage
			if resp, err := hc.Get(api + "/v1/services/read/instances"); err == nil {
				_ = json.NewDecoder(resp.Body).Decode(&insts)
				resp.Body.Close()
			}
			if len(insts) == 10 {
				n++
			}
		}
		if n == len(c.procs) {
			break
		}
	}
}

// beaconConsistent is the consistent read rate, compared with etcd's
// linearizable ranges.
var beaconConsistent float64

func consistentReq(base string, n int64) (string, string, []byte) {
	return http.MethodGet, base + "/v1/services/read/instances?consistent", nil
}

func etcdSerializableReq(base string, n int64) (string, string, []byte) {
	body, _ := json.Marshal(map[string]any{"key": b64("/read/"), "range_end": b64("/read0"), "serializable": true})
	return http.MethodPost, base + "/v3/kv/range", body
}

// benchFailover kills the leader with SIGKILL and measures the time until a
// write is accepted by a survivor; the old leader is restarted each time.
func benchFailover(c *cluster) time.Duration {
	hc := &http.Client{Timeout: 2 * time.Second}
	var times, electedTimes []time.Duration
	for t := 0; t < *trials; t++ {
		// Each trial starts from a settled cluster: a leader with every peer,
		// and every node caught up with it (the node restarted by the
		// previous trial included), so that trials do not compound.
		if err := c.waitLeader(30 * time.Second); err != nil {
			fmt.Println("failover:", err)
			return 0
		}
		c.waitCaughtUp(30 * time.Second)
		l := c.leader()
		_ = c.procs[l].Process.Kill()
		_ = c.procs[l].Wait()
		t0 := time.Now()
		s := (l + 1) % len(c.procs)
		// Watch for a new leader in parallel, to split the time into the
		// election and the first write.
		elected := make(chan time.Duration, 1)
		go func() {
			for time.Since(t0) < 30*time.Second {
				for i := range c.procs {
					if i == l {
						continue
					}
					if st, err := getStatus(c.api(i)); err == nil && st.State == "Leader" {
						elected <- time.Since(t0)
						return
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
			elected <- 0
		}()
		for i := 0; time.Since(t0) < 30*time.Second; i++ {
			method, url, body := registerReq(c.api(s), 900000+int64(t*1000+i))
			req, _ := http.NewRequest(method, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
			resp, err := hc.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					times = append(times, time.Since(t0))
					break
				}
			}
		}
		electedTimes = append(electedTimes, <-elected)
		if err := c.startNode(l, len(c.procs)); err != nil {
			fmt.Println("failover restart:", err)
			return 0
		}
	}
	report("beacon leader failover: new leader elected", "p50 %s  max %s", pct(electedTimes, 50), pct(electedTimes, 100))
	report("beacon leader failover (SIGKILL) to accepted write", "p50 %s  max %s  (%d trials)", pct(times, 50), pct(times, 100), len(times))
	return pct(times, 50)
}

// benchDetect kills a follower and measures the time until every survivor
// reports it failed in /v1/cluster/members, over *trials kills; the victim is
// restarted and seen alive by every node before the next trial.
func benchDetect(c *cluster) {
	var worst []time.Duration // per trial, the slowest survivor
	for t := 0; t < *trials; t++ {
		if err := c.waitLeader(30 * time.Second); err != nil {
			fmt.Println("detect:", err)
			return
		}
		l := c.leader()
		f := (l + 1 + t%2) % len(c.procs) // alternate between the two followers
		victim := c.names[f]
		if !c.waitMemberStatus(victim, "alive", -1, 30*time.Second) {
			fmt.Println("detect:", victim, "not alive everywhere before the trial")
			return
		}
		// A random moment within two probe rounds, so that the kill does
		// not fall at the same point of the survivors' probe schedule in
		// every trial (the trial loop's own period would lock it).
		time.Sleep(time.Duration(rand.Int64N(int64(800 * time.Millisecond))))
		_ = c.procs[f].Process.Kill()
		_ = c.procs[f].Wait()
		t0 := time.Now()
		if !c.waitMemberStatus(victim, "failed", f, 30*time.Second) {
			fmt.Println("detect:", victim, "not reported failed by every survivor within 30s")
			return
		}
		worst = append(worst, time.Since(t0))
		if err := c.startNode(f, len(c.procs)); err != nil {
			fmt.Println("detect restart:", err)
			return
		}
	}
	report("dead node noticed by every survivor (gossip)", "p50 %s  p90 %s  max %s  (%d kills)", pct(worst, 50), pct(worst, 90), pct(worst, 100), len(worst))
	_ = c.waitLeader(30 * time.Second)
}

// waitMemberStatus polls /v1/cluster/members on every node but skip until
// each reports the member with the status, or the timeout passes.
func (c *cluster) waitMemberStatus(member, want string, skip int, timeout time.Duration) bool {
	hc := &http.Client{Timeout: time.Second}
	seen := map[int]bool{}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for i := range c.procs {
			if i == skip || seen[i] {
				continue
			}
			var ms []struct{ Name, Status string }
			resp, err := hc.Get(c.api(i) + "/v1/cluster/members")
			if err != nil {
				continue
			}
			_ = json.NewDecoder(resp.Body).Decode(&ms)
			resp.Body.Close()
			for _, m := range ms {
				if m.Name == member && m.Status == want {
					seen[i] = true
				}
			}
		}
		n := len(c.procs)
		if skip >= 0 {
			n--
		}
		if len(seen) == n {
			return true
		}
	}
	return false
}

// benchMemory registers *instances instances and reads each agent's RSS.
func benchMemory(c *cluster) int {
	if err := c.waitLeader(30 * time.Second); err != nil {
		fmt.Println("memory:", err)
		return 0
	}
	fill(c.servers(), c.apis(), registerReq)
	most := reportRSS("beacon", c.procs)
	if *ttlCheck && *reportTTL {
		cpu := startCPU(c.servers())
		t0 := time.Now()
		ok := fillRange(c.apis(), ttlPassReq, 2_000_001, 2_000_000+int64(*instances), *clients)
		el := time.Since(t0)
		report(fmt.Sprintf("beacon one TTL report per check (%d)", *instances), "%8.0f reports/s  (%d ok in %s)  %s",
			float64(ok)/el.Seconds(), ok, el.Round(time.Millisecond), cpu.perRequest(ok))
		most = max(most, reportRSS("beacon (then one report per check)", c.procs))
	}
	if *rssSettle > 0 {
		// Not counted in the ratio: the reading 2 s after the load is.
		time.Sleep(*rssSettle)
		reportRSS(fmt.Sprintf("beacon (%s idle after that)", *rssSettle), c.procs)
	}
	if *profDir != "" {
		saveHeapProfiles(c)
	}
	return most
}

// saveHeapProfiles stores each agent's heap profile (and, in text, the
// runtime's memory statistics) in *profDir.
func saveHeapProfiles(c *cluster) {
	if err := os.MkdirAll(*profDir, 0o755); err != nil {
		fmt.Println("profiles:", err)
		return
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	for i := range c.procs {
		for _, q := range []string{"heap", "heap?debug=1"} {
			resp, err := hc.Get(c.api(i) + "/debug/pprof/" + q)
			if err != nil {
				fmt.Println("profiles:", err)
				return
			}
			name := fmt.Sprintf("%s.heap", c.names[i])
			if strings.HasSuffix(q, "debug=1") {
				name += ".txt"
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err := os.WriteFile(filepath.Join(*profDir, name), b, 0o644); err != nil {
				fmt.Println("profiles:", err)
				return
			}
		}
	}
	fmt.Println("heap profiles in", *profDir)
}

// fill sends *instances writes made by mk over *clients workers (worker w
// uses bases[w%len]), each tried up to 5 times until it answers 200, and
// reports the rate and the servers' CPU time per write.
func fill(s servers, bases []string, mk reqFunc) {
	cpu := startCPU(s)
	t0 := time.Now()
	ok := fillRange(bases, mk, 2_000_001, 2_000_000+int64(*instances), *clients)
	el := time.Since(t0)
	report(fmt.Sprintf("%s fill to %d records", s.name, *instances), "%8.0f writes/s  (%d ok in %s)  %s",
		float64(ok)/el.Seconds(), ok, el.Round(time.Millisecond), cpu.perRequest(ok))
}

// fillRange sends the writes mk makes for n = first..last over workers
// workers (worker w uses bases[w%len]), each tried up to 5 times until it
// answers 200, and returns how many succeeded.
func fillRange(bases []string, mk reqFunc, first, last int64, workers int) int64 {
	hc := newHTTPClient()
	var next, ok atomic.Int64
	next.Store(first - 1)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for n := next.Add(1); n <= last; n = next.Add(1) {
				method, url, body := mk(bases[w%len(bases)], n)
				for try := 0; try < 5; try++ {
					req, _ := http.NewRequest(method, url, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
					resp, err := hc.Do(req)
					if err != nil {
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						ok.Add(1)
						break
					}
				}
			}
		}(w)
	}
	wg.Wait()
	return ok.Load()
}

// reportRSS waits for the processes to settle after a load and reports
// their RSS; it returns the largest, in MB.
func reportRSS(system string, procs []*exec.Cmd) int {
	time.Sleep(2 * time.Second) // let followers apply and the runtimes settle
	var parts []string
	most := 0
	for i, p := range procs {
		rss := rssMB(p.Process.Pid, "VmRSS:")
		most = max(most, rss)
		parts = append(parts, fmt.Sprintf("#%d %d MB (anon %d, file %d)", i+1, rss,
			rssMB(p.Process.Pid, "RssAnon:"), rssMB(p.Process.Pid, "RssFile:")))
	}
	report(fmt.Sprintf("%s RSS per node, fresh cluster + %d records", system, *instances), "%s", strings.Join(parts, ", "))
	if len(procs) > 0 {
		fmt.Printf("  files in #1's RSS: %s\n", fileRSS(procs[0].Process.Pid))
	}
	return most
}

// fileRSS lists the files mapped into pid's memory that hold the most of its
// RSS (MB), largest first.
func fileRSS(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return err.Error()
	}
	kb := map[string]int{}
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			cur = ""
			if len(f) >= 6 {
				cur = f[5]
			}
		case len(f) >= 2 && f[0] == "Rss:" && cur != "":
			n, _ := strconv.Atoi(f[1])
			kb[cur] += n
		}
	}
	type fr struct {
		name string
		kb   int
	}
	var all []fr
	for n, k := range kb {
		all = append(all, fr{n, k})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].kb > all[j].kb })
	var parts []string
	for i := 0; i < len(all) && i < 4; i++ {
		parts = append(parts, fmt.Sprintf("%s %.1f", filepath.Base(all[i].name), float64(all[i].kb)/1024))
	}
	return strings.Join(parts, ", ")
}

func rssMB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return -1
}

// ---- the etcd baseline ----

type etcdCluster struct {
	dir   string
	bin   string
	procs []*exec.Cmd
}

// etcd's client and peer ports follow -port: member i listens on
// port+1379+100i (clients) and port+1380+100i (peers); 28379... by default.
func etcdClientPort(i int) int { return *basePort + 1379 + 100*i }
func etcdPeerPort(i int) int   { return *basePort + 1380 + 100*i }

func (e *etcdCluster) clientURLs() []string {
	var out []string
	for i := range 3 {
		out = append(out, fmt.Sprintf("http://127.0.0.1:%d", etcdClientPort(i)))
	}
	return out
}

func (e *etcdCluster) member(i int) *exec.Cmd {
	var peers []string
	for j := range 3 {
		peers = append(peers, fmt.Sprintf("e%d=http://127.0.0.1:%d", j+1, etcdPeerPort(j)))
	}
	initial := strings.Join(peers, ",")
	name := fmt.Sprintf("e%d", i+1)
	cport, pport := etcdClientPort(i), etcdPeerPort(i)
	return exec.Command(e.bin, "--name", name, "--data-dir", filepath.Join(e.dir, name),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", cport),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", cport),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pport),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pport),
		"--initial-cluster", initial, "--initial-cluster-state", "new", "--log-level", "error",
		"--enable-pprof") // the parked phase's forced collection
}

func (e *etcdCluster) startMember(i int) error {
	cmd := e.member(i)
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(e.dir), fmt.Sprintf("e%d.log", i+1)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	e.procs[i] = cmd
	return nil
}

func (e *etcdCluster) start() error {
	var ports []int
	for i := range 3 {
		ports = append(ports, etcdClientPort(i), etcdPeerPort(i))
	}
	if err := checkPortsFree("etcd cluster", ports, nil); err != nil {
		return err
	}
	e.procs = make([]*exec.Cmd, 3)
	for i := range e.procs {
		if err := e.startMember(i); err != nil {
			return err
		}
	}
	if !e.putOK(e.clientURLs()[0], 0, 30*time.Second) {
		return fmt.Errorf("etcd cluster did not answer")
	}
	return e.fillReads()
}

// putOK retries a put on base until it succeeds or the timeout passes.
func (e *etcdCluster) putOK(base string, n int64, timeout time.Duration) bool {
	hc := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		method, url, body := etcdPutReq(base, n)
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		} else {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return false
}

// leader returns the index of the member that leads, per its own status.
func (e *etcdCluster) leader() int {
	for i, u := range e.clientURLs() {
		if e.procs[i] == nil {
			continue
		}
		resp, err := http.Post(u+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
		if err != nil {
			continue
		}
		var st struct {
			Header struct {
				MemberID string `json:"member_id"`
			} `json:"header"`
			Leader string `json:"leader"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if st.Leader != "" && st.Leader == st.Header.MemberID {
			return i
		}
	}
	return -1
}

// failover kills the leader with SIGKILL and measures the time until a put
// is accepted by a survivor, as benchFailover does for Beacon.
// follower returns a member that is not the leader (member 0 when none is
// known).
func (e *etcdCluster) follower() int {
	l := -1
	for deadline := time.Now().Add(30 * time.Second); l < 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		l = e.leader()
	}
	return (max(l, 0) + 1) % 3
}

func (e *etcdCluster) failover() time.Duration {
	var times []time.Duration
	for t := 0; t < *trials; t++ {
		l := -1
		for deadline := time.Now().Add(30 * time.Second); l < 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			l = e.leader()
		}
		if l < 0 {
			fmt.Println("etcd failover: no leader")
			break
		}
		_ = e.procs[l].Process.Kill()
		_ = e.procs[l].Wait()
		e.procs[l] = nil
		t0 := time.Now()
		if e.putOK(e.clientURLs()[(l+1)%3], 900000+int64(t), 30*time.Second) {
			times = append(times, time.Since(t0))
		}
		if err := e.startMember(l); err != nil {
			fmt.Println("etcd failover restart:", err)
			break
		}
		e.putOK(e.clientURLs()[l], 0, 30*time.Second)
	}
	report("etcd leader failover (SIGKILL) to accepted put", "p50 %s  max %s  (%d trials)", pct(times, 50), pct(times, 100), len(times))
	return pct(times, 50)
}

// memory puts *instances keys like benchMemory's registrations and reports RSS.
func (e *etcdCluster) memory() int {
	fill(e.servers(), e.clientURLs(), etcdPutReq)
	return reportRSS("etcd", e.procs)
}

func (e *etcdCluster) fillReads() error {
	for i := 0; i < 10; i++ {
		val := fmt.Sprintf(`{"address":"10.9.0.%d","port":8080,"tags":["v1"],"meta":{"zone":"a"},"version":"1.2.%d"}`, i, i)
		body, _ := json.Marshal(map[string]string{"key": b64(fmt.Sprintf("/read/r-%d", i)), "value": b64(val)})
		resp, err := http.Post(e.clientURLs()[0]+"/v3/kv/put", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp.Body.Close()
	}
	return nil
}

func (e *etcdCluster) stop() {
	for _, p := range e.procs {
		if p != nil {
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}
	}
	e.procs = nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
