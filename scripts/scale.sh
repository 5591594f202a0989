#!/usr/bin/env bash
# Scale-out benchmark: does adding a node add capacity? For 1, 2 and 4
# nodes on one Redis behind nginx round-robin, each node in its own cgroup
# CPU quota (so that the nodes, not the machine's shared cores, are the
# bottleneck), the same fixed clients (cmd/bench many-channels: websocket
# or long-polling subscribers spread over channels, a few publishers)
# search the highest publish rate the cluster sustains with nothing lost,
# duplicated or reordered, no publish refused, and p99 delivery latency
# <= P99_MS. The same search runs on Faye nodes sharing Redis through
# faye-redis (npm, pinned in interop/package.json), each in the same
# quota. Prints one table (scripts/scale-table.mjs); raw JSON lines go to
# $OUT.
#
#   scripts/scale.sh                               # full run (about 1 h)
#   NODES="1 2" TRANSPORTS=websocket SERVERS=ours scripts/scale.sh
#   QUOTA=0.5 scripts/scale.sh                     # cores per node
#   QUOTA=0.05 PERIOD_MS=20 scripts/scale.sh       # a small quota in short slices (see below)
#   COMPARE=1 scripts/scale.sh                     # then scripts/compare.sh's cluster rows
#   BASELINE=fb14693 scripts/scale.sh              # also our nodes built from that commit ("base"), A/B in one run
#
# Needs root (cgroups), redis-server, nginx, node (Faye) and Go. Cgroup v2
# (cpu.max) or v1 (cpu.cfs_quota_us) is detected. Every process and cgroup
# it creates is removed on exit, also on failure or Ctrl-C.
#
# The quota is enforced per PERIOD_MS (CFS period, default 100 ms): a node
# that used its share waits for the next period, so with a small quota
# most of a period is a pause (0.05 core: 95 ms of every 100), which the
# p99 bound sees before the node runs out of CPU; a shorter period (20 ms:
# the kernel takes no quota under 1 ms) slices the same share finely.
#
# A trial passes with nothing lost, duplicated or reordered, no publish
# refused, the rate reached, publishers no more than P99_MS behind their
# schedule, and p99 <= P99_MS.
#
# The search: start at START_RATE publications/s, double while a trial
# passes (then MAX_RATE itself), then bisect STEPS times between the
# highest passing and the lowest failing rate; a row that passed at
# MAX_RATE did not reach the servers' capacity (raise MAX_RATE, or lower
# QUOTA: the clients and Redis share the machine's cores). Deliveries per second are the
# publication rate times SUBSCRIBERS/CHANNELS.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-1 2 4}
TRANSPORTS=${TRANSPORTS:-websocket long-polling}
BASELINE=${BASELINE:-}
SERVERS=${SERVERS:-ours ${BASELINE:+base }faye}
QUOTA=${QUOTA:-0.2}
PERIOD_MS=${PERIOD_MS:-100}
SUBSCRIBERS=${SUBSCRIBERS:-400}
CHANNELS=${CHANNELS:-20}
PUBLISHERS=${PUBLISHERS:-4}
DURATION=${DURATION:-5s}
START_RATE=${START_RATE:-50}
MAX_RATE=${MAX_RATE:-20000}
STEPS=${STEPS:-3}
P99_MS=${P99_MS:-250}
CLUSTER_GOMAXPROCS=${CLUSTER_GOMAXPROCS:-1}
COMPARE=${COMPARE:-0}

[ "$(id -u)" = 0 ] || { echo "scale.sh needs root for cgroup CPU quotas" >&2; exit 2; }
for s in $SERVERS; do [[ $s == ours || $s == faye || $s == base ]] || { echo "unknown server $s (ours, base, faye)" >&2; exit 2; }; done
[[ " $SERVERS " != *" base "* || -n $BASELINE ]] || { echo "server base needs BASELINE=<commit>" >&2; exit 2; }
for t in $TRANSPORTS; do [[ $t == websocket || $t == long-polling ]] || { echo "unknown transport $t" >&2; exit 2; }; done

work=$(mktemp -d)
OUT=${OUT:-$work/scale-results.jsonl}
pids=()
cgroups=() # created, deepest first when removed
cg_ver="" cg_root=""

