#!/usr/bin/env bash
# Durability soak (not CI; minutes to hours): the two sync-flush power-loss
# tests RUNS times alone and RUNS times with 3 copies in parallel, then the
# SIGKILL soak (CYCLES restarts). Any failure stops it with the output kept.
#   scripts/soak.sh [RUNS=5000] [CYCLES=100]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5000}
cycles=${2:-100}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/waybill/target}
bin_of() {
  cargo test -p waybill --test "$1" --no-run --message-format=json 2>/dev/null \
    | grep "\"name\":\"$1\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1
}
power=$(bin_of power_loss)
crash=$(bin_of crash)
out=$(mktemp -d)
echo "soak: output in $out"
tests=(
  given_sync_flush_when_power_fails_and_unsynced_bytes_vanish_should_lose_no_acknowledged_message
  given_sync_flush_when_power_fails_mid_write_tearing_records_should_lose_no_acknowledged_message
)
one() { # test, run number, lane
  "$power" --exact "$1" --test-threads 1 >"$out/$3.log" 2>&1 || {
    echo "FAILED: $1 run $2 (lane $3)"; cat "$out/$3.log"; exit 1; }
}
for t in "${tests[@]}"; do
  start=$(date +%s)
  for i in $(seq "$runs"); do one "$t" "$i" a; done
  echo "alone: $t: $runs runs, 0 failures, $(( $(date +%s) - start )) s"
  start=$(date +%s)
  pids=()
  for lane in 1 2 3; do
    ( for i in $(seq "$runs"); do one "$t" "$i" "p$lane"; done ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "3 in parallel: $t: $((3 * runs)) runs, 0 failures, $(( $(date +%s) - start )) s"
done
WAYBILL_SOAK_CYCLES=$cycles "$crash" --ignored --exact soak_sigkill_cycles_lose_no_acknowledged_message --nocapture \
  | grep -E "^(soak:|cycle [0-9]*0 )"
