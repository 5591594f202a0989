// A small Bayeux 1.0 client for the browser, with no dependencies.
//
// Transports: "websocket", "long-polling" (POST of JSON arrays) and
// "callback-polling" (JSONP: a <script> GET with ?jsonp=<callback>&message=).
// Without a forced transport the client uses websocket and falls back to
// long-polling when the browser has no WebSocket or a socket cannot be
// opened.
//
// It handshakes, then keeps one /meta/connect outstanding, obeying the
// server's advice (reconnect "retry" | "handshake" | "none", interval,
// timeout), with a growing back-off on network failures. Subscriptions are
// sent again after every new handshake. On HTTP transports the messages of
// the application (publishes, subscribes) are sent one request at a time,
// batched while one is in flight, so they reach the server in the order
// they were made.
//
//   const c = new BayeuxClient("/cometd", {transport: "long-polling"});
//   c.onHandshake(() => ...);                  // after each successful handshake (subscriptions are restored first)
//   await c.subscribe("/chat/lobby", (m) => show(m.data));
//   c.addListener("/service/members", fn);     // local only: messages the server sends to this session
//   await c.publish("/chat/lobby", {text: "hi"});
//   c.start();                                 // or: subscribe/publish before start, they wait for the handshake
//   c.disconnect();

export const TRANSPORTS = ["websocket", "long-polling", "callback-polling"];

const HANDSHAKE = "/meta/handshake";
const CONNECT = "/meta/connect";
const SUBSCRIBE = "/meta/subscribe";
const UNSUBSCRIBE = "/meta/unsubscribe";
const DISCONNECT = "/meta/disconnect";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Reports whether a subscription pattern (with * or ** last) matches a channel. */
export function channelMatches(pattern, channel) {
    if (pattern === channel) {
        return true;
    }
    if (pattern.endsWith("/**")) {
        const base = pattern.slice(0, -2); // keeps the trailing slash
        return channel.startsWith(base) && channel.length > base.length;
    }
    if (pattern.endsWith("/*")) {
        const base = pattern.slice(0, -1);
        return channel.startsWith(base) && channel.length > base.length && !channel.slice(base.length).includes("/");
    }
    return false;
}

/** A failed Bayeux reply (or a failure to get one) as an Error. */
export class BayeuxError extends Error {
    constructor(message, reply) {
        super(message);
        this.reply = reply || null;
    }
}

// ---------------------------------------------------------------------------
// Transports. Each one sends a batch of messages; replies and deliveries
// are handed to client._receive, whichever request or frame carries them.

class LongPolling {
    constructor(client) {
        this.client = client;
        this.name = "long-polling";
    }

    static available() {
        return typeof fetch === "function";
    }

    async send(messages, timeoutMs) {
        const ctrl = new AbortController();
        const timer = setTimeout(() => ctrl.abort(), timeoutMs);
        this.client._aborts.add(ctrl);
        try {
            const resp = await fetch(this.client.url, {
                method: "POST",
                headers: {"Content-Type": "application/json;charset=UTF-8"},
                body: JSON.stringify(messages),
                credentials: "same-origin",
                cache: "no-store",
                signal: ctrl.signal,
            });
            const text = await resp.text();
            return parseReplies(text, resp.status);
        } finally {
            clearTimeout(timer);
            this.client._aborts.delete(ctrl);
        }
    }

    close() {}
}

let jsonpSeq = 0;

class CallbackPolling {
    constructor(client) {
        this.client = client;
        this.name = "callback-polling";
        this.maxURL = 6000; // below common proxy limits on a request line
    }

    static available() {
        return typeof document !== "undefined";
    }

    async send(messages, timeoutMs) {
        // A script inserted before the page's load event delays it, and a
        // held connect would delay it for good: wait for it.
        if (document.readyState !== "complete") {
            await new Promise((resolve) => window.addEventListener("load", resolve, {once: true}));
        }
        return new Promise((resolve, reject) => {
            const name = "_bayeux_jsonp_" + (++jsonpSeq);
            const script = document.createElement("script");
            let done = false;
            const finish = (err, replies) => {
                if (done) {
                    return;
                }
                done = true;
                clearTimeout(timer);
                this.client._aborts.delete(abort);
                script.remove();
                // A late answer must still find a function.
                window[name] = () => {};
                setTimeout(() => delete window[name], 120000);
                err ? reject(err) : resolve(replies);
            };
            const abort = {abort: () => finish(new BayeuxError("aborted"))};
            this.client._aborts.add(abort);
            window[name] = (replies) => finish(null, Array.isArray(replies) ? replies : [replies]);
            const timer = setTimeout(() => finish(new BayeuxError("callback-polling: timed out")), timeoutMs);
            script.onerror = () => finish(new BayeuxError("callback-polling: request failed"));
            // load fires after the script ran: no callback means no reply.
            script.onload = () => setTimeout(() => finish(new BayeuxError("callback-polling: no callback in the answer")), 0);
            const u = new URL(this.client.url);
            u.searchParams.set("jsonp", name);
            u.searchParams.set("message", JSON.stringify(messages));
            script.async = true;
            script.src = u.href;
            document.head.appendChild(script);
        });
    }

