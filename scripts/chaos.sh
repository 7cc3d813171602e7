#!/usr/bin/env bash
# Chaos run of the `autodeploy` binary: SIGKILL under load and restart, CYCLES times (default
# 200; the test suite runs 20), with the local-process provider and a state directory. Each
# restart must release everything the killed gateway left running before it serves; after the
# last cycle the count of leaked instance processes must be 0.
#
#   scripts/chaos.sh [CYCLES]
#
# Needs python3 (the instances run `python3 -m http.server`). Prints one line with the cycles,
# requests served, orphaned instances released and the leak count.
set -euo pipefail
cd "$(dirname "$0")/.."
CHAOS_CYCLES="${1:-200}" cargo test --release -p autodeploy-proxy --test chaos -- --nocapture 2>&1 \
  | grep -E '^chaos:|test result|panicked|leaked'
