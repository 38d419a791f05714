#!/usr/bin/env bash
# Runs the whole Waybill test suite: formatting, lints, unit, API, black-box
# crash and power-loss tests, then a minute of fuzzing per fuzz target.
# Installs what it needs; fast the second time.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build cache outside the clone when the machine allows it: CI clones main
# into a fresh folder each run, so ./target would always start cold.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  cache=/var/cache/waybill/target
  if mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then
    export CARGO_TARGET_DIR="$cache"
  fi
fi
echo "waybill test: target dir ${CARGO_TARGET_DIR:-./target}"

rustup component add rustfmt clippy >/dev/null 2>&1 || true
# The dashboard compiles to wasm32; its end-to-end tests drive headless
# Chromium through chromedriver (Debian packages).
rustup target add wasm32-unknown-unknown >/dev/null
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# tests/schemathesis.rs checks the API against its OpenAPI document with
# schemathesis (PyPI, pinned), kept in a venv beside the build cache so the
# second run only asks it for its version.
schemathesis_version=4.32.5
venv=/var/cache/waybill/venv
if ! { mkdir -p "$(dirname "$venv")" 2>/dev/null && [ -w "$(dirname "$venv")" ]; }; then
  venv="$PWD/target/venv"
fi
if ! "$venv/bin/st" --version 2>/dev/null | grep -qF "version $schemathesis_version"; then
  python="$(command -v python3.11 || command -v python3)"
  if ! "$python" -m venv --clear "$venv" >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv --clear "$venv"
  fi
  "$venv/bin/pip" install -q "schemathesis==$schemathesis_version"
fi
export WAYBILL_SCHEMATHESIS="$venv/bin/st"

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check # its own workspace
# The dashboard crate is linted for the target it runs on (wasm32), not
# compiled for the host: that keeps Leptos out of the host build.
cargo clippy --workspace --exclude waybill-dashboard --all-targets --locked -- -D warnings
cargo clippy -p waybill-dashboard --target wasm32-unknown-unknown --locked -- -D warnings
cargo run --locked -p xtask -- dashboard
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --exclude waybill-dashboard --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# Coverage-guided fuzzing of the record decoder, the wire frame decoder and
# the config parser: each target WAYBILL_FUZZ_SECONDS (60) under libFuzzer;
# a crash fails the run. Its build and corpora are cached (scripts/fuzz.sh).
./scripts/fuzz.sh all "${WAYBILL_FUZZ_SECONDS:-60}" 2>&1 | tee -a "$log"
fuzz_status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (the last binary alone may be the
# doc-tests with nothing to run) and every fuzz target.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
  /^fuzz result: [a-z]+ ok/ { p += 1 }
  /^fuzz result: [a-z]+ FAILED/ { f += 1 }
  END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
[ "$status" != 0 ] || status=$fuzz_status
exit "$status"