    // fits reports whether a batch of messages still fits in one URL.
    fits(messages) {
        return encodeURIComponent(JSON.stringify(messages)).length + this.client.url.length < this.maxURL;
    }

    close() {}
}

class WebSocketTransport {
    constructor(client) {
        this.client = client;
        this.name = "websocket";
        this.ws = null;
        this.opening = null;
    }

    static available() {
        return typeof WebSocket === "function";
    }

    url() {
        const u = new URL(this.client.url);
        u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
        return u.href;
    }

    open() {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) {
            return Promise.resolve();
        }
        if (this.opening) {
            return this.opening;
        }
        this.opening = new Promise((resolve, reject) => {
            let ws;
            try {
                ws = new WebSocket(this.url());
            } catch (e) {
                reject(new BayeuxError("websocket: " + e.message));
                return;
            }
            let open = false;
            const timer = setTimeout(() => {
                ws.close();
                reject(new BayeuxError("websocket: open timed out"));
            }, 10000);
            ws.onopen = () => {
                clearTimeout(timer);
                open = true;
                this.ws = ws;
                resolve();
            };
            ws.onerror = () => {};
            ws.onclose = (ev) => {
                clearTimeout(timer);
                if (!open) {
                    reject(new BayeuxError("websocket: could not open (" + ev.code + ")"));
                    return;
                }
                if (this.ws === ws) {
                    this.ws = null;
                    this.client._socketClosed(ev);
                }
            };
            ws.onmessage = (ev) => {
                let replies;
                try {
                    replies = parseReplies(ev.data, 200);
                } catch (e) {
                    this.client._log("websocket: bad frame", e);
                    return;
                }
                this.client._receiveAll(replies);
            };
        }).finally(() => {
            this.opening = null;
        });
        return this.opening;
    }

    async send(messages) {
        await this.open();
        this.ws.send(JSON.stringify(messages));
        return null; // replies arrive as frames
    }

    close() {
        const ws = this.ws;
        this.ws = null;
        if (ws) {
            ws.close(1000);
        }
    }
}

const TRANSPORT_CLASSES = {"websocket": WebSocketTransport, "long-polling": LongPolling, "callback-polling": CallbackPolling};

function parseReplies(text, status) {
    let v;
    try {
        v = JSON.parse(text);
    } catch (e) {
        throw new BayeuxError("HTTP " + status + ": not a Bayeux answer");
    }
    if (Array.isArray(v)) {
        return v;
    }
    if (v && typeof v === "object" && v.channel) {
        return [v];
    }
    // A request-level error ({"successful":false,"error":"..."}) answers no message.
    throw new BayeuxError("HTTP " + status + ": " + (v && v.error ? v.error : "request refused"), v);
}

// ---------------------------------------------------------------------------

export class BayeuxClient {
    /**
     * @param url the Bayeux endpoint (absolute or relative to the page)
     * @param options {transport: one of TRANSPORTS to force it, log: function(...args)}
     */
    constructor(url, options = {}) {
        this.url = new URL(url, location.href).href;
        if (options.transport && !TRANSPORT_CLASSES[options.transport]) {
            throw new Error("unknown transport " + options.transport);
        }
        this.forced = options.transport || null;
        this._logFn = options.log || null;
        this.clientId = null;
        this.transport = null;
        this.state = "disconnected"; // handshaking | connected | unconnected | disconnected
        this.advice = {reconnect: "retry", interval: 0, timeout: 30000};
        this._subs = new Map(); // channel -> Set of callbacks (server subscriptions)
        this._listeners = new Map(); // channel -> Set of callbacks (local)
        this._pending = new Map(); // message id -> {resolve, reject, timer}
        this._outbox = []; // application messages waiting for the HTTP send slot
        this._sending = false;
        this._aborts = new Set();
        this._nextId = 1;
        this._stateFns = new Set();
        this._handshakeFns = new Set();
        this._backoff = 0;
        this._gen = 0; // bumped by start and disconnect; a loop of an older generation stops
        this._started = false;
        this._wsBroken = false;
        this._ready = null; // resolves on the next successful handshake
        this._readyResolve = null;
        this._resetReady();
    }

