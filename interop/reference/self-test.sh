#!/usr/bin/env bash
# Mutation self-test of the suite: runs it against the Faye reference server
# broken in one way at a time and prints which scenarios caught each break.
# Usage: [REF_MODES="dup unsub"] reference/self-test.sh [test files...]
#        (default: all modes; faye long-polling + cometd long-polling)
set -uo pipefail
cd "$(dirname "$0")/.."
files=("$@")
[[ ${#files[@]} -eq 0 ]] && files=(test/faye-long-polling.test.mjs test/cometd-long-polling.test.mjs)
for mode in ${REF_MODES:-dup reorder drop wildcard unsub echo-leak no402 expire-noop}; do
    summary=$(REF_BREAK=$mode reference/run-against-faye.sh "${files[@]}" 2>&1 | sed -n '/==== interop summary/,$p' | grep -v '====')
    echo "REF_BREAK=$mode"
    echo "$summary" | sed 's/^/    /'
done
