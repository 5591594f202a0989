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
// Prints "BAYEUX_URL=..." and "BAYEUX_DEBUG_URL=..." lines on stdout.
//
// Usage: node reference/faye-server.mjs [--port N]
import * as http from "node:http";
import {createRequire} from "node:module";

const require = createRequire(import.meta.url);
const faye = require("faye");
const Channel = require("faye/src/protocol/channel");

const ECHO = "/service/echo";

const originalSubscribable = Channel.isSubscribable;
Channel.isSubscribable = (name) => name === ECHO || originalSubscribable.call(Channel, name);

const bayeux = new faye.NodeAdapter({mount: "/cometd", timeout: 20});
const proxy = bayeux._server._engine; // faye's engine Proxy
const memory = proxy._engine; // the in-memory engine

const originalPublish = proxy.publish;
proxy.publish = function (message) {
    if (message.channel === ECHO) {
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
    return originalPublish.call(this, message);
};

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
        if (typeof message.error === "string" && /^401:/.test(message.error)) {
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
            proxy.destroyClient(id);
            proxy.flushConnection(id);
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
