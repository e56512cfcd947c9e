#!/usr/bin/env bash
# dns-smoke.sh — checks Beacon's DNS interface with dig against a dev agent.
#
# Builds bin/beacon, starts `beacon agent --dev --dns-addr 127.0.0.1:0` on
# loopback (free ports, read back from its log), registers a few instances
# with the CLI and asks dig for A, AAAA, SRV, tag-filtered, unknown and
# truncated answers. Skips (exit 0) when dig is not installed (Debian:
# apt-get install -y dnsutils).
#
#   scripts/dns-smoke.sh
#   BEACON_BIN=/path/to/beacon scripts/dns-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dig >/dev/null 2>&1; then
  echo "dns-smoke: dig not found (apt-get install -y dnsutils); skipping"
  exit 0
fi

BIN=${BEACON_BIN:-bin/beacon}
[[ -n ${BEACON_BIN:-} ]] || make -s build >/dev/null
tmp=$(mktemp -d)
agent=""
trap '[[ -n $agent ]] && { kill $agent 2>/dev/null; wait $agent 2>/dev/null; }; rm -rf "$tmp"' EXIT

"$BIN" agent --dev --node dns-smoke --http-addr 127.0.0.1:0 --raft-addr 127.0.0.1:0 \
  --gossip-addr 127.0.0.1:0 --dns-addr 127.0.0.1:0 --dns-ttl 7s >"$tmp/agent.log" 2>&1 &
agent=$!
for _ in $(seq 100); do grep -q "agent started" "$tmp/agent.log" && break; sleep 0.1; done
HTTP=$(sed -n 's/.*agent started:.* http=\([^ ]*\).*/\1/p' "$tmp/agent.log")
DNS_PORT=$(sed -n 's/.*agent started:.* dns=[^ ]*:\([0-9]*\).*/\1/p' "$tmp/agent.log")
if [[ -z $HTTP || -z $DNS_PORT ]]; then
  echo "dns-smoke: the agent did not start"; cat "$tmp/agent.log"; exit 1
fi

beacon() { "$BIN" --addr "$HTTP" "$@"; }
for _ in $(seq 100); do beacon status >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 100); do beacon register probe probe-1 --address 10.9.9.9 --port 1 >/dev/null 2>&1 && break; sleep 0.1; done

beacon register web web-1 --address 10.0.0.1 --port 8080 --tag v1 --weight 3 >/dev/null
beacon register web web-2 --address 10.0.0.2 --port 8081 --tag v2 >/dev/null
beacon register web web-3 --address fd00::3 --port 8082 --tag v2 >/dev/null
beacon register web web-4 --address web4.example.com --port 8083 >/dev/null
for i in $(seq 1 60); do beacon register big "big-$i" --address "10.1.0.$i" --port 80 >/dev/null; done

fail=0
q() { dig @127.0.0.1 -p "$DNS_PORT" +time=2 +tries=1 "$@"; }
check() { # name, expected, actual
  if [[ "$2" == "$3" ]]; then echo "ok   $1"; else echo "FAIL $1: want [$2] got [$3]"; fail=1; fi
}

check "A web.service.beacon lists the IPv4 instances" "10.0.0.1 10.0.0.2" \
  "$(q +short web.service.beacon A | sort | xargs)"
check "AAAA web.service.beacon lists the IPv6 instance" "fd00::3" \
  "$(q +short web.service.beacon AAAA | xargs)"
check "SRV web.service.beacon has ports and weights (host names as targets)" \
  "1 3 8080 0a000001.addr.beacon. 1 1 8081 0a000002.addr.beacon. 1 1 8082 fd000000000000000000000000000003.addr.beacon. 1 1 8083 web4.example.com." \
  "$(q +short web.service.beacon SRV | sort -k3 | xargs)"
check "A v2.web.service.beacon filters by tag" "10.0.0.2" \
  "$(q +short v2.web.service.beacon A | xargs)"
check "the TTL is the configured 7s" "7" \
  "$(q +noall +answer web.service.beacon A | awk '{print $2}' | sort -u | xargs)"
check "an unknown service is NXDOMAIN" "NXDOMAIN" \
  "$(q nothing.service.beacon A | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')"
check "a big answer over UDP without EDNS0 sets TC" "tc" \
  "$(q +noedns +ignore big.service.beacon A | grep -o 'flags: [a-z ]*' | grep -wo tc || true)"
check "the same question over TCP gets all 60 records" "60" \
  "$(q +tcp +short big.service.beacon A | wc -l | xargs)"
check "EDNS0 with a 4096-byte buffer fits all 60 over UDP" "60" \
  "$(q +bufsize=4096 +ignore +short big.service.beacon A | wc -l | xargs)"

if [[ $fail != 0 ]]; then
  echo "dns-smoke: FAILED (agent log: $tmp/agent.log)"; cat "$tmp/agent.log" | tail -20
  exit 1
fi
echo "dns-smoke: all checks passed"