# cg_detect: cgroup v2 if a cgroup2 mount offers the cpu controller,
# else the v1 cpu hierarchy.
cg_detect() {
  local m
  for m in $(awk '$3=="cgroup2"{print $2}' /proc/mounts); do
    if grep -qw cpu "$m/cgroup.controllers" 2>/dev/null; then cg_ver=2 cg_root=$m; return; fi
  done
  cg_root=$(awk '$3=="cgroup" && $4 ~ /(^|,)cpu(,|$)/ {print $2; exit}' /proc/mounts)
  [ -n "$cg_root" ] || { echo "no cgroup cpu controller found (v2 cpu.max or v1 cpu.cfs_quota_us)" >&2; exit 2; }
  cg_ver=1
}

# cg_make NAME: a cgroup of QUOTA cores under the script's own group;
# prints its path.
cg_make() {
  local top=$cg_root/bayeux-scale-$$ cg period quota
  period=$((PERIOD_MS * 1000))
  quota=$(awk -v q="$QUOTA" -v p="$period" 'BEGIN{printf "%d", q*p}')
  [ "$quota" -ge 1000 ] || { echo "QUOTA x PERIOD_MS is under the kernel's 1 ms minimum: raise PERIOD_MS" >&2; exit 2; }
  if [ ! -d "$top" ]; then
    mkdir "$top"; cgroups+=("$top")
    [ $cg_ver = 2 ] && echo +cpu >"$top/cgroup.subtree_control"
  fi
  cg=$top/$1
  mkdir "$cg"; cgroups=("$cg" "${cgroups[@]}")
  if [ $cg_ver = 2 ]; then
    echo "$quota $period" >"$cg/cpu.max"
  else
    echo $period >"$cg/cpu.cfs_period_us"
    echo "$quota" >"$cg/cpu.cfs_quota_us"
  fi
  echo "$cg"
}

# $work/in-cgroup CGROUP_PREFIX INDEX CMD...: execs CMD (same process,
# so its pid is the server's) in the cgroup CGROUP_PREFIX-INDEX (the
# launcher of start_cluster).
write_launcher() {
  cat >"$work/in-cgroup" <<'EOF'
#!/bin/sh
cg=$1-$2
shift 2
echo $$ >"$cg/cgroup.procs" && exec "$@"
EOF
  chmod +x "$work/in-cgroup"
}

stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
}

