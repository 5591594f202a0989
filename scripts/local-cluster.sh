#!/usr/bin/env bash
# A local cluster without Docker: redis-server, three nodes and an nginx
# round-robin balancer (no stickiness), all on free loopback ports. Prints
# the URL to open; Ctrl-C (or SIGTERM) stops every process it started, by
# PID, and removes its temporary directory. Nothing is written into the
# checkout. Linux (reads /proc).
#
#   scripts/local-cluster.sh                 # builds cmd/node, starts everything
#   NODES=5 scripts/local-cluster.sh         # another number of nodes
#   NODE_BIN=path/to/bayeux-node scripts/local-cluster.sh   # a binary already built
#
# Needs redis-server and nginx on PATH (apt-get install redis-server nginx)
# and Go unless NODE_BIN is given. Extra arguments go to every node, e.g.
# `scripts/local-cluster.sh --log-format json`.
set -euo pipefail

NODES=${NODES:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "local-cluster: $*" >&2; exit 1; }
for cmd in redis-server nginx; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd is not installed (apt-get install redis-server nginx)"
done
[[ "$NODES" =~ ^[1-9][0-9]?$ ]] || die "NODES=$NODES: want a number of nodes from 1 to 99"

dir=$(mktemp -d "${TMPDIR:-/tmp}/bayeux-local.XXXXXX")
redis_pid=""
pids=()    # every other process started (nodes, balancer)
stopping=0

