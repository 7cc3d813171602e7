#!/usr/bin/env bash
# Fuzzes the parsers that take outside input, each for a bounded time, with cargo-fuzz
# (libFuzzer + AddressSanitizer, on the nightly toolchain):
#
#   route_rule  autodeploy_routing::RouteRule::parse on raw header bytes
#   config      autodeploy_proxy::GatewayConfig::parse + validate on any text
#   link        autodeploy_proxy::link::split (the /d/{id}/rest router) on any path
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     # default 60
#
# Installs cargo-fuzz if missing. Prints, per target, libFuzzer's last status line
# (executions, time) and exits non-zero if any target found a crash; the crashing input is
# kept under fuzz/artifacts/TARGET/. The same properties run under proptest in the normal
# test suite (autodeploy-proxy/tests/hostile.rs, autodeploy-proxy/src/link.rs,
# autodeploy-routing/tests/parse.rs).
set -uo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || exit 2

mkdir -p corpus/config corpus/route_rule corpus/link
cp ../examples/*.toml corpus/config/ 2>/dev/null || true
printf 'scale-out' > corpus/route_rule/scale-out
printf 'round-robin' > corpus/route_rule/round-robin
printf 'xykemlvy' > corpus/route_rule/id
printf '/d/files/v1/audio/speech' > corpus/link/link

failed=0
for target in route_rule config link; do
  log="artifacts/$target.log"
  mkdir -p artifacts
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
  status=$?
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  secs=$(grep -E '^stat::' "$log" >/dev/null && grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)
  if [ "$status" -ne 0 ]; then
    failed=1
    echo "$target: CRASH (exit $status) after ${runs:-?} executions; see fuzz/$log and fuzz/artifacts/$target/"
  else
    echo "$target: 0 crashes, ${runs:-?} executions in ${seconds}s (${secs:-})"
  fi
done
exit "$failed"
