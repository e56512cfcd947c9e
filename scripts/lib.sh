# Shared by the compose scripts (up.sh, demo.sh, smoke.sh, chaos.sh): source
# it, do not run it. Everything here touches only the containers of our own
# compose project ($BEACON_PROJECT, default "beacon").
#
# Settings (environment; the defaults match docker-compose.yml):
#   BEACON_PROJECT        compose project name            (beacon)
#   COMPOSE               compose command   (docker compose if installed, else docker-compose)
#   BEACON_BIN            the beacon CLI on this host      (bin/beacon)
#   BEACON_N1_PORT..N4    agents' API ports on 127.0.0.1   (18750 28750 38750 48750)
#   BEACON_LB1_PORT, BEACON_LB2_PORT              LB ports (18080 28080)
#   BEACON_LB1_ADMIN_PORT, BEACON_LB2_ADMIN_PORT  LB admin (18081 28081)
#   BEACON_N1_DNS_PORT..N4  agents' DNS ports (UDP+TCP)    (18753 28753 38753 48753)
# A port variable of 0 lets Docker pick a free port; the scripts then ask
# Docker which one it published (resolve_addrs below), as `$COMPOSE -p
# PROJECT port n1 8750` would.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT=${BEACON_PROJECT:-beacon}
if [[ -z ${COMPOSE:-} ]]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
COMPOSE_CMD=$COMPOSE # as the user would type it, for messages
read -r -a COMPOSE <<<"$COMPOSE"
COMPOSE+=(-p "$PROJECT" -f "$ROOT/docker-compose.yml")
BEACON=${BEACON_BIN:-$ROOT/bin/beacon}

# The label value compose gives our containers: the project name lowercased,
# without the characters compose drops (docker-compose 1.x and v2 alike).
PROJECT_LABEL=$(printf '%s' "${PROJECT,,}" | tr -cd 'a-z0-9_-')

# containers prints "SERVICE ID STATUS EXITCODE" for each container of our
# project, running or not (two docker calls; compose itself takes a second
# per call). Compose v1 and v2 label their containers the same way.
containers() {
  local ids
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT_LABEL" 2>/dev/null) || return 0
  [[ -n $ids ]] || return 0
  # shellcheck disable=SC2086 # one argument per ID
  docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} {{.State.Status}} {{.State.ExitCode}}' $ids 2>/dev/null || true
}

# port_map prints "SERVICE PORT/PROTO HOSTPORT" for every port Docker
# published for our project's running containers: what
# `$COMPOSE -p PROJECT port SERVICE PORT` says, for all of them at once.
port_map() {
  local ids
  ids=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT_LABEL" 2>/dev/null) || return 0
  [[ -n $ids ]] || return 0
  # shellcheck disable=SC2086 # one argument per ID
  docker inspect -f '{{$s := index .Config.Labels "com.docker.compose.service"}}{{range $p, $b := .NetworkSettings.Ports}}{{range $b}}{{$s}} {{$p}} {{.HostPort}}{{println}}{{end}}{{end}}' $ids 2>/dev/null || true
}

# resolve_addrs sets the host addresses below (N1, LB1, N1_DNS, ...) from the
# ports Docker actually published, so that a port variable of 0 (Docker picks
# a free port) works. A service with no running container keeps the
# configured port. Call it again after starting or restarting containers: with
# 0, Docker picks another port at each start.
resolve_addrs() {
  local map
  map=$(port_map)
  _pub() {
    local p
    p=$(awk -v s="$1" -v c="$2" '$1 == s && $2 == c && $3 != "" {print $3; exit}' <<<"$map")
    printf '%s' "${p:-$3}"
  }
  N1=127.0.0.1:$(_pub n1 8750/tcp "${BEACON_N1_PORT:-18750}")
  N2=127.0.0.1:$(_pub n2 8750/tcp "${BEACON_N2_PORT:-28750}")
  N3=127.0.0.1:$(_pub n3 8750/tcp "${BEACON_N3_PORT:-38750}")
  N4=127.0.0.1:$(_pub n4 8750/tcp "${BEACON_N4_PORT:-48750}")
  LB1=127.0.0.1:$(_pub lb1 8080/tcp "${BEACON_LB1_PORT:-18080}")
  LB2=127.0.0.1:$(_pub lb2 8080/tcp "${BEACON_LB2_PORT:-28080}")
  LB1_ADMIN=127.0.0.1:$(_pub lb1 8081/tcp "${BEACON_LB1_ADMIN_PORT:-18081}")
  LB2_ADMIN=127.0.0.1:$(_pub lb2 8081/tcp "${BEACON_LB2_ADMIN_PORT:-28081}")
  AGENTS="$N1,$N2,$N3"
  # DNS ports: UDP (what dig asks first) and TCP; with 0 they differ.
  N1_DNS=$(_pub n1 8753/udp "${BEACON_N1_DNS_PORT:-18753}") N1_DNS_TCP=$(_pub n1 8753/tcp "${BEACON_N1_DNS_PORT:-18753}")
  N2_DNS=$(_pub n2 8753/udp "${BEACON_N2_DNS_PORT:-28753}") N2_DNS_TCP=$(_pub n2 8753/tcp "${BEACON_N2_DNS_PORT:-28753}")
  N3_DNS=$(_pub n3 8753/udp "${BEACON_N3_DNS_PORT:-38753}") N3_DNS_TCP=$(_pub n3 8753/tcp "${BEACON_N3_DNS_PORT:-38753}")
}
resolve_addrs

