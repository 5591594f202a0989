// Prints the table of scripts/compare.sh from its JSON lines (one per run
// of cmd/bench, each tagged with server, name and round): every run, then
// per scenario the ratios of the issue-5 targets (maxtp-ws, which has no
// target: the deliveries per server CPU-second ratios alone), computed
// within a round (same machine state) and summarised as median [min-max]
// over rounds.
//
//   node scripts/compare-table.mjs compare-results.jsonl
import * as fs from "node:fs";

const rows = fs.readFileSync(process.argv[2], "utf8").trim().split("\n").filter(Boolean).map(JSON.parse);
const f = (v, d = 0) => (v === undefined || v === null || Number.isNaN(v) ? "-" : v.toFixed(d));
const cols = [
  ["scenario", 12, r => r.name], ["server", 8, r => r.server], ["rd", 3, r => r.round],
  ["deliv/s", 9, r => f(r.deliveries_per_sec)], ["deliv/srv-cpu-s", 15, r => f(r.deliveries_per_server_cpu_sec)],
  ["p50 ms", 7, r => f(r.latency_ms.p50, 2)], ["p99 ms", 7, r => f(r.latency_ms.p99, 2)],
  ["lost/dup/ooo", 12, r => `${r.lost}/${r.duplicated}/${r.out_of_order}`],
  ["fail", 4, r => (r.publish_errors || 0) + (r.connect_failures || 0) + (r.sessions_failed || 0)],
  ["srv cpu s", 9, r => f(r.server_cpu_seconds, 2)], ["aux cpu s", 9, r => (r.aux_cpu_seconds ? f(r.aux_cpu_seconds, 2) : "-")],
  ["tool cpu s", 10, r => f(r.tool_cpu_seconds, 2)], ["rss MiB", 7, r => f(r.server_rss_bytes / 1048576, 1)],
];
const line = vals => vals.map((v, i) => String(v).padStart(cols[i][1])).join(" ");
console.log(line(cols.map(c => c[0])));
for (const r of rows) console.log(line(cols.map(c => c[2](r))));

const median = xs => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const summary = (xs, d, unit = "") => xs.length === 0 ? "n/a" :
  xs.length === 1 ? f(xs[0], d) + unit : `${f(median(xs), d)}${unit} [${f(Math.min(...xs), d)}-${f(Math.max(...xs), d)}] over ${xs.length} rounds`;
// ratio(name, a, b, fn): fn(rowA, rowB) for every round that has both.
const ratio = (name, a, b, fn) => {
  const out = [];
  for (const ra of rows.filter(r => r.name === name && r.server === a)) {
    const rb = rows.find(r => r.name === name && r.server === b && r.round === ra.round);
    if (rb) {
      const v = fn(ra, rb);
      if (Number.isFinite(v)) out.push(v);
    }
  }
  return out;
};
const eff = (x, y) => x.deliveries_per_server_cpu_sec / y.deliveries_per_server_cpu_sec;
const p99 = (x, y) => x.latency_ms.p99 / y.latency_ms.p99;
const clean = r => r.lost === 0 && r.duplicated === 0 && r.out_of_order === 0 && !r.sessions_failed && !r.publish_errors;
const targets = {"fanout-ws": 10, "fanout-lp": 5};
// Saturating scenarios: no target, and latency there is queueing, so only
// the deliveries per server CPU-second ratios.
const saturating = new Set(["maxtp-ws"]);

console.log("");
for (const name of [...new Set(rows.map(r => r.name))]) {
  const msgs = [];
  const e = ratio(name, "ours", "faye", eff);
  if (saturating.has(name)) {
    if (e.length) msgs.push(`ours/faye deliveries per server CPU-s = ${summary(e, 2, "x")} (ratio)`);
    const c = ratio(name, "cluster", "ours", eff);
    if (c.length) msgs.push(`3 nodes/1 node deliveries per server CPU-s = ${summary(c, 2, "x")} (ratio)`);
  } else {
    if (e.length) msgs.push(`ours/faye deliveries per server CPU-s = ${summary(e, 2, "x")}` +
      (targets[name] ? ` (target >= ${targets[name]}x: ${median(e) >= targets[name] ? "met" : "NOT met"})` : ""));
    const p = ratio(name, "ours", "faye", p99);
    if (p.length) msgs.push(`p99 ours/faye = ${summary(p, 2)}` +
      (name === "channels-ws" ? ` (target <= 0.20: ${median(p) <= 0.2 ? "met" : "NOT met"})` : ""));
    const cp = ratio(name, "cluster", "ours", p99);
    if (cp.length) msgs.push(`p99 3 nodes/1 node = ${summary(cp, 2)}` +
      (name === "channels-ws" ? ` (target <= 2: ${median(cp) <= 2 ? "met" : "NOT met"})` : ""));
    const cc = ratio(name, "cluster", "ours", (x, y) => y.deliveries_per_server_cpu_sec / x.deliveries_per_server_cpu_sec);
    if (cc.length) msgs.push(`server CPU per delivery 3 nodes/1 node = ${summary(cc, 2)}` +
      (name === "channels-ws" ? ` (target <= 1.5: ${median(cc) <= 1.5 ? "met" : "NOT met"})` : ""));
  }
  const bad = rows.filter(r => r.name === name && !clean(r)).map(r => `${r.server}#${r.round}`);
  if (bad.length) msgs.push(`RUNS WITH LOSS/DUP/OOO/FAILURES: ${bad.join(", ")}`);
  console.log(`${name}: ${msgs.join("; ")}`);
}
