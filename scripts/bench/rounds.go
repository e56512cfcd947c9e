package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

var writeRounds = flag.Int("write-rounds", 3, "write-rounds phase: rounds of Beacon's and etcd's write loads, taking turns on fresh clusters")

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
	var ratios []float64
	for r := range *writeRounds {
		var b, e float64
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
		first, second := runBeacon, runEtcd
		if r%2 == 1 {
			first, second = runEtcd, runBeacon
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		if e > 0 {
			ratios = append(ratios, b/e)
		}
	}
	if len(ratios) > 0 {
		parts := make([]string, len(ratios))
		for i, x := range ratios {
			parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
		}
		report("ratio: beacon/etcd committed writes, rounds", "median %.2f  (each round: %s; to %s, %d clients, fresh clusters)",
			median(ratios), strings.Join(parts, ", "), *writeTo, *clients)
	}
	return nil
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
