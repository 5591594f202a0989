// Runs ONE unchanged CometD JS client (npm cometd + cometd-nodejs-client) in a
// worker thread, i.e. in its own "browser": its own window, cookies
// (BAYEUX_BROWSER) and, for callback-polling, its own document (jsonp-shim).
// The main thread drives it with {id, op, args} requests; this worker answers
// {id, ok, value|error} and streams events:
//   {ev: "in", message}    every message received, before any extension (spy)
//   {ev: "out", message}   every message sent, after all extensions (spy)
//   {ev: "msg", sub, message}  a delivery to the application subscription `sub`
import {parentPort, workerData} from "node:worker_threads";

const {url, transport, ack, timesync, logLevel} = workerData;

let shim = null;
if (transport === "callback-polling") {
    shim = await import("../jsonp-shim.mjs");
    shim.installBrowserShim();
}
const {adapt} = await import("cometd-nodejs-client");
adapt();
const lib = await import("cometd");
const {AckExtension} = await import("cometd/AckExtension.js");
const {TimeSyncExtension} = await import("cometd/TimeSyncExtension.js");

const transportClasses = {
    "long-polling": lib.LongPollingTransport,
    "callback-polling": lib.CallbackPollingTransport,
    "websocket": lib.WebSocketTransport,
};

const cometd = new lib.CometD();
// Keep only the transport under test, so the client cannot fall back to another.
cometd.unregisterTransports();
if (!cometd.registerTransport(transport, new transportClasses[transport]())) {
    throw new Error("could not register transport " + transport);
}
cometd.configure({url, logLevel: logLevel || "warn"});

const clone = (m) => JSON.parse(JSON.stringify(m));
const post = (o) => parentPort.postMessage(o);

// Spy: registered first, so it sees incoming messages before any other
// extension and outgoing messages after all of them.
cometd.registerExtension("interop-spy", {
    incoming(message) {
        post({ev: "in", message: clone(message)});
        return message;
    },
    outgoing(message) {
        post({ev: "out", message: clone(message)});
        return message;
    },
});
let timesyncExt = null;
if (ack) {
    cometd.registerExtension("ack", new AckExtension());
}
if (timesync) {
    timesyncExt = new TimeSyncExtension();
    cometd.registerExtension("timesync", timesyncExt);
}

// Application subscriptions: channel -> CometD subscription handle.
const appSubs = new Map();
let handshakes = 0;

function onDelivery(sub) {
    return (message) => post({ev: "msg", sub, message: clone(message)});
}

// As CometD applications do: (re)subscribe in a /meta/handshake listener,
// because the CometD client drops its subscriptions on re-handshake.
cometd.addListener("/meta/handshake", (reply) => {
    if (!reply.successful) {
        return;
    }
    handshakes++;
    if (handshakes > 1 && appSubs.size > 0) {
        cometd.batch(() => {
            for (const channel of appSubs.keys()) {
                resubscribe(channel, handshakes);
            }
        });
    }
});

// resubscribe subscribes again to channel after a re-handshake, and again
// after 500 ms while it fails in the same session: CometD reports a failed
// subscribe (e.g. a request a balancer sent to a dead node: 502) to its
// callback and drops it, so an application tries again.
function resubscribe(channel, session) {
    appSubs.set(channel, cometd.subscribe(channel, onDelivery(channel), (reply) => {
        if (reply.successful) {
            return;
        }
        post({ev: "subscribeFailure", message: {
            channel, error: reply.error,
            reason: reply.failure && (reply.failure.reason || reply.failure.httpCode || String(reply.failure.exception || "")),
        }});
        setTimeout(() => {
            if (handshakes === session && !cometd.isDisconnected() && appSubs.has(channel)) {
                resubscribe(channel, session);
            }
        }, 500);
    }));
}

// Failed connects (e.g. a reply lost in transit) never pass through extensions:
// report them from a listener, keeping only serializable fields.
cometd.addListener("/meta/connect", (m) => {
    if (!m.successful) {
        post({ev: "connectFailure", message: {
            successful: false, error: m.error, advice: m.advice,
            reason: m.failure && (m.failure.reason || m.failure.httpCode || String(m.failure.exception || "")),
        }});
    }
});

function publishOne(channel, data) {
    return new Promise((resolve) => cometd.publish(channel, data, (reply) => resolve(clone(reply))));
}

const ops = {
    handshake() {
        // Resolves with the first handshake reply; later (automatic) ones are seen as "in" events.
        return new Promise((resolve) => {
            let done = false;
            cometd.handshake((reply) => {
                if (!done) {
                    done = true;
                    resolve(clone(reply));
                }
            });
        });
    },
    subscribe(channel) {
        return new Promise((resolve) => {
            const handle = cometd.subscribe(channel, onDelivery(channel), (reply) => {
                if (reply.successful) {
                    appSubs.set(channel, handle);
                }
                resolve(clone(reply));
            });
        });
    },
    unsubscribe(channel) {
        const handle = appSubs.get(channel);
        if (!handle) {
            throw new Error("not subscribed to " + channel);
        }
        appSubs.delete(channel);
        return new Promise((resolve) => cometd.unsubscribe(handle, (reply) => resolve(clone(reply))));
    },
    publish(channel, data) {
        return publishOne(channel, data);
    },
    async publishMany(channel, datas) {
        // Issued back to back (no waiting for each ack), as an application would.
        return Promise.all(datas.map((d) => publishOne(channel, d)));
    },
    disconnect() {
        return new Promise((resolve) => {
            if (cometd.isDisconnected()) {
                resolve(null);
                return;
            }
            cometd.disconnect((reply) => resolve(clone(reply)));
        });
    },
    info() {
        const t = cometd.getTransport();
        return {
            clientId: cometd.getClientId(),
            status: cometd.getStatus(),
            transport: t ? t.type : null,
            transportTypes: cometd.getTransportTypes(),
            handshakes,
            timeOffset: timesyncExt ? timesyncExt.getTimeOffset() : null,
            networkLag: timesyncExt ? timesyncExt.getNetworkLag() : null,
            shim: shim ? {
                requests: shim.shimLog.requests,
                scriptErrors: shim.shimLog.scriptErrors.slice(),
                loadErrors: shim.shimLog.loadErrors.slice(),
                contentTypes: [...shim.shimLog.contentTypes],
                cookies: shim.cookiesFor(new URL(url).hostname),
            } : null,
        };
    },
};

parentPort.on("message", async ({id, op, args}) => {
    try {
        const value = await ops[op](...(args || []));
        post({id, ok: true, value});
    } catch (e) {
        post({id, ok: false, error: String(e && e.stack || e)});
    }
});
post({ev: "ready"});
