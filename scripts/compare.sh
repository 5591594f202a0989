#!/usr/bin/env bash
# Side-by-side benchmark, one table: our broker as ONE node (in-memory
# engine), our broker as THREE nodes sharing Redis behind nginx doing plain
# round-robin (the balancer config of internal/testproc.StartBalancer), and
# Faye's own Node server (npm faye, pinned in interop/package.json), all
# driven by the same load tool (cmd/bench) through the same scenarios in the
# same run. The raw JSON lines go to $OUT (default compare-results.jsonl in
# a temp dir, path printed).
#
#   scripts/compare.sh                          # 8 s per run, 1 round
#   RUNS=3 DURATION=8s scripts/compare.sh       # 3 rounds: median and spread
#   SERVERS="ours faye" scripts/compare.sh      # skip the cluster
#   SCENARIOS="fanout-ws maxtp-ws" scripts/compare.sh  # a subset (default: all four, below)
#   PROFILE_DIR=/tmp/prof scripts/compare.sh    # CPU profiles of our nodes, one per run
#   INFLIGHT=1 scripts/compare.sh               # one publish in flight per publisher
#   NODE_GOGC=50 scripts/compare.sh             # GOGC of our nodes only
#   CLUSTER_GOMAXPROCS=2 scripts/compare.sh     # GOMAXPROCS of each cluster node (default 1, see below)
#   CLUSTER_NODES=1 scripts/compare.sh          # nodes behind nginx in the cluster rows (default 3)
#   OURS_GOMAXPROCS=1 scripts/compare.sh        # GOMAXPROCS of the one node (default: one per core)
#   NODE_BIN=/tmp/node-main scripts/compare.sh  # a node binary built elsewhere (A/B of two builds)
#   METRICS_LOG=/tmp/m.log scripts/compare.sh   # append each node's connect, delivery, publish and
#                                               # forward counters before and after every run
#
# Server CPU is utime+stime of the server processes over the measurement
# window: the node, Faye's node process, or the sum over the three cluster
# nodes (Redis and nginx are reported apart, as aux CPU). Server and tool
# share the machine: compare deliveries per server CPU-second, and latency
# only below saturation. Rounds interleave the servers so that background
# noise spreads over all of them.
#
# The three cluster nodes share the two cores with Redis, nginx and the
# tool: each runs with GOMAXPROCS=1 by default, which is what a CPU limit of
# one core sets for a Go process in a container (Go 1.25+). With the
# default of one P per core (6 Ps on 2 cores), their idle Ps spin looking
# for work and wake each other (futex, findRunnable: 15-18% of a node's
# CPU in profiles).
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER_GOMAXPROCS=${CLUSTER_GOMAXPROCS:-1}
DURATION=${DURATION:-8s}
RUNS=${RUNS:-1}
INFLIGHT=${INFLIGHT:-32}
SERVERS=${SERVERS:-ours faye cluster}
# Scenarios: name|bench arguments. Faye has no ack extension; every server
# runs without it so that all do the same work. Publishers keep INFLIGHT
# publishes unacknowledged (websocket: pipelined frames; long-polling: one
# batched POST).
#
# maxtp-ws is the layout of channels-ws (1000 subscribers, 10 per channel
# on 100 channels, 10 publishers owning 10 channels each) without a rate
# (max-throughput forces --rate 0): each publisher sends as fast as its
# INFLIGHT window of unacknowledged publishes lets it, so what differs is
# how many deliveries a saturated server pushes per CPU-second. The window
# bounds what can be queued (10 x 32 publications, 10 deliveries each),
# so every run ends within DURATION with nothing left to drain: on the
# 2-core machine, tool and server sharing it, 3 s and 8 s runs drained in
# 0 s with nothing lost, at about 140k deliveries/s on our node and 55-60k
# on Faye (idle machine). Keeping the channels-ws layout makes the two
# comparable; more subscribers per channel would mostly load the tool
# (its reading competes with the server for the 2 cores), and more
# publishers or a larger window would only lengthen the queues (latency),
# not the throughput.
scenarios=(
  "fanout-ws|--scenario fanout --transport websocket --subscribers 100"
  "fanout-lp|--scenario fanout --transport long-polling --subscribers 100"
  "channels-ws|--scenario many-channels --transport websocket --subscribers 1000 --channels 100 --publishers 10 --rate 1000"
  "maxtp-ws|--scenario max-throughput --transport websocket --subscribers 1000 --channels 100 --publishers 10"
)
all=()
for s in "${scenarios[@]}"; do all+=("${s%%|*}"); done
SCENARIOS=${SCENARIOS:-${all[*]}}
for name in $SCENARIOS; do
  [[ " ${all[*]} " == *" $name "* ]] || { echo "unknown scenario $name (known: ${all[*]})" >&2; exit 2; }
