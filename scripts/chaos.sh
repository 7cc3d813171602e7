#!/usr/bin/env bash
# Chaos run of the `autodeploy` binary: SIGKILL under load and restart, CYCLES times (default
# 200; the test suite runs 20), with the local-process provider and a state directory, and
# with the Docker provider (containers of a stub image built from this workspace). Each
# restart must release everything the killed gateway left running before it serves; after the
# last cycle the count of leaked instances (processes, containers) must be 0.
#
#   scripts/chaos.sh [CYCLES] [local|docker|all]     # default: 200 all
#
# Needs python3 (the local instances run `python3 -m http.server`) and, for `docker`, a Docker
# engine (the run fails without one). Prints one line per provider with the cycles, requests
# served, orphaned instances released and the leak count.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-200}"
which="${2:-all}"
if [ "$which" = local ] || [ "$which" = all ]; then
  CHAOS_CYCLES="$cycles" cargo test --release -p autodeploy-proxy --test chaos -- --nocapture 2>&1 \
    | grep -E '^chaos:|test result|panicked|leaked'
fi
if [ "$which" = docker ] || [ "$which" = all ]; then
  CHAOS_CYCLES="$cycles" AUTODEPLOY_REQUIRE_DOCKER=1 cargo test --release -p autodeploy-proxy \
    --test docker sigkill_restart_cycles -- --nocapture 2>&1 \
    | grep -E '^docker chaos:|test result|panicked|leaked'
fi
