#!/usr/bin/env bash
# health-demo.sh: a 3-node Beacon cluster on loopback with real services behind
# HTTP, TCP and TTL checks. It kills a service, a follower node and the leader,
# and prints, for every node, how long healthy=true discovery kept returning
# the affected instance. It also shows that a TTL instance that keeps
# reporting survives the leader's death.
#
#   scripts/health-demo.sh            # needs go, curl and python3
#
# Ports 21750-23752 and 24001-24002 on 127.0.0.1 must be free.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/beacon ./cmd/beacon
B=$PWD/bin/beacon
dir=$(mktemp -d)
declare -A agent svc
hb_pids=()

cleanup() {
  for p in "${hb_pids[@]}" "${svc[@]}" "${agent[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

api() { echo "127.0.0.1:2${1}750"; }
now_ms() { date +%s%3N; }

for i in 1 2 3; do
  "$B" agent --node "n$i" --data-dir "$dir/n$i" --http-addr "$(api $i)" \
    --raft-addr "127.0.0.1:2${i}751" --gossip-addr "127.0.0.1:2${i}752" \
    --bootstrap-expect 3 --join 127.0.0.1:21752 --cluster-secret demo-cluster-secret-0123456789abcdef \
    --log-level warn >"$dir/n$i.log" 2>&1 &
  agent[$i]=$!
done

leader() { curl -sf "http://$(api "$1")/v1/cluster/status" | sed -n 's/.*"leader":"\([^"]*\)".*/\1/p'; }
echo "waiting for a leader..."
for _ in $(seq 300); do
  l=$(leader 1 || true)
  [[ -n "$l" && "$(leader 2 || true)" == "$l" && "$(leader 3 || true)" == "$l" ]] && break
  sleep 0.1
done
echo "leader: $l"

# Real services: two HTTP servers (one probed over HTTP, one over TCP).
python3 -m http.server 24001 --bind 127.0.0.1 >/dev/null 2>&1 & svc[web]=$!
python3 -m http.server 24002 --bind 127.0.0.1 >/dev/null 2>&1 & svc[db]=$!
sleep 0.5

reg() { # reg SERVICE ID JSON (retried on 503 during elections)
  for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/json' "http://$(api 1)/v1/services/$1/instances/$2" -d "$3")
    [[ $code == 200 ]] && return 0
    sleep 0.2
  done
  echo "register $1/$2 failed ($code)" >&2; exit 1
}
reg web web-1 '{"address":"127.0.0.1","port":24001,"checks":[{"http":"http://127.0.0.1:24001/","interval":"1s"}]}'
reg db db-1 '{"address":"127.0.0.1","port":24002,"checks":[{"tcp":"127.0.0.1:24002","interval":"1s"}]}'
reg jobs job-1 '{"address":"127.0.0.1","port":1,"checks":[{"name":"hb","ttl":"3s","initial_status":"passing"}]}'
reg jobs job-2 '{"address":"127.0.0.1","port":2,"checks":[{"name":"hb","ttl":"3s","initial_status":"passing"}]}'
for i in 1 2 3; do
  reg pinned "on-n$i" "{\"address\":\"127.0.0.1\",\"port\":100$i,\"node\":\"n$i\"}"
done

heartbeat() { # heartbeat CHECK: report pass every second through any live node
  while true; do
    for i in 1 2 3; do
      curl -sf -m 5 -X PUT -H 'Content-Type: application/json' "http://$(api $i)/v1/checks/$1/pass" -d '{"output":"ok","metrics":{"load":0.4}}' >/dev/null && break
    done
    sleep 1
  done
}
heartbeat jobs:job-1:hb & hb_pids+=($!); hb1=$!
heartbeat jobs:job-2:hb & hb_pids+=($!)

healthy_on() { curl -sf -m 2 "http://$(api "$1")/v1/services/$2/instances?healthy=true" | grep -c "\"id\":\"$3\"" || true; }
wait_healthy() { # wait_healthy SERVICE ID
  for _ in $(seq 300); do
    ok=1
    for i in "${live[@]}"; do [[ $(healthy_on "$i" "$1" "$2") == 1 ]] || ok=0; done
    [[ $ok == 1 ]] && return 0
    sleep 0.1
  done
  echo "$1/$2 not healthy everywhere" >&2; exit 1
}
measure() { # measure SERVICE ID START_MS LABEL: per node, ms until healthy=true drops ID
  local out="" ps=()
  for i in "${live[@]}"; do
    (
      while [[ $(healthy_on "$i" "$1" "$2") != 0 ]]; do sleep 0.01; done
      echo "n$i:$(( $(now_ms) - $3 ))ms"
    ) >"$dir/m$i" &
    ps+=($!)
  done
  wait "${ps[@]}"
  for i in "${live[@]}"; do out+="$(cat "$dir/m$i") "; done
  printf '%-52s %s\n' "$4" "$out"
}

live=(1 2 3)
for s in "web web-1" "db db-1" "jobs job-1" "jobs job-2" "pinned on-n1" "pinned on-n2" "pinned on-n3"; do wait_healthy $s; done
echo "all instances healthy on every node"
echo
echo "time until healthy=true stops returning the instance, per node:"

t=$(now_ms); kill "${svc[web]}"; wait "${svc[web]}" 2>/dev/null || true
measure web web-1 "$t" "HTTP service killed (interval 1s):"
t=$(now_ms); kill "${svc[db]}"; wait "${svc[db]}" 2>/dev/null || true
measure db db-1 "$t" "TCP service killed (interval 1s):"
t=$(now_ms); kill "$hb1"
measure jobs job-1 "$t" "TTL service stopped reporting (ttl 3s):"

lnum=$(leader 1 | tr -dc 0-9)
f=1; [[ $f == "$lnum" ]] && f=2
t=$(now_ms); kill -9 "${agent[$f]}"; wait "${agent[$f]}" 2>/dev/null || true
live=(); for i in 1 2 3; do [[ $i != "$f" ]] && live+=("$i"); done
measure pinned "on-n$f" "$t" "follower n$f killed (instance with node=n$f):"

# Bring the follower back before killing the leader, so a quorum survives.
"$B" agent --node "n$f" --data-dir "$dir/n$f" --http-addr "$(api $f)" \
  --raft-addr "127.0.0.1:2${f}751" --gossip-addr "127.0.0.1:2${f}752" \
  --join 127.0.0.1:21752 --join 127.0.0.1:22752 --join 127.0.0.1:23752 --cluster-secret demo-cluster-secret-0123456789abcdef \
  --log-level warn >>"$dir/n$f.log" 2>&1 &
agent[$f]=$!
live=(1 2 3)
wait_healthy pinned "on-n$f"
echo "n$f is back; on-n$f recovered on every node"

lnum=$(leader "$f" | tr -dc 0-9)
t=$(now_ms); kill -9 "${agent[$lnum]}"; wait "${agent[$lnum]}" 2>/dev/null || true
live=(); for i in 1 2 3; do [[ $i != "$lnum" ]] && live+=("$i"); done
measure pinned "on-n$lnum" "$t" "leader n$lnum killed (instance with node=n$lnum):"

# job-2 kept reporting through the failover: it must still be passing after
# more than its TTL plus the new leader's grace (10s).
sleep 14
for i in "${live[@]}"; do
  if [[ $(healthy_on "$i" jobs job-2) != 1 ]]; then echo "FAIL: job-2 not healthy on n$i after the leader's death" >&2; exit 1; fi
done
echo "job-2 (TTL 3s, reporting every 1s) stayed healthy through the leader's death on every node"
