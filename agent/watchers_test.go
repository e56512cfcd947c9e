package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// The measurement of many concurrent blocking queries runs the agent in a
// child process (this test binary, re-executed as TestWatchersHelperProcess)
// so that its memory is measured alone and each process stays within the
// machine's open-file limit: the agent holds one socket per watcher, the
// test holds the other end.
//
//	BEACON_WATCHERS=10000 go test -run TestManyBlockingQueries -v -timeout 20m ./agent
const (
	envWatchers = "BEACON_WATCHERS"
	envHelper   = "BEACON_WATCHERS_HELPER"
)

// helperStats is what the helper process reports about itself.
type helperStats struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	Sys        uint64 `json:"sys"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
	Active     int64  `json:"active"`
	Wakeups    uint64 `json:"wakeups"`
	Rejected   uint64 `json:"rejected"`
}

// TestWatchersHelperProcess is the agent side of TestManyBlockingQueries; it
// does nothing unless started by it.
func TestWatchersHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) == "" {
		t.Skip("helper process for TestManyBlockingQueries")
	}
	limit, _ := strconv.Atoi(os.Getenv(envHelper))
	a, err := agent.New(agent.Config{
		Dev: true, Node: "watchers", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		LeaderWait: 10 * time.Second, RejoinInterval: time.Minute, MaxBlockingQueries: limit,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	wait.Until(t, 30*time.Second, "the dev agent to lead", a.Node().IsLeader)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stats := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		bs := a.API().BlockingStats()
		_ = json.NewEncoder(w).Encode(helperStats{
			HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, Sys: ms.Sys, RSS: rss(),
			Goroutines: runtime.NumGoroutine(), Active: bs.Active, Wakeups: bs.Wakeups, Rejected: bs.Rejected,
		})
	})}
	go stats.Serve(ln)
	defer stats.Close()
	fmt.Printf("HELPER api=%s stats=%s\n", a.HTTPAddr(), ln.Addr())
	// Run until the parent closes our stdin (or dies).
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// rss returns this process's resident set size in bytes.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func TestManyBlockingQueries(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(envWatchers))
	if n <= 0 || testing.Short() {
		t.Skipf("a measurement: set %s=10000 to run it", envWatchers)
	}
	const services = 100
	if n%services != 0 {
		t.Fatalf("%s must be a multiple of %d", envWatchers, services)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe, "-test.run=^TestWatchersHelperProcess$")
	helper.Env = append(os.Environ(), envHelper+"="+strconv.Itoa(n)) // the cap is exactly n
	stdin, _ := helper.StdinPipe()
	stdout, _ := helper.StdoutPipe()
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = helper.Wait()
	})
	var apiAddr, statsAddr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "HELPER api=%s stats=%s", &apiAddr, &statsAddr); err == nil {
			break
		}
	}
	if apiAddr == "" {
		t.Fatal("helper did not start")
	}
	go io.Copy(io.Discard, stdout)
	stats := func() helperStats {
		t.Helper()
		resp, err := http.Get("http://" + statsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s helperStats
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	ctx := context.Background()
	cl, _ := client.New(client.Config{Addresses: []string{apiAddr}})
	index := make([]uint64, services)
	for s := range services {
		idx, err := cl.Register(ctx, fmt.Sprintf("svc-%d", s), fmt.Sprintf("svc-%d-1", s), &client.Registration{Address: "10.0.0.1", Port: 80})
		if err != nil {
			t.Fatal(err)
		}
		index[s] = idx
	}
	base := stats()

	// Open n blocking queries on raw HTTP/1.1 connections, 10 minutes each.
	type answer struct {
		service int
		status  int
		at      time.Time
	}
	answers := make(chan answer, n+1)
	conns := make([]net.Conn, n)
	var open sync.WaitGroup
	start := time.Now()
	sem := make(chan struct{}, 64)
	openQuery := func(i, s int, idx uint64) (net.Conn, error) {
		c, err := net.Dial("tcp", apiAddr)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(c, "GET /v1/services/svc-%d/instances?index=%d&wait=10m HTTP/1.1\r\nHost: %s\r\n\r\n", s, idx, apiAddr) // the agent refuses a Host that is not its own (site.go)
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return // closed at the end of the test
			}
			resp.Body.Close()
			answers <- answer{service: s, status: resp.StatusCode, at: time.Now()}
		}()
		return c, nil
	}
	var dialErr error
	var mu sync.Mutex
	for i := range n {
		open.Add(1)
		sem <- struct{}{}
		go func() {
			defer open.Done()
			defer func() { <-sem }()
			c, err := openQuery(i, i%services, index[i%services])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				dialErr = err
				return
			}
			conns[i] = c
		}()
	}
	open.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if dialErr != nil {
		t.Fatalf("opening %d queries: %v", n, dialErr)
	}
	wait.For(t, 5*time.Minute, 200*time.Millisecond, func() (bool, string) {
		active := stats().Active
		return active >= int64(n), fmt.Sprintf("only %d of %d queries blocked", active, n)
	})
	opened := time.Since(start)
	held := stats()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	t.Logf("%d blocking queries held (opened in %s)", n, opened.Round(time.Millisecond))
	t.Logf("per watcher: heap in use %.1f KiB, heap allocated %.1f KiB, RSS %.1f KiB, %.2f goroutines",
		per(held.HeapInuse, base.HeapInuse), per(held.HeapAlloc, base.HeapAlloc), per(held.RSS, base.RSS),
		float64(held.Goroutines-base.Goroutines)/float64(n))
	t.Logf("agent totals: RSS %d MiB before, %d MiB with the watchers; Go sys %d MiB", base.RSS>>20, held.RSS>>20, held.Sys>>20)

	// One more is over the cap (set to exactly n here): 429.
	extra, err := openQuery(n, 0, index[0])
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	select {
	case a := <-answers:
		if a.status != http.StatusTooManyRequests {
			t.Fatalf("query over the cap answered %d, want 429", a.status)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("query over the cap got no answer")
	}

	// A change to svc-0 wakes its n/100 watchers and nobody else.
	wakeupsBefore := held.Wakeups
	changed := time.Now()
	if _, err := cl.Register(ctx, "svc-0", "svc-0-2", &client.Registration{Address: "10.0.0.2", Port: 80}); err != nil {
		t.Fatal(err)
	}
	want := n / services
	var last time.Time
	for got := 0; got < want; got++ {
		select {
		case a := <-answers:
			if a.service != 0 || a.status != http.StatusOK {
				t.Fatalf("answer for svc-%d (%d): only svc-0 changed", a.service, a.status)
			}
			last = a.at
		case <-time.After(60 * time.Second):
			t.Fatalf("%d of %d watchers of svc-0 woke", got, want)
		}
	}
	t.Logf("a change woke its %d watchers in %s (to the last answer read)", want, last.Sub(changed).Round(time.Microsecond))
	after := stats()
	if after.Active != int64(n-want) {
		t.Errorf("%d queries still blocked, want %d", after.Active, n-want)
	}
	if w := after.Wakeups - wakeupsBefore; w != uint64(want) {
		t.Errorf("%d wake-ups, want exactly %d", w, want)
	}
	select {
	case a := <-answers:
		t.Errorf("a watcher of svc-%d answered too", a.service)
	default:
	}
}
