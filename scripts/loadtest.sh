#!/usr/bin/env bash
# Load comparison on loopback, in one run: a fast backend measured directly, through nginx as a
# reverse proxy, through Go's httputil.ReverseProxy, and through the autodeploy gateway on a
# warm instance.
#
#   sudo scripts/loadtest.sh            # or as root; installs nginx-light, wrk (and golang-go
#                                       # for the go target) if missing
#   sudo BACKEND=nginx scripts/loadtest.sh
#
# Each round runs, for every target in turn (direct, nginx, go, gateway, gateway-1t, then again):
#   small   GET /   (14-byte body)  wrk, CONNS connections, DURATION     -> req/s, p50, p99
#   1MiB    GET /1m (1 MiB body)    wrk, CONNS connections, DURATION     -> MiB/s
#   lat1    GET /   (14-byte body)  wrk, 1 connection, DURATION          -> p50, p99 unloaded
# and reports the median of ROUNDS rounds per target and scenario, with the ratios
# gateway/nginx and gateway/direct.
#
# Backends (BACKEND):
#   hyper (default)  bench-backend (single-threaded hyper, ours) on its own port; each gateway's
#                    instance is another bench-backend
#   nginx            nginx, 1 worker, `return 200` of the same 14 bytes and a 1 MiB file, started
#                    by the `gateway` target's deployment as its instance: direct, nginx and go
#                    reach that very port. (gateway-1t, a second gateway process, starts its own
#                    identical instance: a gateway forwards only to instances it started.)
#
# Targets:
#   direct      the backend itself
#   nginx       nginx, 1 worker, access_log off, upstream keepalive 64 to that backend
#   go          Go's httputil.ReverseProxy (the data path of llama-swap, KEDA's HTTP interceptor,
#               Knative's activator), 15 lines built with Debian's golang-go, MaxIdleConnsPerHost
#               64 (like nginx's keepalive 64; Go's default of 2 would reconnect constantly)
#   gateway     release `autodeploy serve`, its default runtime (per-core since issue 16), a
#               deployment whose local-provider instance is the backend
#   gateway-1t  --runtime multi-thread --worker-threads 1 (one tokio worker, like nginx's 1 worker)
#   gateway-mt  --runtime multi-thread (tokio's work-stealing runtime, one worker per core)
#   gateway-pc  the same with --runtime per-core (the default since issue 16): one single-threaded runtime per core, each
#               with its own SO_REUSEPORT listener and idle upstream connections (nginx's model)
#   gateway-pc1 --runtime per-core --worker-threads 1: one thread, one single-threaded runtime
#
# Settings (environment): BACKEND (hyper), ROUNDS (3), DURATION (5s), CONNS (32),
# WRK_THREADS (1), TARGETS ("direct nginx go gateway gateway-1t"), CARGO_TARGET_DIR (target),
# SKIP_BUILD (unset), OUT (a file to also write the summary to), AUTODEPLOY (the gateway
# binary; default: the release build in CARGO_TARGET_DIR).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-1}
TARGETS=${TARGETS:-"direct nginx go gateway gateway-1t"}
BACKEND_KIND=${BACKEND:-hyper}
case $BACKEND_KIND in
    hyper | nginx) ;;
    *)
        echo "BACKEND must be hyper or nginx, not $BACKEND_KIND" >&2
        exit 2
        ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '==> %s\n' "$*" >&2; }

# --- what it needs -------------------------------------------------------------------------
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "nginx and wrk are missing: run as root (or install nginx-light and wrk)" >&2
        exit 1
    fi
    log "installing nginx and wrk from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq nginx-light wrk >/dev/null || apt-get install -y -qq nginx wrk >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ " $TARGETS " == *" go "* ]] && ! command -v go >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "go is missing for the go target: run as root (or install golang-go)" >&2
        exit 1
    fi
    log "installing golang-go from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq golang-go >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed for the summary" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries (autodeploy, bench-backend) into $TARGET_DIR"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet \
        -p autodeploy-proxy --bin autodeploy -p autodeploy-benches --bin bench-backend)
