#!/usr/bin/env bash
# progress.sh WHAT FIRST-TIME CMD...: runs CMD after a line saying WHAT it
# does and how long it takes the first time (FIRST-TIME, may be ""), prints
# "... still WHAT (Ns)" every 20 s while it runs, and how long it took.
# Used by the Makefile so that no long step is silent. Exits with CMD's status.
what=$1 first=$2
shift 2
if [[ -t 1 ]]; then B=$'\033[1m' D=$'\033[2m' O=$'\033[0m'; else B="" D="" O=""; fi
printf '%s==> %s%s%s\n' "$B" "$what" "${first:+ ($first)}" "$O"
t0=${EPOCHREALTIME/,/.}
start=$SECONDS
"$@" &
pid=$!
(
  while sleep 20; do printf '%s    ... still %s (%ds)%s\n' "$D" "$what" $((SECONDS - start)) "$O"; done
) &
ticker=$!
trap 'kill $ticker $pid 2>/dev/null' INT TERM
wait "$pid"
rc=$?
kill "$ticker" 2>/dev/null
wait "$ticker" 2>/dev/null
if ((rc == 0)); then
  printf '%s    %s: done in %ss%s\n' "$D" "$what" "$(awk -v a="$t0" -v b="${EPOCHREALTIME/,/.}" 'BEGIN {printf "%.1f", b - a}')" "$O"
fi
exit "$rc"
