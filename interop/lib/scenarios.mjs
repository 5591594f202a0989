// The interop scenarios, defined once and instantiated per client x transport.
import {after, describe, test} from "node:test";
import {appendFileSync} from "node:fs";
import assert from "node:assert/strict";
import {debugDropNextConnect, debugExpire, env, rawLongPolling, rawSend, uniq, waitFor} from "./common.mjs";
import {clientFactory} from "./clients.mjs";

const DELIVERY_MS = 15000;
// A scenario that hangs fails instead of blocking the run.
const TEST_OPTS = {timeout: 120000};

/**
 * Runs body(open) where open(opts) opens a client of this suite's kind and
 * transport; every client is closed in a finally block, and transport
 * invariants are checked for each client before closing.
 */
function withClients(kind, transport) {
    const factory = clientFactory(kind);
    return async (body) => {
        const clients = [];
        const open = async (opts = {}) => {
            const c = await factory({transport, ...opts});
            clients.push(c);
            return c;
        };
        let ok = false;
        try {
            await body(open);
            ok = true;
        } finally {
            try {
                if (ok) {
                    for (const c of clients) {
                        await transportInvariants(c);
                    }
                }
            } finally {
                await Promise.all(clients.map((c) => c.close()));
            }
        }
    };
}

/**
 * Checks, after a scenario, that each client really used the transport under test.
 * Faye always handshakes over HTTP and upgrades to WebSocket asynchronously
 * afterwards, so in each handshake epoch its /meta/connect messages may be
 * long-polling until the socket is open; after the first websocket connect of
 * an epoch, every connect must be websocket (no fallback), and the socket must
 * still be open at the end.
 */
async function transportInvariants(c) {
    if (c.closed || !c.clientId) {
        return;
    }
    let epoch = [];
    const epochs = [epoch];
    for (const m of c.outgoing) {
        if (m.channel === "/meta/handshake") {
            epochs.push((epoch = []));
        } else if (m.channel === "/meta/connect") {
            epoch.push(m.connectionType);
        }
    }
    for (const types of epochs) {
        let allowed = types;
        if (c.kind !== "cometd" && c.transport === "websocket") {
            const firstWs = types.indexOf("websocket");
            allowed = firstWs < 0 ? [] : types.slice(firstWs);
        }
        for (const t of allowed) {
            assert.equal(t, c.transport, `${c.label}: /meta/connect sent with connectionType ${t} (sequence ${JSON.stringify(types)})`);
        }
    }
    if (c.disconnected) {
        return;
    }
    if (c.kind === "cometd") {
        const info = await c.info();
        assert.equal(info.transport, c.transport, `${c.label}: CometD transport in use`);
        assert.deepEqual(info.transportTypes, [c.transport], `${c.label}: only the transport under test is registered`);
        if (c.transport === "callback-polling") {
            assert.ok(info.shim.requests > 0, `${c.label}: no JSONP script was loaded`);
            assert.deepEqual(info.shim.scriptErrors, [], `${c.label}: JSONP replies that failed to evaluate`);
            assert.deepEqual(info.shim.loadErrors.filter((e) => /blocked/.test(e)), [], `${c.label}: JSONP replies a browser would block`);
        }
    } else if (c.transport === "websocket") {
        assert.ok(c.webSocketOpen(), `${c.label}: Faye is no longer on an open WebSocket (fell back to ` +
            `${await c.transportInUse()})`);
    } else {
        assert.equal(await c.transportInUse(), c.transport, `${c.label}: Faye transport in use`);
    }
}

const chan = (name = "ch") => `/interop/${uniq(name)}`;
const seqs = (list) => list.map((m) => m.data.seq);
const rawOn = (c, channel) => c.incoming.filter((m) => m.channel === channel);

async function openHandshaken(open, n, opts) {
    const cs = await Promise.all(Array.from({length: n}, () => open(opts)));
    await Promise.all(cs.map((c) => c.handshake()));
    return cs;
}

/** Publishes an "end" marker on channel and waits for it at each subscriber. */
async function endMarker(publisher, channel, subscribers, sub = channel, ms = DELIVERY_MS) {
    const token = uniq("end");
    await publisher.publish(channel, {seq: "end", token});
    for (const s of subscribers) {
        await s.waitMessage(sub, (m) => m.data && m.data.token === token, ms, "end marker");
    }
    return token;
}