    _log(...args) {
        if (this._logFn) {
            this._logFn(...args);
        }
    }

    /** fn(state, client) on every state change. */
    onState(fn) {
        this._stateFns.add(fn);
        return () => this._stateFns.delete(fn);
    }

    /** fn(reply) after every successful handshake, once subscriptions were sent again. */
    onHandshake(fn) {
        this._handshakeFns.add(fn);
        return () => this._handshakeFns.delete(fn);
    }

    get transportName() {
        return this.transport ? this.transport.name : null;
    }

    _setState(s) {
        if (this.state === s) {
            return;
        }
        this.state = s;
        for (const fn of this._stateFns) {
            try {
                fn(s, this);
            } catch (e) {
                this._log("state listener", e);
            }
        }
    }

    _resetReady() {
        this._ready = new Promise((resolve) => (this._readyResolve = resolve));
    }

    /** Starts handshaking and the connect loop. */
    start() {
        const gen = ++this._gen;
        this._started = true;
        this._run(gen);
        return this._ready;
    }

    // _waitSession waits for a session (a successful handshake); it throws
    // if the client is not started or stops meanwhile.
    async _waitSession() {
        while (!this.clientId) {
            if (!this._started) {
                throw new BayeuxError("not connected");
            }
            await this._ready;
        }
    }

    /** Subscribes fn to channel (a name or a /* or /** pattern); resolves with the reply. */
    async subscribe(channel, fn) {
        let set = this._subs.get(channel);
        if (set) {
            set.add(fn);
            return {successful: true, channel: SUBSCRIBE, subscription: channel};
        }
        set = new Set([fn]);
        this._subs.set(channel, set);
        // Before the handshake: sent after it (a subscription the
        // handshake already restored is confirmed again, harmlessly).
        await this._waitSession();
        const reply = await this._request({channel: SUBSCRIBE, clientId: this.clientId, subscription: channel});
        if (!reply.successful) {
            if (this._subs.get(channel) === set) {
                this._subs.delete(channel);
            }
            throw new BayeuxError("subscribe " + channel + ": " + reply.error, reply);
        }
        return reply;
    }

    /** Removes fn (or every callback) from channel; unsubscribes when none is left. */
    async unsubscribe(channel, fn) {
        const set = this._subs.get(channel);
        if (!set) {
            return null;
        }
        if (fn) {
            set.delete(fn);
        } else {
            set.clear();
        }
        if (set.size > 0) {
            return null;
        }
        this._subs.delete(channel);
        if (!this.clientId) {
            return null;
        }
        return this._request({channel: UNSUBSCRIBE, clientId: this.clientId, subscription: channel});
    }

    /** Calls fn for messages on channel without subscribing (e.g. a service's answers). */
    addListener(channel, fn) {
        let set = this._listeners.get(channel);
        if (!set) {
            this._listeners.set(channel, (set = new Set()));
        }
        set.add(fn);
        return () => set.delete(fn);
    }

    /** Publishes data on channel; resolves with the reply, rejects if it failed. */
    async publish(channel, data) {
        await this._waitSession();
        const reply = await this._request({channel, clientId: this.clientId, data});
        if (!reply.successful) {
            throw new BayeuxError("publish " + channel + ": " + reply.error, reply);
        }
        return reply;
    }

    /** Sends /meta/disconnect (best effort) and stops. */
    async disconnect() {
        const id = this.clientId;
        this._gen++;
        this._setState("disconnected");
        if (id) {
            try {
                await this._request({channel: DISCONNECT, clientId: id}, 3000);
            } catch (e) {
                this._log("disconnect", e);
            }
        }
        this._stop();
    }

    /**
     * For pagehide: sends messages (e.g. a last publish) and /meta/disconnect
     * with navigator.sendBeacon, which outlives the page, and stops.
     */
    beacon(messages = []) {
        const id = this.clientId;
        this._gen++;
        if (id && typeof navigator !== "undefined" && navigator.sendBeacon) {
            const batch = messages.map((m) => Object.assign({clientId: id, id: String(this._nextId++)}, m));
            batch.push({channel: DISCONNECT, clientId: id, id: String(this._nextId++)});
            try {
                navigator.sendBeacon(this.url, JSON.stringify(batch));
            } catch (e) {
                this._log("beacon", e);
            }
        }
        this._stop();
        this._setState("disconnected");
    }

