#!/usr/bin/env bash
# Side-by-side benchmark: our broker (one node, in-memory engine) and Faye's
# own Node server (npm faye, pinned in interop/package.json), driven by the
# same load tool (cmd/bench) through the same scenarios on this machine.
# Prints one table; the raw JSON lines go to $OUT (default
# compare-results.jsonl in a temp dir, path printed).
#
#   scripts/compare.sh                   # default scenarios, 8 s each
#   DURATION=20s scripts/compare.sh
#
# Server and load tool share the machine: compare deliveries per server
# CPU-second, and latency only below saturation.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8s}
work=$(mktemp -d)
OUT=${OUT:-$work/compare-results.jsonl}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

[ -d interop/node_modules/faye ] || (cd interop && npm ci --no-audit --no-fund --loglevel=error)
go build -o "$work/node" ./cmd/node
go build -o "$work/bench" ./cmd/bench

# wait_url FILE PREFIX: the URL a server prints after PREFIX.
wait_url() {
  for _ in $(seq 100); do
    if u=$(grep -m1 "^$2" "$1" 2>/dev/null); then echo "${u#"$2"}"; return; fi
    sleep 0.1
  done
  echo "server did not start: $(cat "$1")" >&2; exit 1
}

"$work/node" --listen 127.0.0.1:0 --publish-rate -1 --max-sessions-per-ip -1 --max-held-per-ip -1 >"$work/ours.out" 2>"$work/ours.err" &
pids+=($!); ours_pid=$!
node interop/bench-faye-server.mjs >"$work/faye.out" 2>"$work/faye.err" &
pids+=($!); faye_pid=$!
ours_url=$(wait_url "$work/ours.out" "bayeux node serving ")
faye_url=$(wait_url "$work/faye.out" "BAYEUX_URL=")

# Scenarios: name|bench arguments. Faye has no ack extension; both run
# without it so they do the same work.
scenarios=(
  "fanout-ws|--scenario fanout --transport websocket --subscribers 100"
  "fanout-lp|--scenario fanout --transport long-polling --subscribers 100"
  "channels-ws|--scenario many-channels --transport websocket --subscribers 1000 --channels 100 --publishers 10 --rate 1000"
)
for s in "${scenarios[@]}"; do
  name=${s%%|*}; args=${s#*|}
  for server in ours faye; do
    url=ours_url pid=ours_pid
    [ "$server" = faye ] && url=faye_url pid=faye_pid
    echo "== $name on $server" >&2
    # shellcheck disable=SC2086
    "$work/bench" --url "${!url}" $args --duration "$DURATION" --warmup 1s --disable-ack \
      --server-pid "${!pid}" --out "$work/one.json" || echo "(run failed)" >&2
    if [ -s "$work/one.json" ]; then
      sed "s/^{/{\"server\":\"$server\",\"name\":\"$name\",/" "$work/one.json" >>"$OUT"
      : >"$work/one.json"
    fi
  done
done

node - "$OUT" <<'JS'
const fs = require("fs");
const rows = fs.readFileSync(process.argv[2], "utf8").trim().split("\n").filter(Boolean).map(JSON.parse);
const pad = (s, n) => String(s).padStart(n);
console.log(["scenario", "server", "deliv/s", "deliv/server-cpu-s", "p50 ms", "p99 ms", "lost", "dup", "ooo", "rss MiB"].map((h, i) => pad(h, i < 2 ? 12 : 12)).join(" "));
for (const r of rows) {
  console.log([r.name, r.server, r.deliveries_per_sec.toFixed(0), r.deliveries_per_server_cpu_sec.toFixed(0),
    r.latency_ms.p50.toFixed(2), r.latency_ms.p99.toFixed(2), r.lost, r.duplicated, r.out_of_order,
    (r.server_rss_bytes / 1048576).toFixed(1)].map(v => pad(v, 12)).join(" "));
}
const by = (n, s) => rows.find(r => r.name === n && r.server === s);
for (const n of [...new Set(rows.map(r => r.name))]) {
  const o = by(n, "ours"), f = by(n, "faye");
  if (o && f && f.deliveries_per_server_cpu_sec > 0)
    console.log(`${n}: ours/faye deliveries per server CPU-second = ${(o.deliveries_per_server_cpu_sec / f.deliveries_per_server_cpu_sec).toFixed(1)}x; p99 ours/faye = ${(o.latency_ms.p99 / f.latency_ms.p99).toFixed(2)}`);
}
JS
echo "raw results: $OUT" >&2
