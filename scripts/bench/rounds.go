package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

var (
	writeRounds = flag.Int("write-rounds", 3, "write-rounds phase: rounds of Beacon's and etcd's write loads, taking turns on fresh clusters")
	etcdGRPC    = flag.String("etcd-grpc", "", "the etcd gRPC load tool (scripts/build-etcd-grpc-load.sh): each write round then also puts to a fresh etcd through etcd's own Go client (one clientv3 client over the write targets), the read phase also reads through it, and Beacon's ratios against those are reported too")
)

// benchWriteRounds is the write-rounds phase: the write phase's load
// (-write-to, -clients, -duration) against Beacon and etcd taking turns,
// -write-rounds times, each run on a fresh cluster (so that no round starts
// with an earlier round's records, and etcd's slower growth favours neither
// system), the order alternating from round to round. It reports each
// round's ratio and their median, as the issue's yardstick does ("median
// of 3", the systems alternating in one run): one round's ratio moves by
// ±10 % on a 2-core machine shared with the load generator.
func benchWriteRounds(dir string) error {
	if *etcdBin == "" {
		fmt.Println("write-rounds: skipped (it compares with etcd: -etcd)")
		return nil
	}
	var ratios, grpcRatios []float64
	for r := range *writeRounds {
		var b, e, g float64
		runBeacon := func() error {
			c := &cluster{dir: filepath.Join(dir, fmt.Sprintf("rounds-beacon-%d", r)), bin: *beaconBin}
			defer c.stopAll()
			if err := c.start(3); err != nil {
				return err
			}
			b = benchLoad(c.servers(), fmt.Sprintf("round %d: beacon registrations, to %s", r+1, *writeTo), c.writeTargets(), registerReq, true)
			return nil
		}
		runEtcd := func() error {
			ec := &etcdCluster{dir: filepath.Join(dir, fmt.Sprintf("rounds-etcd-%d", r)), bin: *etcdBin}
			defer ec.stop()
			if err := ec.start(); err != nil {
				return fmt.Errorf("etcd: %w", err)
			}
			e = benchLoad(ec.servers(), fmt.Sprintf("round %d: etcd puts, to %s", r+1, *writeTo), ec.writeTargets(), etcdPutReq, true)
			return nil
		}
		runEtcdGRPC := func() error {
			if *etcdGRPC == "" {
				return nil
			}
			ec := &etcdCluster{dir: filepath.Join(dir, fmt.Sprintf("rounds-etcd-grpc-%d", r)), bin: *etcdBin}
			defer ec.stop()
			if err := ec.start(); err != nil {
				return fmt.Errorf("etcd: %w", err)
			}
			g = grpcLoad(ec.servers(), fmt.Sprintf("round %d: etcd puts over gRPC (clientv3), to %s", r+1, *writeTo), ec.writeTargets(), true)
			return nil
		}
		order := []func() error{runBeacon, runEtcd, runEtcdGRPC}
		if r%2 == 1 {
			order = []func() error{runEtcdGRPC, runEtcd, runBeacon}
		}
		for _, run := range order {
			if err := run(); err != nil {
				return err
			}
		}
		if e > 0 {
			ratios = append(ratios, b/e)
		}
		if g > 0 {
			grpcRatios = append(grpcRatios, b/g)
		}
	}
	reportRounds("ratio: beacon/etcd committed writes, rounds", ratios)
	reportRounds("ratio: beacon/etcd over gRPC, rounds", grpcRatios)
	return nil
}

// reportRounds reports the rounds' ratios and their median (nothing for none).
func reportRounds(name string, ratios []float64) {
	if len(ratios) == 0 {
		return
	}
	parts := make([]string, len(ratios))
	for i, x := range ratios {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	report(name, "median %.2f  (each round: %s; to %s, %d clients, fresh clusters)",
		median(ratios), strings.Join(parts, ", "), *writeTo, *clients)
}

// grpcLoad runs the -etcd-grpc tool against targets with the load's
// clients and duration (args: its -op and -serializable), reports its rate,
// latency and the servers' and the tool's CPU per request, and returns the
// rate (0 if it failed).
func grpcLoad(s servers, name string, targets []string, writes bool, args ...string) float64 {
	cpu := startCPU(s)
	// The tool stops itself after -duration (and each request after 10 s);
	// this bounds it should it not.
	ctx, cancel := context.WithTimeout(context.Background(), *duration+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, *etcdGRPC, append([]string{"-endpoints", strings.Join(targets, ","),
		"-clients", strconv.Itoa(*clients), "-duration", duration.String(), "-services", strconv.Itoa(max(*services, 1))}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		fmt.Printf("%s: %v\n", name, err)
		return 0
	}
	var ok, failed int64
	var secs float64
	var p50, p99 string
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "ok %d failed %d seconds %f p50 %s p99 %s", &ok, &failed, &secs, &p50, &p99); err != nil || secs <= 0 {
		fmt.Printf("%s: cannot read %q: %v\n", name, out, err)
		return 0
	}
	cpu.self = -1 // this process idled: the tool's CPU is reported below
	cpuLine := cpu.perRequest(ok)
	client := ""
	if st := cmd.ProcessState; st != nil && ok > 0 {
		client = fmt.Sprintf(", load tool cpu %.0f µs/req", (st.UserTime()+st.SystemTime()).Seconds()*1e6/float64(ok))
	}
	rate := float64(ok) / secs
	kind := "req/s"
	if writes {
		kind = "committed writes/s"
	}
	report(name, "%8.0f %s  p50 %s  p99 %s  (%d ok, %d failed)  %s%s", rate, kind, p50, p99, ok, failed, cpuLine, client)
	return rate
}

// writeTargets are the nodes the write loads go to (-write-to).
func (c *cluster) writeTargets() []string {
	switch *writeTo {
	case "leader":
		return []string{c.api(c.leader())}
	case "follower":
		return []string{c.api((c.leader() + 1) % len(c.procs))}
	}
	return c.apis()
}

// writeTargets are the members the write loads go to (-write-to).
func (e *etcdCluster) writeTargets() []string {
	targets := e.clientURLs()
	switch *writeTo {
	case "leader":
		l := -1
		for deadline := time.Now().Add(30 * time.Second); l < 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			l = e.leader()
		}
		if l >= 0 {
			return []string{targets[l]}
		}
	case "follower":
		return []string{targets[e.follower()]}
	}
	return targets
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
