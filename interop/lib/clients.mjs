// Uniform test-side handles for the real clients:
//  - CometDClient: one unchanged CometD JS client per worker thread (= per browser);
//  - FayeClient:   one unchanged faye.Client in this process (each has its own cookie jar).
// Both record every message received (raw, before client-side processing),
// every message sent, and every delivery to each application subscription.
import {Worker} from "node:worker_threads";
import {createRequire} from "node:module";
import {env, waitFor, withTimeout} from "./common.mjs";

const require = createRequire(import.meta.url);

const OP_TIMEOUT = 15000;

class BaseClient {
    constructor(kind, transport) {
        this.kind = kind;
        this.transport = transport;
        this.incoming = []; // raw received messages
        this.outgoing = []; // raw sent messages
        this.deliveries = new Map(); // subscription -> [{channel, data, session}]
        this.sessions = 0; // successful handshake replies received so far
        this.closed = false;
    }

    /** Records a message received on the wire (before the client processes it). */
    _recordIncoming(message) {
        this.incoming.push(message);
        if (message.channel === "/meta/handshake" && message.successful === true) {
            this.sessions++;
        }
    }

    get label() {
        return `${this.kind}/${this.transport}#${this.clientId || "?"}`;
    }

    _recordDelivery(sub, message) {
        let list = this.deliveries.get(sub);
        if (!list) {
            this.deliveries.set(sub, (list = []));
        }
        // session: which of the client's sessions (1 = its first clientId)
        // received it.
        list.push({channel: message.channel, data: message.data, session: this.sessions});
    }

    /** Deliveries to the application subscription `sub` so far (live array). */
    messages(sub) {
        let list = this.deliveries.get(sub);
        if (!list) {
            this.deliveries.set(sub, (list = []));
        }
        return list;
    }

    /** Successful handshake replies received so far. */
    handshakeReplies() {
        return this.incoming.filter((m) => m.channel === "/meta/handshake" && m.successful === true);
    }

    get clientId() {
        const hs = this.handshakeReplies();
        return hs.length ? hs[hs.length - 1].clientId : null;
    }

    /** Waits until `sub` has received at least n messages. */
    async waitMessages(sub, n, ms = 10000) {
        await waitFor(() => this.messages(sub).length >= n, ms,
            `${this.label}: ${n} message(s) on ${sub}`,
            () => `got ${this.messages(sub).length}: ${JSON.stringify(this.messages(sub).slice(-5))}`);
        return this.messages(sub);
    }

    /** Waits until a delivery on `sub` satisfies pred. */
    async waitMessage(sub, pred, ms = 10000, what = "matching message") {
        return waitFor(() => this.messages(sub).find(pred), ms,
            `${this.label}: ${what} on ${sub}`,
            () => `got ${this.messages(sub).length}: ${JSON.stringify(this.messages(sub).slice(-5))}`);
    }
}

function checkReply(what, reply) {
    if (!reply || reply.successful !== true) {
        throw new Error(`${what} failed: ${JSON.stringify(reply)}`);
    }
    return reply;
}

// ---------------------------------------------------------------------------

export class CometDClient extends BaseClient {
    /** @param opts {transport, ack?, timesync?} */
    static async open(opts) {
        const c = new CometDClient(opts);
        await c._ready;
        return c;
    }

    constructor({transport, ack = false, timesync = false, logLevel}) {
        super("cometd", transport);
        this._pending = new Map();
        this._nextId = 1;
        this.workerErrors = [];
        this.connectFailures = [];
        this.subscribeFailures = []; // failed re-subscriptions after a re-handshake (tried again)
        this._worker = new Worker(new URL("./cometd-worker.mjs", import.meta.url), {
            workerData: {url: env().url, transport, ack, timesync, logLevel},
            stdout: false,
            stderr: false,
        });
        this._ready = new Promise((resolve, reject) => {
            this._readyResolve = resolve;
            this._readyReject = reject;
        });
        this._worker.on("message", (m) => this._onMessage(m));
        this._worker.on("error", (e) => {
            this.workerErrors.push(String(e && e.stack || e));
            this._readyReject(e);
            for (const p of this._pending.values()) {
                p.reject(e);
            }
            this._pending.clear();
        });
        this._worker.on("exit", () => {
            this.closed = true;
            for (const p of this._pending.values()) {
                p.reject(new Error("worker exited"));
            }
            this._pending.clear();
        });
    }

