#!/usr/bin/env bash
# Builds etcd from the Go module proxy into .cache/bin/etcd, as the
# side-by-side baseline of `make bench`. Nothing of etcd is committed: the
# source comes from the module proxy at build time. Prints the binary's path,
# or nothing if it cannot be built (the benchmark then runs without baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${ETCD_VERSION:-v3.6.16}
out=$PWD/.cache/bin/etcd-$version
if [[ ! -x $out ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cat >"$tmp/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$tmp"
    go mod init etcd-baseline >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$version" >/dev/null 2>&1
    go mod tidy >/dev/null 2>&1
    mkdir -p "$(dirname "$out")"
    CGO_ENABLED=0 go build -o "$out" .
  ) >&2 || { echo "build-etcd: could not build etcd $version; benchmarking without a baseline" >&2; exit 0; }
fi
echo "$out"