# dns_addr N: "127.0.0.1:P (UDP and TCP)", or both ports when they differ.
dns_addr() {
  local u t
  u=N${1}_DNS t=N${1}_DNS_TCP
  if [[ ${!u} == "${!t}" ]]; then printf '127.0.0.1:%s (UDP and TCP)' "${!u}"
  else printf '127.0.0.1:%s (UDP), 127.0.0.1:%s (TCP)' "${!u}" "${!t}"; fi
}
DOMAIN=service.beacon

if [[ -t 1 ]]; then BOLD=$'\033[1m' DIM=$'\033[2m' RED=$'\033[31m' GREEN=$'\033[32m' OFF=$'\033[0m'
else BOLD="" DIM="" RED="" GREEN="" OFF=""; fi

log()  { printf '%s==> %s%s\n' "$BOLD" "$*" "$OFF"; }
note() { printf '%s    %s%s\n' "$DIM" "$*" "$OFF"; }
die()  { printf '%serror: %s%s\n' "$RED" "$*" "$OFF" >&2; exit 1; }

# run shows a command, then runs it.
run() {
  local a shown=()
  for a in "$@"; do [[ $a == *[[:space:]]* ]] && a="'$a'"; shown+=("$a"); done
  printf '%s$ %s%s\n' "$DIM" "${shown[*]}" "$OFF"
  "$@"
}

# beacon runs the CLI against every agent (it fails over between them).
beacon() { "$BEACON" --addr "$AGENTS" "$@"; }

need_cli() {
  [[ -x $BEACON ]] || die "$BEACON not found: run 'make build' (or 'make up')"
  command -v "${COMPOSE[0]}" >/dev/null || die "${COMPOSE[0]} not found"
}

# ctr SERVICE prints the container ID of a service of our project.
ctr() {
  local id
  id=$("${COMPOSE[@]}" ps -q "$1" 2>/dev/null | head -1)
  [[ -n $id ]] || die "no container for service $1 in project $PROJECT (is the cluster up?)"
  printf '%s\n' "$id"
}

# network prints the name of our project's compose network.
network() { printf '%s_beacon\n' "$PROJECT"; }

# ctr_ip SERVICE prints the container's address on our network.
ctr_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$(network)\").IPAddress}}" "$(ctr "$1")"; }

# wait_for SECONDS WHAT CMD... runs CMD every half second until it succeeds;
# after SECONDS it gives up and returns 1.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      printf '%s    timed out after %ss waiting for %s%s\n' "$RED" "$timeout" "$what" "$OFF" >&2
      return 1
    fi
    sleep 0.5
  done
}

# leader_of ADDR prints the leader the agent at ADDR knows, if any.
leader_of() { "$BEACON" --addr "$1" status 2>/dev/null | awk '$1 == "leader:" && $2 != "()" && $2 != "none" {print $2}'; }

# has_leader N: some agent knows a leader, and the leader's Raft
# configuration has N voters.
has_leader() {
  local l n
  l=$(leader_of "$AGENTS")
  [[ -n $l ]] || return 1
  n=$(beacon operator raft list-peers 2>/dev/null | awk 'NR > 1 && $4 == "true"' | wc -l)
  [[ $n -eq $1 ]]
}

# all_ready: each of n1, n2 and n3 answers /readyz (knows a recent leader).
all_ready() {
  local n
  for n in "$N1" "$N2" "$N3"; do "$BEACON" --addr "$n" health >/dev/null 2>&1 || return 1; done
}

# settled: every agent is ready and the Raft configuration has 3 voters.
settled() { all_ready && has_leader 3; }

# run_times SERVICE prints, for the container's current run (after its last
# "agent started" line; a restarted container keeps older lines), the unix
# time (fractional) it started and when it first became leader (or "-").
# Agents log an RFC 3339 timestamp first on each line.
run_times() {
  docker logs "$(ctr "$1")" 2>&1 | awk '
    /agent started/ {s = $1; l = "-"}
    /entering leader state/ && s != "" && l == "-" {l = $1}
    END {if (s != "") print s, l}' | while read -r s l; do
    printf '%s %s\n' "$(date -d "$s" +%s.%N)" "$([[ $l == - ]] && echo - || date -d "$l" +%s.%N)"
  done
}

# election_time prints ", the first leader was elected N.Ns after the last
# agent started", measured from the agents' own logs (not from when compose
# began), or nothing when the logs do not say.
election_time() {
  local n times
  times=$(for n in n1 n2 n3; do run_times "$n"; done 2>/dev/null)
  [[ $(wc -l <<<"$times") -eq 3 ]] || return 0
  awk '{if ($1 > s) s = $1; if ($2 != "-" && (l == "" || $2 < l)) l = $2}
    END {if (l != "" && l >= s) printf ", the first leader was elected %.1fs after the last agent started (the agents'"'"' logs)", l - s}' <<<"$times"
}

# healthy_count SERVICE prints how many instances of SERVICE are healthy.
healthy_count() { beacon discover "$1" --healthy 2>/dev/null | awk 'NR > 1' | wc -l; }
healthy_is() { [[ $(healthy_count "$1") -eq $2 ]]; }


# lb_get LB PATH [HOST] fetches PATH through a load balancer.
lb_get() {
  if [[ -n ${3:-} ]]; then curl -fsS --max-time 3 -H "Host: $3" "http://$1$2"
  else curl -fsS --max-time 3 "http://$1$2"; fi
}

# lb_routes LB: the load balancer answers /web/ from a demo instance.
lb_routes() { lb_get "$1" /web/ | grep -q 'instance web-'; }