fi
AUTODEPLOY=${AUTODEPLOY:-$TARGET_DIR/release/autodeploy}
BENCH_BACKEND=$TARGET_DIR/release/bench-backend

# --- processes, all stopped on exit --------------------------------------------------------
WORK=$(mktemp -d /tmp/autodeploy-loadtest.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url: until it answers 200 (the first gateway request cold-starts its instance)
    for _ in $(seq 1 300); do
        if python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10).read()' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "no answer from $1" >&2
    exit 1
}

ROOT_USER=$( [ "$(id -u)" -eq 0 ] && echo "user root;" || true )

# --- the backend ------------------------------------------------------------------------------
# INSTANCE_COMMAND: what each gateway's deployment starts ({port} is the instance's port).
# BACKEND_PORT and BACKEND_CPU_PID are known once the backend runs (for nginx: once the
# `gateway` target's instance has started, below).
if [ "$BACKEND_KIND" = hyper ]; then
    INSTANCE_COMMAND="exec $BENCH_BACKEND --port {port}"
    BACKEND_PORT=$(free_port)
    "$BENCH_BACKEND" --port "$BACKEND_PORT" >"$WORK/backend.log" 2>&1 &
    PIDS+=($!)
    BACKEND_CPU_PID=$!
    wait_http "http://127.0.0.1:$BACKEND_PORT/"
else
    mkdir -p "$WORK/backend/logs" "$WORK/backend/html"
    head -c 1048576 /dev/zero >"$WORK/backend/html/1m"
    # One config per instance (its port in the name), written by the start command.
    cat >"$WORK/backend/nginx.conf.in" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend/nginx-@PORT@.pid;
error_log $WORK/backend/logs/error-@PORT@.log warn;
$ROOT_USER
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/backend/client_body;
    proxy_temp_path $WORK/backend/proxy;
    fastcgi_temp_path $WORK/backend/fastcgi;
    uwsgi_temp_path $WORK/backend/uwsgi;
    scgi_temp_path $WORK/backend/scgi;
    sendfile on;
    server {
        listen 127.0.0.1:@PORT@;
        default_type application/octet-stream;
        location = / { return 200 "Hello, world!\n"; }
        location = /1m { root $WORK/backend/html; }
    }
}
EOF
    INSTANCE_COMMAND="sed 's/@PORT@/{port}/g' $WORK/backend/nginx.conf.in >$WORK/backend/nginx-{port}.conf \
&& echo {port} >>$WORK/backend/ports \
&& exec $NGINX -p $WORK/backend -e $WORK/backend/logs/error-{port}.log -c $WORK/backend/nginx-{port}.conf"
fi

start_gateway() { # name threads-env [runtime-env]; sets GATEWAY_PORT
    local name=$1 port
    port=$(free_port)
    GATEWAY_PORT=$port
    cat >"$WORK/$name.toml" <<EOF
[gateway]
listen = "127.0.0.1:$port"

[[deployment]]
id = "fast"
start_command = """$INSTANCE_COMMAND"""
idle_retention = "1h"
max_instances = 1
EOF
    local env=(RUST_LOG=warn)
    [ -n "$2" ] && env+=("AUTODEPLOY_WORKER_THREADS=$2")
    [ -n "${3:-}" ] && env+=("AUTODEPLOY_RUNTIME=$3")
    env "${env[@]}" "$AUTODEPLOY" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    GATEWAY_PID=$!
}

# BASE: where each target is reached; CPU_PID: the process whose CPU time is counted (the
# backend for direct, nginx's worker, the go proxy, the gateway process without its instance).
declare -A BASE CPU_PID
GATEWAYS_STARTED=""
if [[ " $TARGETS " == *" gateway "* ]] || [ "$BACKEND_KIND" = nginx ]; then
    start_gateway gateway ""
    BASE[gateway]="http://127.0.0.1:$GATEWAY_PORT/d/fast"
    CPU_PID[gateway]=$GATEWAY_PID
    GATEWAYS_STARTED="gateway"
