#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the record decoder, the wire frame
# decoder and the config parser, on the stable toolchain.
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]     # default: all 60
#   scripts/fuzz.sh record 3600                # a longer run of one target
#   scripts/fuzz.sh all 0                      # build only
#
# Targets: record, frame, config (fuzz/fuzz_targets/). Builds them with
# SanitizerCoverage (stable `-C passes=sancov-module`, the flags cargo fuzz
# passes, without its nightly-only sanitizer), then runs each for SECONDS.
# The corpus grows across runs in the cache folder; a crash leaves its
# input in fuzz/artifacts/TARGET/ and fails the script. Reproduce one with
# `scripts/fuzz.sh TARGET -- fuzz/artifacts/TARGET/crash-…`.
# Prints one `fuzz result: TARGET ok|FAILED …` line per target.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-all}"
seconds="${2:-60}"
case "$target" in
  all) targets=(record frame config) ;;
  record | frame | config) targets=("$target") ;;
  *) echo "usage: scripts/fuzz.sh [record|frame|config|all] [SECONDS | -- INPUT...]" >&2; exit 2 ;;
esac

# Builds and corpora outside the clone when the machine allows it (CI
# clones into a fresh folder each run; a cold build takes minutes).
cache=/var/cache/waybill
if ! { mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; }; then
  cache="$PWD/fuzz"
fi
export CARGO_TARGET_DIR="${WAYBILL_FUZZ_TARGET_DIR:-$cache/fuzz-target}"
corpora="${WAYBILL_FUZZ_CORPUS_DIR:-$cache/fuzz-corpus}"

# What cargo fuzz passes for libFuzzer's coverage feedback: 8-bit edge
# counters, the PC table, and comparison operands for the mutator.
export RUSTFLAGS="--cfg fuzzing -C passes=sancov-module \
 -C llvm-args=-sanitizer-coverage-level=4 \
 -C llvm-args=-sanitizer-coverage-inline-8bit-counters \
 -C llvm-args=-sanitizer-coverage-pc-table \
 -C llvm-args=-sanitizer-coverage-trace-compares"
# An explicit --target keeps these flags off build scripts and proc macros,
# which run on the host without libFuzzer linked in.
host="$(rustc -vV | sed -n 's/^host: //p')"
start=$SECONDS
# fuzz/ is its own workspace (the main one never links libFuzzer); its lock
# file starts as the main one each time, so the server and client build
# against exactly the versions they are tested with, and cargo adds only
# libFuzzer's own crates.
cp Cargo.lock fuzz/Cargo.lock
cargo build --release --target "$host" --manifest-path fuzz/Cargo.toml --bins
echo "fuzz: built in $((SECONDS - start)) s (target dir $CARGO_TARGET_DIR)"
bin="$CARGO_TARGET_DIR/$host/release"

if [ "$seconds" = 0 ]; then
  exit 0 # build only
fi
if [ "$seconds" = "--" ]; then
  shift 2
  exec "$bin/$target" "$@"
fi

status=0
for t in "${targets[@]}"; do
  corpus="$corpora/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536
    -print_final_stats=1 -artifact_prefix="$artifacts/")
  seeds=()
  if [ "$t" = config ]; then
    args+=(-dict=fuzz/config.dict)
    seeds+=(docker)
  fi
  log="$(mktemp)"
  set +e
  "$bin/$t" "${args[@]}" "$corpus" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  set -e
  # `|| true`: a target that crashes on a seed prints no stats, and under
  # `set -e -o pipefail` an empty grep would end the script without a word.
  execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" || true)
  rate=$(awk '/stat::average_exec_per_sec/ { print $2 }' "$log" || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{ print $2 }' || true)
  if [ "$rc" = 0 ]; then
    echo "fuzz result: $t ok ($seconds s, ${execs:-?} execs, ${rate:-?}/s, cov ${cov:-?}, corpus $(ls "$corpus" | wc -l))"
  else
    tail -n 60 "$log"
    echo "fuzz result: $t FAILED (exit $rc; crashing input in $artifacts/)"
    status=1
  fi
  rm -f "$log"
done
exit "$status"
