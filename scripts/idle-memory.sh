#!/usr/bin/env bash
# Server memory per idle session, in one command (issue 5), for our node
# and for Faye's own Node server (npm faye, interop/bench-faye-server.mjs,
# as in scripts/compare.sh):
#
#   scripts/idle-memory.sh                                 # 10,000 sessions, websocket then long-polling, ours then Faye
#   SESSIONS=2000 HOLD=15s TRANSPORTS=websocket scripts/idle-memory.sh
#   SERVERS=ours scripts/idle-memory.sh                    # our node only
#   NODE_GOGC=50 scripts/idle-memory.sh                    # GOGC of our node only
#
# For each transport and each server: a fresh server (ours: in-memory
# engine, --pprof, per-IP and per-browser limits off, demo off; Faye:
# faye.NodeAdapter, timeout 30 s) and `cmd/bench --scenario
# idle-sessions` (each session handshakes, subscribes to one of 100
# channels and keeps one /meta/connect held: the websocket's, or a parked
# long-poll). Once every session is up (ours: bayeux_sessions in /metrics;
# Faye: established TCP connections to its port, one per session) and
# after a settle pause (SETTLE s, default 5, at most half of HOLD so that
# it ends within the hold), the script records the server's RSS (/proc). For
# ours only, it then records goroutines, heap and stack bytes (/metrics),
# then a goroutine profile and a heap profile taken after a forced GC
# (files kept in $WORK, top entries printed); the forced GC comes after the
# RSS reading, so it does not flatter it. Faye's columns are '-' there.
#
# Per-session figures: (RSS during the hold - RSS of the idle server) /
# sessions, from the script's reading (before the forced GC) and from the
# tool's own JSON line (end of the hold). A run that fails (server not
# starting, sessions refused or dropped, tool error or timeout) is a row
# whose status says so; the script goes on with the next one. Bounded per
# run: server start 10 s, setup $SETUP_TIMEOUT, hold $HOLD, closing 20 s
# (the tool is killed past that), server stop 10 s (then SIGKILL).
# Needs SESSIONS+100 open files per process (the soft limit is raised to
# the hard one).
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-10000}
HOLD=${HOLD:-30s}
SETUP_TIMEOUT=${SETUP_TIMEOUT:-120s}
SETTLE=${SETTLE:-5}
TRANSPORTS=${TRANSPORTS:-websocket long-polling}
SERVERS=${SERVERS:-ours faye}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"

for server in $SERVERS; do
  case $server in ours | faye) ;; *) echo "unknown server $server (known: ours faye)" >&2; exit 2 ;; esac
done
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((SESSIONS + 100)) ]; then
  echo "open-file limit $(ulimit -n) is too low for $SESSIONS sessions" >&2
  exit 1
fi

go build -o "$WORK/node" ./cmd/node
go build -o "$WORK/bench" ./cmd/bench
if [[ " $SERVERS " == *" faye "* ]] && [ ! -d interop/node_modules/faye ]; then
  (cd interop && npm ci --no-audit --no-fund --loglevel=error)
fi

npid="" bpid=""
cleanup() {
  [ -n "$bpid" ] && kill "$bpid" 2>/dev/null
  [ -n "$npid" ] && kill "$npid" 2>/dev/null
  true
}
trap cleanup EXIT

secs() { local d=$1; d=${d%s}; echo "${d%.*}"; }
rss() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$1/status" 2>/dev/null; }
metric() { curl -fsS "$1/metrics" | awk -v m="$2" '$1 == m {printf "%.0f\n", $2}'; }
# conns PORT: established TCP connections whose local port is PORT (the
# server's side of each connection to it).
conns() { awk -v p="$(printf ':%04X' "$1")" 'substr($2, length($2) - 4) == p && $4 == "01" {n++} END {print n + 0}' /proc/net/tcp; }
# stop_server: SIGTERM, at most 10 s to exit, then SIGKILL.
stop_server() {
  [ -n "$npid" ] || return 0
  kill "$npid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$npid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$npid" 2>/dev/null || true
  wait "$npid" 2>/dev/null || true
  npid=""
}

