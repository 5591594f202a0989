// Real-client subscribers for the chaos suite (e2e/chaos_real_test.go):
// unchanged CometD clients with their AckExtension on long-polling,
// callback-polling and websocket, and jsforce replay subscribers
// (StreamingExtension.Replay from -1, following data.event.replayId), all
// through the balancer at BAYEUX_URL.
//
//   BAYEUX_URL=... BAYEUX_DEBUG_URL=... CHAOS_CHANNELS=/a,/b,/c \
//   CHAOS_COMETD_PER_TRANSPORT=3 CHAOS_JSFORCE=2 [CHAOS_VICTIM=tag] \
//   node chaos/real-clients.mjs
//
// With CHAOS_VICTIM=tag (a node's clientId prefix), the second CometD
// client of each transport and every jsforce subscriber are placed on
// that node: such a client handshakes again through the balancer until
// that node owns its session, so that a fault on that node hits every
// client kind. The others stay where the balancer put them.
//
// With CHAOS_PLAIN=1 the clients are plain instead (no ack, no replay):
// CHAOS_COMETD_PER_TRANSPORT CometD clients WITHOUT AckExtension on each
// of its three transports and CHAOS_FAYE_PER_TRANSPORT Faye clients on
// long-polling and on websocket, every one placed on CHAOS_VICTIM (no
// jsforce). Their report adds the session (1 = the first clientId) that
// received each delivery and every /meta/connect reply that told them to
// handshake again (see e2e/chaos_real_plain_test.go).
//
// It prints "READY" once every client is subscribed. On stdin, "report"
// prints one line "REPORT <json>": per client its kind, transport,
// channels, first and last clientId, handshakes and every delivery's
// publisher and sequence ({"p","s"} of the data); "exit" closes the
// clients and exits. The Go test decides what is lost or duplicated.
import readline from "node:readline";
import {CometDClient, FayeClient} from "../lib/clients.mjs";
import {httpRequest} from "../lib/common.mjs";
import {JsforceSubscriber} from "../lib/jsforce.mjs";

const channels = (process.env.CHAOS_CHANNELS || "").split(",").filter(Boolean);
const perTransport = Number(process.env.CHAOS_COMETD_PER_TRANSPORT || 3);
const jsforceN = Number(process.env.CHAOS_JSFORCE || 2);
const victim = process.env.CHAOS_VICTIM || "";
const plain = process.env.CHAOS_PLAIN === "1";
const fayePerTransport = Number(process.env.CHAOS_FAYE_PER_TRANSPORT || 0);
if (channels.length === 0) {
    console.error("real-clients: CHAOS_CHANNELS is empty");
    process.exit(2);
}

const clients = [];

// loopLag samples how late this process's event loop runs a 50 ms timer
// (the Faye clients, and the reports, share it): a connect reply that
// reached the socket while the loop was blocked is handled late, and Faye
// gives up on a request after 1.2 x the advised timeout by its own timer.
// maxSince(t) is the worst lateness seen since time t (ms since epoch).
const loopLag = (() => {
    const ring = []; // [time, lateness ms], the last 2048 samples
    let worst = 0;
    let expected = Date.now() + 50;
    const timer = setInterval(() => {
        const now = Date.now();
        const late = Math.max(0, now - expected);
        expected = now + 50;
        worst = Math.max(worst, late);
        ring.push([now, late]);
        if (ring.length > 2048) {
            ring.shift();
        }
    }, 50);
    timer.unref();
    return {
        worst: () => worst,
        maxSince: (t) => ring.reduce((m, [at, late]) => (at >= t ? Math.max(m, late) : m), 0),
    };
})();
const keysOf = (list) => list.filter((d) => d && d.p !== undefined).map((d) => [d.p, d.s]);

// As an application does: an operation refused with 503 and retry advice
// (the session's owner is being decided, e.g. while a loaded node's gossip
// probes time out) is tried again, a bounded number of times.
async function retrying(what, op) {
    for (let attempt = 1; ; attempt++) {
        try {
            return await op();
        } catch (e) {
            if (attempt >= 10 || !/503|unavailable/i.test(String(e && e.message))) {
                throw e;
            }
            console.error(`real-clients: ${what}: attempt ${attempt} refused, retrying: ${e.message}`);
            await new Promise((resolve) => setTimeout(resolve, 500));
        }
    }
}

// ownedBy opens clients with open() (which resolves to [client, its
// clientId]) until one's session is owned by the node tagged owner ("":
// any), closing the others with close(client). Between attempts one
// request through the balancer shifts its round-robin turn (an open may
// take a multiple of the node count of requests).
async function ownedBy(owner, what, open, close) {
    for (let attempt = 1; ; attempt++) {
        const [c, id] = await open();
        if (!owner || String(id).startsWith(owner)) {
            return c;
        }
        await close(c);
        if (attempt >= 30) {
            throw new Error(`${what}: no session owned by ${owner} in ${attempt} handshakes through the balancer`);
        }
        await httpRequest("GET", new URL("/healthz", process.env.BAYEUX_URL).href).catch(() => {});
    }
}