    _onMessage(m) {
        if (m.ev === "ready") {
            this._readyResolve();
        } else if (m.ev === "in") {
            this._recordIncoming(m.message);
        } else if (m.ev === "out") {
            this.outgoing.push(m.message);
        } else if (m.ev === "connectFailure") {
            this.connectFailures.push(m.message);
        } else if (m.ev === "subscribeFailure") {
            this.subscribeFailures.push(m.message);
        } else if (m.ev === "msg") {
            this._recordDelivery(m.sub, m.message);
        } else if (m.id !== undefined) {
            const p = this._pending.get(m.id);
            if (p) {
                this._pending.delete(m.id);
                if (m.ok) {
                    p.resolve(m.value);
                } else {
                    p.reject(new Error(m.error));
                }
            }
        }
    }

    _call(op, args = [], ms = OP_TIMEOUT) {
        if (this.closed) {
            return Promise.reject(new Error(`${this.label}: closed`));
        }
        const id = this._nextId++;
        const p = new Promise((resolve, reject) => this._pending.set(id, {resolve, reject}));
        this._worker.postMessage({id, op, args});
        return withTimeout(p, ms, `${this.label}: ${op}(${JSON.stringify(args).slice(0, 200)})`);
    }

    async handshake() {
        const reply = checkReply(`${this.label}: handshake`, await this._call("handshake"));
        return reply.clientId;
    }

    async subscribe(channel) {
        return checkReply(`${this.label}: subscribe ${channel}`, await this._call("subscribe", [channel]));
    }

    async unsubscribe(channel) {
        return checkReply(`${this.label}: unsubscribe ${channel}`, await this._call("unsubscribe", [channel]));
    }

    async publish(channel, data) {
        return checkReply(`${this.label}: publish to ${channel}`, await this._call("publish", [channel, data]));
    }

    async publishMany(channel, datas) {
        const replies = await this._call("publishMany", [channel, datas], 60000);
        replies.forEach((r, i) => checkReply(`${this.label}: publish #${i} to ${channel}`, r));
        return replies;
    }

    async disconnect() {
        this.disconnected = true;
        const reply = await this._call("disconnect");
        return reply === null ? null : checkReply(`${this.label}: disconnect`, reply);
    }

    info() {
        return this._call("info");
    }

    async transportInUse() {
        return (await this.info()).transport;
    }

    /** Best effort: disconnect (bounded), then stop the worker. Never throws. */
    async close() {
        if (this.closed) {
            return;
        }
        try {
            await withTimeout(this._call("disconnect"), 3000, "disconnect");
        } catch {
            // ignore: closing anyway
        }
        this.closed = true;
        await this._worker.terminate();
    }
}

// ---------------------------------------------------------------------------

// The Faye-based client modules: Faye itself and sfdx-faye (the Salesforce
// CLI's fork of Faye 1.2, which sends "[]" on its websocket as a keep-alive).
const fayeModules = {faye: "faye", "sfdx-faye": "sfdx-faye"};

export class FayeClient extends BaseClient {
    /** @param opts {transport: "long-polling" | "websocket", kind?: "faye" | "sfdx-faye"} */
    static async open(opts) {
        return new FayeClient(opts);
    }

    constructor({transport, kind = "faye"}) {
        super(kind, transport);
        const faye = require(fayeModules[kind]);
        const client = new faye.Client(env().url);
        this.client = client;
        this._subs = new Map();
        if (transport === "long-polling") {
            client.disable("websocket");
        } else if (transport !== "websocket") {
            throw new Error("faye has no transport " + transport + " in Node");
        }
        const clone = (m) => JSON.parse(JSON.stringify(m));
        client.addExtension({
            incoming: (message, callback) => {
                this._recordIncoming(clone(message));
                callback(message);
            },
            outgoing: (message, callback) => {
                this.outgoing.push(clone(message));
                callback(message);
            },
        });
    }

    /** Current Faye transport object (private API, read only). */
    get _transportObject() {
        return this.client._dispatcher && this.client._dispatcher._transport;
    }

    async transportInUse() {
        const t = this._transportObject;
        return t ? t.connectionType : null;
    }

    /** For websocket: true when Faye's current transport is a WebSocket with an open socket. */
    webSocketOpen() {
        const t = this._transportObject;
        return !!(t && t.connectionType === "websocket" && t._socket && t._state === t.CONNECTED);
    }

    async handshake() {
        await withTimeout(new Promise((resolve) => this.client.connect(resolve)), OP_TIMEOUT,
            `${this.label}: handshake+connect`);
        if (this.transport === "websocket") {
            // Faye always handshakes over HTTP, then upgrades: wait for the upgrade.
            await waitFor(() => this.webSocketOpen(), OP_TIMEOUT, `${this.label}: upgrade to websocket`,
            () => `transport ${this._transportObject && this._transportObject.connectionType}`);
        }
        const id = this.clientId;
        if (!id) {
            throw new Error(`${this.label}: no successful handshake reply seen: ${JSON.stringify(this.incoming)}`);
        }
        return id;
    }

