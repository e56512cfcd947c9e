// Command benchlb measures what `beacon lb` costs: proxied requests per
// second and the latency it adds (p50/p99), against hitting the backend
// directly and, when nginx is installed, against nginx as a reference proxy.
// It starts `beacon agent --dev`, a backend process (this binary with
// -backend), `beacon lb` and nginx on loopback, and drives them with a Go load
// generator (bounded in count and time) or, with -wrk, with wrk.
//
//	go run ./scripts/benchlb -beacon bin/beacon [-duration 10s] [-clients 64] [-wrk] [-rounds 3]
//
// The targets take turns for -rounds rounds; each round's ratios and their
// medians are reported.
//
// Every process it starts is stopped when it ends.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	beaconBin  = flag.String("beacon", "bin/beacon", "beacon binary")
	nginxBin   = flag.String("nginx", "nginx", "nginx binary for the reference proxy (skipped when not found)")
	duration   = flag.Duration("duration", 10*time.Second, "length of each throughput phase")
	clients    = flag.Int("clients", 64, "concurrent connections of the throughput phase")
	latencyN   = flag.Int("latency-requests", 5000, "sequential requests of the latency phase")
	maxReqs    = flag.Int("max-requests", 2000000, "bound on the requests of a throughput phase")
	useWrk     = flag.Bool("wrk", false, "use wrk for the throughput phase (when installed)")
	basePort   = flag.Int("port", 28000, "first of the ports used")
	bodySize   = flag.Int("body", 256, "response body size of the backend")
	serveAddr  = flag.String("backend", "", "internal: run as the backend on this address")
	strategies = flag.String("strategy", "round-robin", "strategy of beacon lb")
	rounds     = flag.Int("rounds", 3, "rounds of the targets taking turns; the medians of the rounds are reported")
)

func main() {
	flag.Parse()
	if *serveAddr != "" {
		serveBackend(*serveAddr)
		return
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "benchlb: -rounds must be at least 1")
		os.Exit(2)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchlb:", err)
		os.Exit(1)
	}
}

// serveBackend is the backend process: a plain net/http server.
func serveBackend(addr string) {
	body := []byte(strings.Repeat("x", *bodySize))
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	})}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

type procs struct {
	dir   string
	list  []*exec.Cmd
	names []string
}

// pid returns the process id of the process started as name (0: none).
func (p *procs) pid(name string) int {
	for i, n := range p.names {
		if n == name {
			return p.list[i].Process.Pid
		}
	}
	return 0
}

