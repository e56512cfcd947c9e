#!/usr/bin/env bash
# Starts the compose cluster (make up builds the binary and the image first),
# waits for a leader, and prints where to look (the host ports Docker
# published: a port variable of 0 lets it pick). Bounded: gives up after 90 s
# without a leader, and at once when an agent's container has exited.
source "$(dirname "$0")/lib.sh"
need_cli

log "starting 3 agents, 2 load balancers and 3 demo instances ($COMPOSE_CMD, project $PROJECT; seconds)"
started=$SECONDS
"${COMPOSE[@]}" up -d --remove-orphans

# With a port variable of 0, Docker picked the host ports just now.
resolve_addrs

# exited_agents prints the agents (n1..n3) whose container is no longer
# running, with their exit codes: "n1 (exited, exit 2)". They do not restart by
# themselves (restart: "no"), so the cluster cannot form without them.
exited_agents() {
  containers | awk '$1 ~ /^n[123]$/ && ($3 == "exited" || $3 == "dead") {printf "%s (%s, exit %s)\n", $1, $3, $4}' | sort
}

# waiting_for says what the cluster still lacks.
waiting_for() {
  local l n missing=() a
  for a in n1:"$N1" n2:"$N2" n3:"$N3"; do
    "$BEACON" --addr "${a#*:}" health --timeout 2s >/dev/null 2>&1 || missing+=("${a%%:*}")
  done
  l=$(leader_of "$AGENTS")
  if [[ -z $l ]]; then
    printf 'no agent knows a leader yet'
  else
    n=$(beacon operator raft list-peers 2>/dev/null | awk 'NR > 1 && $4 == "true"' | wc -l)
    printf 'leader %s, %d of 3 voters' "$l" "$n"
  fi
  ((${#missing[@]} == 0)) || printf '; not ready (no /readyz): %s' "${missing[*]}"
}

log "waiting for the agents to elect a leader (about 1 s once all three run; at most 90 s; progress every 10 s)"
deadline=$((SECONDS + 90)) next=$((SECONDS + 10))
until settled; do
  gone=$(exited_agents)
  if [[ -n $gone ]]; then
    "${COMPOSE[@]}" ps
    for s in $(awk '{print $1}' <<<"$gone"); do
      printf '%s--- last lines of %s ---%s\n' "$BOLD" "$s" "$OFF" >&2
      docker logs --tail 15 "$(ctr "$s")" >&2 2>&1 || true
    done
    die "agent container(s) stopped before a leader was elected: $(paste -sd';' - <<<"$gone" | sed 's/;/; /g') (their last log lines are above; '$COMPOSE_CMD -p $PROJECT logs n1' shows more)"
  fi
  if ((SECONDS >= deadline)); then
    "${COMPOSE[@]}" ps
    "${COMPOSE[@]}" logs --no-color --tail 30 n1 n2 n3 >&2
    die "the cluster is not ready after 90s: $(waiting_for) (see the logs above)"
  fi
  if ((SECONDS >= next)); then
    note "... still waiting ($((SECONDS - started))s): $(waiting_for)"
    next=$((next + 10))
  fi
  sleep 0.5
done
leader=$(leader_of "$AGENTS")
note "leader: $leader$(election_time "$leader"); cluster ready $((SECONDS - started))s after '$COMPOSE_CMD up' began"

log "waiting for the demo instances to pass their health checks"
if ! wait_for 45 "3 healthy instances of web" healthy_is web 3; then
  note "only $(healthy_count web) of 3 healthy so far; 'bin/beacon --addr $N1 discover web' shows their status"
fi
lbs_ok=1
for lb in "$LB1" "$LB2"; do
  wait_for 20 "LB $lb to route /web/" lb_routes "$lb" || lbs_ok=0
done
((lbs_ok)) && note "both load balancers route to the demo instances, $((SECONDS - started))s after '$COMPOSE_CMD up' began"

cat <<MSG

${GREEN}Beacon is up.${OFF}

  Agents (HTTP API)   n1 http://$N1   n2 http://$N2   n3 http://$N3
  Web UI              http://$N1/ui/  (on every agent; docs/ui.md)
  Load balancers      LB1 http://$LB1 (status http://$LB1_ADMIN/lb/status)
                      LB2 http://$LB2 (status http://$LB2_ADMIN/lb/status)
  Agents (DNS)        n1 $(dns_addr 1)
                      n2 $(dns_addr 2)
                      n3 $(dns_addr 3)
  Demo service        web: instances web-1, web-2, web-3 (beacon demo)

Try:
  export BEACON_ADDR=$AGENTS
  bin/beacon members                         # the three agents, as gossip sees them
  bin/beacon operator raft list-peers        # the Raft peers: who leads, who votes
  bin/beacon discover web                    # the demo instances and their health
  curl http://$LB1/web/                # path routing through LB1
  curl -H 'Host: web.$DOMAIN' http://$LB2/   # host routing through LB2
  bin/beacon register db db-1 --address 10.0.0.5 --port 5432
  bin/beacon --addr $N3 discover db          # any node answers
  dig @127.0.0.1 -p $N1_DNS web.service.beacon SRV   # DNS: healthy instances, weights, ports

  scripts/demo.sh     a guided tour        scripts/smoke.sh   quick checks
  scripts/chaos.sh    kill, pause and partition nodes for a while, then heal
  make down           remove the containers, the network and the volumes
MSG
if ((lbs_ok == 0)); then
  note "the load balancers do not route yet; '$COMPOSE_CMD -p $PROJECT logs lb1' says why"
fi
