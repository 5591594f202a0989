#!/usr/bin/env bash
# Validates the suite itself against Faye's own Node server (reference/faye-server.mjs).
# Scenarios the reference cannot serve (drop-next-connect, ack, timesync) fail there by design.
# Usage: reference/run-against-faye.sh [test files...]   (default: the faye files)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
node reference/faye-server.mjs >"$out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q BAYEUX_DEBUG_URL "$out" && break; sleep 0.1; done
export $(grep '^BAYEUX_' "$out" | xargs)
files=("$@")
[[ ${#files[@]} -eq 0 ]] && files=(test/faye-*.test.mjs)
./run.sh "${files[@]}"
