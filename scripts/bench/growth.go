package main

// The growth phase: a fresh catalog filled to -growth-total instances in
// chunks of -growth-chunk by -growth-clients clients, with the registration
// rate and the servers' CPU time per write of every chunk; etcd the same with
// puts of a similar size. Issue 18's target: the last chunk's rate at least
// 90 % of the first's.

import (
	"flag"
	"fmt"
	"strings"
	"time"
)

var (
	growthTotal   = flag.Int("growth-total", 100_000, "growth phase: instances in the catalog at the end")
	growthChunk   = flag.Int("growth-chunk", 10_000, "growth phase: instances per measured chunk")
	growthClients = flag.Int("growth-clients", 16, "growth phase: concurrent clients")
	growthReadDur = flag.Duration("growth-read-duration", 5*time.Second, "growth phase: length of each read load before and after the fill (0: none)")
)

// readRates are the read loads' rates at one size of the catalog.
type readRates struct{ local, consistent float64 }

// growthReads runs a read load of -clients clients against one node for
// -growth-read-duration and returns its rate.
func growthReads(s servers, name, base string, mk reqFunc) float64 {
	rate, _ := benchLoadFor(s, *clients, name, []string{base}, mk, false, *growthReadDur)
	return rate
}

// chunk is one measured chunk of the growth phase.
type chunk struct {
	rate   float64 // successful writes per second
	cpuPer float64 // servers' CPU seconds per successful write
}

// benchGrowth fills a fresh cluster (s, reached through bases) chunk by
// chunk and reports each chunk and the last/first ratios. It returns the
// chunks.
//
// reads, when -growth-read-duration is set, runs the read loads; it runs on
// the empty catalog (only the ten instances read) and again on the full one,
// and the ratio of the two is reported (issue 18: reads with 100k instances
// in the catalog within 10 % of an empty catalog's).
func benchGrowth(s servers, bases []string, mk reqFunc, reads func(label string) readRates) []chunk {
	size := max(1, *growthChunk)
	n := max(1, *growthTotal/size)
	var before readRates
	if *growthReadDur > 0 {
		before = reads(s.name + " empty catalog:")
	}
	var out []chunk
	var prev time.Duration
	for k := 0; k < n; k++ {
		first := 3_000_001 + int64(k*size)
		last := first + int64(size) - 1
		// CPU profiles of the second and the last chunk, each as long as
		// the chunk before it took (a profile's length is fixed up front).
		waitProfiles := func() {}
		if (k == 1 || (k == n-1 && k > 1)) && prev > 0 {
			waitProfiles = startProfiles(s, fmt.Sprintf("%s growth chunk %d", s.name, k+1), prev)
		}
		cpu := startCPU(s)
		t0 := time.Now()
		ok := fillRange(bases, mk, first, last, *growthClients)
		el := time.Since(t0)
		total, _ := cpu.done()
		waitProfiles()
		prev = el
		c := chunk{rate: float64(ok) / el.Seconds()}
		if ok > 0 {
			c.cpuPer = total / float64(ok)
		}
		out = append(out, c)
		rss := ""
		for i, p := range s.procs {
			if i > 0 {
				rss += "/"
			}
			rss += fmt.Sprint(rssMB(p.Process.Pid, "VmRSS:"))
		}
		report(fmt.Sprintf("%s growth chunk %d (%d → %d)", s.name, k+1, k*size, (k+1)*size),
			"%8.0f writes/s  server cpu %.0f µs/write  (%d ok of %d in %s)  RSS %s MB",
			c.rate, c.cpuPer*1e6, ok, size, el.Round(time.Millisecond), rss)
	}
	// What the RSS at the end is made of: the process's own memory (anon:
	// heap, stacks, runtime) and mapped files (file: the binary and the
	// bolt Raft log's pages).
	var parts []string
	for i, p := range s.procs {
		parts = append(parts, fmt.Sprintf("#%d anon %d, file %d", i+1,
			rssMB(p.Process.Pid, "RssAnon:"), rssMB(p.Process.Pid, "RssFile:")))
	}
	report(fmt.Sprintf("%s RSS at %d, MB", s.name, n*size), "%s", strings.Join(parts, ", "))
	if *growthReadDur > 0 {
		// Reads on the full catalog measure its steady state: first the
		// servers finish what the fill left them (followers applying the
		// tail, the snapshots the fill triggered), the same wait for every
		// system.
		waited, idle := waitIdle(s, 60*time.Second)
		report(s.name+" idle after the fill", "%s  (servers' CPU over the last second: %.0f %% of a core)", waited.Round(time.Second), idle*100)
		after := reads(fmt.Sprintf("%s %d in the catalog:", s.name, n*size))
		if before.local > 0 && before.consistent > 0 {
			report(s.name+" reads, full/empty catalog", "local %.2f  consistent %.2f", after.local/before.local, after.consistent/before.consistent)
		}
	}
	if len(out) > 1 && out[0].rate > 0 && out[0].cpuPer > 0 {
		l := out[len(out)-1]
		report(s.name+" growth last/first chunk", "rate %.2f  cpu per write %.2f  (%d clients, %d chunks of %d)",
			l.rate/out[0].rate, l.cpuPer/out[0].cpuPer, *growthClients, len(out), size)
	}
	return out
}

// growthRatio compares the two systems' last chunks and their curves.
func growthRatio(b, e []chunk) {
	if len(b) < 2 || len(e) < 2 || e[len(e)-1].rate <= 0 || e[0].rate <= 0 || b[0].rate <= 0 {
		return
	}
	bl, el := b[len(b)-1], e[len(e)-1]
	report("ratio: beacon/etcd growth, last chunk", "rate %.2f  cpu per write %.2f  (last/first: beacon %.2f, etcd %.2f)",
		bl.rate/el.rate, bl.cpuPer/el.cpuPer, bl.rate/b[0].rate, el.rate/e[0].rate)
}

// waitIdle waits, at most max, until the servers together use under a
// quarter of a core over a second (three idle agents with 100,000
// instances use about 0.15: heartbeats, gossip, the leader's periodic
// tasks); it returns how long it waited and the last second's use (in
// cores).
func waitIdle(s servers, max time.Duration) (time.Duration, float64) {
	t0 := time.Now()
	use := 0.0
	for time.Since(t0) < max {
		m := startCPU(s)
		time.Sleep(time.Second)
		use, _ = m.done()
		if use < 0.25 {
			break
		}
	}
	return time.Since(t0), use
}
