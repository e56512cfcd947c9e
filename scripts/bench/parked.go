package main

// The parked phase: -parked blocking queries (Beacon) or watchers (etcd)
// waiting on keys that no write touches, spread over the three nodes, and
// what they cost: RSS per node, and the write rate (and server CPU per
// write) with them parked against without. Issue 18's target: no
// throughput lost, at most 30 MB.

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	parkedN    = flag.Int("parked", 2000, "parked phase: blocking queries (etcd: watchers) parked during the write load")
	parkedIDs  = flag.Int("parked-ids", 2000, "parked phase: the write load updates this many instances (keys) over and over")
	parkedProc = flag.Bool("parked-proc", false, "parked phase: hold the parked requests in a child process of this tool rather than in the one that makes the write load (whose own cost per request then rises with 2,000 more connections and goroutines in it)")
	parkOnly   = flag.String("park-only", "", "internal (-parked-proc's child): beacon or etcd; hold -parked requests against -park-bases until stdin closes, printing how many are parked")
	parkBases  = flag.String("park-bases", "", "internal (-parked-proc's child): the comma-separated base URLs")
)

// parkedServices is how many services (etcd: keys) the parked queries wait on.
const parkedServices = 100

// parkedWriteReq updates one of -parked-ids instances: the catalog keeps its
// size, so the runs with and without parked queries write the same.
func parkedWriteReq(base string, n int64) (string, string, []byte) {
	id := n % int64(*parkedIDs)
	body := fmt.Sprintf(`{"address":"10.8.%d.%d","port":%d,"tags":["bench","v1"],"meta":{"zone":"z%d"},"version":"1.0.%d"}`,
		(id>>8)&255, id&255, 1024+n%60000, id%3, id%10)
	return http.MethodPut, fmt.Sprintf("%s/v1/services/bench-%d/instances/p-%d", base, id%100, id), []byte(body)
}

func etcdParkedPutReq(base string, n int64) (string, string, []byte) {
	return etcdPutReq(base, n%int64(*parkedIDs))
}

// parkedServiceReq registers the one instance of parked service n.
func parkedServiceReq(base string, n int64) (string, string, []byte) {
	return http.MethodPut, fmt.Sprintf("%s/v1/services/parked-%d/instances/w-%d", base, n, n),
		[]byte(fmt.Sprintf(`{"address":"10.7.0.%d","port":8080}`, n%250+1))
}

// parkedClient is one watcher's HTTP client: one connection, kept alive
// from its first read (the index to wait from) to its blocking query, as a
// real watcher's (Prometheus, consul-template) is. One client shared by
// every watcher with a small idle pool made most blocking queries open a
// second connection, so a burst of 4,000 connections for 2,000 queries.
func parkedClient() *http.Client {
	t := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
	return &http.Client{Transport: t}
}

// parkedSet is the parked requests of one run.
type parkedSet struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	failed atomic.Int64 // requests that ended before they were cancelled
}

func (p *parkedSet) stop() {
	p.cancel()
	p.wg.Wait()
}

func (p *parkedSet) failures() int64 { return p.failed.Load() }

// parker is the parked requests of one run, held here or in a child process.
type parker interface {
	stop()
	failures() int64
}

// parkProc is -parked-proc's child process holding the parked requests.
type parkProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	once   sync.Once
	parked atomic.Int64 // as the child last said (etcd: watches confirmed)
	failed atomic.Int64
}

// startParkProc starts this tool again with -park-only: system's parked
// requests against bases, in a process of their own.
func startParkProc(system string, bases []string) (*parkProc, error) {
	cmd := exec.Command(os.Args[0], "-park-only", system, "-park-bases", strings.Join(bases, ","), "-parked", strconv.Itoa(*parkedN))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &parkProc{cmd: cmd, stdin: stdin}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var parked, failed int64
			if _, err := fmt.Sscanf(sc.Text(), "parked %d failed %d", &parked, &failed); err == nil {
				p.parked.Store(parked)
				p.failed.Store(failed)
			}
		}
	}()
	return p, nil
}

// stop closes the child's stdin (it ends its requests and exits) and waits
// for it, at most 30 s before killing it.
func (p *parkProc) stop() {
	p.once.Do(func() {
		_ = p.stdin.Close()
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	})
}

func (p *parkProc) failures() int64 { return p.failed.Load() }

// runParkOnly is the child's whole run (-park-only).
func runParkOnly() error {
	bases := strings.Split(*parkBases, ",")
	var created atomic.Int64
	var run func(ctx context.Context, hc *http.Client, base string, i int) error
	switch *parkOnly {
	case "beacon":
		run = beaconPark
	case "etcd":
		run = etcdWatcher(&created)
	default:
		return fmt.Errorf("-park-only %q: want beacon or etcd", *parkOnly)
	}
	p := park(bases, run)
	stdinClosed := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stdinClosed:
			p.stop()
			return nil
		case <-t.C:
			fmt.Printf("parked %d failed %d\n", created.Load(), p.failures())
		}
	}
}

