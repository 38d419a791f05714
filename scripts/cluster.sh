#!/usr/bin/env bash
# The 3-node Raft group of docker-compose.yml as local processes, started
# from the same config files (docker/node1.toml … node3.toml). Only what
# must differ outside containers is overridden, with flags: loopback
# addresses (--http-addr, --broker-addr, --advertise-addr, --peer), a data
# directory per node, the trace store (one fresh database on the local
# PostgreSQL, shared by the three as in compose; per-node SQLite when no
# PostgreSQL answers), the OTLP endpoint (no Jaeger here) and the dashboard.
#
#   scripts/cluster.sh [MESSAGES]   # default 200
#
# Then it checks failover: produces MESSAGES through the leader, SIGKILLs
# the leader, waits for the survivors to elect a new one, consumes the topic
# through it, and fails unless every acknowledged id is read back. It stops
# every process it started (by PID) on the way out. Tuning: WAYBILL_BIN
# (default: build target/…/debug/waybill), CLUSTER_DIR (default: a temp
# dir, removed), PGURL (default postgres://postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
messages="${1:-200}"
start=$SECONDS

# As in compose: the nodes' files bind 0.0.0.0, which needs a token. One
# secret for the three members, the CLI and this script: `waybill serve`
# and every client subcommand read WAYBILL_AUTH_TOKEN.
export WAYBILL_AUTH_TOKEN="${WAYBILL_AUTH_TOKEN:-cluster-$$-$RANDOM$RANDOM$RANDOM}"

say() { echo "cluster: $*"; }
fail() { echo "cluster: FAILED: $*" >&2; exit 1; }

bin="${WAYBILL_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --locked --workspace --exclude waybill-dashboard --bin waybill
  bin="${CARGO_TARGET_DIR:-$root/target}/debug/waybill"
fi
[ -x "$bin" ] || fail "no waybill binary at $bin"

dir="${CLUSTER_DIR:-}"
own_dir=""
if [ -z "$dir" ]; then
  dir="$(mktemp -d)"
  own_dir="$dir"
fi
mkdir -p "$dir"

# Sets $port to a loopback port nobody listens on, below the kernel's
# ephemeral range (where the test suite's port-0 listeners land).
taken=" "
free_port() {
  while :; do
    port=$((20000 + RANDOM % 12000))
    case "$taken" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      taken="$taken$port "
      return
    fi
  done
}

declare -A pid http broker
for i in 1 2 3; do
  free_port
  http[$i]="127.0.0.1:$port"
  free_port
  broker[$i]="127.0.0.1:$port"
done

pgurl="${PGURL:-postgres://postgres@127.0.0.1:5432}"
db="waybill_cluster_$$"
trace_db=""
if command -v psql >/dev/null && psql "$pgurl/postgres" -qAtc "CREATE DATABASE $db" >/dev/null 2>&1; then
  trace_db="$pgurl/$db"
  say "trace store: PostgreSQL database $db (shared by the three nodes)"
else
  say "trace store: no PostgreSQL at $pgurl; each node uses SQLite in its data dir"
fi

cleanup() {
  local status=$?
  for i in 1 2 3; do
    if [ -n "${pid[$i]:-}" ] && kill -0 "${pid[$i]}" 2>/dev/null; then
      kill -s TERM "${pid[$i]}" 2>/dev/null || true
    fi
  done
  for i in 1 2 3; do
    [ -n "${pid[$i]:-}" ] || continue
    for _ in $(seq 50); do
      kill -0 "${pid[$i]}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid[$i]}" 2>/dev/null; then
      kill -s KILL "${pid[$i]}" 2>/dev/null || true
    fi
    wait "${pid[$i]}" 2>/dev/null || true
  done
  if [ "$status" != 0 ]; then
    for i in 1 2 3; do
      [ -f "$dir/node$i.log" ] && { echo "--- node $i log (tail)"; tail -n 30 "$dir/node$i.log"; }
    done
  fi
  if [ -n "$trace_db" ]; then
    psql "$pgurl/postgres" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  [ -z "$own_dir" ] || rm -rf "$own_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_node() {
  local i=$1 args=() j
  args=(serve --config "$root/docker/node$i.toml"
    --data-dir "$dir/node$i" --http-addr "${http[$i]}" --broker-addr "${broker[$i]}"
    --advertise-addr "${broker[$i]}" --otlp-endpoint "http://127.0.0.1:9"
    --ui-dir "$root/frontend/dist")
  for j in 1 2 3; do
    [ "$j" = "$i" ] || args+=(--peer "$j=${broker[$j]}")
  done
  [ -z "$trace_db" ] || args+=(--trace-db "$trace_db")
  "$bin" "${args[@]}" >"$dir/node$i.out" 2>"$dir/node$i.log" &
  pid[$i]=$!
}

