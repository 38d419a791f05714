#!/usr/bin/env bash
# Builds and runs one Waybill node with the embedded defaults: data in
# ./data, sync flush, dashboard and HTTP API on http://127.0.0.1:8080.
# Extra arguments go to `waybill serve` (see `--help`). The dashboard
# (frontend/, Leptos → wasm32) is built into frontend/dist first; both
# builds are incremental, so the second run starts in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown >/dev/null
cargo run --locked -p xtask -- dashboard
exec cargo run --release --locked --bin waybill -- serve "$@"
