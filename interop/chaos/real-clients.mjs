// Real-client subscribers for the chaos suite (e2e/chaos_real_test.go):
// unchanged CometD clients with their AckExtension on long-polling,
// callback-polling and websocket, and jsforce replay subscribers
// (StreamingExtension.Replay from -1, following data.event.replayId), all
// through the balancer at BAYEUX_URL.
//
//   BAYEUX_URL=... BAYEUX_DEBUG_URL=... CHAOS_CHANNELS=/a,/b,/c \
//   CHAOS_COMETD_PER_TRANSPORT=3 CHAOS_JSFORCE=4 node chaos/real-clients.mjs
//
// It prints "READY" once every client is subscribed. On stdin, "report"
// prints one line "REPORT <json>": per client its kind, transport,
// channels, first and last clientId, handshakes and every delivery's
// publisher and sequence ({"p","s"} of the data); "exit" closes the
// clients and exits. The Go test decides what is lost or duplicated.
import readline from "node:readline";
import {CometDClient} from "../lib/clients.mjs";
import {JsforceSubscriber} from "../lib/jsforce.mjs";

const channels = (process.env.CHAOS_CHANNELS || "").split(",").filter(Boolean);
const perTransport = Number(process.env.CHAOS_COMETD_PER_TRANSPORT || 3);
const jsforceN = Number(process.env.CHAOS_JSFORCE || 4);
if (channels.length === 0) {
    console.error("real-clients: CHAOS_CHANNELS is empty");
    process.exit(2);
}

const clients = [];
const keysOf = (list) => list.filter((d) => d && d.p !== undefined).map((d) => [d.p, d.s]);

async function openCometD(transport) {
    const c = await CometDClient.open({transport, ack: true});
    await c.handshake();
    for (const ch of channels) {
        await c.subscribe(ch);
    }
    const first = c.clientId;
    clients.push({
        report: () => ({
            kind: "cometd-ack", transport, channels, first, last: c.clientId,
            handshakes: c.handshakeReplies().length,
            keys: keysOf(channels.flatMap((ch) => c.messages(ch).map((m) => m.data))),
        }),
        close: () => c.close(),
    });
}

async function openJsforce(i) {
    const transport = i % 2 === 0 ? "long-polling" : "websocket";
    const channel = channels[i % channels.length];
    const s = new JsforceSubscriber({transport, channel, replayId: -1});
    await s.subscribe();
    const first = s.client._dispatcher.clientId;
    clients.push({
        report: () => ({
            kind: "jsforce-replay", transport, channels: [channel], first, last: s.client._dispatcher.clientId,
            handshakes: s.handshakes(), keys: keysOf(s.events),
            noReplayId: s.events.filter((d) => !(d && d.event && Number.isInteger(d.event.replayId))).length,
        }),
        close: () => s.close(),
    });
}

const opens = [];
for (const transport of ["long-polling", "callback-polling", "websocket"]) {
    for (let i = 0; i < perTransport; i++) {
        opens.push(openCometD(transport));
    }
}
for (let i = 0; i < jsforceN; i++) {
    opens.push(openJsforce(i));
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
        console.log("REPORT " + JSON.stringify(clients.map((c) => c.report())));
    } else if (line === "exit") {
        await Promise.all(clients.map((c) => c.close()));
        process.exit(0);
    }
});
rl.on("close", () => process.exit(0));
