// jsforce's Streaming API client (npm jsforce 3.10.16, unchanged), as a
// Salesforce integration uses it: a Connection with an access token, a Faye
// client from conn.streaming.createClient([extensions]) on
// instanceUrl + "/cometd/" + version (header "Authorization: OAuth <token>"),
// StreamingExtension.Replay that sends ext.replay in /meta/subscribe only
// and follows data.event.replayId, StreamingExtension.AuthFailure.
import {after, describe, test} from "node:test";
import assert from "node:assert/strict";
import {createRequire} from "node:module";
import {debugExpire, env, uniq, waitFor, withTimeout} from "./common.mjs";
import {FayeClient} from "./clients.mjs";

const require = createRequire(import.meta.url);
const jsforce = require("jsforce");
const {StreamingExtension} = require("jsforce/api/streaming");

const OP_TIMEOUT = 15000;
const API_VERSION = "59.0";

/** The broker's base URL (instanceUrl): BAYEUX_URL without its /cometd path. */
export function instanceUrl() {
    return env().url.replace(/\/cometd\/?$/, "");
}

export class JsforceSubscriber {
    /**
     * @param opts {transport: "long-polling" | "websocket", channel, replayId?: number | null,
     *              token?: string, onAuthFailure?: (message) => void}
     * replayId null/undefined: no Replay extension (live events only).
     */
    constructor({transport, channel, replayId, token = "interop-token", onAuthFailure}) {
        this.transport = transport;
        this.channel = channel;
        this.events = []; // the data of every delivered event, in order
        this.incoming = [];
        const conn = new jsforce.Connection({instanceUrl: instanceUrl(), accessToken: token, version: API_VERSION});
        const exts = [];
        if (onAuthFailure) {
            exts.push(new StreamingExtension.AuthFailure(onAuthFailure));
        }
        if (replayId !== undefined && replayId !== null) {
            this.replay = new StreamingExtension.Replay(channel, replayId);
            exts.push(this.replay);
        }
        exts.push({
            incoming: (m, cb) => {
                this.incoming.push(JSON.parse(JSON.stringify(m)));
                cb(m);
            },
        });
        this.client = conn.streaming.createClient(exts);
        if (transport === "long-polling") {
            this.client.disable("websocket"); // as against Salesforce, which offers long-polling only
        }
    }

    get label() {
        return `jsforce/${this.transport}`;
    }

    /** Subscribes; resolves when the server accepted, rejects with the server's error. */
    async subscribe() {
        this.subscription = this.client.subscribe(this.channel, (data) => this.events.push(data));
        await withTimeout(new Promise((resolve, reject) => {
            this.subscription.then(resolve, (err) => reject(new Error(err && err.message || JSON.stringify(err))));
        }), OP_TIMEOUT, `${this.label}: subscribe ${this.channel}`);
    }

    /** The replay ids of the delivered events, read where jsforce reads them. */
    replayIds() {
        return this.events.map((d) => d && d.event && d.event.replayId);
    }

    async waitEvents(n, ms = 15000) {
        await waitFor(() => this.events.length >= n, ms, `${this.label}: ${n} event(s) on ${this.channel}`,
            () => `got ${JSON.stringify(this.events.slice(-5))}`);
        return this.events;
    }

    /** The connection type of jsforce's Faye transport now (private API, read only). */
    transportInUse() {
        const t = this.client._dispatcher && this.client._dispatcher._transport;
        return t ? t.connectionType : null;
    }

    handshakes() {
        return this.incoming.filter((m) => m.channel === "/meta/handshake" && m.successful === true).length;
    }

    /** Best effort, never throws. */
    async close() {
        try {
            await withTimeout(Promise.resolve(this.client.disconnect()), 3000, "disconnect");
        } catch {
            // ignore
        }
        try {
            const d = this.client._dispatcher;
            this.client._state = this.client.DISCONNECTED;
            d.selectTransport = () => {};
            for (const e of d._envelopes.values()) {
                clearTimeout(e.timer);
            }
            d._envelopes.clear();
            d.close();
        } catch {
            // ignore
        }
    }
}

// ---------------------------------------------------------------------------
// Scenarios.


const TEST_OPTS = {timeout: 120000};

/** Salesforce's platform-event shape; payload.n numbers the events. */
const sfEvent = (n) => ({schema: "interop-schema", payload: {n, Note__c: `event ${n}`}, event: {EventUuid: `uuid-${n}`}});
const ns = (events) => events.map((d) => d.payload.n);

/**
 * Defines the jsforce scenarios for transport ("long-polling": websocket
 * disabled, as against Salesforce; "websocket": jsforce's Faye upgrades).
 */