async function openCometD(transport, i) {
    const owner = plain || i === 1 ? victim : "";
    const c = await ownedBy(owner, `cometd/${transport}`, async () => {
        const c = await CometDClient.open({transport, ack: !plain});
        return [c, await c.handshake()];
    }, (c) => c.close());
    for (const ch of channels) {
        await retrying(`cometd/${transport} subscribe ${ch}`, () => c.subscribe(ch));
    }
    const first = c.clientId;
    clients.push({
        report: () => ({
            kind: plain ? "cometd-plain" : "cometd-ack", transport, channels, first, last: c.clientId,
            handshakes: c.handshakeReplies().length,
            keys: keysOf(channels.flatMap((ch) => c.messages(ch).map((m) => m.data))),
            ...(plain ? {...plainFigures(c), resubscribeFailures: c.subscribeFailures.length} : {}),
            trace: cometdTrace(c),
        }),
        close: () => c.close(),
    });
}

// openFaye opens a plain Faye client on the victim, subscribed to every
// channel (Faye subscribes again by itself after a re-handshake).
async function openFaye(transport) {
    const c = await ownedBy(victim, `faye/${transport}`, async () => {
        const c = await FayeClient.open({transport});
        try {
            return [c, await c.handshake()];
        } catch (e) {
            await c.close();
            throw e;
        }
    }, (c) => c.close());
    const trace = traceConnects(c.client);
    const log = fayeLog(c);
    for (const ch of channels) {
        await retrying(`faye/${transport} subscribe ${ch}`, () => c.subscribe(ch));
    }
    const first = c.clientId;
    clients.push({
        report: () => ({
            kind: "faye", transport, channels, first, last: c.clientId,
            handshakes: c.handshakeReplies().length,
            keys: keysOf(channels.flatMap((ch) => c.messages(ch).map((m) => m.data))),
            ...plainFigures(c),
            endTransport: c._transportObject && c._transportObject.connectionType,
            trace: trace.slice(),
            log: log.slice(),
        }),
        close: () => c.close(),
    });
}

// fayeLog records, for the diagnosis of a gap, what a Faye client sends
// and receives (meta messages, and "d p<p> s<s>" per delivery), its
// transport:up/down events and, polled every 20 ms, which transport and
// which websocket (numbered in order of appearance) it uses.
function fayeLog(c) {
    const log = [];
    const add = (line) => log.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
    c.client.addExtension({
        outgoing: (m, cb) => {
            if (m.channel.startsWith("/meta/")) {
                add(`out ${m.channel} id=${m.id} ${m.connectionType || ""}`);
            }
            cb(m);
        },
        incoming: (m, cb) => {
            if (m.channel.startsWith("/meta/")) {
                add(`in  ${m.channel} id=${m.id} successful=${m.successful} ${m.error || ""}`);
            } else if (m.data && m.data.p !== undefined) {
                add(`d p${m.data.p} s${m.data.s}`);
            }
            cb(m);
        },
    });
    c.client.on("transport:down", () => add("transport:down"));
    c.client.on("transport:up", () => add("transport:up"));
    const sockets = new WeakMap();
    let nextSocket = 1;
    let seen = "";
    const timer = setInterval(() => {
        const t = c._transportObject;
        const sock = t && t._socket;
        if (sock && !sockets.has(sock)) {
            sockets.set(sock, nextSocket++);
        }
        const now = `${t ? t.connectionType : "none"} socket=${sock ? sockets.get(sock) : "none"} state=${t && t._state}`;
        if (now !== seen) {
            seen = now;
            add(`transport ${now}`);
        }
    }, 20);
    timer.unref();
    return log;
}

// plainFigures: the session (1 = the first clientId) of each delivery, in
// the order of keys, and every /meta/connect reply that told the client
// to handshake again, with the session it ended.
function plainFigures(c) {
    const sessions = channels.flatMap((ch) => c.messages(ch).filter((m) => m.data && m.data.p !== undefined).map((m) => m.session));
    const told = [];
    let session = 0;
    for (const m of c.incoming) {
        if (m.channel === "/meta/handshake" && m.successful === true) {
            session++;
        } else if (m.channel === "/meta/connect" && m.successful === false && m.advice && m.advice.reconnect === "handshake") {
            told.push({session, error: String(m.error || "")});
        }
    }
    // Diagnosis: what reached the client on the wire (it may have dropped
    // some before its application saw them).
    const wire = keysOf(c.incoming.filter((m) => channels.includes(m.channel)).map((m) => m.data));
    return {sessions, told, wire};
}

// cometdTrace summarises the last /meta/connect messages a CometD client
// sent and received (its worker records them raw, without times), and
// its last connect failures.
function cometdTrace(c) {
    const line = (dir, m) => `${dir} connect id=${m.id} successful=${m.successful} ${m.error || ""} ext=${JSON.stringify(m.ext || {})} advice=${JSON.stringify(m.advice || {})}`;
    const out = c.outgoing.filter((m) => m.channel === "/meta/connect").slice(-8).map((m) => line("out", m));
    const inc = c.incoming.filter((m) => m.channel === "/meta/connect").slice(-8).map((m) => line("in ", m));
    const fails = c.connectFailures.slice(-4).map((m) => `failure ${JSON.stringify(m)}`);
    const subFails = c.subscribeFailures.slice(-4).map((m) => `resubscribe failure ${JSON.stringify(m)}`);
    return [...out, ...inc, ...fails, ...subFails];
}

