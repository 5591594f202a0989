// Reference peer for validating the interop suite itself while the Go broker
// is not available: Faye's own Node server (npm faye, faye.NodeAdapter) on a
// random loopback port, adapted to the parts of our server contract it can
// honour:
//   - unknown client errors are rewritten from Faye's 401 to the contract's
//     402 and carry advice {reconnect: "handshake"} on every reply, and a
//     publish from an unknown client is refused the same way;
//   - /service/echo: subscribing is allowed, a publish is acknowledged and
//     answered to the publisher only (never broadcast, not even to /**);
//   - timesync: meta replies answer ext.timesync {tc, ts, p, a};
//   - POST /debug/bayeux/sessions/{id}/expire forgets a session (204/404);
//     drop-next-connect is not implemented (501): no ack extension here,
//     so CometD scenario 10 fails against this reference by design.
//
// Self-test of the suite: REF_BREAK=mode[,mode] makes this server misbehave on
// purpose, so one can check that the scenarios notice (see README.md):
//   dup, reorder, drop, wildcard, unsub, echo-leak, no402, expire-noop
//
// Prints "BAYEUX_URL=..." and "BAYEUX_DEBUG_URL=..." lines on stdout.
//
// Usage: node reference/faye-server.mjs [--port N]
import * as http from "node:http";
import {createRequire} from "node:module";

const require = createRequire(import.meta.url);
const faye = require("faye");
const Channel = require("faye/src/protocol/channel");

const ECHO = "/service/echo";
const BREAK = new Set((process.env.REF_BREAK || "").split(",").filter(Boolean));
const perChannel = new Map();
const nth = (ch) => {
    const n = (perChannel.get(ch) || 0) + 1;
    perChannel.set(ch, n);
    return n;
};

if (BREAK.has("wildcard")) {
    // "/a/*" also matches deeper channels.
    const expand = Channel.expand;
    Channel.expand = function (name) {
        const out = expand.call(this, name);
        const segs = name.split("/").filter(Boolean);
        for (let i = 1; i < segs.length; i++) {
            out.push("/" + segs.slice(0, i).join("/") + "/*");
        }
        return [...new Set(out)];
    };
}

const originalSubscribable = Channel.isSubscribable;
Channel.isSubscribable = (name) => name === ECHO || originalSubscribable.call(Channel, name);

const bayeux = new faye.NodeAdapter({mount: "/cometd", timeout: 20});
const proxy = bayeux._server._engine; // faye's engine Proxy
const memory = proxy._engine; // the in-memory engine

const originalPublish = proxy.publish;
proxy.publish = function (message) {
    if (message.channel === ECHO && !BREAK.has("echo-leak")) {
        // Deliver to the publisher only.
        const id = message.clientId;
        if (id) {
            if (!memory._messages.has(id)) {
                memory._messages.set(id, []);
            }
            memory._messages.get(id).push({channel: ECHO, data: message.data});
            memory.emptyQueue(id);
        }
        return;
    }
    if (!message.channel.startsWith("/interop/")) {
        return originalPublish.call(this, message);
    }
    const n = nth(message.channel);
    if (BREAK.has("drop") && n % 50 === 17) {
        return;
    }
    if (BREAK.has("reorder") && n % 10 === 3) {
        setTimeout(() => originalPublish.call(this, message), 30);
        return;
    }
    originalPublish.call(this, message);
    if (BREAK.has("dup")) {
        originalPublish.call(this, message);
    }
};

if (BREAK.has("unsub")) {
    proxy.unsubscribe = function () {
        const cb = arguments[2];
        if (typeof cb === "function") {
            cb.call(arguments[3], true);
        }
    };
}

// Timesync (CometD TimeSyncExtension wire format) on meta replies:
// request ext.timesync {tc, l, o} -> reply ext.timesync {tc, ts, p, a}.
const timesyncPending = new WeakMap(); // request -> Map(message id -> {tc, ts})
bayeux.addExtension({
    incoming(message, request, callback) {
        const t = message.ext && message.ext.timesync;
        if (t && request && message.id && message.channel.startsWith("/meta/")) {
            if (!timesyncPending.has(request)) {
                timesyncPending.set(request, new Map());
            }
            timesyncPending.get(request).set(message.id, {tc: t.tc, ts: Date.now()});
        }
        callback(message);
    },
    outgoing(message, request, callback) {
        const pending = request && timesyncPending.get(request);
        const t = pending && message.id && pending.get(message.id);
        if (t && message.channel.startsWith("/meta/")) {
            pending.delete(message.id);
            const now = Date.now();
            message.ext = Object.assign({}, message.ext, {timesync: {tc: t.tc, ts: t.ts, p: now - t.ts, a: now}});
        }
        callback(message);
    },
});

bayeux.addExtension({
    incoming(message, request, callback) {
        // Faye accepts publishes from unknown clients; the contract rejects them.
        if (!message.channel.startsWith("/meta/") && message.clientId) {
            proxy.clientExists(message.clientId, (exists) => {
                if (!exists) {
                    message.error = `401:${message.clientId}:Unknown client`;
                }
                callback(message);
            });
            return;
        }
        callback(message);
    },
    outgoing(message, request, callback) {
        if (!BREAK.has("no402") && typeof message.error === "string" && /^401:/.test(message.error)) {
            message.error = "402" + message.error.substring(3);
            message.advice = Object.assign({}, message.advice, {reconnect: "handshake", interval: 0});
        }
        callback(message);
    },
});

const server = http.createServer((req, res) => {
    const m = /^\/debug\/bayeux\/sessions\/([^/]+)\/(expire|drop-next-connect)$/.exec(req.url);
    if (req.method === "POST" && m) {
        const id = decodeURIComponent(m[1]);
        if (m[2] !== "expire") {
            res.writeHead(501).end("not implemented by the reference server");
            return;
        }
        proxy.clientExists(id, (exists) => {
            if (!exists) {
                res.writeHead(404).end();
                return;
            }
            if (!BREAK.has("expire-noop")) {
                proxy.destroyClient(id);
                proxy.flushConnection(id);
            }
            res.writeHead(204).end();
        });
        return;
    }
    res.writeHead(404).end();
});
bayeux.attach(server);

const portArg = process.argv.indexOf("--port");
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
server.listen(port, "127.0.0.1", () => {
    const {port: p} = server.address();
    console.log(`BAYEUX_URL=http://127.0.0.1:${p}/cometd`);
    console.log(`BAYEUX_DEBUG_URL=http://127.0.0.1:${p}/debug/bayeux`);
});
for (const sig of ["SIGINT", "SIGTERM"]) {
    process.on(sig, () => process.exit(0));
}
