#!/usr/bin/env bash
# Checks that imports flow one way (docs/architecture.md, "Packages"):
#   fsm imports nothing of ours; cluster, health and api import fsm (api also
#   api/client) and never each other; lb imports nothing of ours; api/client
#   imports only the standard library; agent (the server as a library) may
#   import every library package; agent/agenttest imports agent,
#   api/client and fsm/fsmtest/wait; lb/registry only lb and api/client;
#   cmd may import everything, and nothing imports cmd but cmd/beacon (tests included).
#   connlimit (api, lb and agent may import it) imports nothing of ours.
#   fsm/fsmtest/wait (the tests' bounded wait) uses the standard library
#   only, so the tests of every package, fsm's included, can import it.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)

# allowed[pkg] = project packages it may import (space-separated, relative)
declare -A allowed=(
  [fsm]=""
  [fsm/fsmtest]="fsm"
  # the tests' one bounded wait: every package's tests import it
  [fsm/fsmtest/wait]=""
  [cluster]="fsm"
  [health]="fsm"
  [api]="fsm api/client connlimit"
  [api/client]=""
  # the Consul endpoints reuse the API's validation, tokens and errors
  [api/consul]="fsm api api/client"
  [lb]="connlimit"
  # standard library only: the per-client connection cap of api and lb
  [connlimit]=""
  [agent]="fsm cluster health api api/client api/dns api/consul lb connlimit"
  [agent/agenttest]="agent api/client fsm/fsmtest/wait"
  [lb/registry]="lb api/client"
  # the fault suite drives the built binary over HTTP, like a user
  [cluster/chaostest]="api/client"
)

fail=0
while read -r pkg imports; do
  rel=${pkg#"$mod"}; rel=${rel#/}
  [[ -z "$rel" ]] && continue
  top=$rel
  [[ -v "allowed[$rel]" ]] || { [[ $rel == cmd* ]] && continue; }
  if [[ ! -v "allowed[$rel]" ]]; then
    # a sub-package not listed takes its parent's rule
    top=${rel%%/*}
    [[ -v "allowed[$top]" ]] || continue
  fi
  for imp in $imports; do
    [[ $imp == "$mod"* ]] || continue
    irel=${imp#"$mod"/}
    ok=0
    for a in ${allowed[$top]}; do [[ $irel == "$a" ]] && ok=1; done
    [[ $irel == "$rel"/* ]] && ok=1   # own sub-packages
    if [[ $ok == 0 ]]; then echo "depcheck: $rel must not import $irel"; fail=1; fi
  done
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./...)

# Nothing but cmd/beacon (and cmd's own tests) imports cmd, not even a test.
while read -r pkg imports; do
  rel=${pkg#"$mod"}; rel=${rel#/}
  [[ $rel == cmd || $rel == cmd/beacon ]] && continue
  for imp in $imports; do
    if [[ $imp == "$mod/cmd" || $imp == "$mod/cmd/"* ]]; then echo "depcheck: $rel must not import ${imp#"$mod"/}"; fail=1; fi
  done
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./...)

# api/client is standard library only, so any Go program can import it.
nonstd=$(go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./api/client | grep -v "^$mod/api/client$" || true)
if [[ -n "$nonstd" ]]; then echo "depcheck: api/client must use only the standard library, found: $nonstd"; fail=1; fi

# fsm/fsmtest/wait is standard library only, so every package's tests can
# import it without a cycle.
nonstd=$(go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./fsm/fsmtest/wait | grep -v "^$mod/fsm/fsmtest/wait$" || true)
if [[ -n "$nonstd" ]]; then echo "depcheck: fsm/fsmtest/wait must use only the standard library, found: $nonstd"; fail=1; fi

[[ $fail == 0 ]] && echo "depcheck: ok"
exit $fail