    _stop() {
        this.clientId = null;
        this._started = false;
        const ready = this._readyResolve;
        this._resetReady();
        ready(null); // wakes _waitSession, which then throws
        for (const a of this._aborts) {
            a.abort();
        }
        this._aborts.clear();
        if (this.transport) {
            this.transport.close();
        }
        this._failPending(new BayeuxError("disconnected"));
        this._outbox = [];
    }

    // -- the loop -------------------------------------------------------------

    _pickTransport() {
        let name = this.forced;
        if (!name) {
            name = WebSocketTransport.available() && !this._wsBroken ? "websocket" : "long-polling";
        }
        if (!this.transport || this.transport.name !== name) {
            if (this.transport) {
                this.transport.close();
            }
            this.transport = new TRANSPORT_CLASSES[name](this);
        }
    }

    async _run(gen) {
        let delay = 0;
        while (gen === this._gen) {
            if (delay > 0) {
                await sleep(delay);
                if (gen !== this._gen) {
                    return;
                }
            }
            delay = 0;
            const reconnect = this.advice.reconnect || "retry";
            if (reconnect === "none") {
                this._log("server advised reconnect none: stopping");
                this._stop();
                this._setState("disconnected");
                return;
            }
            if (!this.clientId || reconnect === "handshake") {
                delay = await this._handshake(gen);
                continue;
            }
            delay = await this._connect(gen);
        }
    }

    _failure(e) {
        this._backoff = Math.min(this._backoff ? this._backoff * 2 : 500, 10000);
        this._log("failure, retrying in", this._backoff, "ms:", e && e.message ? e.message : e);
        return this._backoff;
    }

    _mergeAdvice(reply) {
        if (reply && reply.advice) {
            this.advice = Object.assign({}, this.advice, reply.advice);
        }
    }

    // _handshake returns the delay before the loop's next step.
    async _handshake(gen) {
        this.clientId = null;
        this._setState("handshaking");
        this._pickTransport();
        const types = [this.transport.name];
        if (!this.forced) {
            for (const t of TRANSPORTS) {
                if (!types.includes(t) && TRANSPORT_CLASSES[t].available() && !(t === "websocket" && this._wsBroken)) {
                    types.push(t);
                }
            }
        }
        const msg = {channel: HANDSHAKE, version: "1.0", minimumVersion: "1.0", supportedConnectionTypes: types,
            advice: {timeout: 60000, interval: 0}};
        let reply;
        try {
            reply = await this._request(msg, 15000, true);
        } catch (e) {
            if (gen !== this._gen) {
                return 0;
            }
            if (this.transport.name === "websocket" && !this.forced) {
                // No websocket here (blocked, or a proxy without upgrades):
                // long-polling from now on.
                this._log("websocket unavailable, falling back to long-polling:", e.message);
                this._wsBroken = true;
                return 0;
            }
            this._setState("unconnected");
            return this._failure(e);
        }
        if (gen !== this._gen) {
            return 0;
        }
        this.advice = Object.assign({reconnect: "retry", interval: 0, timeout: 30000}, reply.advice || {});
        if (!reply.successful) {
            this._setState("unconnected");
            if (this.advice.reconnect === "none") {
                return 0;
            }
            this.advice.reconnect = "handshake";
            return Math.max(this.advice.interval || 0, this._failure(new BayeuxError(reply.error, reply)));
        }
        const offered = reply.supportedConnectionTypes || [];
        if (offered.length && !offered.includes(this.transport.name)) {
            if (this.forced || !offered.includes("long-polling")) {
                this._setState("unconnected");
                return this._failure(new BayeuxError("server does not offer " + this.transport.name));
            }
            this._wsBroken = this.transport.name === "websocket" || this._wsBroken;
            this._pickTransport();
        }
        this.clientId = reply.clientId;
        this._backoff = 0;
        // Subscriptions again (all in one batch), then the application.
        const subs = [...this._subs.keys()].map((channel) =>
            this._request({channel: SUBSCRIBE, clientId: this.clientId, subscription: channel}).catch((e) => e));
        const ready = this._readyResolve;
        this._resetReady();
        const first = this._connect(gen); // the first connect is answered at once
        await Promise.all(subs);
        ready(reply);
        for (const fn of this._handshakeFns) {
            try {
                fn(reply);
            } catch (e) {
                this._log("handshake listener", e);
            }
        }
        return first;
    }