fi
if [ "$BACKEND_KIND" = nginx ]; then
    log "starting the nginx backend as the gateway's instance"
    wait_http "${BASE[gateway]}/"
    BACKEND_PORT=$(head -n 1 "$WORK/backend/ports")
    BACKEND_CPU_PID=$(pgrep -P "$(cat "$WORK/backend/nginx-$BACKEND_PORT.pid")" | head -n 1)
    wait_http "http://127.0.0.1:$BACKEND_PORT/"
fi

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
$ROOT_USER
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # A 1 MiB answer is relayed from memory, never spilled to a temp file.
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/"
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx/nginx.pid")" | head -n 1)

BASE[direct]="http://127.0.0.1:$BACKEND_PORT"
CPU_PID[direct]=$BACKEND_CPU_PID
BASE[nginx]="http://127.0.0.1:$NGINX_PORT"
CPU_PID[nginx]=$NGINX_WORKER

if [[ " $TARGETS " == *" go "* ]]; then
    mkdir -p "$WORK/goproxy"
    cat >"$WORK/goproxy/main.go" <<'EOF'
// goproxy LISTEN BACKEND_URL: Go's reverse proxy, as llama-swap, KEDA's HTTP interceptor and
// Knative's activator use it.
package main

import (
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
)

func main() {
	backend, err := url.Parse(os.Args[2])
	if err != nil {
		log.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(backend)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	proxy.Transport = transport
	log.Fatal(http.ListenAndServe(os.Args[1], proxy))
}
EOF
    log "building the go target ($(go version))"
    (cd "$WORK/goproxy" && GO111MODULE=off go build -o goproxy main.go)
    GO_PORT=$(free_port)
    "$WORK/goproxy/goproxy" "127.0.0.1:$GO_PORT" "http://127.0.0.1:$BACKEND_PORT" \
        >"$WORK/goproxy/log" 2>&1 &
    PIDS+=($!)
    BASE[go]="http://127.0.0.1:$GO_PORT"
    CPU_PID[go]=$!
fi

for target in $TARGETS; do
    case $target in
        gateway)
            if [ -z "$GATEWAYS_STARTED" ]; then
                start_gateway gateway ""
                BASE[gateway]="http://127.0.0.1:$GATEWAY_PORT/d/fast"
                CPU_PID[gateway]=$GATEWAY_PID
            fi
            ;;
        gateway-1t)
            start_gateway gateway-1t 1 multi-thread
            BASE[gateway-1t]="http://127.0.0.1:$GATEWAY_PORT/d/fast"
            CPU_PID[gateway-1t]=$GATEWAY_PID
            ;;
        gateway-mt)
            start_gateway gateway-mt "" multi-thread
            BASE[gateway-mt]="http://127.0.0.1:$GATEWAY_PORT/d/fast"
            CPU_PID[gateway-mt]=$GATEWAY_PID
            ;;
        gateway-pc)
            start_gateway gateway-pc "" per-core
            BASE[gateway-pc]="http://127.0.0.1:$GATEWAY_PORT/d/fast"
            CPU_PID[gateway-pc]=$GATEWAY_PID
            ;;
        gateway-pc1)
            start_gateway gateway-pc1 1 per-core
            BASE[gateway-pc1]="http://127.0.0.1:$GATEWAY_PORT/d/fast"
            CPU_PID[gateway-pc1]=$GATEWAY_PID
            ;;
    esac
done
for target in $TARGETS; do
    log "warming $target (${BASE[$target]}/)"
    wait_http "${BASE[$target]}/"
    wait_http "${BASE[$target]}/1m"
done

# --- rounds ---------------------------------------------------------------------------------
RAW=$WORK/raw.tsv
printf 'round\ttarget\tscenario\trps\tp50_us\tp99_us\tcpu_us\n' >"$RAW"
CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() { # pid: user + system clock ticks so far
    awk '{print $14 + $15}' "/proc/$1/stat"
}

