package main

// Server CPU per request, CPU profiles of the agents, and the check that
// nothing else listens on the ports a cluster under test will use.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// servers are the processes of the system under test: their CPU time is
// what a phase's requests cost the servers. pprof lists the base URLs that
// serve /debug/pprof/ (Beacon agents with --enable-pprof), one per process,
// or is nil.
type servers struct {
	name  string
	procs []*exec.Cmd
	pprof []string
	nodes []string
	// apis are the Beacon agents' API base URLs (nil for etcd): the phase's
	// line gives the writes per Raft entry and the collections it took.
	apis []string
}

func (c *cluster) servers() servers {
	s := servers{name: "beacon", procs: c.procs, nodes: c.names, apis: c.apis()}
	if *profDir != "" {
		s.pprof = c.apis()
	}
	return s
}

func (e *etcdCluster) servers() servers {
	return servers{name: "etcd", procs: e.procs, nodes: []string{"e1", "e2", "e3"}}
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
var clockTicks = func() float64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}()

// cpuSeconds returns the user and system CPU time pid has used, in seconds,
// or -1 if it cannot be read.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The command name (field 2) may contain spaces; fields after it are
	// plain. utime and stime are fields 14 and 15: 12th and 13th after ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	k, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (u + k) / clockTicks
}

// cpuMeter measures the CPU time the servers spend from start to done.
type cpuMeter struct {
	apis  []string
	stats []agentStats
	pids  []int
	start []float64
	self  float64 // the load tool's own CPU seconds at start
}

func startCPU(s servers) *cpuMeter {
	m := &cpuMeter{self: cpuSeconds(os.Getpid()), apis: s.apis}
	for _, a := range s.apis {
		m.stats = append(m.stats, scrapeAgent(a))
	}
	for _, p := range s.procs {
		pid := -1
		if p != nil && p.Process != nil {
			pid = p.Process.Pid
		}
		m.pids = append(m.pids, pid)
		m.start = append(m.start, cpuSeconds(pid))
	}
	return m
}

// done returns the CPU seconds each server used since start, and their sum.
func (m *cpuMeter) done() (total float64, per []float64) {
	for i, pid := range m.pids {
		now := cpuSeconds(pid)
		d := now - m.start[i]
		if now < 0 || m.start[i] < 0 {
			d = 0
		}
		per = append(per, d)
		total += d
	}
	return total, per
}

// perRequest renders the servers' CPU time per request: the sum over the
// nodes, then each node's share; then the load tool's own (its client's)
// CPU time per request, which on a small machine competes with the servers.
func (m *cpuMeter) perRequest(requests int64) string {
	total, per := m.done()
	if requests <= 0 {
		return "cpu n/a"
	}
	client := ""
	if now := cpuSeconds(os.Getpid()); now >= 0 && m.self >= 0 {
		client = fmt.Sprintf(", client cpu %.0f µs/req", (now-m.self)/float64(requests)*1e6)
	}
	parts := make([]string, len(per))
	for i, p := range per {
		parts[i] = fmt.Sprintf("%.0f", p/float64(requests)*1e6)
	}
	return fmt.Sprintf("server cpu %.0f µs/req (%s; %.1f s)%s%s", total/float64(requests)*1e6, strings.Join(parts, "+"), total, client, m.agentLine())
}

// agentStats are the figures of an agent's /metrics the phase line reports:
// the group commit's writes and entries (the leader's), and collections.
type agentStats struct {
	groupWrites, groupEntries, gcs float64
}

// scrapeAgent reads them (zero where the agent does not answer).
func scrapeAgent(base string) agentStats {
	m := agentMetrics(base)
	return agentStats{groupWrites: m["beacon_raft_group_size_sum"], groupEntries: m["beacon_raft_group_size_count"], gcs: m["go_gc_duration_seconds_count"]}
}

// agentMetrics reads an agent's /metrics: every series without labels, by
// name (nil if the agent does not answer).
func agentMetrics(base string) map[string]float64 {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				m[f[0]] = v
			}
		}
	}
	return m
}

// agentLine renders the phase's writes per Raft entry (all leaders' groups
// together) and each agent's collections; empty for etcd.
func (m *cpuMeter) agentLine() string {
	if len(m.apis) == 0 {
		return ""
	}
	var w, e float64
	gcs := make([]string, len(m.apis))
	for i, a := range m.apis {
		now := scrapeAgent(a)
		w += now.groupWrites - m.stats[i].groupWrites
		e += now.groupEntries - m.stats[i].groupEntries
		gcs[i] = strconv.FormatFloat(now.gcs-m.stats[i].gcs, 'f', 0, 64)
	}
	group := ""
	if e > 0 {
		group = fmt.Sprintf(", %.1f writes/entry", w/e)
	}
	return fmt.Sprintf("%s, collections %s", group, strings.Join(gcs, "+"))
}

// startProfiles asks every server that serves pprof for a CPU profile of the
// next d (whole seconds, at least 1) and the allocations it makes in them, and
// writes each to DIR/PHASE.NODE.cpu.pprof and DIR/PHASE.NODE.allocs.pprof.
// The returned function waits for them.
func startProfiles(s servers, phase string, d time.Duration) (wait func()) {
	if *profDir == "" || len(s.pprof) == 0 {
		return func() {}
	}
	if err := os.MkdirAll(*profDir, 0o755); err != nil {
		fmt.Println("profiles:", err)
		return func() {}
	}
	secs := max(1, int(d/time.Second))
	var wg sync.WaitGroup
	// Each node's CPU profile and the allocations it made (a delta) over
	// the same seconds.
	kinds := []struct{ path, suffix string }{{"profile", "cpu"}, {"allocs", "allocs"}}
	for i, base := range s.pprof {
		for _, kind := range kinds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hc := &http.Client{Timeout: time.Duration(secs)*time.Second + 60*time.Second}
				resp, err := hc.Get(fmt.Sprintf("%s/debug/pprof/%s?seconds=%d", base, kind.path, secs))
				if err != nil {
					fmt.Println("profile:", err)
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != http.StatusOK {
					fmt.Printf("profile %s: status %d, %v\n", base, resp.StatusCode, err)
					return
				}
				name := filepath.Join(*profDir, fmt.Sprintf("%s.%s.%s.pprof", slug(phase), s.nodes[i], kind.suffix))
				if err := os.WriteFile(name, b, 0o644); err != nil {
					fmt.Println("profile:", err)
				}
			}()
		}
	}
	return wg.Wait
}

// slug turns a phase's name into a file name.
func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// checkPortsFree refuses to go on when something already listens on (or
// holds) one of the ports a cluster is about to use: the bench would
// otherwise measure a foreign cluster, or a mix of its own and a stranger's
// nodes. udp lists the ports also used over UDP (gossip).
func checkPortsFree(what string, tcp, udp []int) error {
	for _, p := range tcp {
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return fmt.Errorf("%s: something already listens on %s (another cluster or benchmark?); refusing to measure it: stop it or pick another -port", what, addr)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: port %s is taken (%v); pick another -port", what, addr, err)
		}
		l.Close()
	}
	for _, p := range udp {
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("%s: UDP port %s is taken (%v); pick another -port", what, addr, err)
		}
		c.Close()
	}
	return nil
}
