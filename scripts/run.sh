#!/usr/bin/env bash
# Builds and runs one Waybill node with the embedded defaults: data in
# ./data, sync flush, HTTP API on http://127.0.0.1:8080. Extra arguments go
# to `waybill serve` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked --bin waybill -- serve "$@"
