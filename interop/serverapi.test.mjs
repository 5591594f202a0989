// The server API (HTTP, on each node's API listener) acting on unchanged
// real clients (CometD and Faye, long-polling and websocket) connected
// through the balancer. Driven by e2e/serverapi_interop_test.go:
//   BAYEUX_URL, BAYEUX_DEBUG_URL (the balancer), BAYEUX_API_URLS (the API
//   base URL of every node, comma-separated), BAYEUX_API_KEY.
import {test, after} from "node:test";
import assert from "node:assert/strict";
import {CometDClient, FayeClient} from "./lib/clients.mjs";
import {uniq, waitFor} from "./lib/common.mjs";

const apiURLs = (process.env.BAYEUX_API_URLS || "").split(",").filter(Boolean);
const apiKey = process.env.BAYEUX_API_KEY;
if (apiURLs.length < 2 || !apiKey) {
    throw new Error("BAYEUX_API_URLS (two or more) and BAYEUX_API_KEY must be set");
}

const KINDS = [["cometd", "long-polling"], ["cometd", "websocket"], ["faye", "long-polling"], ["faye", "websocket"]];
const opened = [];

after(async () => {
    await Promise.all(opened.map((c) => c.close()));
});

async function api(base, method, path, body) {
    const res = await fetch(base + "/api/v1/" + path, {
        method,
        headers: {"Authorization": "Bearer " + apiKey, "Content-Type": "application/json"},
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(15000),
    });
    const out = await res.json();
    if (!res.ok) {
        throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(out)}`);
    }
    return out;
}

async function open(kind, transport) {
    const c = kind === "cometd" ? await CometDClient.open({transport}) : await FayeClient.open({transport});
    opened.push(c);
    await c.handshake();
    return c;
}

// The node id behind each API URL.
async function selves() {
    return Promise.all(apiURLs.map(async (u) => (await api(u, "GET", "nodes")).self));
}

async function ownerOf(clientId, ch) {
    const p = await api(apiURLs[0], "GET", "presence?channel=" + encodeURIComponent(ch));
    const s = p.sessions.find((x) => x.clientId === clientId);
    return s ? s.node : null;
}

test("publish through every node's API reaches every real client in order; presence and channels span the nodes", async () => {
    const ch = "/srvapi/" + uniq("orders");
    const nodes = await selves();
    const clients = [];
    for (const [kind, transport] of KINDS) {
        clients.push(await open(kind, transport));
    }
    // More clients, through the balancer, until every node owns one (round
    // robin makes this quick; bounded).
    const owners = async () => new Set((await api(apiURLs[0], "GET", "presence?channel=" + encodeURIComponent(ch))).sessions.map((s) => s.node));
    for (const c of clients) {
        await c.subscribe(ch);
    }
    for (let i = 0; (await owners()).size < nodes.length; i++) {
        assert.ok(i < 12, "sessions did not spread over every node through the balancer");
        const [kind, transport] = KINDS[i % KINDS.length];
        const c = await open(kind, transport);
        await c.subscribe(ch);
        clients.push(c);
    }
    const ids = clients.map((c) => c.clientId).sort();
    // Presence names each session's transport (the one its connects use).
    await waitFor(async () => {
        const p = await api(apiURLs[0], "GET", "presence?channel=" + encodeURIComponent(ch));
        return clients.every((c) => p.sessions.some((s) => s.clientId === c.clientId && s.transport === c.transport));
    }, 10000, "presence transports match the clients'");
    for (const u of apiURLs) {
        const p = await api(u, "GET", "presence?channel=" + encodeURIComponent(ch));
        assert.deepEqual(p.sessions.map((s) => s.clientId).sort(), ids, `presence via ${u}`);
        assert.equal(new Set(p.sessions.map((s) => s.node)).size, nodes.length, `presence via ${u}: sessions of every node`);
        const chans = await api(u, "GET", "channels?pattern=" + encodeURIComponent("/srvapi/**"));
        const mine = chans.channels.find((c) => c.channel === ch);
        assert.equal(mine && mine.subscribers, clients.length, `channels via ${u}: ${JSON.stringify(chans)}`);
    }
    const N = 30;
    const want = [];
    for (let i = 0; i < N; i++) {
        const r = await api(apiURLs[i % apiURLs.length], "POST", "publish", {channel: ch, data: {n: i}});
        assert.equal(r.replayId, i + 1);
        want.push({n: i});
    }
    const b = await api(apiURLs[1], "POST", "broadcast", {channels: [ch], data: {n: "broadcast"}});
    assert.equal(b.results.length, 1);
    want.push({n: "broadcast"});
    for (const c of clients) {
        const got = await c.waitMessages(ch, want.length, 20000);
        assert.deepEqual(got.map((m) => m.data), want, `${c.label}: order`);
    }
});

for (const [kind, transport] of KINDS) {
    test(`${kind}/${transport}: unsubscribe and disconnect through another node`, async () => {
        const ch = "/srvapi/" + uniq("room");
        const nodes = await selves();
        const c = await open(kind, transport);
        await c.subscribe(ch);
        const control = await open("cometd", "long-polling");
        await control.subscribe(ch);
        const owner = await ownerOf(c.clientId, ch);
        assert.ok(owner, "session listed in presence");
        if (transport === "websocket") {
            // The session follows its websocket (hand-over): any node may hold it.
            assert.ok(nodes.includes(owner), `presence names a node: ${owner}`);
        } else {
            assert.equal(await ownerByTag(c.clientId), owner, "presence names the owner");
        }
        const other = apiURLs[nodes.findIndex((n) => n !== owner)];

        // Unsubscribe: the client stops receiving the channel.
        await api(apiURLs[0], "POST", "publish", {channel: ch, data: "before"});
        await c.waitMessages(ch, 1);
        const u = await api(other, "POST", "unsubscribe", {clientId: c.clientId, channel: ch});
        assert.equal(u.unsubscribed, true);
        await api(apiURLs[0], "POST", "publish", {channel: ch, data: "after"});
        await control.waitMessages(ch, 2);
        assert.deepEqual(c.messages(ch).map((m) => m.data), ["before"], `${c.label} kept receiving after unsubscribe`);

        // Disconnect with reconnect: the client handshakes again.
        const first = c.clientId;
        const d = await api(other, "POST", "disconnect", {clientId: first});
        assert.deepEqual(d.disconnected, [first]);
        await waitFor(() => c.clientId && c.clientId !== first, 15000, `${c.label}: new handshake after disconnect`,
            () => JSON.stringify(c.incoming.slice(-4)));

        // Disconnect without reconnect: the client is told "none" and stops.
        const second = c.clientId;
        const owner2 = await ownerByTag(second);
        const other2 = apiURLs[nodes.findIndex((n) => n !== owner2)];
        await api(other2, "POST", "disconnect", {clientId: second, reconnect: false});
        await waitFor(() => c.incoming.find((m) => m.channel === "/meta/connect" && m.advice && m.advice.reconnect === "none"),
            15000, `${c.label}: connect reply with reconnect none`, () => JSON.stringify(c.incoming.slice(-4)));
        if (kind === "cometd") {
            await waitFor(async () => (await c.info()).status === "disconnected", 10000, `${c.label}: status disconnected`);
        } else {
            await waitFor(() => c.client._advice && c.client._advice.reconnect === "none", 10000, `${c.label}: advice none`);
        }
        // A round trip later it has neither reconnected nor handshaken again.
        const sent = c.outgoing.length;
        await api(apiURLs[2 % apiURLs.length], "POST", "publish", {channel: ch, data: "later"});
        await control.waitMessages(ch, 3);
        assert.equal(c.clientId, second);
        assert.deepEqual(c.outgoing.slice(sent).filter((m) => m.channel === "/meta/handshake" || m.channel === "/meta/connect"), [],
            `${c.label} kept talking after reconnect none`);
    });
}

// The node that created a session: its clientId starts with the node's tag.
async function ownerByTag(clientId) {
    const r = await api(apiURLs[0], "GET", "nodes");
    const n = r.nodes.find((x) => x.tag && clientId.startsWith(x.tag));
    return n ? n.id : null;
}