# The settle pause ends within the hold: at most half of it.
settle=$(awk -v a="$SETTLE" -v h="$(secs "$HOLD")" 'BEGIN { print (a + 0 < h / 2) ? a : h / 2 }')
summary=()
# row SERVER TRANSPORT UP RSS0 RSS1 TOOL GOROUTINES HEAP STACK LIVE STATUS
# ('-' or empty: not measured).
row() {
  summary+=("$(awk -v sv="$1" -v t="$2" -v n="$3" -v r0="$4" -v r1="$5" -v tool="$6" -v g="$7" -v h="$8" \
    -v s="$9" -v l="${10}" -v st="${11}" '
    function per(x) { return (x == "" || x == "-" || n + 0 <= 0) ? "-" : sprintf("%.0f", x / n) }
    function num(x) { return (x == "" || x == "-") ? "-" : sprintf("%.0f", x) }
    BEGIN {
      rs = (r0 == "" || r1 == "" || r0 == "-" || r1 == "-" || n + 0 <= 0) ? "-" : sprintf("%.0f", (r1 - r0) / n)
      printf "%-6s %-13s %8s  %8s  %8s  %7s  %10s  %8s  %10s  %s", sv, t, num(n), rs, num(tool), num(g), per(h), per(s), per(l), st
    }')")
}

for tr in $TRANSPORTS; do
  for server in $SERVERS; do
    name=$server-$tr
    log="$WORK/$name.log"
    echo "== $server, $tr" >&2
    if [ "$server" = ours ]; then
      env ${NODE_GOGC:+GOGC=$NODE_GOGC} "$WORK/node" --listen 127.0.0.1:0 --api-listen= --pprof --demo=false \
        --max-sessions-per-ip -1 --max-held-per-ip -1 --max-sessions-per-browser -1 \
        --log-level warn >"$log" 2>&1 &
      npid=$!
      pattern='s/^bayeux node serving \(http[^ ]*\).*/\1/p'
    else
      node interop/bench-faye-server.mjs >"$log" 2>&1 &
      npid=$!
      pattern='s/^BAYEUX_URL=\(http[^ ]*\).*/\1/p'
    fi
    url=""
    for _ in $(seq 100); do
      url=$(sed -n "$pattern" "$log" | head -1)
      [ -n "$url" ] && break
      kill -0 "$npid" 2>/dev/null || break
      sleep 0.1
    done
    if [ -z "$url" ]; then
      echo "$server did not start: $(tail -3 "$log")" >&2
      stop_server
      row "$server" "$tr" - - - - - - - - "FAILED: server did not start ($log)"
      continue
    fi
    base=${url%/cometd}
    hp=${url#http://}; hp=${hp%%/*}; port=${hp##*:}
    sleep 1
    rss0=$(rss "$npid") || rss0=""

    out="$WORK/$name.json" err="$WORK/bench-$name.err"
    rm -f "$out"
    bound=$(($(secs "$SETUP_TIMEOUT") + $(secs "$HOLD") + 60))
    timeout "$bound" "$WORK/bench" --url "$url" --transport "$tr" --scenario idle-sessions \
      --subscribers "$SESSIONS" --channels 100 --duration "$HOLD" --setup-timeout "$SETUP_TIMEOUT" \
      --server-pid "$npid" --out "$out" 2>"$err" &
    bpid=$!

    up=0
    deadline=$((SECONDS + $(secs "$SETUP_TIMEOUT")))
    while [ $SECONDS -lt $deadline ] && kill -0 "$bpid" 2>/dev/null; do
      if [ "$server" = ours ]; then
        up=$(metric "$base" "bayeux_sessions{transport=\"$tr\"}" 2>/dev/null) || up=0
      else
        up=$(conns "$port")
      fi
      [ "${up:-0}" -ge "$SESSIONS" ] && break
      sleep 1
    done
    sleep "$settle"
    rss1=$(rss "$npid") || rss1=""
    in_hold=yes
    kill -0 "$bpid" 2>/dev/null || in_hold=no
    # The divisor: sessions at the reading (if the hold is over, the last
    # count before it).
    if [ "$in_hold" = no ]; then
      :
    elif [ "$server" = ours ]; then
      up=$(metric "$base" "bayeux_sessions{transport=\"$tr\"}" 2>/dev/null) || up=0
    else
      up=$(conns "$port")
    fi
    up=${up:-0}
    [ "$up" -gt "$SESSIONS" ] && up=$SESSIONS # long-polling: idle pooled connections besides the held ones
    gor=- heap=- stack=- live=-
    if [ "$server" = ours ] && [ -n "$rss1" ]; then
      gor=$(metric "$base" go_goroutines) || gor=-
      heap=$(metric "$base" go_memstats_heap_inuse_bytes) || heap=-
      stack=$(metric "$base" go_memstats_stack_inuse_bytes) || stack=-
      curl -fsS "$base/debug/pprof/goroutine?debug=1" >"$WORK/$name.goroutines.txt" || true
      curl -fsS "$base/debug/pprof/heap?gc=1" >"$WORK/$name.heap.pb.gz" || true
      live=$(metric "$base" go_memstats_heap_alloc_bytes) || live=-
    fi
    status=ok
    if wait "$bpid"; then
      failed=$(sed -n 's/.*"connect_failures":\([0-9]*\),"sessions_failed":\([0-9]*\).*/\1 \2/p' "$out" | tail -1) || failed=""
      read -r cf sf <<<"${failed:-0 0}"
      [ "$cf" = 0 ] && [ "$sf" = 0 ] || status="FAILED: $sf sessions dropped, $cf connects refused"
    else
      rc=$?
      if [ "$rc" = 124 ]; then status="FAILED: tool timed out after ${bound}s"; else status="FAILED: $(tail -1 "$err")"; fi
      echo "bench ($server, $tr) failed: $(tail -3 "$err")" >&2
    fi
    bpid=""
    [ "$in_hold" = yes ] || [ "$status" != ok ] || status="LATE: RSS read after the hold ended"
    [ "$up" -ge "$SESSIONS" ] || [ "$status" != ok ] || status="FAILED: only $up of $SESSIONS sessions up"
    [ -n "$rss1" ] || status="FAILED: server exited during the run ($log)"
    stop_server

    echo "== $server, $tr: $up sessions up"
    cat "$out" 2>/dev/null || true
    if [ "$server" = ours ] && [ -s "$WORK/$name.heap.pb.gz" ]; then
      echo "-- heap in use after a forced GC (top 15; $WORK/$name.heap.pb.gz):"
      go tool pprof -sample_index=inuse_space -top -nodecount=15 "$WORK/node" "$WORK/$name.heap.pb.gz" 2>/dev/null | sed -n '5,21p' || true
    fi
    tool=$(sed -n 's/.*"rss_per_session_bytes":\([0-9.e+-]*\).*/\1/p' "$out" 2>/dev/null | tail -1) || tool=""
    if [ "${status%%:*}" = FAILED ]; then # the figures would mislead
      row "$server" "$tr" "$up" - - - - - - - "$status"
    else
      row "$server" "$tr" "$up" "$rss0" "$rss1" "${tool:--}" "$gor" "$heap" "$stack" "$live" "$status"
    fi
  done
done

echo
echo "per session, bytes (RSS: script reading, before the forced GC on ours; tool: its end-of-hold reading;"
echo "goroutines, heap, stacks, live heap: ours only, from /metrics)"
printf '%-6s %-13s %8s  %8s  %8s  %7s  %10s  %8s  %10s  %s\n' server transport sessions RSS tool-RSS gorout. heap-inuse stacks live-heap status
printf '%s\n' "${summary[@]}"
echo "files: $WORK"