// park starts *parkedN requests made by run(ctx, base, i), spread over bases.
func park(bases []string, run func(ctx context.Context, hc *http.Client, base string, i int) error) *parkedSet {
	ctx, cancel := context.WithCancel(context.Background())
	p := &parkedSet{cancel: cancel}
	for i := 0; i < *parkedN; i++ {
		p.wg.Add(1)
		hc := parkedClient()
		go func() {
			defer hc.CloseIdleConnections()
			defer p.wg.Done()
			if err := run(ctx, hc, bases[i%len(bases)], i); err != nil && ctx.Err() == nil {
				p.failed.Add(1)
			}
		}()
	}
	return p
}

// blockingGauge sums a metric of every node's /metrics.
func blockingGauge(bases []string, metric string) int {
	sum := 0
	for _, b := range bases {
		sum += int(agentMetrics(b)[metric])
	}
	return sum
}

// liveMem sums over the nodes the memory their Go runtime holds live: the
// heap's live objects after a forced collection (GET /debug/pprof/heap?gc=1,
// both systems run with --enable-pprof) and the goroutine stacks in use,
// in bytes; 0 if a node does not serve them. RSS also counts the freed
// memory a runtime keeps for its next allocations, which follows any burst
// of requests; this is what the parked queries themselves hold (two
// collections: sync.Pool keeps its objects through the first).
func liveMem(bases []string) int {
	hc := &http.Client{Timeout: 30 * time.Second}
	// Twice: sync.Pool keeps what it held through one collection.
	for _, b := range append(bases, bases...) {
		resp, err := hc.Get(b + "/debug/pprof/heap?gc=1")
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0
		}
	}
	h := blockingGauge(bases, "go_memstats_heap_alloc_bytes")
	if h == 0 {
		return 0
	}
	return h + blockingGauge(bases, "go_memstats_stack_inuse_bytes")
}

// rssPerNode returns each process's RSS in MB.
func rssPerNode(s servers) []int {
	var out []int
	for _, p := range s.procs {
		out = append(out, rssMB(p.Process.Pid, "VmRSS:"))
	}
	return out
}

// settle samples RSS once a second, for at most 30 s, until the nodes'
// sum has not fallen for 5 s, and returns the last sample and how long it
// took.
func settle(s servers, first []int) ([]int, time.Duration) {
	sum := func(v []int) (t int) {
		for _, x := range v {
			t += x
		}
		return t
	}
	t0 := time.Now()
	last, lowest, since := first, sum(first), time.Now()
	for time.Since(t0) < 30*time.Second && time.Since(since) < 5*time.Second {
		time.Sleep(time.Second)
		last = rssPerNode(s)
		if t := sum(last); t < lowest {
			lowest, since = t, time.Now()
		}
	}
	return last, time.Since(t0)
}

// parkedResult is one system's parked run.
type parkedResult struct{ without, with, after float64 }