    async subscribe(channel) {
        const sub = this.client.subscribe(channel).withChannel((ch, data) => this._recordDelivery(channel, {channel: ch, data}));
        this._subs.set(channel, sub);
        try {
            await withTimeout(Promise.resolve(sub), OP_TIMEOUT, `${this.label}: subscribe ${channel}`);
        } catch (e) {
            throw new Error(`${this.label}: subscribe ${channel} failed: ${e && e.message || JSON.stringify(e)}`);
        }
        return this.incoming.filter((m) => m.channel === "/meta/subscribe" && m.successful).pop();
    }

    async unsubscribe(channel) {
        const sub = this._subs.get(channel);
        if (!sub) {
            throw new Error("not subscribed to " + channel);
        }
        this._subs.delete(channel);
        const seen = this.incoming.length;
        sub.cancel();
        // Faye gives no callback for unsubscribe: wait for its reply on the wire.
        const reply = await waitFor(() => this.incoming.slice(seen).find((m) => m.channel === "/meta/unsubscribe" &&
            [].concat(m.subscription).includes(channel)), OP_TIMEOUT, `${this.label}: /meta/unsubscribe reply for ${channel}`);
        return checkReply(`${this.label}: unsubscribe ${channel}`, reply);
    }

    async publish(channel, data) {
        try {
            await withTimeout(Promise.resolve(this.client.publish(channel, data)), OP_TIMEOUT,
                `${this.label}: publish to ${channel}`);
        } catch (e) {
            throw new Error(`${this.label}: publish to ${channel} failed: ${e && e.message || JSON.stringify(e)}`);
        }
        return {successful: true};
    }

    async publishMany(channel, datas) {
        // Issued back to back, as an application would; Faye sends them in order.
        const pubs = datas.map((d) => this.client.publish(channel, d));
        try {
            await withTimeout(Promise.all(pubs.map((p) => Promise.resolve(p))), 60000,
                `${this.label}: ${datas.length} publishes to ${channel}`);
        } catch (e) {
            throw new Error(`${this.label}: publish to ${channel} failed: ${e && e.message || JSON.stringify(e)}`);
        }
        return datas.map(() => ({successful: true}));
    }

    async disconnect() {
        this.disconnected = true;
        const seen = this.incoming.length;
        const p = this.client.disconnect();
        if (!p) {
            return null;
        }
        await withTimeout(Promise.resolve(p), OP_TIMEOUT, `${this.label}: disconnect`);
        return this.incoming.slice(seen).find((m) => m.channel === "/meta/disconnect") || {successful: true};
    }

    /** Best effort: disconnect (bounded), then close sockets. Never throws. */
    async close() {
        if (this.closed) {
            return;
        }
        this.closed = true;
        try {
            await withTimeout(Promise.resolve(this.client.disconnect()), 3000, "disconnect");
        } catch {
            // ignore
        }
        // Stop Faye's own machinery so this process can exit at once. Faye keeps
        // going on its own after a failed scenario (retries, re-handshakes, an
        // upgrade to WebSocket racing with the close), so: no more transports,
        // no more connects, abort what is in flight, close every socket.
        const d = this.client._dispatcher;
        const wsTransports = () => [...((d.transports && d.transports.websocket) || new Map()).values()];
        try {
            this.client._state = this.client.DISCONNECTED;
            d.selectTransport = () => {};
            for (const e of d._envelopes.values()) {
                clearTimeout(e.timer);
                if (e.request) {
                    e.request.then((r) => r && r.abort && r.abort(), () => {});
                }
            }
            d._envelopes.clear();
            for (const t of wsTransports()) {
                t.connect = () => {};
            }
            d.close();
        } catch {
            // ignore
        }
        try {
            // A socket that was still connecting opens later: close it then.
            await waitFor(() => {
                for (const t of wsTransports()) {
                    if (t._socket) {
                        t._socket.close();
                    }
                }
                return wsTransports().every((t) => !t._socket && t._state !== t.CONNECTING);
            }, 3000, "faye websockets closed");
        } catch {
            // ignore: best effort
        }
    }
}

/** Factory for a client kind: open({transport, ...}) */
export function clientFactory(kind) {
    if (kind === "cometd") {
        return CometDClient.open;
    }
    return (opts) => FayeClient.open({...opts, kind});
}
