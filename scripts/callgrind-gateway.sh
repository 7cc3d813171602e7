#!/usr/bin/env bash
# User-space instructions per proxied request of the gateway, counted by callgrind (repeatable
# whatever else the machine is doing), for comparing two builds of the data plane.
#
#   scripts/callgrind-gateway.sh [AUTODEPLOY_BINARY]     # default: target/release/autodeploy
#
# Runs the gateway under `valgrind --tool=callgrind` with one tokio worker, a warm instance of
# `bench-backend` (local provider, not instrumented), zeroes the counters after warm-up, sends
# GET /d/fast/ with wrk (1 thread, 8 connections, 10 s), and prints instructions per request
# and the top functions by inclusive cost. Needs valgrind and wrk (see scripts/loadtest.sh).
# KEEP_DUMP=FILE keeps the callgrind dump for callgrind_annotate.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
AUTODEPLOY=${1:-$TARGET_DIR/release/autodeploy}
BACKEND=${BACKEND:-$TARGET_DIR/release/bench-backend}
WORK=$(mktemp -d /tmp/autodeploy-callgrind.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cat >"$WORK/gateway.toml" <<EOF
[gateway]
listen = "127.0.0.1:$PORT"

[[deployment]]
id = "fast"
start_command = "exec $BACKEND --port {port}"
idle_retention = "1h"
max_instances = 1
EOF

TOKIO_WORKER_THREADS=1 RUST_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/callgrind.out" "$AUTODEPLOY" serve --config "$WORK/gateway.toml" \
    >"$WORK/valgrind.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/d/fast/" >/dev/null && break
    sleep 0.2
done
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/d/fast/" >/dev/null; done
callgrind_control -z "$PID" >/dev/null
REQUESTS=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$PORT/d/fast/" | awk '/requests in/{print $1}')
callgrind_control -d "$PID" >/dev/null
DUMP=$(ls "$WORK"/callgrind.out.* | head -n 1)
if [ -n "${KEEP_DUMP:-}" ]; then
    cp "$DUMP" "$KEEP_DUMP"
fi
TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "binary: $AUTODEPLOY"
echo "requests: $REQUESTS  instructions: $TOTAL  per request: $((TOTAL / REQUESTS))"
callgrind_annotate --inclusive=yes "$DUMP" 2>/dev/null |
    grep -E 'autodeploy_(proxy|core)::|hyper_util::client::legacy::client::Client<C,B>::send_request|malloc|free' |
    head -n 40 |
    awk -v n="$REQUESTS" '{c=$1; gsub(",","",c); line=$0; sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", line); printf "%8d  %s\n", c/n, substr(line, 1, 150)}'
