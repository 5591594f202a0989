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
go build -o "$work/node" ./cmd/node
go build -o "$work/bench" ./cmd/bench

# wait_line FILE PREFIX: the rest of the first line of FILE after PREFIX.
wait_line() {
  for _ in $(seq 200); do
    if u=$(grep -m1 "^$2" "$1" 2>/dev/null); then echo "${u#"$2"}"; return; fi
    sleep 0.05
  done
  echo "server did not start: $(cat "$1" "${1%.out}.err" 2>/dev/null)" >&2; exit 1
}
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
# Our node with the limits a benchmark would trip (one client address,
# thousands of sessions, unthrottled publishers) turned off.
node_flags=(--publish-rate -1 --max-sessions-per-ip -1 --max-held-per-ip -1 --max-sessions-per-browser -1
  --demo=false --pprof --log-level warn)
has() { [[ " $SERVERS " == *" $1 "* ]]; }
declare -A url pid aux

if has ours; then
  env ${NODE_GOGC:+GOGC=$NODE_GOGC} "$work/node" --listen 127.0.0.1:0 --api-listen= "${node_flags[@]}" >"$work/ours.out" 2>"$work/ours.err" &
  pids+=($!); pid[ours]=$!
  url[ours]=$(wait_line "$work/ours.out" "bayeux node serving ")
fi
if has faye; then
  node interop/bench-faye-server.mjs >"$work/faye.out" 2>"$work/faye.err" &
  pids+=($!); pid[faye]=$!
  url[faye]=$(wait_line "$work/faye.out" "BAYEUX_URL=")
fi
if has cluster; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no >"$work/redis.log" 2>&1 &
  pids+=($!); redis_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.05; done
  join=() cpids=() cbases=() backends=""
  for i in 1 2 3; do
    env ${NODE_GOGC:+GOGC=$NODE_GOGC} ${CLUSTER_GOMAXPROCS:+GOMAXPROCS=$CLUSTER_GOMAXPROCS} "$work/node" --listen 127.0.0.1:0 --api-listen= --redis "redis://127.0.0.1:$rport" --gossip-listen 127.0.0.1:0 \
      --grpc-listen 127.0.0.1:0 "${join[@]}" "${node_flags[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
    pids+=($!); cpids+=($!)
    u=$(wait_line "$work/node$i.out" "bayeux node serving ")
    cbases+=("${u%/cometd}")
    hp=${u#http://}
    backends+="    server ${hp%%/*} max_fails=0;"$'\n'
    if [ $i = 1 ]; then
      g=$(wait_line "$work/node1.out" "bayeux node gossip ")
      join=(--join "${g%% *}")
    fi
  done
  for n in 1 2 3; do # every node sees three members
    for _ in $(seq 200); do
      m=$(curl -sf "${cbases[n-1]}/metrics" | awk '/^bayeux_gossip_members /{print $2}') || true
      [ "$m" = 3 ] && break
      sleep 0.05
    done
    [ "$m" = 3 ] || { echo "cluster did not converge (node $n sees ${m:-?} members)" >&2; exit 1; }
  done
  lport=$(free_port)
  mkdir -p "$work/nginx" && chmod 777 "$work/nginx"
  n=$work/nginx
  cat >"$n/nginx.conf" <<EOF
worker_processes 1;
error_log $n/error.log warn;
pid $n/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  upstream bayeux {
$backends  }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$lport;
    client_body_temp_path $n/body;
    proxy_temp_path $n/proxy;
    fastcgi_temp_path $n/fastcgi;
    uwsgi_temp_path $n/uwsgi;
    scgi_temp_path $n/scgi;
    client_max_body_size 2m;
    location / {
      proxy_pass http://bayeux;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 180s;
      proxy_send_timeout 180s;
      proxy_next_upstream off;
    }
  }
}
EOF
  nginx -c "$n/nginx.conf" -p "$n" -g "daemon off;" >"$n/stdout" 2>&1 &
  pids+=($!); nginx_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$lport") 2>/dev/null && break; sleep 0.05; done
  url[cluster]="http://127.0.0.1:$lport/cometd"
  pid[cluster]=$(IFS=,; echo "${cpids[*]}")
  aux[cluster]="$redis_pid,$nginx_pid,$(pgrep -d, -P "$nginx_pid" || true)"
  aux[cluster]=${aux[cluster]%,}
fi

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
      # shellcheck disable=SC2086
      "$work/bench" --url "${url[$server]}" $args --duration "$DURATION" --warmup 1s --disable-ack \
        --inflight "$INFLIGHT" --server-pid "${pid[$server]}" "${extra[@]}" --out "$work/one.json" || echo "(run failed)" >&2
      [ -z "$prof" ] || wait "$prof"
      if [ -s "$work/one.json" ]; then
        sed "s/^{/{\"server\":\"$server\",\"name\":\"$name\",\"round\":$round,/" "$work/one.json" >>"$OUT"
        : >"$work/one.json"
      fi
    done
  done
done

node scripts/compare-table.mjs "$OUT"
echo "raw results: $OUT" >&2
