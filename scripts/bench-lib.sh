# Shared by scripts/compare.sh and scripts/scale.sh (sourced, not run):
# waiting for a server's address line, free loopback ports, Redis, nginx
# round-robin over backends, a cluster of our nodes.
# Needs: $work (a temp dir) and the pids array (every started process is
# added, for the caller's cleanup).

# wait_line FILE PREFIX: the rest of the first line of FILE after PREFIX
# (20 s at most).
wait_line() {
  for _ in $(seq 400); do
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

# listening PORT PID: waits until something accepts on 127.0.0.1:PORT
# (true) or PID has exited (false; 20 s at most: the machine may be busy).
listening() {
  for _ in $(seq 400); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# start_redis NAME: a redis-server without persistence; sets redis_port
# and redis_pid. A port taken meanwhile by another process: another port.
start_redis() {
  for _ in 1 2 3 4 5; do
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no >"$work/$1.log" 2>&1 &
    pids+=($!); redis_pid=$!
    listening "$redis_port" "$redis_pid" && return
  done
  echo "redis-server did not start: $(tail -3 "$work/$1.log")" >&2; exit 1
}

# write_nginx_conf DIR BACKENDS PORT: nginx.conf of start_nginx.
write_nginx_conf() {
  local n=$1
  mkdir -p "$n" && chmod 777 "$n"
  cat >"$n/nginx.conf" <<EOF
worker_processes 1;
error_log $n/error.log warn;
pid $n/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  upstream bayeux {
$2    keepalive 1024;
  }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:$3;
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
}

# start_nginx NAME BACKENDS...: nginx round-robin over host:port backends
# (the balancer config of internal/testproc.StartBalancer); sets
# nginx_port and nginx_pid.
start_nginx() {
  local n=$work/$1 backends="" b
  shift
  for b in "$@"; do backends+="    server $b max_fails=0;"$'\n'; done
  for _ in 1 2 3 4 5; do
    nginx_port=$(free_port)
    write_nginx_conf "$n" "$backends" "$nginx_port"
    nginx -c "$n/nginx.conf" -p "$n" -g "daemon off;" >"$n/stdout" 2>&1 &
    pids+=($!); nginx_pid=$!
    listening "$nginx_port" "$nginx_pid" && return
  done
  echo "nginx did not start: $(tail -3 "$n/error.log" "$n/stdout")" >&2; exit 1
}

# The server API off (a build from before it had no --api-listen: set
# api_flags=() for it).
api_flags=(--api-listen=)

# Our node with the limits a benchmark would trip (one client address,
# thousands of sessions, unthrottled publishers) turned off.
node_flags=(--publish-rate -1 --max-sessions-per-ip -1 --max-held-per-ip -1 --max-sessions-per-browser -1
  --demo=false --pprof --log-level warn)

# start_cluster NAME COUNT REDIS_URL [LAUNCHER...]: COUNT of our nodes
# ($node_bin if set, else $work/node; GOMAXPROCS=$CLUSTER_GOMAXPROCS;
# extra flags api_flags, by default the server API off) on Redis, joined by gossip,
# each started through LAUNCHER (a command that gets the node's index and
# then the command line; none: run directly); waits until every node sees
# COUNT members. Sets cluster_pids (array), cluster_bases (array of
# http://host:port) and cluster_backends (array of host:port).
start_cluster() {
  local name=$1 count=$2 rurl=$3 i u hp m g
  shift 3
  local join=()
  cluster_pids=() cluster_bases=() cluster_backends=()
  for i in $(seq "$count"); do
    local launch=()
    [ $# -gt 0 ] && launch=("$@" "$i")
    "${launch[@]}" env ${NODE_GOGC:+GOGC=$NODE_GOGC} ${CLUSTER_GOMAXPROCS:+GOMAXPROCS=$CLUSTER_GOMAXPROCS} "${node_bin:-$work/node}" \
      --listen 127.0.0.1:0 "${api_flags[@]}" --redis "$rurl" --gossip-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
      "${join[@]}" "${node_flags[@]}" >"$work/$name$i.out" 2>"$work/$name$i.err" &
    pids+=($!); cluster_pids+=($!)
    u=$(wait_line "$work/$name$i.out" "bayeux node serving ")
    cluster_bases+=("${u%/cometd}")
    hp=${u#http://}
    cluster_backends+=("${hp%%/*}")
    if [ "$i" = 1 ]; then
      g=$(wait_line "$work/${name}1.out" "bayeux node gossip ")
      join=(--join "${g%% *}")
    fi
  done
  for i in $(seq "$count"); do
    for _ in $(seq 200); do
      m=$(curl -sf "${cluster_bases[i-1]}/metrics" | awk '/^bayeux_gossip_members /{print $2}') || true
      [ "$m" = "$count" ] && break
      sleep 0.05
    done
    [ "$m" = "$count" ] || { echo "cluster did not converge (node $i sees ${m:-?} of $count members)" >&2; exit 1; }
  done
}
