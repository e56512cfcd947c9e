#!/usr/bin/env bash
# test-under-load.sh — run `make test` several times in a row while CPU hogs
# run beside it, the way a busy CI runner or a shared laptop would (issue 14:
# the suite must stay green on a loaded machine). docs/testing-under-load.md.
#
#   scripts/test-under-load.sh            # 3 runs, stress-ng --cpu 2
#   RUNS=5 HOGS=4 scripts/test-under-load.sh
#
# The hogs are `stress-ng --cpu $HOGS` (Debian: apt-get install stress-ng),
# started by this script and stopped by it, by PID, when it ends (also on
# Ctrl-C). Each run's output goes to $OUT/run-N.log; the script stops at the
# first failing run and exits non-zero.
set -euo pipefail

RUNS=${RUNS:-3}
HOGS=${HOGS:-2}
OUT=${OUT:-$(mktemp -d /tmp/beacon-under-load.XXXXXX)}
cd "$(dirname "$0")/.."

if ! command -v stress-ng >/dev/null; then
	echo "stress-ng is not installed (Debian/Ubuntu: apt-get install stress-ng)" >&2
	exit 2
fi
mkdir -p "$OUT"

stress_pid=""
stop_hogs() {
	if [[ -n $stress_pid ]] && kill -0 "$stress_pid" 2>/dev/null; then
		kill -TERM "$stress_pid" 2>/dev/null || true
		wait "$stress_pid" 2>/dev/null || true
	fi
	stress_pid=""
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT TERM

stress-ng --cpu "$HOGS" --timeout 0 --quiet &
stress_pid=$!
echo "CPU hogs: stress-ng --cpu $HOGS (pid $stress_pid); logs in $OUT"

status=0
for run in $(seq 1 "$RUNS"); do
	start=$(date +%s)
	echo "== make test, run $run of $RUNS (load $(cut -d' ' -f1-3 /proc/loadavg))"
	if make test >"$OUT/run-$run.log" 2>&1; then
		echo "   run $run passed in $(($(date +%s) - start))s"
	else
		echo "   run $run FAILED after $(($(date +%s) - start))s; failing tests:"
		grep -E '^(--- FAIL|FAIL|panic:)' "$OUT/run-$run.log" | head -20 | sed 's/^/     /'
		status=1
		break
	fi
done
stop_hogs
if [[ $status -eq 0 ]]; then
	echo "all $RUNS runs passed under stress-ng --cpu $HOGS"
fi
exit $status
