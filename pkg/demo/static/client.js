// Picks the Bayeux client of a page from its URL:
//   ?transport=websocket|long-polling|callback-polling   force a transport (default: websocket, else long-polling)
//   ?client=cometd                                         use the CometD JavaScript client instead of ours; it is
//                                                          not shipped: it must be served at /static/vendor/cometd/
// Both clients are wrapped in the same small interface (see BayeuxClient).
import {BayeuxClient, BayeuxError, TRANSPORTS} from "./bayeux.js";

export function pageOptions() {
    const q = new URLSearchParams(location.search);
    const transport = q.get("transport");
    const meta = document.querySelector('meta[name="bayeux-path"]');
    return {
        url: new URL(meta && meta.content ? meta.content : "/cometd", location.href).href,
        transport: TRANSPORTS.includes(transport) ? transport : null,
        kind: q.get("client") === "cometd" ? "cometd" : "bayeux",
    };
}

export async function makeClient(opts, log) {
    if (opts.kind === "cometd") {
        return cometdClient(opts, log);
    }
    const c = new BayeuxClient(opts.url, {transport: opts.transport, log});
    c.kind = "bayeux";
    return c;
}

// cometdClient adapts the CometD client (npm cometd, ES modules) to the
// interface of BayeuxClient.
async function cometdClient(opts, log) {
    const lib = await import(new URL("vendor/cometd/cometd.js", import.meta.url).href);
    const cometd = new lib.CometD();
    if (opts.transport) {
        const classes = {
            "websocket": lib.WebSocketTransport,
            "long-polling": lib.LongPollingTransport,
            "callback-polling": lib.CallbackPollingTransport,
        };
        cometd.unregisterTransports();
        cometd.registerTransport(opts.transport, new classes[opts.transport]());
    }
    cometd.configure({url: opts.url, logLevel: "warn"});
    const subs = new Map(); // channel -> Set of callbacks
    const handles = new Map(); // channel -> CometD subscription
    const stateFns = new Set();
    const handshakeFns = new Set();
    const dispatch = (channel) => (m) => {
        for (const fn of subs.get(channel) || []) {
            try {
                fn(m);
            } catch (e) {
                log("callback on", m.channel, e);
            }
        }
    };
    const replyPromise = (what, call) => new Promise((resolve, reject) => {
        call((reply) => (reply && reply.successful ? resolve(reply) : reject(new BayeuxError(what + ": " + (reply && reply.error), reply))));
    });
    const client = {
        kind: "cometd",
        state: "disconnected",
        get transportName() {
            const t = cometd.getTransport();
            return t ? t.type : null;
        },
        get clientId() {
            return cometd.getClientId();
        },
        onState(fn) {
            stateFns.add(fn);
        },
        onHandshake(fn) {
            handshakeFns.add(fn);
        },
        start() {
            return new Promise((resolve) => cometd.handshake((reply) => {
                if (reply.successful) {
                    resolve(reply);
                }
            }));
        },
        async subscribe(channel, fn) {
            let set = subs.get(channel);
            if (set) {
                set.add(fn);
                return {successful: true};
            }
            subs.set(channel, new Set([fn]));
            return replyPromise("subscribe " + channel, (cb) => handles.set(channel, cometd.subscribe(channel, dispatch(channel), cb)));
        },
        async unsubscribe(channel) {
            subs.delete(channel);
            const h = handles.get(channel);
            handles.delete(channel);
            if (h) {
                return replyPromise("unsubscribe " + channel, (cb) => cometd.unsubscribe(h, cb));
            }
            return null;
        },
        addListener(channel, fn) {
            const h = cometd.addListener(channel, fn);
            return () => cometd.removeListener(h);
        },
        publish(channel, data) {
            return replyPromise("publish " + channel, (cb) => cometd.publish(channel, data, cb));
        },
        disconnect() {
            return new Promise((resolve) => cometd.disconnect(() => resolve()));
        },
        beacon(messages = []) {
            // CometD has no beacon: publish and disconnect as usual, which
            // may or may not leave before the page goes.
            for (const m of messages) {
                cometd.publish(m.channel, m.data);
            }
            cometd.disconnect();
        },
    };
    const setState = (s) => {
        if (client.state !== s) {
            client.state = s;
            for (const fn of stateFns) {
                fn(s, client);
            }
        }
    };
    let handshakes = 0;
    cometd.addListener("/meta/handshake", (m) => {
        if (!m.successful) {
            setState("unconnected");
            return;
        }
        setState("connected");
        // CometD drops subscriptions at every handshake: subscribe again.
        if (handshakes++ > 0 && subs.size > 0) {
            cometd.batch(() => {
                for (const channel of subs.keys()) {
                    handles.set(channel, cometd.subscribe(channel, dispatch(channel)));
                }
            });
        }
        for (const fn of handshakeFns) {
            fn(m);
        }
    });
    cometd.addListener("/meta/connect", (m) => {
        if (!cometd.isDisconnected()) {
            setState(m.successful ? "connected" : "unconnected");
        }
    });
    cometd.addListener("/meta/disconnect", () => setState("disconnected"));
    return client;
}