/**
 * Defines all scenarios for kind ("cometd" | "faye" | "sfdx-faye") x transport.
 */
export function defineSuite(kind, transport) {
    env(); // fails loudly when BAYEUX_URL / BAYEUX_DEBUG_URL are unset
    const run = withClients(kind, transport);
    const label = `${kind}/${transport}`;

    describe(label, () => {
        after(() => {
            // If this file's process does not exit after its tests: say why, then exit.
            setTimeout(() => {
                const msg = `interop ${label}: process still alive 5 s after the tests; active resources: ` +
                    process.getActiveResourcesInfo().join(", ") + "\n";
                if (process.env.INTEROP_DIAG_FILE) {
                    appendFileSync(process.env.INTEROP_DIAG_FILE, msg);
                }
                process.stderr.write(msg);
                // Never hang a CI run on a leaked handle: the results are already reported.
                process.exit();
            }, 5000).unref();
        });
        test(`${label} 1. handshake: clientId obtained, transport under test in use`, TEST_OPTS, () => run(async (open) => {
            const c = await open();
            const id = await c.handshake();
            assert.equal(typeof id, "string");
            assert.match(id, /^[A-Za-z0-9]+$/, "clientId must be alphanumeric");
            const hs = c.handshakeReplies()[0];
            assert.equal(hs.successful, true);
            assert.equal(typeof hs.version, "string", "handshake reply version");
            assert.ok(Array.isArray(hs.supportedConnectionTypes) && hs.supportedConnectionTypes.includes(transport),
                `server's supportedConnectionTypes ${JSON.stringify(hs.supportedConnectionTypes)} lacks ${transport}`);
            // The client goes on to /meta/connect on the transport under test and the server answers it.
            await waitFor(() => c.outgoing.some((m) => m.channel === "/meta/connect" && m.connectionType === transport),
                45000, `${c.label}: a /meta/connect with connectionType ${transport}`);
            assert.equal(await c.transportInUse(), transport);
            // A second client gets a different clientId.
            const d = await open();
            const id2 = await d.handshake();
            assert.notEqual(id2, id, "two handshakes returned the same clientId");
        }));

        test(`${label} 2. publish/subscribe between two clients`, TEST_OPTS, () => run(async (open) => {
            const [sub, pub] = await openHandshaken(open, 2);
            const ch = chan("ps");
            await sub.subscribe(ch);
            const data = {text: "hello", n: 42, nested: {arr: [1, "two", null, true, 2.5]}, unicode: "é漢字 \u2028\u2029 </script>"};
            const reply = await pub.publish(ch, data);
            assert.equal(reply.successful, true);
            await endMarker(pub, ch, [sub]);
            const got = sub.messages(ch);
            assert.equal(got.length, 2, `expected the message then the end marker, got ${JSON.stringify(got)}`);
            assert.equal(got[0].channel, ch);
            assert.deepEqual(got[0].data, data);
            // The broadcast does not leak the publisher's clientId.
            for (const m of rawOn(sub, ch)) {
                assert.notEqual(m.clientId, pub.clientId, "publisher clientId leaked in a broadcast");
            }
            // The publisher is not subscribed and receives nothing on ch.
            assert.equal(rawOn(pub, ch).filter((m) => m.data !== undefined).length, 0, "publisher received its own message");
        }));

        test(`${label} 3. wildcards /x/* and /x/**`, TEST_OPTS, () => run(async (open) => {
            const [one, deep, pub] = await openHandshaken(open, 3);
            const base = chan("wc");
            await one.subscribe(`${base}/*`);
            await deep.subscribe(`${base}/**`);
            const sequence = [`${base}/a`, `${base}/a/b`, base, `${base}x/a`, `${base}/b/c/d`, `${base}/c`];
            for (const [i, ch] of sequence.entries()) {
                await pub.publish(ch, {seq: i, ch});
            }
            const token = uniq("end");
            await pub.publish(`${base}/end`, {seq: "end", token});
            // Order is per channel: these are six channels, and on a sharded
            // backplane (Redis Cluster) each reaches the node on its own
            // partition's connection, so they may arrive in any order. Wait
            // for all of them, then compare the sets.
            const wantOne = [`${base}/a`, `${base}/c`, `${base}/end`];
            const wantDeep = [`${base}/a`, `${base}/a/b`, `${base}/b/c/d`, `${base}/c`, `${base}/end`];
            const sorted = (xs) => [...xs].sort();
            const got = (c, sub) => c.messages(sub).map((m) => m.channel);
            await waitFor(() => got(one, `${base}/*`).length >= wantOne.length && got(deep, `${base}/**`).length >= wantDeep.length,
                DELIVERY_MS, "every wildcard delivery", () => JSON.stringify([got(one, `${base}/*`), got(deep, `${base}/**`)]));
            assert.deepEqual(sorted(got(one, `${base}/*`)), sorted(wantOne), "/x/* must match exactly one segment");
            assert.deepEqual(sorted(got(deep, `${base}/**`)), sorted(wantDeep), "/x/** must match any depth below /x");
            // The clients also filter by their own subscriptions: check the wire too.
            const wire = (c) => c.incoming.filter((m) => m.data !== undefined && m.channel.startsWith(base)).map((m) => m.channel);
            assert.deepEqual(sorted(wire(one)), sorted(wantOne), "/x/* subscriber: messages on the wire");
            assert.deepEqual(sorted(wire(deep)), sorted(wantDeep), "/x/** subscriber: messages on the wire");
            for (const m of [...one.messages(`${base}/*`), ...deep.messages(`${base}/**`)]) {
                assert.equal(m.channel, m.data.ch || `${base}/end`, "message delivered with its concrete channel");
            }
        }));

        // Every publisher sends back to back, as applications do. The Faye
        // long-polling client flushes a POST every ~2 KB of messages with no limit
        // on parallel requests (10 in flight for 200 messages, and the first
        // publish may go last); the server puts them back in the order the client
        // numbered them (its reorder window), so every client's order is checked.
        const publishAll = (pub, ch, datas) => pub.publishMany(ch, datas);

        test(`${label} 4. order: 200 messages arrive complete, in order, once, at two subscribers`, TEST_OPTS, () => run(async (open) => {
            const [s1, s2, pub] = await openHandshaken(open, 3);
            const ch = chan("order");
            await s1.subscribe(ch);
            await s2.subscribe(ch);
            const N = 200;
            await publishAll(pub, ch, Array.from({length: N}, (_, i) => ({seq: i, pad: "x".repeat(i % 7)})));
            await endMarker(pub, ch, [s1, s2], ch, 30000);
            const expected = [...Array.from({length: N}, (_, i) => i), "end"];
            assert.deepEqual(seqs(s1.messages(ch)), expected, "subscriber 1 sequence");
            assert.deepEqual(seqs(s2.messages(ch)), expected, "subscriber 2 sequence");
            // A second burst right after the first, on another channel: the same
            // publisher order at both subscribers.
            const burst = chan("burst");
            await s1.subscribe(burst);
            await s2.subscribe(burst);
            await pub.publishMany(burst, Array.from({length: N}, (_, i) => ({seq: i})));
            await endMarker(pub, burst, [s1, s2], burst, 30000);
            assert.deepEqual(seqs(s1.messages(burst)), expected, "subscriber 1 burst sequence");
            assert.deepEqual(seqs(s2.messages(burst)), expected, "subscriber 2 burst sequence");
        }));

        test(`${label} 5. 20 subscribers all receive 20 messages`, TEST_OPTS, () => run(async (open) => {
            const subs = await openHandshaken(open, 20);
            const [pub] = await openHandshaken(open, 1);
            const ch = chan("fan");
            await Promise.all(subs.map((s) => s.subscribe(ch)));
            await publishAll(pub, ch, Array.from({length: 20}, (_, i) => ({seq: i})));
            await endMarker(pub, ch, subs, ch, 30000);
            const expected = [...Array.from({length: 20}, (_, i) => i), "end"];
            subs.forEach((s, i) => assert.deepEqual(seqs(s.messages(ch)), expected, `subscriber #${i} (${s.clientId})`));
        }));

        test(`${label} 6. unsubscribe stops delivery`, TEST_OPTS, () => run(async (open) => {
            const [sub, pub] = await openHandshaken(open, 2);
            const ch = chan("unsub");
            const ctrl = chan("ctrl");
            await sub.subscribe(ch);
            await sub.subscribe(ctrl);
            await pub.publish(ch, {seq: 1});
            await sub.waitMessages(ch, 1);
            const reply = await sub.unsubscribe(ch);
            assert.equal(reply.successful, true);
            await pub.publish(ch, {seq: 2});
            await pub.publish(ctrl, {seq: "ctrl"});
            await sub.waitMessages(ctrl, 1);
            assert.deepEqual(seqs(sub.messages(ch)), [1]);
            // Stronger than the client's own bookkeeping: nothing for ch arrived on the wire either.
            const wire = rawOn(sub, ch).filter((m) => m.data !== undefined);
            assert.deepEqual(wire.map((m) => m.data.seq), [1], "message delivered on the wire after unsubscribe");
        }));

        test(`${label} 7. after disconnect, the old clientId gets 402 + reconnect:handshake`, TEST_OPTS, () => run(async (open) => {
            const c = await open();
            const id = await c.handshake();
            await c.subscribe(chan("disc"));
            const reply = await c.disconnect();
            assert.ok(reply && reply.successful === true, `disconnect reply ${JSON.stringify(reply)}`);
            const requests = [
                [{channel: "/meta/connect", clientId: id, connectionType: transport, id: "71"}],
                [{channel: "/meta/subscribe", clientId: id, subscription: chan("disc2"), id: "72"}],
                [{channel: chan("disc3"), clientId: id, data: {x: 1}, id: "73"}],
            ];
            for (const req of requests) {
                const {replies, wire} = await rawSend(transport, req);
                const r = replies.find((m) => m.channel === req[0].channel);
                const ctx = `request ${JSON.stringify(req)} -> ${JSON.stringify(replies)} (wire ${JSON.stringify(wire).slice(0, 600)})`;
                assert.ok(r, `no reply on ${req[0].channel}: ${ctx}`);
                assert.equal(r.successful, false, ctx);
                assert.match(String(r.error), /^402:/, ctx);
                assert.equal(r.advice && r.advice.reconnect, "handshake", ctx);
            }
        }));

        test(`${label} 8. server forgets the session: client re-handshakes and receives again`, TEST_OPTS, () => run(async (open) => {
            const [c, pub] = await openHandshaken(open, 2);
            const ch = chan("expire");
            await c.subscribe(ch);
            await pub.publish(ch, {seq: 1});
            await c.waitMessages(ch, 1);
            const oldId = c.clientId;
            const handshakesBefore = c.handshakeReplies().length;
            await debugExpire(oldId);
            // The held connect is answered at once: the re-handshake must not wait for a long-poll timeout.
            await waitFor(() => c.handshakeReplies().length > handshakesBefore, 10000, `${c.label}: a new handshake`);
            const newId = c.clientId;
            assert.notEqual(newId, oldId, "re-handshake reused the old clientId");
            const unknown = c.incoming.find((m) => m.successful === false && /^402:/.test(String(m.error)) &&
                m.advice && m.advice.reconnect === "handshake");
            assert.ok(unknown, `no 402 + reconnect:handshake reply seen; incoming: ${JSON.stringify(c.incoming.slice(-6))}`);
            // The client (Faye by itself, CometD app in its /meta/handshake listener) subscribes again.
            const hsIndex = c.incoming.findIndex((m) => m.channel === "/meta/handshake" && m.clientId === newId);
            await waitFor(() => c.incoming.slice(hsIndex).some((m) => m.channel === "/meta/subscribe" && m.successful === true &&
                [].concat(m.subscription).includes(ch)), DELIVERY_MS, `${c.label}: resubscription to ${ch}`);
            await pub.publish(ch, {seq: 2});
            await endMarker(pub, ch, [c]);
            assert.deepEqual(seqs(c.messages(ch)), [1, 2, "end"]);
        }));

        test(`${label} 9. /service/echo answers the publisher only`, TEST_OPTS, () => run(async (open) => {
            const [a, all, other] = await openHandshaken(open, 3);
            const ctrl = chan("echo-ctrl");
            await a.subscribe("/service/echo");
            await all.subscribe("/**");
            await other.subscribe("/service/echo");
            await other.subscribe(ctrl);
            const data = {token: uniq("echo"), list: [1, 2, 3], s: "é"};
            const reply = await a.publish("/service/echo", data);
            assert.equal(reply.successful, true, "publish to /service/echo acknowledged");
            const echo = await a.waitMessages("/service/echo", 1);
            assert.equal(echo[0].channel, "/service/echo");
            assert.deepEqual(echo[0].data, data);
            // Control message published after: once it has arrived, the echo would have too.
            await a.publish(ctrl, {seq: "ctrl", token: data.token});
            await all.waitMessage("/**", (m) => m.channel === ctrl, DELIVERY_MS, "control message");
            await other.waitMessages(ctrl, 1);
            for (const c of [all, other]) {
                const leaked = c.incoming.filter((m) => m.channel === "/service/echo" || JSON.stringify(m.data || null).includes(data.token) && m.channel !== ctrl);
                assert.deepEqual(leaked, [], `${c.label} received the echo of another client`);
            }
            assert.deepEqual(other.messages("/service/echo"), []);
            assert.equal(a.messages("/service/echo").length, 1, "echo delivered exactly once");
        }));

        test(`${label} 12. a disconnect sent from another connection: the client learns it, re-handshakes and receives again`, TEST_OPTS, () => run(async (open) => {
            const [c, pub] = await openHandshaken(open, 2);
            const ch = chan("kicked");
            await c.subscribe(ch);
            await pub.publish(ch, {seq: 1});
            await c.waitMessages(ch, 1);
            const oldId = c.clientId;
            const handshakesBefore = c.handshakeReplies().length;
            // Another tab or an admin tool ends the session.
            const {replies} = await rawLongPolling([{channel: "/meta/disconnect", clientId: oldId, id: "x1"}]);
            assert.equal(replies[0] && replies[0].successful, true, `disconnect reply ${JSON.stringify(replies)}`);
            await waitFor(() => c.handshakeReplies().length > handshakesBefore, 15000, `${c.label}: a new handshake`,
                () => JSON.stringify(c.incoming.slice(-4)));
            const told = c.incoming.find((m) => m.channel === "/meta/connect" && m.successful === false &&
                m.advice && m.advice.reconnect === "handshake");
            assert.ok(told, `no unsuccessful connect with reconnect:handshake; incoming: ${JSON.stringify(c.incoming.slice(-6))}`);
            const newId = c.clientId;
            assert.notEqual(newId, oldId);
            const hsIndex = c.incoming.findIndex((m) => m.channel === "/meta/handshake" && m.clientId === newId);
            await waitFor(() => c.incoming.slice(hsIndex).some((m) => m.channel === "/meta/subscribe" && m.successful === true &&
                [].concat(m.subscription).includes(ch)), DELIVERY_MS, `${c.label}: resubscription to ${ch}`);
            await pub.publish(ch, {seq: 2});
            await endMarker(pub, ch, [c]);
            assert.deepEqual(seqs(c.messages(ch)), [1, 2, "end"]);
        }));

        if (kind !== "cometd") {
            test(`${label} 13. after a re-handshake, the connect Faye batches with its re-subscription (timeout 0) is not advised timeout 0`, TEST_OPTS, () => run(async (open) => {
                const [c, pub] = await openHandshaken(open, 2);
                const ch = chan("advice");
                await c.subscribe(ch);
                const downs = [];
                c.client.on("transport:down", () => downs.push(Date.now()));
                // The connects as sent: Faye's transport adds advice.timeout
                // 0 to the message object when it flushes it in a batch,
                // after the extensions saw it.
                const connects = [];
                c.client.addExtension({outgoing: (m, cb) => {
                    if (m.channel === "/meta/connect") {
                        connects.push(m);
                    }
                    cb(m);
                }});
                const hsBefore = c.handshakeReplies().length;
                await debugExpire(c.clientId);
                await waitFor(() => c.handshakeReplies().length > hsBefore, DELIVERY_MS, `${c.label}: a new handshake`);
                const newId = c.clientId;
                const hsIndex = c.incoming.findIndex((m) => m.channel === "/meta/handshake" && m.clientId === newId);
                await waitFor(() => c.incoming.slice(hsIndex).some((m) => m.channel === "/meta/subscribe" && m.successful === true),
                    DELIVERY_MS, `${c.label}: resubscription to ${ch}`);
                // Faye proposes timeout 0 for a connect it batches with other
                // messages, and takes the reply's advice for its next connect:
                // 0 would make it give up on that one after 6 s (1.2 x its
                // retry) and close its websocket, losing deliveries on it.
                assert.ok(connects.some((m) => m.clientId === newId && m.advice && m.advice.timeout === 0),
                    `${c.label}: no connect proposing timeout 0 after the re-handshake (the case under test did not occur)`);
                const advised = c.incoming.slice(hsIndex).filter((m) => m.channel === "/meta/connect" && m.advice).map((m) => m.advice.timeout);
                assert.ok(advised.length > 0 && advised.every((t) => t > 0), `${c.label}: connect replies advised timeouts ${JSON.stringify(advised)}`);
                if (transport === "websocket") {
                    // Longer than 6 s after the re-subscription: the socket stays.
                    const since = Date.now();
                    await new Promise((resolve) => setTimeout(resolve, 8000));
                    assert.deepEqual(downs.filter((t) => t >= since), [], `${c.label}: transport went down after the re-handshake`);
                }
                await pub.publish(ch, {seq: 1});
                await endMarker(pub, ch, [c]);
                assert.deepEqual(seqs(c.messages(ch)), [1, "end"]);
            }));
            return;
        }

        test(`${label} 10. ack extension redelivers after a lost /meta/connect reply`, TEST_OPTS, () => run(async (open) => {
            const c = await open({ack: true});
            const [pub] = await openHandshaken(open, 1);
            await c.handshake();
            const hs = c.handshakeReplies()[0];
            assert.equal(hs.ext && hs.ext.ack, true, `handshake reply ext.ack: ${JSON.stringify(hs.ext)}`);
            const ch = chan("ack");
            await c.subscribe(ch);
            await pub.publish(ch, {seq: "warmup"});
            await c.waitMessages(ch, 1);
            const withAck = c.incoming.filter((m) => m.channel === "/meta/connect" && m.successful && m.ext && typeof m.ext.ack === "number");
            assert.ok(withAck.length > 0, `no connect reply carried a numeric ext.ack: ${JSON.stringify(c.incoming.filter((m) => m.channel === "/meta/connect"))}`);
            const failuresBefore = c.connectFailures.length;
            await debugDropNextConnect(c.clientId);
            const N = 10;
            await pub.publishMany(ch, Array.from({length: N}, (_, i) => ({seq: i})));
            await c.waitMessages(ch, N + 1, 30000);
            assert.ok(c.connectFailures.length > failuresBefore,
                "the armed connect reply was not lost (no failed /meta/connect seen): drop-next-connect had no effect");
            await endMarker(pub, ch, [c]);
            assert.deepEqual(seqs(c.messages(ch)), ["warmup", ...Array.from({length: N}, (_, i) => i), "end"],
                "messages after the lost reply: complete, in order, exactly once");
            assert.equal(c.handshakeReplies().length, 1, "the session survived (no re-handshake)");
        }));

        test(`${label} 11. timesync extension answers`, TEST_OPTS, () => run(async (open) => {
            const c = await open({timesync: true});
            await c.handshake();
            const ch = chan("ts");
            await c.subscribe(ch);
            await c.publish(ch, {seq: 1}); // makes the server answer the held connect
            await c.waitMessages(ch, 1);
            await waitFor(() => c.incoming.some((m) => m.channel === "/meta/connect" && m.successful), 40000,
                `${c.label}: a /meta/connect reply`);
            const now = Date.now();
            const sentTc = new Set(c.outgoing.filter((m) => m.ext && m.ext.timesync).map((m) => m.ext.timesync.tc));
            const replies = c.incoming.filter((m) => (m.channel === "/meta/handshake" || m.channel === "/meta/connect") && m.successful);
            assert.ok(replies.some((m) => m.channel === "/meta/connect"));
            for (const m of replies) {
                const t = m.ext && m.ext.timesync;
                assert.ok(t, `${m.channel} reply without ext.timesync: ${JSON.stringify(m)}`);
                for (const f of ["tc", "ts", "p", "a"]) {
                    assert.equal(typeof t[f], "number", `ext.timesync.${f} in ${JSON.stringify(m)}`);
                }
                assert.ok(sentTc.has(t.tc), `ext.timesync.tc ${t.tc} echoes no tc the client sent`);
                assert.ok(Math.abs(t.ts - now) < 120000, `ts ${t.ts} far from now ${now}`);
                assert.ok(t.p >= 0, `p ${t.p} negative`);
            }
            const info = await c.info();
            assert.ok(Number.isFinite(info.timeOffset), `getTimeOffset() = ${info.timeOffset}`);
            assert.ok(Math.abs(info.timeOffset) < 1000, `time offset on the same host: ${info.timeOffset} ms`);
            assert.ok(Number.isFinite(info.networkLag) && info.networkLag < 5000, `network lag ${info.networkLag}`);
        }));
    });
}
