// Websocket compression (permessage-deflate) with unchanged real clients:
//
//   BAYEUX_URL=http://127.0.0.1:PORT/cometd [CHROMIUM=/usr/bin/chromium] node compression.mjs
//
// For each client: it connects over websocket (offering permessage-deflate
// as it does by default, or, for Faye, with the permessage-deflate
// extension its documentation tells applications to add), subscribes,
// publishes a 6 KB message (CometD's client refuses 8 KB) to itself and receives it; then it prints one
// line "compression <client>: negotiated=<bool> extensions=<answer> ok",
// where the answer is what the client itself reports as negotiated.
//   - cometd:   npm cometd + cometd-nodejs-client (websocket: npm ws)
//   - faye:     npm faye with npm permessage-deflate (faye-websocket)
//   - chromium: the browser's own WebSocket, raw Bayeux, through playwright-core
// Exits non-zero if a client fails or does not report compression
// negotiated (EXPECT_COMPRESSION=0 expects the opposite: the node was
// started with --ws-compression=false).
import {createRequire} from "node:module";
import {randomBytes} from "node:crypto";

const require = createRequire(import.meta.url);
const url = process.env.BAYEUX_URL;
if (!url) {
    console.error("compression.mjs: BAYEUX_URL must be set");
    process.exit(2);
}
const expect = process.env.EXPECT_COMPRESSION !== "0";
const big = "x".repeat(6 << 10) + " " + randomBytes(8).toString("hex");
const TIMEOUT = 20000;

function within(p, what) {
    let timer;
    return Promise.race([p, new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(what + ": timed out")), TIMEOUT);
    })]).finally(() => clearTimeout(timer));
}

async function cometdClient() {
    const {adapt} = await import("cometd-nodejs-client");
    adapt();
    const sockets = [];
    const Base = window.WebSocket;
    window.WebSocket = class extends Base {
        constructor(...args) {
            super(...args);
            sockets.push(this);
        }
    };
    const lib = await import("cometd");
    const cometd = new lib.CometD();
    cometd.unregisterTransports();
    cometd.registerTransport("websocket", new lib.WebSocketTransport());
    cometd.configure({url, logLevel: "warn"});
    const channel = "/compression/cometd";
    const got = new Promise((resolve, reject) => {
        cometd.handshake((reply) => {
            if (!reply.successful) {
                reject(new Error("handshake failed: " + JSON.stringify(reply)));
                return;
            }
            cometd.subscribe(channel, (m) => resolve(m.data.text), (sub) => {
                if (!sub.successful) {
                    reject(new Error("subscribe failed"));
                    return;
                }
                cometd.publish(channel, {text: big});
            });
        });
    });
    const text = await within(got, "cometd");
    const ws = sockets.find((s) => s.readyState === 1);
    const ext = ws ? ws.extensions : "(no open socket)";
    await new Promise((resolve) => cometd.disconnect(resolve));
    return {ok: text === big, ext, negotiated: /permessage-deflate/.test(ext)};
}

async function fayeClient() {
    const faye = require("faye");
    const deflate = require("permessage-deflate");
    let activated = null;
    // The extension as Faye's documentation adds it, observed: activate is
    // called with the server's answer when the server accepted the offer.
    const observed = Object.create(deflate, {
        createClientSession: {
            value() {
                const s = deflate.createClientSession();
                const activate = s.activate.bind(s);
                s.activate = (params) => {
                    activated = params;
                    return activate(params);
                };
                return s;
            },
        },
    });
    const client = new faye.Client(url);
    client.addWebsocketExtension(observed);
    client.disable("eventsource");
    const channel = "/compression/faye";
    const got = new Promise((resolve) => {
        client.subscribe(channel, (m) => resolve(m.text)).then(async () => {
            // Faye handshakes over HTTP and upgrades to WebSocket afterwards:
            // wait for the open socket (private API, read only, as lib/clients.mjs).
            const open = () => {
                const t = client._dispatcher && client._dispatcher._transport;
                return !!(t && t.connectionType === "websocket" && t._socket && t._state === t.CONNECTED);
            };
            const deadline = Date.now() + TIMEOUT;
            while (!open() && Date.now() < deadline) {
                await new Promise((r) => setTimeout(r, 20));
            }
            client.publish(channel, {text: big});
        });
    });
    const text = await within(got, "faye");
    client.disconnect();
    const ext = activated ? JSON.stringify(activated) : "(not activated)";
    return {ok: text === big, ext, negotiated: activated !== null};
}

async function chromiumClient() {
    const {chromium} = require("playwright-core");
    const browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || "chromium",
        headless: true,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"],
        timeout: 30000,
    });
    try {
        const page = await (await browser.newContext()).newPage();
        const wsURL = url.replace(/^http/, "ws");
        const r = await within(page.evaluate(async ({wsURL, big}) => {
            const ws = new WebSocket(wsURL);
            await new Promise((res, rej) => {
                ws.onopen = res;
                ws.onerror = () => rej(new Error("websocket error"));
            });
            const replies = [];
            let wake = null;
            ws.onmessage = (e) => {
                replies.push(...JSON.parse(e.data));
                if (wake) wake();
            };
            const next = async (pred) => {
                for (;;) {
                    const i = replies.findIndex(pred);
                    if (i >= 0) return replies.splice(i, 1)[0];
                    await new Promise((res) => { wake = res; });
                }
            };
            ws.send(JSON.stringify([{channel: "/meta/handshake", version: "1.0", supportedConnectionTypes: ["websocket"], id: "1"}]));
            const hs = await next((m) => m.channel === "/meta/handshake");
            const clientId = hs.clientId;
            ws.send(JSON.stringify([
                {channel: "/meta/connect", clientId, connectionType: "websocket", advice: {timeout: 0}, id: "2"},
                {channel: "/meta/subscribe", clientId, subscription: "/compression/chromium", id: "3"},
            ]));
            await next((m) => m.channel === "/meta/subscribe");
            ws.send(JSON.stringify([
                {channel: "/meta/connect", clientId, connectionType: "websocket", id: "4"},
                {channel: "/compression/chromium", clientId, data: {text: big}, id: "5"},
            ]));
            const m = await next((m) => m.channel === "/compression/chromium" && m.data);
            ws.close();
            return {ok: m.data.text === big, ext: ws.extensions};
        }, {wsURL, big}), "chromium");
        return {...r, negotiated: /permessage-deflate/.test(r.ext)};
    } finally {
        await browser.close();
    }
}

let failed = false;
for (const [name, run] of [["cometd", cometdClient], ["faye", fayeClient], ["chromium", chromiumClient]]) {
    try {
        const r = await run();
        const good = r.ok && r.negotiated === expect;
        console.log(`compression ${name}: negotiated=${r.negotiated} extensions=${r.ext} ${good ? "ok" : "FAILED"}`);
        failed ||= !good;
    } catch (e) {
        console.log(`compression ${name}: FAILED ${e.stack || e}`);
        failed = true;
    }
}
process.exit(failed ? 1 : 0);