func (p *procs) start(name string, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(p.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p.list = append(p.list, cmd)
	p.names = append(p.names, name)
	return nil
}

func (p *procs) stopAll() {
	for i := len(p.list) - 1; i >= 0; i-- {
		c := p.list[i]
		_ = c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

func waitHTTP(url string, host string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready: %w", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "beacon-benchlb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	port := func(k int) string { return "127.0.0.1:" + strconv.Itoa(*basePort+k) }
	api, backend, lbAddr, lbAdmin, nginxAddr := port(0), port(10), port(20), port(21), port(30)
	p := &procs{dir: dir}
	defer p.stopAll()

	if err := p.start("backend", self, "-backend", backend, "-body", strconv.Itoa(*bodySize)); err != nil {
		return err
	}
	if err := p.start("agent", *beaconBin, "agent", "--dev", "--node", "bench", "--http-addr", api,
		"--raft-addr", port(1), "--gossip-addr", port(2), "--log-level", "warn"); err != nil {
		return err
	}
	if err := waitHTTP("http://"+backend+"/", "", 20*time.Second); err != nil {
		return err
	}
	if err := register(api, backend); err != nil {
		return err
	}
	// The backend is on loopback, which the balancer refuses unless told
	// otherwise (docs/security.md): this bench is the case the option is for.
	if err := p.start("lb", *beaconBin, "lb", "--registry", api, "--listen", lbAddr, "--admin-addr", lbAdmin,
		"--strategy", *strategies, "--log-level", "warn", "--lb-allow-loopback"); err != nil {
		return err
	}
	if err := waitHTTP("http://"+lbAddr+"/bench/", "", 20*time.Second); err != nil {
		return err
	}
	targets := []target{{name: "direct", url: "http://" + backend + "/"}, {name: "beacon lb", url: "http://" + lbAddr + "/bench/", pid: p.pid("lb")}}
	if path, err := exec.LookPath(*nginxBin); err == nil {
		if err := startNginx(p, path, dir, nginxAddr, backend); err != nil {
			fmt.Fprintln(os.Stderr, "benchlb: nginx reference skipped:", err)
		} else if err := waitHTTP("http://"+nginxAddr+"/", "", 20*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "benchlb: nginx reference skipped:", err)
		} else {
			targets = append(targets, target{name: "nginx", url: "http://" + nginxAddr + "/", pid: p.pid("nginx")})
		}
	} else {
		fmt.Fprintln(os.Stderr, "benchlb: nginx not installed: no reference proxy")
	}
	wrk := ""
	if *useWrk {
		if wrk, err = exec.LookPath("wrk"); err != nil {
			fmt.Fprintln(os.Stderr, "benchlb: wrk not installed: using the Go load generator")
			wrk = ""
		}
	}

	gen := "Go load generator"
	if wrk != "" {
		gen = "wrk"
	}
	fmt.Printf("# beacon lb bench: %d cores, backend body %d B, throughput: %d connections for %s (%s), latency: %d sequential requests, %d rounds\n",
		numCPU(), *bodySize, *clients, *duration, gen, *latencyN, *rounds)
	fmt.Printf("%-5s %-10s %12s %10s %10s %12s %12s %14s\n", "round", "target", "req/s", "p50", "p99", "seq p50", "seq p99", "proxy CPU/req")
	// The targets take turns, round after round, each round in a rotated
	// order: a slow minute of the machine (another tenant, a collection in
	// the agent) then lands on one round of each target instead of on all
	// of one target's, and the median of the rounds' ratios is reported
	// (the yardstick is the median of three).
	res := make([]map[string]stats, *rounds)
	for r := range *rounds {
		res[r] = map[string]stats{}
		for k := range targets {
			t := targets[(k+r)%len(targets)]
			s, err := measure(t, wrk)
			if err != nil {
				return fmt.Errorf("round %d: %s: %w", r+1, t.name, err)
			}
			res[r][t.name] = s
			cpu := "-"
			if s.cpuPerReq > 0 {
				cpu = round(s.cpuPerReq)
			}
			fmt.Printf("%-5d %-10s %12.0f %10s %10s %12s %12s %14s\n", r+1, t.name, s.rps, round(s.p50), round(s.p99), round(s.seqP50), round(s.seqP99), cpu)
		}
	}
	for _, name := range []string{"beacon lb", "nginx"} {
		if _, ok := res[0][name]; !ok {
			continue
		}
		var thr, seq50, seq99, p50, p99 []float64
		for _, m := range res {
			r, d := m[name], m["direct"]
			thr = append(thr, r.rps/d.rps)
			seq50 = append(seq50, float64(r.seqP50-d.seqP50))
			seq99 = append(seq99, float64(r.seqP99-d.seqP99))
			p50 = append(p50, float64(r.p50-d.p50))
			p99 = append(p99, float64(r.p99-d.p99))
		}
		fmt.Printf("%-10s throughput %.2f of direct; added latency sequential p50 %s p99 %s; under load p50 %s p99 %s  (medians of %d rounds)\n",
			name, median(thr), round(time.Duration(median(seq50))), round(time.Duration(median(seq99))),
			round(time.Duration(median(p50))), round(time.Duration(median(p99))), len(res))
	}
	if _, ok := res[0]["nginx"]; ok {
		var thr, p99, seq, cpu []float64
		for _, m := range res {
			b, n := m["beacon lb"], m["nginx"]
			thr = append(thr, b.rps/n.rps)
			p99 = append(p99, float64(b.p99)/float64(n.p99))
			seq = append(seq, float64(b.seqP50)/float64(n.seqP50))
			if n.cpuPerReq > 0 {
				cpu = append(cpu, float64(b.cpuPerReq)/float64(n.cpuPerReq))
			}
		}
		fmt.Printf("beacon lb / nginx, each round: throughput %s; p99 under load %s\n", list(thr), list(p99))
		fmt.Printf("beacon lb / nginx (median of %d rounds): throughput %.2f, p99 under load %.2f, sequential p50 %.2f, CPU per request %.2f\n",
			len(res), median(thr), median(p99), median(seq), median(cpu))
	}
	return nil
}

// measure runs t's throughput phase (wrk when wrk is set) and then its
// sequential latency phase.
func measure(t target, wrk string) (stats, error) {
	c0 := cpuTicks(t.pid)
	var thr stats
	var err error
	if wrk != "" {
		thr, err = runWrk(wrk, t.url)
	} else {
		thr, err = load(t.url, *clients, *duration, *maxReqs)
	}
	if err != nil {
		return stats{}, err
	}
	if t.pid != 0 && thr.rps > 0 {
		// Clock ticks are 10 ms; the phase's requests are rps*duration.
		thr.cpuPerReq = time.Duration(float64(cpuTicks(t.pid)-c0) * float64(10*time.Millisecond) / (thr.rps * duration.Seconds()))
	}
	seq, err := load(t.url, 1, time.Minute, *latencyN)
	if err != nil {
		return stats{}, err
	}
	thr.seqP50, thr.seqP99 = seq.p50, seq.p99
	return thr, nil
}

// median returns the median of v (the mean of the middle two for an even
// count; 0 for none).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func list(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, ", ")
}

type target struct {
	name, url string
	pid       int // the proxy's process (0: none), whose CPU time per request is reported
}

// cpuTicks is the user+system CPU time of pid and of its children (nginx's
// workers), in clock ticks (1/100 s on Linux).
func cpuTicks(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var t int64
	if len(f) > 12 {
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		t = u + k
	}
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, c := range strings.Fields(string(kids)) {
		if n, err := strconv.Atoi(c); err == nil {
			t += cpuTicks(n)
		}
	}
	return t
}

type stats struct {
	rps            float64
	p50, p99       time.Duration
	seqP50, seqP99 time.Duration
	errors         int64
	cpuPerReq      time.Duration // CPU time of the proxy per request under load
}

func round(d time.Duration) string {
	if d < 0 {
		return "-" + round(-d)
	}
	return d.Round(time.Microsecond).String()
}

func register(api, backend string) error {
	host, portS, _ := net.SplitHostPort(backend)
	body := fmt.Sprintf(`{"address":%q,"port":%s}`, host, portS)
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodPut, "http://"+api+"/v1/services/bench/instances/bench-1", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json") // the API refuses other bodies (415)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("register the backend: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startNginx runs nginx as a plain reverse proxy with upstream keep-alive,
// two workers (like the two cores Go uses), access log off.
func startNginx(p *procs, bin, dir, listen, backend string) error {
	conf := fmt.Sprintf(`worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi; uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  upstream backend { server %[3]s; keepalive 256; }
  server {
    listen %[2]s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`, dir, listen, backend)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	return p.start("nginx", bin, "-c", path, "-p", dir)
}

// load runs conns keep-alive connections against url until d passes or max
// requests were sent, and returns the rate and latency percentiles.
func load(url string, conns int, d time.Duration, max int) (stats, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var sent, errs atomic.Int64
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for ctx.Err() == nil && sent.Add(1) <= int64(max) {
				t0 := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				resp, err := c.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						break
					}
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs.Add(1)
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return stats{}, errors.New("no successful request")
	}
	if e := errs.Load(); e > int64(len(all))/1000 {
		return stats{}, fmt.Errorf("%d errors for %d successes", e, len(all))
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) time.Duration { return all[min(len(all)-1, int(float64(len(all))*p))] }
	return stats{rps: float64(len(all)) / el.Seconds(), p50: pct(0.5), p99: pct(0.99), errors: errs.Load()}, nil
}

var wrkLine = regexp.MustCompile(`^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)

// runWrk runs wrk with --latency and parses its rate and percentiles.
func runWrk(bin, url string) (stats, error) {
	out, err := exec.Command(bin, "-t", "2", "-c", strconv.Itoa(*clients), "-d", duration.String(), "--latency", url).CombinedOutput()
	if err != nil {
		return stats{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	var s stats
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if m := wrkLine.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[3]]
			d := time.Duration(v * float64(unit))
			if m[1] == "50" {
				s.p50 = d
			} else {
				s.p99 = d
			}
		}
		if rest, ok := strings.CutPrefix(line, "Requests/sec:"); ok {
			s.rps, _ = strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
		if strings.Contains(line, "Non-2xx") {
			return s, fmt.Errorf("wrk saw errors: %s", line)
		}
	}
	if s.rps == 0 {
		return s, fmt.Errorf("could not parse wrk output: %s", out)
	}
	return s, nil
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}
