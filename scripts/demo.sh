#!/usr/bin/env bash
# The newcomer's tour of Beacon in docker compose: start the cluster, register
# and discover through different nodes, route through the load balancers,
# then kill a demo instance and watch it disappear from discovery and from
# routing, and come back. Every wait is bounded; it takes 2-3 minutes.
#
#   scripts/demo.sh            run the tour (starts the cluster if needed)
#   scripts/demo.sh --pause    wait for Enter between steps
#   scripts/demo.sh --down     remove the cluster at the end (make down)
source "$(dirname "$0")/lib.sh"

pause=0 down=0
for a in "$@"; do
  case $a in
    --pause) pause=1 ;;
    --down) down=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown option $a" ;;
  esac
done
step() { if ((pause)); then read -r -p "(Enter for the next step) " _; fi; echo; log "$*"; }

# routed_by LB N: which instances answered N requests through LB.
routed_by() {
  local i
  for ((i = 0; i < $2; i++)); do
    lb_get "$1" /web/ 2>/dev/null | sed -n 's/^Hello from instance \([^ ]*\) .*/\1/p'
  done | sort | uniq -c | awk '{printf "%s x%s  ", $2, $1} END {print ""}'
}
not_routed() { ! routed_by "$LB1" 12 | grep -q "$1 "; }
not_healthy() { ! beacon discover -q web --healthy | awk 'NR > 1 {print $1}' | grep -qx "$1"; }
listed() { beacon discover -q web | awk 'NR > 1 {print $1}' | grep -qx "$1"; }
unlisted() { ! listed "$1"; }

step "1. Start the cluster: 3 agents, 2 load balancers, 3 demo instances"
if [[ -x $BEACON ]] && has_leader 3 2>/dev/null; then
  note "already running (make down removes it)"
else
  run make -C "$ROOT" up COMPOSE_PROJECT="$PROJECT" COMPOSE="$COMPOSE_CMD"
  resolve_addrs # with a port variable of 0, Docker picked the ports just now
fi
need_cli

step "2. The agents: gossip membership and the Raft peers"
run "$BEACON" --addr "$N1" members
run "$BEACON" --addr "$N1" operator raft list-peers

step "3. Register an instance through n1 ..."
run "$BEACON" --addr "$N1" register db db-1 --address 10.0.0.5 --port 5432 --tag primary --meta zone=a
step "   ... and discover it through n3 (any node answers; --consistent asks the leader first)"
wait_for 10 "db-1 on n3" sh -c "'$BEACON' --addr '$N3' discover -q db | grep -q db-1"
run "$BEACON" --addr "$N3" discover -q db
run "$BEACON" --addr "$N3" discover -q db --consistent -o json

step "4. The demo service registered itself, with an HTTP health check"
wait_for 45 "3 healthy web instances" healthy_is web 3 || note "not all healthy yet"
run "$BEACON" --addr "$N2" discover -q web

step "5. Route through the load balancers: LB1 by path, LB2 by Host header"
run curl -sS --max-time 3 "http://$LB1/web/" || note "LB1 does not answer (is 'beacon lb' in this build?)"
run curl -sS --max-time 3 -H "Host: web.$DOMAIN" "http://$LB2/" || note "LB2 does not answer"
note "12 requests through LB1: $(routed_by "$LB1" 12)"

step "5b. Ask DNS: every agent answers for the healthy instances (SRV carries weight and port)"
if command -v dig >/dev/null 2>&1; then
  run dig @127.0.0.1 -p "$N1_DNS" +short web.service.beacon SRV
  run dig @127.0.0.1 -p "$N2_DNS" +short canary.web.service.beacon A
else
  note "dig is not installed (Debian: apt-get install dnsutils); the command would be:"
  note "dig @127.0.0.1 -p $N1_DNS +short web.service.beacon SRV"
fi

step "6. Kill web-2 (docker kill: no chance to deregister) and watch it disappear"
start=$SECONDS
run docker kill "$(ctr web2)" >/dev/null
wait_for 60 "web-2 to leave the healthy set" not_healthy web-2 &&
  note "discovery: web-2 is no longer healthy after $((SECONDS - start))s (its check failed)"
run "$BEACON" --addr "$N1" discover -q web
wait_for 30 "LB1 to stop routing to web-2" not_routed web-2 &&
  note "routing: LB1 no longer sends requests to web-2 ($((SECONDS - start))s): $(routed_by "$LB1" 12)"

step "7. Start web-2 again: its check passes and it is back"
start=$SECONDS
run docker start "$(ctr web2)" >/dev/null
wait_for 60 "web-2 healthy again" healthy_is web 3 && note "web-2 is healthy again $((SECONDS - start))s after its start"
run "$BEACON" --addr "$N1" discover -q web

step "8. Stop web-3 gracefully (docker stop: SIGTERM): it deregisters itself"
run docker stop "$(ctr web3)" >/dev/null
wait_for 20 "web-3 deregistered" unlisted web-3 && note "web-3 is no longer registered at all"
run "$BEACON" --addr "$N1" discover -q web
run docker start "$(ctr web3)" >/dev/null
wait_for 30 "web-3 registered again" listed web-3 && note "started again, web-3 registered itself again"

step "9. Clean up"
run "$BEACON" --addr "$N2" deregister db db-1
if ((down)); then
  run make -C "$ROOT" down COMPOSE_PROJECT="$PROJECT" COMPOSE="$COMPOSE_CMD"
else
  note "the cluster is still running: scripts/smoke.sh checks it, scripts/chaos.sh shakes it, make down removes it"
fi
