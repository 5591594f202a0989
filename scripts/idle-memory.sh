#!/usr/bin/env bash
# Server memory per idle session, in one command (issue 5):
#
#   scripts/idle-memory.sh                                 # 10,000 sessions, websocket then long-polling
#   SESSIONS=2000 HOLD=15s TRANSPORTS=websocket scripts/idle-memory.sh
#   NODE_GOGC=50 scripts/idle-memory.sh                    # GOGC of the node only
#
# For each transport: a fresh node (in-memory engine, --pprof, per-IP and
# per-browser limits off, demo off) and `cmd/bench --scenario
# idle-sessions` (each session handshakes, subscribes to one of 100
# channels and keeps one /meta/connect held: the websocket's, or a parked
# long-poll). Once every session is up and after a settle pause, the
# script records the node's RSS (/proc), goroutines, heap and stack bytes
# (/metrics), then a goroutine profile and a heap profile taken after a
# forced GC (files kept in $WORK, top entries printed). The forced GC comes
# after the RSS reading, so it does not flatter it.
#
# Per-session figures: (RSS during the hold - RSS of the idle node) /
# sessions, from the script's reading (before the forced GC) and from the
# tool's own JSON line (end of the hold). Bounded: node start 10 s, setup
# $SETUP_TIMEOUT, hold $HOLD, closing 20 s; the tool is killed past that.
# Needs SESSIONS+100 open files per process (the soft limit is raised to
# the hard one).
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-10000}
HOLD=${HOLD:-30s}
SETUP_TIMEOUT=${SETUP_TIMEOUT:-120s}
SETTLE=${SETTLE:-5}
TRANSPORTS=${TRANSPORTS:-websocket long-polling}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"

ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((SESSIONS + 100)) ]; then
  echo "open-file limit $(ulimit -n) is too low for $SESSIONS sessions" >&2
  exit 1
fi

go build -o "$WORK/node" ./cmd/node
go build -o "$WORK/bench" ./cmd/bench

npid=""
cleanup() { [ -n "$npid" ] && kill "$npid" 2>/dev/null || true; }
trap cleanup EXIT

secs() { local d=$1; d=${d%s}; echo "${d%.*}"; }
rss() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$1/status"; }
metric() { curl -fsS "$1/metrics" | awk -v m="$2" '$1 == m {printf "%.0f\n", $2}'; }

summary=()
for tr in $TRANSPORTS; do
  log="$WORK/node-$tr.log"
  env ${NODE_GOGC:+GOGC=$NODE_GOGC} "$WORK/node" --listen 127.0.0.1:0 --pprof --demo=false \
    --max-sessions-per-ip -1 --max-held-per-ip -1 --max-sessions-per-browser -1 \
    --log-level warn >"$log" 2>&1 &
  npid=$!
  url=""
  for _ in $(seq 100); do
    url=$(sed -n 's/^bayeux node serving \(http[^ ]*\).*/\1/p' "$log" | head -1)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "node did not start: $(cat "$log")" >&2; exit 1; }
  base=${url%/cometd}
  sleep 1
  rss0=$(rss "$npid")

  bound=$(($(secs "$SETUP_TIMEOUT") + $(secs "$HOLD") + 60))
  timeout "$bound" "$WORK/bench" --url "$url" --transport "$tr" --scenario idle-sessions \
    --subscribers "$SESSIONS" --channels 100 --duration "$HOLD" --setup-timeout "$SETUP_TIMEOUT" \
    --server-pid "$npid" --out "$WORK/$tr.json" 2>"$WORK/bench-$tr.err" &
  bpid=$!

  up=0
  deadline=$((SECONDS + $(secs "$SETUP_TIMEOUT")))
  while [ $SECONDS -lt $deadline ] && kill -0 "$bpid" 2>/dev/null; do
    up=$(metric "$base" "bayeux_sessions{transport=\"$tr\"}" || echo 0)
    [ "${up:-0}" -ge "$SESSIONS" ] && break
    sleep 1
  done
  sleep "$SETTLE"
  rss1=$(rss "$npid")
  gor=$(metric "$base" go_goroutines)
  heap=$(metric "$base" go_memstats_heap_inuse_bytes)
  stack=$(metric "$base" go_memstats_stack_inuse_bytes)
  curl -fsS "$base/debug/pprof/goroutine?debug=1" >"$WORK/$tr.goroutines.txt"
  curl -fsS "$base/debug/pprof/heap?gc=1" >"$WORK/$tr.heap.pb.gz"
  live=$(metric "$base" go_memstats_heap_alloc_bytes)
  wait "$bpid" || echo "bench ($tr) failed: $(tail -3 "$WORK/bench-$tr.err")" >&2
  kill "$npid" 2>/dev/null || true
  wait "$npid" 2>/dev/null || true
  npid=""

  echo "== $tr: $up sessions up"
  cat "$WORK/$tr.json" 2>/dev/null || true
  echo "-- heap in use after a forced GC (top 15; $WORK/$tr.heap.pb.gz):"
  go tool pprof -sample_index=inuse_space -top -nodecount=15 "$WORK/node" "$WORK/$tr.heap.pb.gz" 2>/dev/null | sed -n '5,21p'
  tool=$(sed -n 's/.*"rss_per_session_bytes":\([0-9.]*\).*/\1/p' "$WORK/$tr.json" 2>/dev/null | tail -1)
  summary+=("$(awk -v t="$tr" -v n="$up" -v r0="$rss0" -v r1="$rss1" -v g="$gor" -v h="$heap" -v s="$stack" -v l="$live" -v tool="${tool:-0}" 'BEGIN {
    printf "%-13s %6d  %8.0f  %8.0f  %6d  %8.0f  %8.0f  %8.0f", t, n, (r1-r0)/n, tool, g, h/n, s/n, l/n }')")
done

echo
echo "per session, bytes (RSS: script reading before the forced GC; tool: its end-of-hold reading)"
echo "transport     sessions  RSS       tool-RSS  gorout.  heap-inuse stacks   live-heap(after GC)"
printf '%s\n' "${summary[@]}"
echo "files: $WORK"
