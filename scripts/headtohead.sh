#!/usr/bin/env bash
# headtohead.sh compares two beacon builds under the same load at the same
# time, so that a noisy machine hits both alike: two `beacon lb` in front of
# one backend (lb), or two single-node agents answering a 10-instance
# discovery read (api), each loaded by its own wrk (1 thread, 32
# connections, 10 s a round). It prints each round's requests and CPU per
# request (user + system, from /proc) of both builds.
#
#   scripts/headtohead.sh lb|api BIN_A BIN_B [ROUNDS]
#
# Needs wrk and curl; the lb mode builds scripts/benchlb for its backend.
# Ports 29200-29520 on 127.0.0.1. Ends only the processes it started.
set -euo pipefail
mode=${1:?lb or api}; A=${2:?build A}; B=${3:?build B}; R=${4:-3}
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
start() { "$@" >"$dir/$(basename "$1").$RANDOM.log" 2>&1 & pids+=($!); }
register() { # api-addr id port
	for _ in $(seq 150); do
		curl -sf --max-time 5 -X PUT -H 'Content-Type: application/json' -d "{\"address\":\"127.0.0.1\",\"port\":$3}" \
			"http://$1/v1/services/$4/instances/$2" >/dev/null && return 0
		sleep 0.2
	done
	echo "headtohead: cannot register on $1" >&2; exit 1
}
agent() { # bin base-port -> pid in last
	start "$1" agent --dev --node "n$2" --http-addr "127.0.0.1:$2" --raft-addr "127.0.0.1:$(($2+1))" \
		--gossip-addr "127.0.0.1:$(($2+2))" --log-level warn --data-dir "$dir/n$2"
}
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
waitup() { for _ in $(seq 150); do curl -sf --max-time 5 "$1" >/dev/null && return 0; sleep 0.2; done; echo "headtohead: $1 not up" >&2; exit 1; }

case $mode in
lb)
	go build -o "$dir/benchlb" ./scripts/benchlb
	start "$dir/benchlb" -backend 127.0.0.1:29210 -body 256
	agent "$A" 29200
	register 127.0.0.1:29200 b1 29210 bench
	start "$A" lb --registry 127.0.0.1:29200 --listen 127.0.0.1:29220 --admin-addr 127.0.0.1:29221 --log-level warn --lb-allow-loopback
	pa=${pids[-1]}
	start "$B" lb --registry 127.0.0.1:29200 --listen 127.0.0.1:29230 --admin-addr 127.0.0.1:29231 --log-level warn --lb-allow-loopback
	pb=${pids[-1]}
	ua=http://127.0.0.1:29220/bench/; ub=http://127.0.0.1:29230/bench/
	;;
api)
	agent "$A" 29400; pa=${pids[-1]}
	agent "$B" 29500; pb=${pids[-1]}
	for k in $(seq 10); do
		register 127.0.0.1:29400 "w$k" $((29600 + k)) web
		register 127.0.0.1:29500 "w$k" $((29600 + k)) web
	done
	ua=http://127.0.0.1:29400/v1/services/web/instances; ub=http://127.0.0.1:29500/v1/services/web/instances
	;;
*) echo "headtohead: mode lb or api" >&2; exit 2 ;;
esac
waitup "$ua"; waitup "$ub"
for r in $(seq "$R"); do
	ca=$(cpu "$pa"); cb=$(cpu "$pb")
	wrk -t1 -c32 -d10s "$ua" >"$dir/wa" 2>&1 & wa=$!
	wrk -t1 -c32 -d10s "$ub" >"$dir/wb" 2>&1 & wb=$!
	wait $wa $wb
	na=$(awk '/requests in/{print $1}' "$dir/wa"); nb=$(awk '/requests in/{print $1}' "$dir/wb")
	awk -v r="$r" -v na="$na" -v nb="$nb" -v ca="$ca" -v ca1="$(cpu "$pa")" -v cb="$cb" -v cb1="$(cpu "$pb")" 'BEGIN {
		printf "round %d: A %d requests, %.1f us CPU each | B %d requests, %.1f us CPU each | A/B requests %.3f\n",
			r, na, (ca1-ca)*10000/na, nb, (cb1-cb)*10000/nb, na/nb }'
done
