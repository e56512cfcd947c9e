#!/usr/bin/env bash
# The secure compose variant (docker-compose.yml + docker-compose.secure.yml;
# docs/security.md, "Secure compose").
#
#   scripts/secure-compose.sh init   make .secure/: a CA (key in .secure/ca), server
#                                    certificates for n1..n4, client certificates for the
#                                    load balancers, the demo services and you (ops), and
#                                    .secure/env with a random management token, cluster
#                                    secret and gossip key. Never overwrites.
#   scripts/secure-compose.sh up     init if needed, start the agents, create a read token
#                                    for the load balancers and a write token (prefix "web")
#                                    for the demo services, then start everything
#   scripts/secure-compose.sh env    print the exports that point the CLI at the cluster
#   scripts/secure-compose.sh down   stop and remove containers and volumes
#
# Needs bin/beacon (make build) and the image (make image). Compose as for the
# other scripts (scripts/lib.sh): `docker compose` where it is installed, else
# docker-compose; COMPOSE=... overrides; BEACON_PROJECT names the project.
cli_bin=${BEACON:-${BEACON_BIN:-bin/beacon}}
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

BEACON=$cli_bin
DIR=${BEACON_SECURE_DIR:-.secure}
NET=${BEACON_NET:-10.87.50}
# n1's API port on the host, as Docker published it (a port variable of 0
# lets Docker pick; lib.sh's resolve_addrs asks which).
PORT=${N1##*:}
compose() {
  "${COMPOSE[@]}" -f docker-compose.secure.yml --env-file "$DIR/env" "$@"
}

init() {
  mkdir -p "$DIR/ca" "$DIR/tls"
  chmod 700 "$DIR" "$DIR/ca"
  [[ -f $DIR/ca/beacon-ca.pem ]] || "$BEACON" tls ca create --dir "$DIR/ca" --common-name "Beacon compose CA"
  cp -f "$DIR/ca/beacon-ca.pem" "$DIR/tls/beacon-ca.pem"
  local sign=(--ca "$DIR/ca/beacon-ca.pem" --ca-key "$DIR/ca/beacon-ca-key.pem" --dir "$DIR/tls")
  for i in 1 2 3 4; do
    # The service name (n1) is how peers and clients reach it; the IP is fixed by the compose file.
    [[ -f $DIR/tls/n$i.pem ]] || "$BEACON" tls cert create --node "n$i" --ip "$NET.1$i" "${sign[@]}"
  done
  for c in lb1 lb2 web1 web2 web3 ops; do
    [[ -f $DIR/tls/$c.pem ]] || "$BEACON" tls cert create --node "$c" --client "${sign[@]}"
  done
  if [[ ! -f $DIR/env ]]; then
    (
      umask 077
      {
        echo "BEACON_MANAGEMENT_TOKEN=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
        echo "BEACON_CLUSTER_SECRET=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_')"
        echo "BEACON_GOSSIP_KEY=$("$BEACON" keygen)"
        echo "BEACON_LB_TOKEN="
        echo "BEACON_DEMO_TOKEN="
      } >"$DIR/env"
    )
  fi
  # The image runs as uid 65532, which must read the keys it is given.
  if [[ $(id -u) == 0 ]]; then
    chown -R 65532:65532 "$DIR/tls"
  else
    echo "secure-compose: not root: making $DIR/tls/*-key.pem world-readable for the containers (dev only)" >&2
    chmod 0644 "$DIR"/tls/*-key.pem
  fi
  echo "secure-compose: material in $DIR (keep $DIR/ca and $DIR/env secret)"
}

# cli runs bin/beacon against n1 with the management token.
cli() {
  # shellcheck disable=SC1090
  (set -a; . "$DIR/env"; set +a
    BEACON_ADDR="https://127.0.0.1:$PORT" BEACON_TOKEN="$BEACON_MANAGEMENT_TOKEN" \
      BEACON_CACERT="$DIR/tls/beacon-ca.pem" BEACON_CLIENT_CERT="$DIR/tls/ops.pem" \
      BEACON_CLIENT_KEY="$DIR/tls/ops-key.pem" "$BEACON" "$@")
}

set_env() { # set_env KEY VALUE in $DIR/env
  local tmp
  tmp=$(mktemp "$DIR/env.XXXX")
  grep -v "^$1=" "$DIR/env" >"$tmp" || true
  echo "$1=$2" >>"$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$DIR/env"
}

secret_of() { sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p'; }

up() {
  init
  compose up -d n1 n2 n3
  resolve_addrs
  PORT=${N1##*:}
  echo "secure-compose: waiting for a leader (at most 90 s)"
  for i in $(seq 1 90); do
    cli status -o json 2>/dev/null | grep -q '"leader": *"[^"]' && break
    if ((i % 10 == 0)); then
      echo "secure-compose: no leader yet after ${i}s ($(compose ps -q n1 n2 n3 2>/dev/null | wc -l) of 3 agent containers exist)"
    fi
    sleep 1
  done
  cli status
  if ! grep -q '^BEACON_LB_TOKEN=.' "$DIR/env"; then
    set_env BEACON_LB_TOKEN "$(cli token create --policy read --description "compose load balancers" -o json | secret_of)"
  fi
  if ! grep -q '^BEACON_DEMO_TOKEN=.' "$DIR/env"; then
    set_env BEACON_DEMO_TOKEN "$(cli token create --policy write --prefix web --description "compose demo services" -o json | secret_of)"
  fi
  compose up -d
  env_exports
}

env_exports() {
  local abs=$DIR
  [[ $abs == /* ]] || abs=$PWD/$DIR
  echo "# Point the CLI at the secure cluster:"
  echo "export BEACON_ADDR=https://127.0.0.1:$PORT BEACON_CACERT=$abs/tls/beacon-ca.pem"
  echo "export BEACON_CLIENT_CERT=$abs/tls/ops.pem BEACON_CLIENT_KEY=$abs/tls/ops-key.pem"
  echo "export BEACON_TOKEN=\$(sed -n 's/^BEACON_MANAGEMENT_TOKEN=//p' $abs/env)"
}

case ${1:-} in
init) init ;;
up) up ;;
env) env_exports ;;
down) compose down -v ;;
*)
  sed -n '2,18p' "$0"
  exit 2
  ;;
esac
