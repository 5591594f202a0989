// The admin console (/admin/ on a node's API listener) in headless
// Chromium, driven with playwright-core. Run by e2e/serverapi_admin_test.go
// against a three-node cluster:
//
//   ADMIN_URL=http://127.0.0.1:PORT   a node's API listener
//   ADMIN_KEY=...                     an API key
//   ADMIN_CHANNEL=/x/y                a channel a session of another node subscribes to
//   ADMIN_CLIENT_ID=...               that session
//   ADMIN_EXPECT_NODES=3
//   ADMIN_SCREENSHOTS=dir, CHROMIUM=/path/to/chromium
//
// Signs in (a wrong key first), checks nodes, channels, presence and
// history, publishes from the console and sees the message arrive live over
// Bayeux, then disconnects the other node's session from the console.
import {after, before, test} from "node:test";
import assert from "node:assert/strict";
import {mkdtempSync, mkdirSync} from "node:fs";
import {createRequire} from "node:module";
import {tmpdir} from "node:os";
import path from "node:path";

const require = createRequire(import.meta.url);
const {chromium} = require("playwright-core");

const need = (k) => {
    const v = process.env[k];
    if (!v) {
        throw new Error(k + " must be set");
    }
    return v;
};
const url = need("ADMIN_URL").replace(/\/+$/, "");
const key = need("ADMIN_KEY");
const channel = need("ADMIN_CHANNEL");
const clientId = need("ADMIN_CLIENT_ID");
const expectNodes = Number(process.env.ADMIN_EXPECT_NODES || "1");
const shots = process.env.ADMIN_SCREENSHOTS || mkdtempSync(path.join(tmpdir(), "bayeux-admin-"));
mkdirSync(shots, {recursive: true});
const TIMEOUT = 15000;

let browser;

before(async () => {
    browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || "chromium",
        headless: true,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"],
        timeout: 30000,
    });
});

after(async () => {
    if (browser) {
        await browser.close();
    }
});

async function screenshot(page, name) {
    const file = path.join(shots, name + ".png");
    await page.screenshot({path: file, fullPage: true});
    console.log(`screenshot: ${file}`);
}

test("admin console: sign in, inspect, publish live, disconnect", async () => {
    const context = await browser.newContext({viewport: {width: 1100, height: 900}});
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.setDefaultTimeout(TIMEOUT);
    await page.goto(url + "/admin/");

    // A wrong key is refused with the API's message.
    await page.fill("#key", "not-the-admin-key-0123456789");
    await page.click("#signin button");
    await page.waitForFunction(() => document.getElementById("signin-error").textContent.includes("wrong API key"));
    assert.equal(await page.isVisible("#console"), false);

    await page.fill("#key", key);
    await page.click("#signin button");
    await page.waitForSelector("#console", {state: "visible"});
    await page.waitForFunction((n) => document.querySelectorAll("#nodes tbody tr").length === n, expectNodes);

    // The channel of another node's session, with its subscriber count.
    await page.waitForFunction((ch) => [...document.querySelectorAll("#channels tbody tr")]
        .some((tr) => tr.cells[0].textContent === ch && tr.cells[1].textContent === "1"), channel);
    await page.click(`#channels tbody a:text-is("${channel}")`);
    await page.waitForFunction((id) => [...document.querySelectorAll("#presence tbody tr")]
        .some((tr) => tr.cells[0].textContent === id), clientId);
    await page.waitForFunction(() => document.querySelectorAll("#history li").length > 0);
    assert.match(await page.textContent("#history"), /"seed"/);

    // Publish from the console: it is answered with a replay id and arrives
    // on the console's own live Bayeux subscription.
    await page.fill("#data", '{"from":"admin"}');
    await page.click("#publish button");
    await page.waitForFunction(() => document.getElementById("publish-result").textContent.startsWith("published, replay id"));
    await page.waitForFunction(() => document.getElementById("live").textContent.includes('{"from":"admin"}'));
    await screenshot(page, "admin-channel");

    // Disconnect the other node's session from the presence table.
    const row = page.locator("#presence tbody tr", {hasText: clientId});
    await row.locator("a", {hasText: "disconnect"}).click();
    await page.waitForFunction((id) => ![...document.querySelectorAll("#presence tbody tr")]
        .some((tr) => tr.cells[0].textContent === id), clientId);
    await screenshot(page, "admin-after-disconnect");
    assert.deepEqual(errors, []);
    await context.close();
});

// As a new user would try it: a publish through the API (the README's curl
// line) shows in a browser tab of the demo served through the balancer,
// presence lists the tab, and a disconnect makes the tab handshake again.
test("demo tab: API publish, presence, disconnect and re-handshake", async () => {
    const demo = need("DEMO_URL").replace(/\/+$/, "");
    const room = "api" + Math.random().toString(36).slice(2, 8);
    const context = await browser.newContext({viewport: {width: 1000, height: 700}});
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    const handshakes = []; // clientIds of successful handshake replies, in order
    page.on("websocket", (ws) => ws.on("framereceived", (f) => {
        try {
            for (const m of [].concat(JSON.parse(f.payload))) {
                if (m.channel === "/meta/handshake" && m.successful) {
                    handshakes.push(m.clientId);
                }
            }
        } catch {
            // not JSON: ignore
        }
    }));
    await page.goto(`${demo}/?room=${room}`);
    await page.fill("#name", "tab");
    await page.waitForSelector("#join:not([disabled])");
    await page.click("#join");
    await page.waitForFunction(() => document.getElementById("member-count").textContent === "1");
    const call = async (method, p, body) => {
        const res = await fetch(url + "/api/v1/" + p, {method, headers: {"Authorization": "Bearer " + key},
            body: body && JSON.stringify(body), signal: AbortSignal.timeout(TIMEOUT)});
        const out = await res.json();
        assert.ok(res.ok, `${p}: ${JSON.stringify(out)}`);
        return out;
    };
    await call("POST", "publish", {channel: `/chat/${room}`, data: {name: "backend", text: "hello from the API"}});
    await page.waitForFunction(() => document.getElementById("messages").textContent.includes("hello from the API"));
    const pres = await call("GET", "presence?channel=" + encodeURIComponent(`/chat/${room}`));
    assert.equal(pres.sessions.length, 1);
    const first = pres.sessions[0].clientId;
    assert.equal(handshakes.at(-1), first, "presence lists the tab's session");
    await call("POST", "disconnect", {clientId: first});
    const deadline = Date.now() + TIMEOUT;
    while (!(handshakes.length >= 2 && handshakes.at(-1) !== first)) {
        assert.ok(Date.now() < deadline, `the tab did not handshake again: ${JSON.stringify(handshakes)}`);
        await new Promise((r) => setTimeout(r, 20));
    }
    // Back in the room under its new session.
    const again = await (async () => {
        for (;;) {
            const p = await call("GET", "presence?channel=" + encodeURIComponent(`/chat/${room}`));
            if (p.sessions.some((s) => s.clientId === handshakes.at(-1))) {
                return p;
            }
            assert.ok(Date.now() < deadline + TIMEOUT, `the tab did not rejoin: ${JSON.stringify(p)}`);
            await new Promise((r) => setTimeout(r, 50));
        }
    })();
    assert.equal(again.sessions.length, 1);
    await screenshot(page, "demo-after-disconnect");
    await context.close();
});
