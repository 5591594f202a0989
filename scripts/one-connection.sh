#!/usr/bin/env bash
# One publishing connection through the cluster (issue 17, item 1): one
# publisher with INFLIGHT publishes unacknowledged (pipelined websocket
# frames, or one POST of INFLIGHT publishes on long-polling) and one
# subscriber, through nginx round-robin to NODES nodes (GOMAXPROCS=1 each)
# on one Redis, everything on this machine. Prints one line per transport
# and round: acknowledged publishes per second, lost, duplicated,
# reordered, p99 delivery latency.
#
#   scripts/one-connection.sh            # 3 rounds, 3 nodes, --inflight 32
#   ROUNDS=5 NODES=3 INFLIGHT=64 DURATION=4s scripts/one-connection.sh
#
# Needs redis-server, nginx, curl, jq. Every process it starts is stopped
# by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} NODES=${NODES:-3} INFLIGHT=${INFLIGHT:-32} DURATION=${DURATION:-4s}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
go build -o "$work/node" ./cmd/node
go build -o "$work/bench" ./cmd/bench
start_redis redis
CLUSTER_GOMAXPROCS=1 start_cluster node "$NODES" "redis://127.0.0.1:$redis_port"
start_nginx nginx "${cluster_backends[@]}"
url="http://127.0.0.1:$nginx_port/cometd"
echo "# $(date -u +%FT%TZ) $NODES nodes, inflight $INFLIGHT, $DURATION measured, load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for tr in websocket long-polling; do
    out=$work/$tr-$round.json
    "$work/bench" --url "$url" --transport "$tr" --scenario fanout --subscribers 1 --disable-ack \
      --inflight "$INFLIGHT" --rate 0 --duration "$DURATION" --warmup 1s --out "$out" >/dev/null 2>"$work/$tr-$round.log"
    jq -r --arg r "$round" '"round \($r) \(.transport): \(.publishes_per_sec|floor) acknowledged publishes/s, lost \(.lost) dup \(.duplicated) ooo \(.out_of_order) errors \(.publish_errors), p99 \(.latency_ms.p99) ms"' "$out"
  done
done