// traceConnects records, in a ring of 16, the /meta/connect messages a
// Faye client sends and receives (time, id, outcome, deliveries between
// replies), for the report of a client that lost or repeated something.
function traceConnects(client) {
    const ring = [];
    let deliveries = 0;
    let sent = Date.now();
    const add = (line) => {
        ring.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
        if (ring.length > 16) {
            ring.shift();
        }
    };
    client.addExtension({
        outgoing: (m, cb) => {
            if (m.channel === "/meta/connect") {
                sent = Date.now();
                add(`out connect id=${m.id} ${m.connectionType}`);
            }
            cb(m);
        },
        incoming: (m, cb) => {
            if (m.channel === "/meta/connect") {
                add(`in  connect id=${m.id} successful=${m.successful} ${m.error || ""} advice=${JSON.stringify(m.advice || {})} after ${deliveries} deliveries; ${Date.now() - sent} ms after the last out, event loop up to ${loopLag.maxSince(sent)} ms late meanwhile`);
                deliveries = 0;
            } else if (m.data && m.data.p !== undefined) {
                deliveries++;
            }
            cb(m);
        },
    });
    // Faye sends a message again, with the same id, after a failed
    // attempt (an HTTP error such as the balancer's 502 for a dead node, a
    // closed socket, or no reply within 1.2 x the advised timeout by its
    // own timer), after its retry interval (5 s): the extensions above see
    // the first attempt only, so a connect answered on a later attempt
    // would look answered late. Each attempt and failure is recorded here.
    const d = client._dispatcher;
    if (d && typeof d._sendEnvelope === "function" && typeof d.handleError === "function" && d._envelopes) {
        const send = d._sendEnvelope.bind(d);
        d._sendEnvelope = (envelope) => {
            const m = envelope.message;
            if (m && m.channel === "/meta/connect" && !envelope.request && !envelope.timer && d._transport) {
                add(`attempt connect id=${m.id} via ${d._transport.connectionType}, ${Date.now() - sent} ms after the out`);
            }
            return send(envelope);
        };
        const fail = d.handleError.bind(d);
        d.handleError = (message, immediate) => {
            const envelope = d._envelopes.get(message.id);
            if (message.channel === "/meta/connect" && envelope && envelope.request) {
                add(`attempt failed connect id=${message.id}, ${Date.now() - sent} ms after the out`);
            }
            return fail(message, immediate);
        };
    }
    return ring;
}

async function openJsforce(i) {
    const transport = i % 2 === 0 ? "long-polling" : "websocket";
    const channel = channels[i % channels.length];
    const s = await ownedBy(victim, `jsforce/${transport}`, () => retrying(`jsforce/${transport} subscribe ${channel}`, async () => {
        const s = new JsforceSubscriber({transport, channel, replayId: -1});
        try {
            await s.subscribe();
        } catch (e) {
            await s.close();
            throw e;
        }
        return [s, s.client._dispatcher.clientId];
    }), (s) => s.close());
    const first = s.client._dispatcher.clientId;
    const trace = traceConnects(s.client);
    clients.push({
        report: () => ({
            kind: "jsforce-replay", transport, channels: [channel], first, last: s.client._dispatcher.clientId,
            handshakes: s.handshakes(), keys: keysOf(s.events),
            noReplayId: s.events.filter((d) => !(d && d.event && Number.isInteger(d.event.replayId))).length,
            trace: trace.slice(),
        }),
        close: () => s.close(),
    });
}

const opens = [];
for (const transport of ["long-polling", "callback-polling", "websocket"]) {
    for (let i = 0; i < perTransport; i++) {
        opens.push(openCometD(transport, i));
    }
}
for (let i = 0; i < jsforceN; i++) {
    opens.push(openJsforce(i));
}
for (const transport of ["long-polling", "websocket"]) {
    for (let i = 0; i < fayePerTransport; i++) {
        opens.push(openFaye(transport));
    }
}
try {
    await Promise.all(opens);
} catch (e) {
    console.error("real-clients: setup failed:", e && e.stack || e);
    process.exit(1);
}
console.log("READY");

const rl = readline.createInterface({input: process.stdin});
rl.on("line", async (line) => {
    if (line === "report") {
        const start = Date.now();
        const reps = clients.map((c) => ({...c.report(), loopLagMs: loopLag.worst()}));
        const out = "REPORT " + JSON.stringify(reps);
        const took = Date.now() - start;
        if (took > 500) {
            console.error(`real-clients: a report of ${out.length} bytes took ${took} ms (the event loop is blocked meanwhile)`);
        }
        console.log(out);
    } else if (line === "exit") {
        await Promise.all(clients.map((c) => c.close()));
        process.exit(0);
    }
});
rl.on("close", () => process.exit(0));
