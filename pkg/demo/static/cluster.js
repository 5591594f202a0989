// The cluster page: every node publishes its stats on /cluster/nodes every
// second; this page keeps the latest report per node and drops a node not
// heard from for STALE_MS.
import {makeClient, pageOptions} from "./client.js";

const $ = (id) => document.getElementById(id);
const log = (...args) => console.debug("[bayeux]", ...args);
const STALE_MS = 5000;

const nodes = new Map(); // node id -> {stats, seen (local ms)}

function num(v) {
    return typeof v === "number" && isFinite(v) ? v : 0;
}

function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
}

function uptime(sec) {
    sec = Math.floor(num(sec));
    const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
}

function render() {
    const now = Date.now();
    for (const [id, n] of nodes) {
        const limit = Math.max(STALE_MS, 3 * num(n.stats.intervalMs));
        if (now - n.seen > limit) {
            nodes.delete(id);
        }
    }
    const rows = [...nodes.values()].sort((a, b) => String(a.stats.node).localeCompare(String(b.stats.node)));
    const body = $("node-rows");
    body.replaceChildren();
    let sessions = 0, pubs = 0, dels = 0;
    for (const n of rows) {
        const s = n.stats;
        sessions += num(s.sessions);
        pubs += num(s.publishesPerSec);
        dels += num(s.deliveriesPerSec);
        const tr = document.createElement("tr");
        tr.dataset.node = String(s.node);
        tr.dataset.tag = typeof s.tag === "string" ? s.tag : "";
        tr.append(cell(String(s.node)), cell(typeof s.tag === "string" && s.tag ? s.tag : "-"), cell(String(num(s.sessions))), cell(num(s.publishesPerSec).toFixed(1)),
            cell(num(s.deliveriesPerSec).toFixed(1)), cell(String(num(s.patterns))), cell(String(num(s.handshakes))),
            cell(uptime(s.uptimeSec)), cell(((now - n.seen) / 1000).toFixed(1) + " s ago"));
        body.append(tr);
    }
    $("node-count").textContent = String(rows.length);
    $("session-total").textContent = String(sessions);
    $("publish-total").textContent = pubs.toFixed(1);
    $("delivery-total").textContent = dels.toFixed(1);
    document.body.dataset.nodes = String(rows.length);
}

async function main() {
    for (const a of document.querySelectorAll("nav a")) {
        const u = new URL(a.href);
        u.search = location.search;
        a.href = u.href;
    }
    const opts = pageOptions();
    document.body.dataset.client = opts.kind;
    $("client-kind").textContent = opts.kind === "cometd" ? "CometD" : "bayeux.js";
    let client;
    try {
        client = await makeClient(opts, log);
    } catch (e) {
        document.body.dataset.state = "error";
        $("state").textContent = "error: " + e.message;
        return;
    }
    window.bayeuxDemo = {client, nodes};
    const status = () => {
        document.body.dataset.state = client.state;
        $("state").textContent = client.state;
        $("state").className = "badge " + client.state;
        document.body.dataset.transport = client.transportName || "-";
        $("transport").textContent = client.transportName || "-";
    };
    client.onState(status);
    client.onHandshake(status);
    setInterval(render, 500);
    window.addEventListener("pagehide", () => client.beacon());
    await client.start();
    await client.subscribe("/cluster/nodes", (m) => {
        const s = m.data;
        if (s && typeof s === "object" && typeof s.node === "string" && s.node) {
            nodes.set(s.node, {stats: s, seen: Date.now()});
        }
    });
    status();
}

main();