// benchParked runs the write load without, then with, the parked requests,
// then without again, and reports the RSS and live memory the nodes gained
// and the rates. start parks the requests (here or in a child process) and
// returns them with the function that says how many are parked now.
func benchParked(s servers, bases []string, write reqFunc, start func() (parker, func() int, error)) parkedResult {
	var r parkedResult
	// Every instance (key) of the write load exists before the first run.
	fillRange(bases, write, 1, int64(*parkedIDs), *clients)
	r.without = benchLoad(s, s.name+" writes, no parked queries", bases, write, true)
	// The baseline is taken after the run without parked queries: the
	// write load's own growth (the Raft log, the heap's headroom) is not
	// theirs.
	time.Sleep(2 * time.Second) // let followers apply and the runtimes settle
	before := rssPerNode(s)
	liveBefore := liveMem(bases)

	t0 := time.Now()
	p, parkedCount, err := start()
	if err != nil {
		fmt.Println("parked:", err)
		return r
	}
	defer p.stop()
	n := 0
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if n = parkedCount(); n >= *parkedN {
			break
		}
	}
	if n < *parkedN {
		fmt.Printf("parked: only %d of %d requests parked after 60s (%d failed)\n", n, *parkedN, p.failures())
	}
	parkTook := time.Since(t0)
	time.Sleep(2 * time.Second)
	with := rssPerNode(s)
	liveWith := liveMem(bases)
	// RSS once the runtimes have collected (liveMem forced it) and had time
	// to hand the burst's freed memory back (a scavenger paces itself, and
	// its goal follows the last collection's heap goal): sampled each second
	// for up to 30 s until the sum stops falling.
	settled, settledAfter := settle(s, with)
	r.with = benchLoad(s, fmt.Sprintf("%s writes, %d parked queries", s.name, n), bases, write, true)
	still := parkedCount()
	// And once more without them: the runs drift with the order they run
	// in (the log and the files grow, the machine's speed moves), so the
	// rate with them is compared with the mean of the runs around it.
	p.stop()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && parkedCount() > 0; time.Sleep(100 * time.Millisecond) {
	}
	time.Sleep(2 * time.Second)
	r.after = benchLoad(s, s.name+" writes, no parked queries (after)", bases, write, true)

	var parts []string
	total := 0
	for i := range before {
		parts = append(parts, fmt.Sprintf("#%d %+d MB (%d → %d)", i+1, with[i]-before[i], before[i], with[i]))
		total += with[i] - before[i]
	}
	perQuery := ""
	if n > 0 {
		perQuery = fmt.Sprintf(", %.1f KB per query", float64(total)*1024/float64(n))
	}
	report(fmt.Sprintf("%s RSS with %d parked queries", s.name, n), "%s, all nodes %+d MB%s  (2 s after they parked; parked in %s; %d still parked after the load, %d ended early)",
		strings.Join(parts, ", "), total, perQuery, parkTook.Round(time.Millisecond), still, p.failures())
	parts, total = parts[:0], 0
	for i := range before {
		parts = append(parts, fmt.Sprintf("#%d %+d MB", i+1, settled[i]-before[i]))
		total += settled[i] - before[i]
	}
	report(fmt.Sprintf("%s RSS with %d parked, settled", s.name, n), "%s, all nodes %+d MB  (after a forced collection on each node, then %s until RSS stopped falling)",
		strings.Join(parts, ", "), total, settledAfter.Round(time.Second))
	if liveBefore > 0 && liveWith > 0 && n > 0 {
		d := float64(liveWith - liveBefore)
		report(fmt.Sprintf("%s live heap+stacks, %d parked", s.name, n), "all nodes %+.1f MB, %.1f KB per query  (after a forced collection on each node)",
			d/1e6, d/1024/float64(n))
	}
	if r.without > 0 && r.after > 0 {
		report(s.name+" write rate with/without parked queries", "%.2f  (with / mean of the runs before and after: %.0f / %.0f)",
			r.with/((r.without+r.after)/2), r.with, (r.without+r.after)/2)
	}
	return r
}

// beaconPark is one blocking query on a service no write touches.
func beaconPark(ctx context.Context, hc *http.Client, base string, i int) error {
	url := fmt.Sprintf("%s/v1/services/parked-%d/instances", base, i%parkedServices)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	idx := resp.Header.Get("X-Beacon-Index")
	if resp.StatusCode != http.StatusOK || idx == "" {
		return fmt.Errorf("parked read: status %d, index %q", resp.StatusCode, idx)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, url+"?index="+idx+"&wait=10m", nil)
	resp, err = hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return fmt.Errorf("parked query answered with %d before the end", resp.StatusCode)
}

// etcdWatcher opens one watch stream on a key no write touches, over the
// gateway, and counts it once etcd confirms it.
func etcdWatcher(created *atomic.Int64) func(ctx context.Context, hc *http.Client, base string, i int) error {
	return func(ctx context.Context, hc *http.Client, base string, i int) error {
		body, _ := json.Marshal(map[string]any{"create_request": map[string]string{"key": b64(fmt.Sprintf("/parked/%d", i%parkedServices))}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v3/watch", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		var msg struct {
			Result struct {
				Created bool `json:"created"`
			} `json:"result"`
		}
		if err := dec.Decode(&msg); err != nil {
			return err
		}
		if !msg.Result.Created {
			return fmt.Errorf("etcd watch not created")
		}
		created.Add(1)
		defer created.Add(-1)
		for {
			if err := dec.Decode(&msg); err != nil {
				return err
			}
		}
	}
}

// parkedBeacon prepares a fresh cluster's parked services and runs the phase.
func parkedBeacon(c *cluster) parkedResult {
	fillRange(c.apis(), func(base string, n int64) (string, string, []byte) { return parkedServiceReq(base, n-1) }, 1, parkedServices, 8)
	c.waitCaughtUp(30 * time.Second)
	count := func() int { return blockingGauge(c.apis(), "beacon_http_blocking_queries") }
	return benchParked(c.servers(), c.apis(), parkedWriteReq, func() (parker, func() int, error) {
		if *parkedProc {
			p, err := startParkProc("beacon", c.apis())
			return p, count, err
		}
		return park(c.apis(), beaconPark), count, nil
	})
}

func parkedEtcd(e *etcdCluster) parkedResult {
	return benchParked(e.servers(), e.clientURLs(), etcdParkedPutReq, func() (parker, func() int, error) {
		if *parkedProc {
			p, err := startParkProc("etcd", e.clientURLs())
			if err != nil {
				return nil, nil, err
			}
			return p, func() int { return int(p.parked.Load()) }, nil
		}
		var created atomic.Int64
		return park(e.clientURLs(), etcdWatcher(&created)), func() int { return int(created.Load()) }, nil
	})
}
