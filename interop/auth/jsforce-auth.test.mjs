// jsforce's AuthFailure extension against a node started with --auth-webhook
// (run by e2e/interop_auth_test.go, whose webhook allows the access token
// "good-token" and denies any other). Not in test/: it needs that node.
import {after, describe, test} from "node:test";
import assert from "node:assert/strict";
import {uniq, waitFor} from "../lib/common.mjs";
import {JsforceSubscriber} from "../lib/jsforce.mjs";

const TEST_OPTS = {timeout: 60000};

for (const transport of ["long-polling", "websocket"]) {
    describe(`jsforce/${transport}`, () => {
        const subs = [];
        after(async () => {
            await Promise.all(subs.map((s) => s.close()));
            setTimeout(() => process.exit(), 5000).unref();
        });

        test(`jsforce/${transport} 7. a valid token handshakes and subscribes`, TEST_OPTS, async () => {
            const failures = [];
            const s = new JsforceSubscriber({transport, channel: `/event/${uniq("Auth")}__e`, token: "good-token",
                onAuthFailure: (m) => failures.push(m)});
            subs.push(s);
            await s.subscribe();
            assert.deepEqual(failures, []);
        });

        test(`jsforce/${transport} 8. a rejected token reaches AuthFailure with reconnect none, and the client stops`, TEST_OPTS, async () => {
            const failures = [];
            const s = new JsforceSubscriber({transport, channel: `/event/${uniq("Auth")}__e`, token: "revoked-token",
                onAuthFailure: (m) => failures.push(m)});
            subs.push(s);
            s.subscribe().catch(() => {}); // never confirmed: the handshake is denied
            await waitFor(() => failures.length > 0, 15000, "AuthFailure callback");
            const m = failures[0];
            assert.equal(m.channel, "/meta/handshake");
            assert.equal(m.successful, false);
            assert.match(String(m.error), /^403:/);
            assert.equal(m.advice && m.advice.reconnect, "none");
            const handshakes = () => s.incoming.filter((x) => x.channel === "/meta/handshake").length;
            const seen = handshakes();
            // No retry loop: the callback stops the message, so Faye does not
            // handshake again by itself.
            await new Promise((r) => setTimeout(r, 1500));
            assert.equal(handshakes(), seen, "the client kept handshaking after reconnect:none");
        });
    });
}
