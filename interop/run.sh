#!/usr/bin/env bash
# Runs the interop suite (unchanged CometD JS and Faye clients, every transport)
# against a running broker:
#   BAYEUX_URL=http://127.0.0.1:PORT/cometd BAYEUX_DEBUG_URL=http://127.0.0.1:PORT/debug/bayeux ./run.sh [test files...]
# Exits non-zero if any scenario fails, or if the variables are unset.
set -euo pipefail
cd "$(dirname "$0")"

if [[ -z "${BAYEUX_URL:-}" || -z "${BAYEUX_DEBUG_URL:-}" ]]; then
    echo "interop/run.sh: BAYEUX_URL and BAYEUX_DEBUG_URL must be set (got BAYEUX_URL='${BAYEUX_URL:-}' BAYEUX_DEBUG_URL='${BAYEUX_DEBUG_URL:-}')" >&2
    echo "interop/run.sh: e.g. start the broker with --debug-api, or use ./with-go-node.sh" >&2
    exit 2
fi
if [[ ! -d node_modules ]]; then
    npm ci --no-audit --no-fund
fi

files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
    files=(test/*.test.mjs)
fi
echo "interop: BAYEUX_URL=$BAYEUX_URL BAYEUX_DEBUG_URL=$BAYEUX_DEBUG_URL"
exec node --test \
    --test-concurrency="${INTEROP_CONCURRENCY:-2}" \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=./reporter.mjs --test-reporter-destination=stdout \
    "${files[@]}"