export function defineJsforceSuite(transport) {
    env();
    const label = `jsforce/${transport}`;
    describe(label, () => {
        after(() => setTimeout(() => process.exit(), 5000).unref());
        let publisher;
        const subscribers = [];
        const open = (opts) => {
            const s = new JsforceSubscriber({transport, ...opts});
            subscribers.push(s);
            return s;
        };
        const publish = async (channel, from, to) => {
            if (!publisher) {
                publisher = await FayeClient.open({transport: "long-polling"});
                await publisher.handshake();
            }
            await publisher.publishMany(channel, Array.from({length: to - from + 1}, (_, i) => sfEvent(from + i)));
        };
        after(async () => {
            await Promise.all(subscribers.map((s) => s.close()));
            if (publisher) {
                await publisher.close();
            }
        });
        const channel = () => `/event/${uniq("Order")}__e`;

        test(`${label} 1. live events without the Replay extension`, TEST_OPTS, async () => {
            const ch = channel();
            const s = open({channel: ch});
            await s.subscribe();
            await publish(ch, 1, 3);
            await s.waitEvents(3);
            assert.deepEqual(ns(s.events), [1, 2, 3]);
            assert.deepEqual(s.events.map((d) => d.event.EventUuid), ["uuid-1", "uuid-2", "uuid-3"], "event fields kept");
        });

        test(`${label} 2. replay -2: everything retained, then live`, TEST_OPTS, async () => {
            const ch = channel();
            await publish(ch, 1, 3);
            const s = open({channel: ch, replayId: -2});
            await s.subscribe();
            await s.waitEvents(3);
            await publish(ch, 4, 4);
            await s.waitEvents(4);
            assert.deepEqual(ns(s.events), [1, 2, 3, 4]);
            const ids = s.replayIds();
            assert.ok(ids.every((id, i) => Number.isInteger(id) && (i === 0 || id > ids[i - 1])),
                `data.event.replayId increasing: ${JSON.stringify(ids)}`);
            assert.equal(s.replay._replay, ids[3], "jsforce's Replay extension follows data.event.replayId");
            await waitFor(() => s.transportInUse() === transport, 15000, `${label}: transport in use`,
                () => String(s.transportInUse()));
            assert.deepEqual(s.events.map((d) => d.event.EventUuid), ["uuid-1", "uuid-2", "uuid-3", "uuid-4"], "other event fields kept");
        });

        test(`${label} 3. replay from an id: only what follows it`, TEST_OPTS, async () => {
            const ch = channel();
            await publish(ch, 1, 5);
            const all = open({channel: ch, replayId: -2});
            await all.subscribe();
            await all.waitEvents(5);
            const id2 = all.replayIds()[1];
            const s = open({channel: ch, replayId: id2});
            await s.subscribe();
            await s.waitEvents(3);
            await publish(ch, 6, 6);
            await s.waitEvents(4);
            assert.deepEqual(ns(s.events), [3, 4, 5, 6]);
        });

        test(`${label} 4. replay -1: new events only`, TEST_OPTS, async () => {
            const ch = channel();
            await publish(ch, 1, 2);
            const s = open({channel: ch, replayId: -1});
            await s.subscribe();
            await publish(ch, 3, 4);
            await s.waitEvents(2);
            assert.deepEqual(ns(s.events), [3, 4]);
        });

        test(`${label} 5. an invalid replay id is refused with Salesforce's wording`, TEST_OPTS, async () => {
            const ch = channel();
            await publish(ch, 1, 1);
            const s = open({channel: ch, replayId: 99999});
            await assert.rejects(s.subscribe(), (err) => {
                assert.match(err.message, /The replayId \{99999\} you provided was invalid\. Please provide a valid ID, -2 to replay all events, or -1 to replay only new events\./);
                return true;
            });
            const reply = s.incoming.find((m) => m.channel === "/meta/subscribe");
            assert.equal(reply && reply.error,
                "400::The replayId {99999} you provided was invalid. Please provide a valid ID, -2 to replay all events, or -1 to replay only new events.");
        });

        test(`${label} 6. session lost: jsforce re-handshakes and resumes after the last id it read, no event twice`, TEST_OPTS, async () => {
            const ch = channel();
            const s = open({channel: ch, replayId: -1});
            await s.subscribe();
            await publish(ch, 1, 3);
            await s.waitEvents(3);
            const handshakes = s.handshakes();
            const clientId = s.client._dispatcher.clientId;
            await debugExpire(clientId);
            await publish(ch, 4, 5); // while the client has no session
            await waitFor(() => s.handshakes() > handshakes, 15000, `${label}: re-handshake`);
            await s.waitEvents(5);
            await publish(ch, 6, 6);
            await s.waitEvents(6);
            assert.deepEqual(ns(s.events), [1, 2, 3, 4, 5, 6], "every event once, in order");
        });
    });
}
