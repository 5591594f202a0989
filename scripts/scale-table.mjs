// Prints the table of scripts/scale.sh from its JSON lines (one per trial
// of cmd/bench, tagged with server, nodes, quota, rate and pass): per
// server, transport and node count, the highest passing rate, the
// deliveries per second it carried, its p99, the server and aux (Redis,
// nginx) CPU per delivery, and the capacity relative to the same server's
// one-node row; then the trials above it that failed, with why.
//
//   node scripts/scale-table.mjs scale-results.jsonl
import * as fs from "node:fs";

const rows = fs.readFileSync(process.argv[2], "utf8").trim().split("\n").filter(Boolean).map(JSON.parse)
    .filter(r => r.server && r.transport);
const f = (v, d = 0) => (v === undefined || v === null || !Number.isFinite(v) ? "-" : v.toFixed(d));
const key = r => `${r.server}|${r.transport}|${r.nodes}`;
const groups = new Map();
for (const r of rows) {
    if (!groups.has(key(r))) groups.set(key(r), []);
    groups.get(key(r)).push(r);
}
const best = new Map();
for (const [k, rs] of groups) {
    const passed = rs.filter(r => r.pass).sort((a, b) => b.rate - a.rate);
    best.set(k, passed[0]);
}
const cpuPerDelivery = (cpu, r) => (r.delivered > 0 ? (cpu * 1e6) / r.delivered : NaN);
const cols = [
    ["server", 6], ["transport", 12], ["nodes", 5], ["quota", 5], ["pub/s", 7], ["deliv/s", 9], ["p99 ms", 7],
    ["srv µs/deliv", 12], ["aux µs/deliv", 12], ["x 1 node", 8], ["lowest failing rate: why", 0],
];
const line = vals => vals.map((v, i) => (cols[i][1] ? String(v).padStart(cols[i][1]) : " " + v)).join(" ");
console.log(line(cols.map(c => c[0])));
const order = [...groups.keys()].sort((a, b) => {
    const [sa, ta, na] = a.split("|"), [sb, tb, nb] = b.split("|");
    return sa.localeCompare(sb) || ta.localeCompare(tb) || Number(na) - Number(nb);
});
for (const k of order) {
    const [server, transport, nodes] = k.split("|");
    const b = best.get(k);
    const one = best.get(`${server}|${transport}|1`);
    const failed = groups.get(k).filter(r => !r.pass && (!b || r.rate > b.rate)).sort((x, y) => x.rate - y.rate)[0];
    let why = "-";
    if (failed) {
        const w = [];
        if (failed.failed_to_run) w.push("run failed");
        if (failed.lost || failed.duplicated || failed.out_of_order) w.push(`lost/dup/ooo ${failed.lost}/${failed.duplicated}/${failed.out_of_order}`);
        if (failed.publish_errors || failed.connect_failures || failed.sessions_failed) w.push(`failures ${failed.publish_errors}/${failed.connect_failures}/${failed.sessions_failed}`);
        if (failed.latency_ms) w.push(`p99 ${f(failed.latency_ms.p99)} ms`);
        if (failed.publishes_per_sec !== undefined) w.push(`${f(failed.publishes_per_sec)} pub/s reached`);
        why = `${failed.rate}: ${w.join(", ")}`;
    }
    console.log(line([
        server, transport, nodes, b ? b.quota : "-", b ? b.rate : "none", b ? f(b.deliveries_per_sec) : "-",
        b ? f(b.latency_ms.p99, 1) : "-", b ? f(cpuPerDelivery(b.server_cpu_seconds, b), 1) : "-",
        b ? f(cpuPerDelivery(b.aux_cpu_seconds || 0, b), 1) : "-",
        b && one ? f(b.deliveries_per_sec / one.deliveries_per_sec, 2) + "x" : "-", why,
    ]));
}