# The members' table node $1 serves (GET /api/v1/cluster, as the CLI shows it).
members() {
  "$bin" cluster status --http "${http[$1]}" 2>/dev/null
}

# Waits until node $1 answers over HTTP.
wait_up() {
  local i=$1
  for _ in $(seq 300); do
    members "$i" >/dev/null && return 0
    kill -0 "${pid[$i]}" 2>/dev/null || fail "node $i exited during start-up"
    sleep 0.1
  done
  fail "node $i never answered on ${http[$i]}"
}

# Prints the id of the live leader node $1 sees, other than $2 (waits up to 30 s).
leader_seen_by() {
  local i=$1 id
  for _ in $(seq 300); do
    id=$(members "$i" | awk '$2 == "leader" && $3 == "true" { print $1; exit }' || true)
    if [ -n "$id" ] && [ "$id" != "${2:-}" ]; then
      echo "$id"
      return 0
    fi
    sleep 0.1
  done
  fail "node $i sees no leader${2:+ other than node $2}"
}

for i in 1 2 3; do
  "$bin" serve --config "docker/node$i.toml" --check-config >/dev/null || fail "docker/node$i.toml does not parse"
  start_node "$i"
done
for i in 1 2 3; do
  wait_up "$i"
done
lead=$(leader_seen_by 1)
say "3 nodes up (pids ${pid[1]} ${pid[2]} ${pid[3]}), leader: node $lead"

"$bin" produce --broker "${broker[$lead]}" --topic cluster --key 'k-{n}' --body 'message {n}' \
  --count "$messages" --concurrency 8 >"$dir/produced.jsonl" || true
# One JSON line per send; the ids of those answered SEND_OK.
ids() { grep -o '"id":"[^"]*"' | cut -d'"' -f4 | sort -u; }
grep '"status":"SEND_OK"' "$dir/produced.jsonl" | ids >"$dir/acked" || true
acked=$(wc -l <"$dir/acked")
say "produced $messages through node $lead, acknowledged $acked"
[ "$acked" -gt 0 ] || fail "nothing was acknowledged"

say "SIGKILL the leader, node $lead (pid ${pid[$lead]})"
kill -s KILL "${pid[$lead]}"
wait "${pid[$lead]}" 2>/dev/null || true
pid[$lead]=""
survivor=$(( lead % 3 + 1 ))
new=$(leader_seen_by "$survivor" "$lead")
say "node $new elected leader"

"$bin" consume --broker "${broker[$new]}" --topic cluster --group cluster-check \
  --idle-exit-ms 3000 >"$dir/consumed.jsonl"
ids <"$dir/consumed.jsonl" >"$dir/read" || true
missing=$(comm -23 "$dir/acked" "$dir/read" | wc -l)
say "read back $(wc -l <"$dir/read") distinct ids through node $new; acknowledged but missing: $missing"
if [ "$missing" != 0 ]; then
  comm -23 "$dir/acked" "$dir/read" | head -n 20 >&2
  fail "$missing acknowledged messages were not read back after the failover"
fi
say "ok: $acked acknowledged, all read back after the leader was killed ($((SECONDS - start)) s)"