done
work=$(mktemp -d)
OUT=${OUT:-$work/compare-results.jsonl}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -f "$work/node" "$work/bench"
}
trap cleanup EXIT

[ -d interop/node_modules/faye ] || (cd interop && npm ci --no-audit --no-fund --loglevel=error)
if [ -n "${NODE_BIN:-}" ]; then cp "$NODE_BIN" "$work/node"; else go build -o "$work/node" ./cmd/node; fi
go build -o "$work/bench" ./cmd/bench

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
has() { [[ " $SERVERS " == *" $1 "* ]]; }
declare -A url pid aux

if has ours; then
  env ${NODE_GOGC:+GOGC=$NODE_GOGC} ${OURS_GOMAXPROCS:+GOMAXPROCS=$OURS_GOMAXPROCS} "$work/node" --listen 127.0.0.1:0 --api-listen= "${node_flags[@]}" >"$work/ours.out" 2>"$work/ours.err" &
  pids+=($!); pid[ours]=$!
  url[ours]=$(wait_line "$work/ours.out" "bayeux node serving ")
fi
if has faye; then
  node interop/bench-faye-server.mjs >"$work/faye.out" 2>"$work/faye.err" &
  pids+=($!); pid[faye]=$!
  url[faye]=$(wait_line "$work/faye.out" "BAYEUX_URL=")
fi
if has cluster; then
  start_redis redis
  start_cluster node "${CLUSTER_NODES:-3}" "redis://127.0.0.1:$redis_port"
  cbases=("${cluster_bases[@]}")
  start_nginx nginx "${cluster_backends[@]}"
  url[cluster]="http://127.0.0.1:$nginx_port/cometd"
  pid[cluster]=$(IFS=,; echo "${cluster_pids[*]}")
  aux[cluster]="$redis_pid,$nginx_pid,$(pgrep -d, -P "$nginx_pid" || true)"
  aux[cluster]=${aux[cluster]%,}
fi

# counters WHEN SERVER: the nodes' counters, to METRICS_LOG if set (one
# line per counter: WHEN SERVER NODE-URL NAME VALUE).
counters() {
  [ -n "${METRICS_LOG:-}" ] || return 0
  local bases=("${url[$2]%/cometd}") b
  [ "$2" = cluster ] && bases=("${cbases[@]}")
  [ "$2" = faye ] && return 0
  for b in "${bases[@]}"; do
    curl -s "$b/metrics" | grep -E '^bayeux_(connects_total|deliveries_total|grpc_forwards_total|publishes_total)' |
      sed "s|^|$1 $2 $b |" || true
  done >>"$METRICS_LOG"
}

secs=${DURATION%s}
for round in $(seq "$RUNS"); do
  for s in "${scenarios[@]}"; do
    name=${s%%|*}; args=${s#*|}
    [[ " $SCENARIOS " == *" $name "* ]] || continue
    for server in $SERVERS; do
      echo "== round $round: $name on $server" >&2
      extra=()
      [ -n "${aux[$server]:-}" ] && extra=(--aux-pid "${aux[$server]}")
      prof=""
      if [ -n "${PROFILE_DIR:-}" ] && [ "$server" != faye ]; then
        mkdir -p "$PROFILE_DIR"
        b=${url[$server]%/cometd}
        [ "$server" = cluster ] && b=${cbases[0]} # node 1 of 3
        (sleep 2; curl -s -o "$PROFILE_DIR/$name-$server-$round.prof" \
          "$b/debug/pprof/profile?seconds=$((${secs%.*} - 2))") &
        prof=$!
      fi
      counters before "$server"
      # shellcheck disable=SC2086
      "$work/bench" --url "${url[$server]}" $args --duration "$DURATION" --warmup 1s --disable-ack \
        --inflight "$INFLIGHT" --server-pid "${pid[$server]}" "${extra[@]}" --out "$work/one.json" || echo "(run failed)" >&2
      [ -z "$prof" ] || wait "$prof"
      counters after "$server"
      if [ -s "$work/one.json" ]; then
        sed "s/^{/{\"server\":\"$server\",\"name\":\"$name\",\"round\":$round,/" "$work/one.json" >>"$OUT"
        : >"$work/one.json"
      fi
    done
  done
done

node scripts/compare-table.mjs "$OUT"
echo "raw results: $OUT" >&2
