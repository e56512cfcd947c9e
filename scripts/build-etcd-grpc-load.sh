#!/usr/bin/env bash
# Builds a small load tool that writes to (or reads from) etcd through its
# own Go client (go.etcd.io/etcd/client/v3, gRPC) into
# .cache/bin/etcd-grpc-load-VERSION: `make bench`'s write-rounds and read
# phases run it (-etcd-grpc) beside the loads through etcd's HTTP gateway, so
# that the ratios against etcd's native client are measured in the same run. Like build-etcd.sh, nothing of
# etcd is committed and go.mod gains nothing: the client comes from the
# module proxy into a temporary module. Prints the binary's path, or nothing
# if it cannot be built.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${ETCD_VERSION:-v3.6.16}
# The name carries this script's hash: a changed tool is built again.
out=$PWD/.cache/bin/etcd-grpc-load-$version-$(sha256sum "$0" | cut -c1-8)
if [[ ! -x $out ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cat >"$tmp/main.go" <<'GO'
// etcd-grpc-load puts keys (-op put) or reads the range /read/ to /read0
// (-op range, linearizable unless -serializable) through clientv3 from
// -clients goroutines for -duration and prints one line:
// "ok N failed N seconds S p50 D p99 D". The keys, values and range are
// those of Beacon's bench (etcdPutReq, etcdRangeReq).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated client URLs")
	clients := flag.Int("clients", 64, "concurrent writers")
	conns := flag.Int("conns", 1, "clientv3 clients the writers share; each balances over every endpoint (1: the usual one client per program)")
	dur := flag.Duration("duration", 10*time.Second, "length of the load")
	services := flag.Int("services", 100, "keys spread over this many service prefixes")
	op := flag.String("op", "put", "put, or range (the keys /read/ to /read0)")
	serializable := flag.Bool("serializable", false, "range: a serializable read (the member's own state) instead of a linearizable one")
	flag.Parse()
	if *op != "put" && *op != "range" {
		fmt.Fprintln(os.Stderr, "etcd-grpc-load: -op must be put or range")
		os.Exit(2)
	}
	var rangeOpts []clientv3.OpOption
	rangeOpts = append(rangeOpts, clientv3.WithRange("/read0"))
	if *serializable {
		rangeOpts = append(rangeOpts, clientv3.WithSerializable())
	}
	eps := strings.Split(*endpoints, ",")
	var cs []*clientv3.Client
	for range max(*conns, 1) {
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcd-grpc-load:", err)
			os.Exit(1)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	var seq, failed atomic.Int64
	lat := make([][]time.Duration, *clients)
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cs[w%len(cs)]
			for i := 0; i < 10_000_000 && ctx.Err() == nil; i++ {
				n := seq.Add(1)
				t0 := time.Now()
				pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				if *op == "range" {
					_, err = c.Get(pctx, "/read/", rangeOpts...)
				} else {
					key := fmt.Sprintf("/services/bench-%d/i-%d", n%int64(max(*services, 1)), n)
					val := fmt.Sprintf(`{"address":"10.%d.%d.%d","port":%d,"tags":["bench","v1"],"meta":{"zone":"z%d"},"version":"1.0.%d"}`,
						(n>>16)&255, (n>>8)&255, n&255, 1024+n%60000, n%3, n%10)
					_, err = c.Put(pctx, key, val)
				}
				pcancel()
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
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
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p int) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)*p/100, len(all)-1)].Round(10 * time.Microsecond)
	}
	fmt.Printf("ok %d failed %d seconds %.3f p50 %s p99 %s\n", len(all), failed.Load(), el.Seconds(), pct(50), pct(99))
}
GO
  (
    cd "$tmp"
    go mod init etcd-grpc-load >/dev/null 2>&1
    go get "go.etcd.io/etcd/client/v3@$version" >/dev/null 2>&1
    go mod tidy >/dev/null 2>&1
    mkdir -p "$(dirname "$out")"
    CGO_ENABLED=0 go build -o "$out" .
  ) >&2 || { echo "build-etcd-grpc-load: could not build the etcd gRPC load tool $version; benchmarking without it" >&2; exit 0; }
fi
echo "$out"