    // _connect sends one /meta/connect and returns the delay before the next.
    async _connect(gen) {
        const timeout = (this.advice.timeout || 0) + 15000;
        let reply;
        try {
            reply = await this._request({channel: CONNECT, clientId: this.clientId, connectionType: this.transport.name}, timeout, true);
        } catch (e) {
            if (gen !== this._gen) {
                return 0;
            }
            this._setState("unconnected");
            return this._failure(e);
        }
        if (gen !== this._gen) {
            return 0;
        }
        this._mergeAdvice(reply);
        if (reply.successful) {
            this._backoff = 0;
            this._setState("connected");
            return this.advice.interval || 0;
        }
        this._setState("unconnected");
        if (!reply.advice) {
            // No advice with a failure: keep the session, back off.
            return this._failure(new BayeuxError(reply.error, reply));
        }
        if (this.advice.reconnect === "handshake") {
            this.clientId = null;
        }
        return Math.max(this.advice.interval || 0, this.advice.reconnect === "retry" ? this._failure(new BayeuxError(reply.error, reply)) : 0);
    }

    // -- sending and receiving --------------------------------------------------

    // _request sends one message and resolves with its reply. direct: send
    // now on its own (handshake, connect); otherwise through the outbox.
    _request(msg, timeoutMs = 20000, direct = false) {
        msg.id = String(this._nextId++);
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                if (this._pending.delete(msg.id)) {
                    reject(new BayeuxError(msg.channel + ": no reply within " + timeoutMs + " ms"));
                }
            }, timeoutMs + 1000);
            this._pending.set(msg.id, {resolve, reject, timer});
            if (direct || !this.transport || this.transport.name === "websocket") {
                this._sendBatch([msg], timeoutMs);
            } else {
                this._outbox.push(msg);
                this._flush();
            }
        });
    }

    async _flush() {
        if (this._sending) {
            return;
        }
        this._sending = true;
        try {
            while (this._outbox.length > 0) {
                let n = this._outbox.length;
                if (this.transport && this.transport.fits) {
                    n = 1;
                    while (n < this._outbox.length && this.transport.fits(this._outbox.slice(0, n + 1))) {
                        n++;
                    }
                }
                const batch = this._outbox.splice(0, n);
                await this._sendBatch(batch, 20000);
            }
        } finally {
            this._sending = false;
        }
    }

    async _sendBatch(batch, timeoutMs) {
        try {
            if (!this.transport) {
                throw new BayeuxError("no transport");
            }
            const replies = await this.transport.send(batch, timeoutMs);
            if (replies) {
                this._receiveAll(replies);
                // An HTTP answer that does not answer a message never will.
                this._fail(batch, new BayeuxError("no reply in the answer"));
            }
        } catch (e) {
            this._fail(batch, e);
        }
    }

    _fail(batch, err) {
        for (const m of batch) {
            const p = this._pending.get(m.id);
            if (p) {
                this._pending.delete(m.id);
                clearTimeout(p.timer);
                p.reject(err);
            }
        }
    }

    _failPending(err) {
        const all = [...this._pending.values()];
        this._pending.clear();
        for (const p of all) {
            clearTimeout(p.timer);
            p.reject(err);
        }
    }

    _socketClosed(ev) {
        this._log("websocket closed", ev.code, ev.reason);
        this._failPending(new BayeuxError("websocket closed (" + ev.code + ")"));
    }

    _receiveAll(messages) {
        // Replies first settle their requests; deliveries go to callbacks in order.
        for (const m of messages) {
            if (m && typeof m === "object") {
                this._receive(m);
            }
        }
    }

    _receive(m) {
        if ("successful" in m) {
            const p = m.id !== undefined ? this._pending.get(String(m.id)) : null;
            if (p) {
                this._pending.delete(String(m.id));
                clearTimeout(p.timer);
                p.resolve(m);
            } else if (m.channel === CONNECT || m.channel === HANDSHAKE) {
                this._mergeAdvice(m);
            }
            return;
        }
        if (!m.channel) {
            return;
        }
        const fns = [];
        for (const [pattern, set] of this._subs) {
            if (channelMatches(pattern, m.channel)) {
                fns.push(...set);
            }
        }
        const ls = this._listeners.get(m.channel);
        if (ls) {
            fns.push(...ls);
        }
        for (const fn of fns) {
            try {
                fn(m);
            } catch (e) {
                this._log("callback on", m.channel, e);
            }
        }
    }
}
