#!/usr/bin/env bash
# Builds ../cmd/node, starts it on a random loopback port with the debug API,
# runs the interop suite against it (./run.sh, same arguments) and stops it.
# The node's own log goes to $INTEROP_NODE_LOG (default: a temp file, printed on failure).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
log=${INTEROP_NODE_LOG:-$work/node.log}
(cd .. && go build -o "$work/node" ./cmd/node)
"$work/node" --listen 127.0.0.1:0 --api-listen 127.0.0.1:0 --debug-api >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
url=""
for _ in $(seq 100); do
    url=$(grep -o 'bayeux node serving http://127\.0\.0\.1:[0-9]*/[^ "]*' "$log" | head -1 | sed 's/^bayeux node serving //' || true)
    [[ -n "$url" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "interop: the node exited at start:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$url" ]]; then
    echo "interop: the node printed no URL within 10 s:" >&2
    cat "$log" >&2
    exit 1
fi
export BAYEUX_URL="$url"

BAYEUX_DEBUG_URL="$(echo "$url" | grep -o '^http://[^/]*')/debug/bayeux"
export BAYEUX_DEBUG_URL
status=0
./run.sh "$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "---- last 40 lines of the node's log ($log) ----"
    tail -40 "$log"
fi
exit $status
