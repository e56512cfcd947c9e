#!/usr/bin/env bash
# Shakes a running compose cluster (make up) for a bounded time while a
# writer registers instances through random agents, then heals everything
# and checks that no acknowledged write was lost.
#
# One fault at a time, each healed before the next (so a majority stays):
#   kill       docker kill an agent, then docker start it (it comes back
#              from its volume)
#   pause      docker pause an agent (a hung process), then unpause it
#   partition  docker network disconnect an agent, then reconnect it at the
#              same address
#   demo       docker kill a demo instance, then start it
# Only containers of our compose project are touched, and an exit for any
# reason (Ctrl-C included) heals them first.
#
#   scripts/chaos.sh [--duration SECONDS] [--seed N]     (default 60 s; at most 600)
source "$(dirname "$0")/lib.sh"
need_cli

duration=60 seed=$RANDOM
while (($#)); do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ $duration =~ ^[0-9]+$ ]] && ((duration > 0 && duration <= 600)) || die "--duration must be 1..600 seconds"
RANDOM=$seed

settled || die "the cluster is not up with a leader, 3 voters and every agent ready (make up)"
AGENT_SVCS=(n1 n2 n3)
DEMO_SVCS=(web1 web2 web3)
declare -A IP
for s in "${AGENT_SVCS[@]}" "${DEMO_SVCS[@]}"; do IP[$s]=$(ctr_ip "$s"); done
NET=$(network)

work=$(mktemp -d -t beacon-chaos.XXXXXX)
acked=$work/acked failed=$work/failed
: >"$acked"; : >"$failed"
writer_pid=""

# heal undoes every fault this script can inject, on our containers only.
heal() {
  local s id state
  for s in "${AGENT_SVCS[@]}" "${DEMO_SVCS[@]}"; do
    id=$("${COMPOSE[@]}" ps -q "$s" 2>/dev/null | head -1)
    [[ -n $id ]] || continue
    state=$(docker inspect -f '{{.State.Status}}' "$id")
    [[ $state == paused ]] && docker unpause "$id" >/dev/null
    [[ $state == exited || $state == created ]] && docker start "$id" >/dev/null
    if [[ -z $(docker inspect -f "{{with index .NetworkSettings.Networks \"$NET\"}}{{.IPAddress}}{{end}}" "$id") ]]; then
      docker network connect --ip "${IP[$s]}" --alias "$s" "$NET" "$id"
    fi
  done
}
cleanup() {
  local rc=$?
  [[ -n $writer_pid ]] && kill "$writer_pid" 2>/dev/null && wait "$writer_pid" 2>/dev/null
  heal
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# writer registers chaos-1, chaos-2, ... through random agents; an
# acknowledged write goes to $acked, a refused one to $failed.
writer() {
  local i=0 agents=("$N1" "$N2" "$N3")
  while :; do
    i=$((i + 1))
    local a=${agents[RANDOM % 3]}
    if "$BEACON" --addr "$a" register chaos "chaos-$i" --address 10.0.0.1 --port $((10000 + i)) >/dev/null 2>&1; then
      echo "chaos-$i" >>"$acked"
    else
      echo "chaos-$i" >>"$failed"
      # A restarted agent whose port variable is 0 got another host port.
      resolve_addrs; agents=("$N1" "$N2" "$N3")
    fi
    sleep 0.2
  done
}

log "chaos for ${duration}s (seed $seed), one fault at a time"
writer &
writer_pid=$!
end=$((SECONDS + duration))
faults=0
while ((SECONDS < end)); do
  kind=$(printf 'kill\npause\npartition\ndemo\n' | sed -n "$((RANDOM % 4 + 1))p")
  hold=$((3 + RANDOM % 6))
  if [[ $kind == demo ]]; then svc=${DEMO_SVCS[RANDOM % 3]}; else svc=${AGENT_SVCS[RANDOM % 3]}; fi
  id=$(ctr "$svc")
  printf '%s  %-9s %-4s for %ss\n' "$(date +%T)" "$kind" "$svc" "$hold"
  case $kind in
    kill|demo) docker kill "$id" >/dev/null; sleep "$hold"; docker start "$id" >/dev/null ;;
    pause) docker pause "$id" >/dev/null; sleep "$hold"; docker unpause "$id" >/dev/null ;;
    partition)
      docker network disconnect "$NET" "$id"; sleep "$hold"
      docker network connect --ip "${IP[$svc]}" --alias "$svc" "$NET" "$id" ;;
  esac
  faults=$((faults + 1))
  resolve_addrs # with a port variable of 0, a restarted agent has another host port
  wait_for 60 "every agent ready after healing $svc" settled || die "the cluster did not recover from $kind $svc"
done
kill "$writer_pid" 2>/dev/null; wait "$writer_pid" 2>/dev/null || true
writer_pid=""
heal
resolve_addrs

log "healed; waiting for the agents to converge"
wait_for 60 "every agent ready, 3 voters" settled || die "the cluster did not settle after healing"
n_acked=$(wc -l <"$acked") n_failed=$(wc -l <"$failed")
# A consistent read through each agent must hold every acknowledged write.
lost=0
for a in "$N1" "$N2" "$N3"; do
  have=$work/have
  wait_for 30 "agent $a to answer a consistent read" "$BEACON" --addr "$a" discover -q chaos --consistent ||
    die "agent $a does not answer"
  "$BEACON" --addr "$a" discover -q chaos --consistent -o json | grep -o '"id": "chaos-[0-9]*"' | cut -d'"' -f4 | sort >"$have"
  missing=$(sort "$acked" | comm -23 - "$have" | wc -l)
  ((missing == 0)) || { printf '%s  %d acknowledged writes missing on %s%s\n' "$RED" "$missing" "$a" "$OFF"; lost=1; }
done
log "$faults faults; $n_acked writes acknowledged, $n_failed refused during faults (refused writes may retry safely)"
for id in $(cat "$acked" "$failed"); do "$BEACON" --addr "$AGENTS" deregister chaos "$id" >/dev/null 2>&1 || true; done
((lost == 0)) || die "acknowledged writes were lost"
log "no acknowledged write was lost"