cleanup() {
  stop_all
  local cg
  for cg in "${cgroups[@]}"; do
    for _ in $(seq 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
    [ -d "$cg" ] && echo "could not remove cgroup $cg" >&2
  done
  rm -rf "$work/node" "$work/bench" "$work/node-base" "$work/base-src"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
cg_detect
write_launcher
echo "cgroup v$cg_ver at $cg_root; $QUOTA core per node per ${PERIOD_MS} ms period; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
[ -d interop/node_modules/faye-redis ] || (cd interop && npm ci --no-audit --no-fund --loglevel=error)
go build -o "$work/node" ./cmd/node
go build -o "$work/bench" ./cmd/bench
if [ -n "$BASELINE" ]; then # the baseline's node, built from its tree (the tool stays this build's)
  mkdir "$work/base-src"
  git archive "$BASELINE" | tar -x -C "$work/base-src"
  (cd "$work/base-src" && go build -o "$work/node-base" ./cmd/node)
  echo "baseline: $(git rev-parse --short "$BASELINE") ($(git log -1 --format=%cs "$BASELINE"))" >&2
fi

# start SERVER COUNT: Redis, COUNT nodes each in its cgroup, nginx; sets
# url, srv_pids (comma list) and aux_pids.
start() {
  local server=$1 count=$2 i u cgs=$cg_root/bayeux-scale-$$
  start_redis "redis-$server-$count"
  for i in $(seq "$count"); do cg_make "$server$count-$i" >/dev/null; done
  if [ "$server" = ours ]; then
    start_cluster "ours$count-" "$count" "redis://127.0.0.1:$redis_port" "$work/in-cgroup" "$cgs/$server$count"
  elif [ "$server" = base ]; then # its flags: those of bench-lib.sh the baseline has
    node_bin=$work/node-base api_flags=()
    start_cluster "base$count-" "$count" "redis://127.0.0.1:$redis_port" "$work/in-cgroup" "$cgs/$server$count"
    node_bin="" api_flags=(--api-listen=)
  else
    cluster_pids=() cluster_backends=()
    for i in $(seq "$count"); do
      "$work/in-cgroup" "$cgs/$server$count" "$i" node interop/bench-faye-server.mjs --redis "127.0.0.1:$redis_port" \
        >"$work/faye$count-$i.out" 2>"$work/faye$count-$i.err" &
      pids+=($!); cluster_pids+=($!)
      u=$(wait_line "$work/faye$count-$i.out" "BAYEUX_URL=")
      u=${u#http://}
      cluster_backends+=("${u%%/*}")
    done
  fi
  start_nginx "nginx-$server-$count" "${cluster_backends[@]}"
  url="http://127.0.0.1:$nginx_port/cometd"
  srv_pids=$(IFS=,; echo "${cluster_pids[*]}")
  aux_pids="$redis_pid,$nginx_pid,$(pgrep -d, -P "$nginx_pid" || true)"
  aux_pids=${aux_pids%,}
}

# trial SERVER COUNT TRANSPORT RATE: one bench run; appends its JSON line,
# tagged, to $OUT; succeeds if it passed.
trial() {
  local server=$1 count=$2 transport=$3 rate=$4 verdict
  : >"$work/one.json"
  "$work/bench" --url "$url" --scenario many-channels --transport "$transport" --subscribers "$SUBSCRIBERS" \
    --channels "$CHANNELS" --publishers "$PUBLISHERS" --rate "$rate" --duration "$DURATION" --warmup 1s \
    --drain 5s --disable-ack --server-pid "$srv_pids" --aux-pid "$aux_pids" --out "$work/one.json" \
    >/dev/null 2>>"$work/bench.err" || true
  [ -s "$work/one.json" ] || echo '{"failed_to_run":true}' >"$work/one.json"
  verdict=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").pop());
    const rate = Number(process.argv[2]), p99max = Number(process.argv[3]);
    const why = [];
    if (r.failed_to_run) why.push("run failed");
    else {
      if (r.lost || r.duplicated || r.out_of_order || r.malformed) why.push(`lost/dup/ooo ${r.lost}/${r.duplicated}/${r.out_of_order}`);
      if (r.publish_errors || r.connect_failures || r.sessions_failed) why.push(`failures ${r.publish_errors}/${r.connect_failures}/${r.sessions_failed}`);
      if (!(r.latency_ms && r.latency_ms.p99 <= p99max)) why.push(`p99 ${r.latency_ms ? r.latency_ms.p99.toFixed(0) : "?"} ms`);
      if (r.publishes_per_sec < 0.95 * rate) why.push(`rate reached ${r.publishes_per_sec.toFixed(0)}/s`);
      // Publishers that fell behind their schedule stretched the run: the
      // rate was not sustained (the tool, or acknowledgements, too slow).
      if (r.schedule_lag_ms > p99max) why.push(`publishers ${(r.schedule_lag_ms / 1000).toFixed(1)} s behind schedule`);
    }
    console.log(why.length ? "fail: " + why.join(", ") : "pass");
  ' "$work/one.json" "$rate" "$P99_MS")
  sed "s/^{/{\"server\":\"$server\",\"nodes\":$count,\"quota\":$QUOTA,\"rate\":$rate,\"pass\":$([ "$verdict" = pass ] && echo true || echo false),/" \
    "$work/one.json" >>"$OUT"
  echo "   $server x$count $transport rate $rate/s: $verdict" >&2
  [ "$verdict" = pass ]
}

# search SERVER COUNT TRANSPORT: the rate search (see the header).
search() {
  local lo=0 hi=0 rate=$START_RATE step mid
  while [ "$rate" -le "$MAX_RATE" ]; do
    if trial "$@" "$rate"; then lo=$rate rate=$((rate * 2)); else hi=$rate; break; fi
    # The last doubling overshoots MAX_RATE: try MAX_RATE itself.
    [ "$rate" -gt "$MAX_RATE" ] && [ "$lo" -lt "$MAX_RATE" ] && rate=$MAX_RATE
  done
  [ "$hi" = 0 ] && { echo "   $1 x$2 $3: passed at MAX_RATE=$MAX_RATE, capacity not reached" >&2; return; }
  for step in $(seq "$STEPS"); do
    mid=$(((lo + hi) / 2))
    [ "$mid" -le "$lo" ] && break
    if trial "$@" "$mid"; then lo=$mid; else hi=$mid; fi
  done
}

for server in $SERVERS; do
  for count in $NODES; do
    echo "== $server, $count node(s), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    start "$server" "$count"
    for transport in $TRANSPORTS; do search "$server" "$count" "$transport"; done
    stop_all
  done
done

node scripts/scale-table.mjs "$OUT"
echo "raw results: $OUT; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ "$COMPARE" = 1 ]; then
  echo "== scripts/compare.sh, cluster rows" >&2
  OUT=$work/compare-results.jsonl SERVERS="ours cluster" scripts/compare.sh
fi
