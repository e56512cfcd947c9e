#!/usr/bin/env bash
# Quick checks against a running compose cluster (make up): every agent is
# ready and agrees on the leader, writes through one node are read through
# the others, the demo instances are healthy, both load balancers route to
# them, DNS answers (when dig is installed), and a snapshot can be saved.
# Prints PASS or FAIL per check and exits non-zero if any failed. On a stopped
# cluster it says so at once. Bounded: about 2 minutes at most.
source "$(dirname "$0")/lib.sh"
need_cli

failed=0
pass() { printf '%sPASS%s %s\n' "$GREEN" "$OFF" "$*"; }
fail() { printf '%sFAIL%s %s\n' "$RED" "$OFF" "$*"; failed=1; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi; }

same_leader() {
  local l1 l2 l3
  l1=$(leader_of "$N1"); l2=$(leader_of "$N2"); l3=$(leader_of "$N3")
  [[ -n $l1 && $l1 == "$l2" && $l2 == "$l3" ]]
}
alive_members() { [[ $("$BEACON" --addr "$N1" members | awk 'NR > 1 && $2 == "alive" && $3 == "server"' | wc -l) -ge 3 ]]; }
# sees ADDR SERVICE ID [discover flags...]
sees() { "$BEACON" --addr "$1" discover -q "$2" "${@:4}" | awk 'NR > 1 {print $1}' | grep -qx "$3"; }
gone() { ! sees "$@"; }
routes_host() { lb_get "$1" / "web.$DOMAIN" | grep -q 'instance web-'; }
lb_status() { curl -fsS --max-time 3 "http://$1/lb/status" >/dev/null; }

# A stopped cluster: say so at once instead of a column of FAILs.
answers() { curl -fsS --max-time 2 "http://$1/healthz" >/dev/null 2>&1; }
if ! answers "$N1" && ! answers "$N2" && ! answers "$N3"; then
  die "the cluster is not running: no agent answers at $AGENTS ($("${COMPOSE[@]}" ps -q 2>/dev/null | wc -l) containers in compose project $PROJECT). Start it with 'make up'."
fi

id=smoke-$$
log "cluster"
check "all three agents are ready (/readyz)" wait_for 30 "agents ready" all_ready
check "n1, n2 and n3 agree on the leader" wait_for 30 "one leader" same_leader
check "three voters in the Raft configuration" has_leader 3
check "gossip sees three alive servers" alive_members

log "write on one node, read on the others"
check "register $id through n1" "$BEACON" --addr "$N1" register smoke "$id" --address 10.0.0.1 --port 9
check "n2 sees it" wait_for 10 "$id on n2" sees "$N2" smoke "$id"
check "n3 sees it" wait_for 10 "$id on n3" sees "$N3" smoke "$id"
check "a consistent read through n3 sees it" sees "$N3" smoke "$id" --consistent
check "deregister it through n2" "$BEACON" --addr "$N2" deregister smoke "$id"
check "n1 no longer sees it" wait_for 10 "$id gone from n1" gone "$N1" smoke "$id"

log "demo service and load balancers"
check "three healthy web instances" wait_for 30 "3 healthy web" healthy_is web 3
check "LB1 routes /web/ to a demo instance" wait_for 15 "LB1 path routing" lb_routes "$LB1"
check "LB2 routes /web/ to a demo instance" wait_for 15 "LB2 path routing" lb_routes "$LB2"
check "LB1 routes Host web.$DOMAIN" wait_for 15 "LB1 host routing" routes_host "$LB1"
check "LB2 routes Host web.$DOMAIN" wait_for 15 "LB2 host routing" routes_host "$LB2"
check "LB1 answers /lb/status" lb_status "$LB1_ADMIN"
check "LB2 answers /lb/status" lb_status "$LB2_ADMIN"

if command -v dig >/dev/null 2>&1; then
  log "DNS"
  dns_srv() { [[ $(dig @127.0.0.1 -p "$1" +short +time=2 +tries=1 web.service.beacon SRV | wc -l) -eq 3 ]]; }
  check "n1's DNS answers web.service.beacon SRV with 3 instances" wait_for 10 "DNS on n1" dns_srv "$N1_DNS"
  check "n3's DNS answers too" dns_srv "$N3_DNS"
else
  log "DNS"
  echo "SKIP DNS checks: dig is not installed (apt-get install dnsutils, or bind-utils)"
fi

log "operations"
snap=$(mktemp -t beacon-smoke.XXXXXX)
trap 'rm -f "$snap"' EXIT
check "snapshot save" beacon snapshot save "$snap"
check "snapshot inspect" "$BEACON" snapshot inspect "$snap"
check "operator raft list-peers" beacon operator raft list-peers

if ((failed)); then die "some checks failed"; fi
log "all checks passed"