run_wrk() { # round target scenario conns path
    local out threads=$WRK_THREADS before after
    [ "$4" -lt "$threads" ] && threads=$4
    before=$(cpu_ticks "${CPU_PID[$2]}")
    out=$(wrk -t"$threads" -c"$4" -d"$DURATION" --latency "${BASE[$2]}$5" 2>&1)
    after=$(cpu_ticks "${CPU_PID[$2]}")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        echo "$out" >&2
        echo "errors while measuring $2 $3" >&2
    fi
    WRK_OUT=$out CPU_TICKS=$((after - before)) python3 - "$1" "$2" "$3" "$CLK_TCK" >>"$RAW" <<'PY'
import os, re, sys
out = os.environ["WRK_OUT"]
ticks, clk_tck = int(os.environ["CPU_TICKS"]), int(sys.argv[4])
def us(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
cpu = ticks / clk_tck * 1e6 / max(total, 1)
print(f"{sys.argv[1]}\t{sys.argv[2]}\t{sys.argv[3]}\t{rps:.1f}\t{p50:.1f}\t{p99:.1f}\t{cpu:.2f}")
PY
}

log "load before measuring: $(uptime)"
for round in $(seq 1 "$ROUNDS"); do
    for target in $TARGETS; do
        log "round $round/$ROUNDS: $target"
        run_wrk "$round" "$target" small "$CONNS" /
        run_wrk "$round" "$target" 1MiB "$CONNS" /1m
        run_wrk "$round" "$target" lat1 1 /
    done
done
log "load after measuring: $(uptime)"

# --- summary --------------------------------------------------------------------------------
SUMMARY=$(python3 - "$RAW" "$ROUNDS" "$DURATION" "$CONNS" "$WRK_THREADS" "$BACKEND_KIND" <<'PY'
import csv, statistics, sys
path, rounds, duration, conns, threads, backend = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))
targets = list(dict.fromkeys(r["target"] for r in rows))
def med(target, scenario, field):
    vals = [float(r[field]) for r in rows if r["target"] == target and r["scenario"] == scenario]
    return statistics.median(vals) if vals else float("nan")
print(f"Backend: {backend}. Medians of {rounds} interleaved rounds, wrk -t{threads}, {duration} each; "
      f"small and 1 MiB with {conns} connections, lat1 with 1 connection.\n")
print("CPU µs/req: CPU time (user + system) of the measured process per request: the backend "
      "(its worker) for direct, the nginx worker, the go proxy, the gateway process (not its "
      "instance).\n")
print("| target | small req/s | small p50 µs | small p99 µs | 1 MiB MiB/s | lat1 p50 µs | lat1 p99 µs "
      "| small CPU µs/req | 1 MiB CPU µs/req |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in targets:
    print(f"| {t} | {med(t,'small','rps'):.0f} | {med(t,'small','p50_us'):.0f} | "
          f"{med(t,'small','p99_us'):.0f} | {med(t,'1MiB','rps'):.0f} | "
          f"{med(t,'lat1','p50_us'):.0f} | {med(t,'lat1','p99_us'):.0f} | "
          f"{med(t,'small','cpu_us'):.1f} | {med(t,'1MiB','cpu_us'):.1f} |")
print()
proxies = [t for t in targets if t != "direct"]
if proxies:
    print("| ratio | small req/s | 1 MiB MiB/s | small p50 | lat1 p50 | lat1 p50 added over direct µs "
          "| small CPU/req |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for g in proxies:
        for base in ("nginx", "direct"):
            if base not in targets or base == g:
                continue
            r = lambda s, f: med(g, s, f) / med(base, s, f)
            added = med(g, "lat1", "p50_us") - med("direct", "lat1", "p50_us")
            print(f"| {g}/{base} | {r('small','rps'):.2f} | {r('1MiB','rps'):.2f} | "
                  f"{r('small','p50_us'):.2f} | {r('lat1','p50_us'):.2f} | {added:+.0f} | "
                  f"{r('small','cpu_us'):.2f} |")
print("\nRaw rounds:\n")
print("| round | target | scenario | req/s | p50 µs | p99 µs | CPU µs/req |")
print("|---|---|---|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['round']} | {r['target']} | {r['scenario']} | {float(r['rps']):.0f} | "
          f"{float(r['p50_us']):.0f} | {float(r['p99_us']):.0f} | {float(r['cpu_us']):.1f} |")
PY
)
echo "$SUMMARY"
if [ -n "${OUT:-}" ]; then
    echo "$SUMMARY" >"$OUT"
    log "summary written to $OUT"
fi