# alive tells whether process $1 runs (a zombie, exited but not yet
# waited for, does not).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# stop_pids sends SIGTERM to the processes $@, gives them 10s (a node
# drains within its --shutdown-grace, 5s below), then SIGKILL, and waits
# for each.
stop_pids() {
  local pid
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do
    for _ in $(seq 1 100); do
      alive "$pid" || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# stop ends every process started, by PID: the balancer and the nodes
# first (they drain while Redis is still up), Redis last; then removes the
# temporary directory.
stop() {
  ((stopping)) && return
  stopping=1
  trap '' INT TERM
  stop_pids "${pids[@]}"
  [[ -z "$redis_pid" ]] || stop_pids "$redis_pid"
  rm -rf "$dir"
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# free_port prints a loopback TCP port nothing listens on (a moment ago).
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

# wait_tcp waits until 127.0.0.1:$1 accepts connections while process $2 lives.
wait_tcp() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    alive "$2" || return 1
    sleep 0.05
  done
  return 1
}

# wait_line waits until file $1 has a line starting with $2 and prints
# the rest of it, while process $3 lives.
wait_line() {
  local line
  for _ in $(seq 1 400); do
    line=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
    if [[ -n "$line" ]]; then
      echo "${line#"$2"}"
      return 0
    fi
    alive "$3" || return 1
    sleep 0.05
  done
  return 1
}

bin=${NODE_BIN:-}
if [[ -z "$bin" ]]; then
  command -v go >/dev/null 2>&1 || die "go is not installed (or set NODE_BIN to a built node)"
  echo "building cmd/node ..." >&2
  (cd "$repo" && go build -o "$dir/bayeux-node" ./cmd/node)
  bin=$dir/bayeux-node
fi

# Redis: no persistence, its working directory in $dir (no dump.rdb in the checkout).
for attempt in 1 2 3; do
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize no --logfile "$dir/redis.log" &
  redis_pid=$!
  wait_tcp "$redis_port" "$redis_pid" && break
  ((attempt < 3)) || die "redis-server did not start: $(tail -n 5 "$dir/redis.log" 2>/dev/null)"
  stop_pids "$redis_pid" # the port was taken meanwhile: another one
  redis_pid=""
done
redis_url=redis://127.0.0.1:$redis_port

# Nodes: every port chosen by the kernel (127.0.0.1:0) and read back from
# what the node prints. The balancer is the only client address the
# nodes see: --trusted-proxies makes the per-address limits apply to the
# real clients (X-Forwarded-For).
# The server API: one random key for every node (a file in $dir, removed
# on exit); any node's API acts on the whole cluster.
api_key=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
printf '%s\n' "$api_key" >"$dir/api-keys"
backends=()
join=""
for ((i = 1; i <= NODES; i++)); do
  args=(--listen 127.0.0.1:0 --api-listen 127.0.0.1:0 --api-key-file "$dir/api-keys" --redis "$redis_url" --node-id "node$i"
    --gossip-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0
    --trusted-proxies 127.0.0.1 --shutdown-grace 5s)
  [[ -n "$join" ]] && args+=(--join "$join")
  "$bin" "${args[@]}" "$@" >"$dir/node$i.out" 2>"$dir/node$i.log" &
  pids+=($!)
  url=$(wait_line "$dir/node$i.out" "bayeux node serving " "${pids[-1]}") ||
    die "node$i did not start: $(tail -n 5 "$dir/node$i.log")"
  gossip=$(wait_line "$dir/node$i.out" "bayeux node gossip " "${pids[-1]}") || die "node$i printed no gossip address"
  [[ -z "$join" ]] && join=${gossip%% *}
  hostport=${url#http://}
  backends+=("${hostport%%/*}")
done

# The balancer: plain round-robin, websocket upgrades passed through, long
# polls not buffered (the same setup as the cluster tests).
mkdir -p "$dir/nginx"
for attempt in 1 2 3; do
  lb_port=$(free_port)
  {
    echo "worker_processes 1;"
    echo "error_log $dir/nginx/error.log warn;"
    echo "pid $dir/nginx/nginx.pid;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    echo "  access_log off;"
    echo "  upstream bayeux {"
    for b in "${backends[@]}"; do echo "    server $b max_fails=0;"; done
    echo "    keepalive 1024;"
    echo "  }"
    echo "  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }"
    echo "  server {"
    echo "    listen 127.0.0.1:$lb_port;"
    for t in client_body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $dir/nginx/$t;"; done
    echo "    client_max_body_size 2m;"
    echo "    location / {"
    echo "      proxy_pass http://bayeux;"
    echo "      proxy_http_version 1.1;"
    echo "      proxy_set_header Upgrade \$http_upgrade;"
    echo "      proxy_set_header Connection \$connection_upgrade;"
    echo "      proxy_set_header Host \$host;"
    echo "      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
    echo "      proxy_buffering off;"
    echo "      proxy_request_buffering off;"
    echo "      proxy_read_timeout 180s;"
    echo "      proxy_send_timeout 180s;"
    echo "    }"
    echo "  }"
    echo "}"
  } >"$dir/nginx/nginx.conf"
  nginx -e "$dir/nginx/error.log" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
  pids+=($!)
  wait_tcp "$lb_port" "${pids[-1]}" && break
  ((attempt < 3)) || die "nginx did not start: $(tail -n 5 "$dir/nginx/error.log" 2>/dev/null)"
  stop_pids "${pids[-1]}" # the port was taken meanwhile: another one
  unset 'pids[-1]'
  pids=("${pids[@]}")
done

base=http://127.0.0.1:$lb_port
api_url=$(awk '$1 == "api" { print $2; exit }' "$dir/node1.out")
admin_url=$(awk '$1 == "admin" { print $2; exit }' "$dir/node1.out")
cat <<EOF
Local Bayeux cluster: Redis, $NODES nodes, nginx round-robin (no Docker)
  demo     $base/          open in a browser: chat, served by any node
  cluster  $base/cluster   live view of the nodes
  bayeux   $base/cometd    endpoint for CometD and Faye clients
  api      ${api_url}   server API of node1 (any node's acts on the whole cluster)
  admin    ${admin_url}   admin console (sign in with the key)
  api-key  ${api_key}
           e.g. curl -H "Authorization: Bearer ${api_key}" -d '{"channel":"/chat/lobby","data":{"name":"backend","text":"hello"}}' ${api_url}publish
  nodes    ${backends[*]}   (each serves /metrics and /readyz)
  redis    $redis_url
  logs     $dir/*.log (removed on exit)
Ctrl-C stops everything.
EOF

# Until a signal (the traps stop everything) or a process dies.
set +e
wait -n "$redis_pid" "${pids[@]}"
echo "local-cluster: a process exited; stopping the others" >&2
exit 1
