#!/usr/bin/env bash
# Checks the management API against its own OpenAPI document with schemathesis: starts the
# given `autodeploy` binary on a free loopback port with an admin token and a `demo`
# deployment (simulated provider), runs schemathesis against /api/v1/openapi.json (every
# documented route: no 5xx, only documented statuses, content types and bodies that match
# their schemas, 401 without the token), then stops the gateway. Exits with schemathesis's
# status.
#
#   scripts/schemathesis.sh target/debug/autodeploy [path/to/schemathesis]
#
# The gateway runs with PATH emptied, so deployments the fuzzer creates on the local provider
# can never run a command: their starts fail (1004) instead.
set -euo pipefail
bin="$(realpath "${1:?usage: $0 AUTODEPLOY_BINARY [SCHEMATHESIS]}")"
st="${2:-schemathesis}"
# Absolute, since it runs from a scratch folder below.
case "$st" in
  */*) st="$(realpath "$st")" ;;
  *) st="$(command -v "$st")" ;;
esac
max_time="${SCHEMATHESIS_MAX_TIME:-90}"
dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="schemathesis-$RANDOM$RANDOM"
cat > "$dir/autodeploy.toml" <<TOML
[gateway]
drain_timeout = "1s"

[providers.simulated]
boot_time = "50ms"

[[deployment]]
id = "demo"
provider = "simulated"
idle_retention = "1m"
max_instances = 2
TOML
env PATH=/nonexistent-autodeploy-schemathesis "$bin" serve --config "$dir/autodeploy.toml" \
  --listen "127.0.0.1:$port" --admin-token "$token" > "$dir/gateway.log" 2>&1 &
gateway=$!
stop() {
  local rc=$?
  if [ "$status" = 0 ]; then status=$rc; fi
  # SIGTERM releases every instance; a gateway that has not exited 20 s later is killed, so
  # this script (and CI) can never hang on it. Not exiting in time fails the run.
  kill "$gateway" 2>/dev/null || true
  for _ in $(seq 200); do
    kill -0 "$gateway" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$gateway" 2>/dev/null; then
    echo "== the gateway did not exit within 20 s of SIGTERM; killed. Its log:" >&2
    tail -n 50 "$dir/gateway.log" >&2
    kill -9 "$gateway" 2>/dev/null || true
    status=1
  fi
  wait "$gateway" 2>/dev/null || true
  rm -rf "$dir"
  exit "$status"
}
status=0
trap stop EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/healthz"
for _ in range(200):
    try:
        urllib.request.urlopen(url, timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.05)
sys.exit("the gateway did not start")
PY
# Run from the scratch folder: schemathesis keeps a cache in its working directory.
cd "$dir"
# The event stream never ends: it is documented, not fuzzed.
timeout $((max_time + 120)) "$st" run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth \
  --exclude-path /api/v1/events \
  --max-examples 25 --max-time "$max_time" --request-timeout 10 --seed 1 --no-color \
  || status=$?
if [ "$status" != 0 ]; then
  echo "== schemathesis failed ($status); the gateway's panics, if any:"
  grep -m 3 -A 40 "panicked at" "$dir/gateway.log" || true
  echo "== the end of the gateway's log:"
  tail -n 50 "$dir/gateway.log"
fi
exit "$status"
