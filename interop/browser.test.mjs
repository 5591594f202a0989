// End-to-end test of the browser demo (pkg/demo) in headless Chromium,
// driven with playwright-core. Run by e2e/browser_test.go against a node or
// a cluster behind a balancer:
//
//   BROWSER_BASE_URL=http://127.0.0.1:PORT   the demo's origin (the balancer in cluster mode)
//   BROWSER_EXPECT_NODES=3                   nodes the cluster page must list (default 1)
//   BROWSER_SCENARIOS=websocket,...          subset to run (default: all, see SCENARIOS)
//   BROWSER_SCREENSHOTS=dir                  where screenshots go (default: a new temp dir)
//   CHROMIUM=/path/to/chromium               default: chromium (or chromium-browser) on PATH
//
//   node --test --test-reporter=spec browser.test.mjs
//
// Fails (never skips) without Chromium or playwright-core. Each chat
// scenario opens two browser contexts (separate cookie jars: two browsers),
// joins the same room, checks both member lists, sends messages from both
// sides at once and checks that both pages show the same messages in the
// same order, on the transport the scenario is about (checked on the wire).
import {after, before, describe, test} from "node:test";
import assert from "node:assert/strict";
import {randomBytes} from "node:crypto";
import {existsSync, mkdtempSync, mkdirSync, readFileSync} from "node:fs";
import {createRequire} from "node:module";
import {tmpdir} from "node:os";
import path from "node:path";

const require = createRequire(import.meta.url);
const {chromium} = require("playwright-core");

const SCENARIOS = ["websocket", "long-polling", "callback-polling", "cometd", "cluster"];

const base = (process.env.BROWSER_BASE_URL || "").replace(/\/+$/, "");
if (!base) {
    throw new Error("BROWSER_BASE_URL must be set (the origin serving the demo, e.g. http://127.0.0.1:8080)");
}
const expectNodes = Number(process.env.BROWSER_EXPECT_NODES || "1");
const scenarios = (process.env.BROWSER_SCENARIOS || SCENARIOS.join(",")).split(",").map((s) => s.trim()).filter(Boolean);
for (const s of scenarios) {
    if (!SCENARIOS.includes(s)) {
        throw new Error(`unknown scenario ${s} (have ${SCENARIOS.join(", ")})`);
    }
}
const shots = process.env.BROWSER_SCREENSHOTS || mkdtempSync(path.join(tmpdir(), "bayeux-browser-"));
mkdirSync(shots, {recursive: true});

function findChromium() {
    if (process.env.CHROMIUM) {
        return process.env.CHROMIUM;
    }
    for (const dir of (process.env.PATH || "").split(path.delimiter)) {
        for (const name of ["chromium", "chromium-browser"]) {
            const p = path.join(dir, name);
            if (dir && existsSync(p)) {
                return p;
            }
        }
    }
    throw new Error("Chromium not found: install it (Debian: apt-get install chromium; scripts/test.sh does) or set CHROMIUM");
}

const cometdDir = path.dirname(require.resolve("cometd"));
const uniq = (p) => `${p}-${randomBytes(4).toString("hex")}`;
const TIMEOUT = 15000;

let browser;
const contexts = [];

before(async () => {
    browser = await chromium.launch({
        executablePath: findChromium(),
        headless: true,
        // playwright starts the browser with a fresh temporary --user-data-dir
        // of its own (and removes it on close).
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"],
        timeout: 30000,
    });
    console.log(`browser: Chromium ${browser.version()}; screenshots in ${shots}`);
});

after(async () => {
    for (const c of contexts) {
        await c.close().catch(() => {});
    }
    if (browser) {
        await browser.close();
    }
});

async function screenshot(page, name) {
    const file = path.join(shots, name + ".png");
    await page.screenshot({path: file, fullPage: true});
    console.log(`screenshot: ${file}`);
    return file;
}

/**
 * Opens a demo page in a new browser context and records its Bayeux traffic.
 * opts: {page: "/" | "/cluster", query, noWebSocket, cometd}
 */
async function openPage(opts) {
    const context = await browser.newContext({viewport: {width: 1000, height: 700}});
    contexts.push(context);
    if (opts.noWebSocket) {
        // A browser without WebSocket: the client must fall back by itself.
        await context.addInitScript(() => {
            delete window.WebSocket;
        });
    }
    if (opts.cometd) {
        // The CometD client is not shipped with the demo: the test serves it
        // from node_modules (npm cometd, ES modules).
        await context.route("**/static/vendor/cometd/*", (route) => {
            const name = path.posix.basename(new URL(route.request().url()).pathname);
            const file = path.join(cometdDir, name);
            if (!/^[A-Za-z0-9]+\.js$/.test(name) || !existsSync(file)) {
                return route.fulfill({status: 404, body: "not found"});
            }
            return route.fulfill({status: 200, contentType: "text/javascript; charset=utf-8", body: readFileSync(file)});
        });
    }
    const page = await context.newPage();
    const wire = {sockets: [], posts: 0, jsonp: 0, errors: [], console: []};
    page.on("websocket", (ws) => wire.sockets.push(ws.url()));
    page.on("request", (r) => {
        const u = new URL(r.url());
        if (!u.pathname.startsWith("/cometd")) {
            return;
        }
        if (r.method() === "POST") {
            wire.posts++;
        } else if (u.searchParams.has("jsonp")) {
            wire.jsonp++;
        }
    });
    page.on("pageerror", (e) => wire.errors.push(String(e)));
    page.on("console", (m) => {
        if (m.type() === "error" || m.type() === "warning") {
            wire.console.push(m.text());
        }
    });
    await page.goto(base + (opts.page || "/") + (opts.query ? "?" + opts.query : ""));
    await waitState(page, 'body[data-state="connected"]', "connected", wire);
    return {context, page, wire};
}

async function waitState(page, selector, what, wire) {
    try {
        await page.waitForSelector(selector, {timeout: TIMEOUT, state: "attached"});
    } catch (e) {
        const s = await page.evaluate(() => ({...document.body.dataset, error: document.getElementById("error")?.textContent})).catch(() => ({}));
        throw new Error(`page not ${what} within ${TIMEOUT} ms: ${JSON.stringify(s)}; errors ${JSON.stringify(wire.errors)}; console ${JSON.stringify(wire.console.slice(-5))}`);
    }
}

async function openChat(name, room, opts = {}) {
    const p = await openPage(opts);
    p.name = name;
    await p.page.fill("#name", name);
    await p.page.fill("#room", room);
    await p.page.click("#join");
    await waitState(p.page, `body[data-joined="${room}"]`, "joined " + room, p.wire);
    return p;
}

const memberNames = (page) => page.$$eval("#members li .name", (els) => els.map((e) => e.textContent));
const messages = (page) => page.$$eval("#messages li", (els) => els.map((li) =>
    li.querySelector(".who").textContent + ": " + li.querySelector(".text").textContent));

/** Polls f() until it returns a truthy value; fails with describe() after ms. */
async function waitFor(f, ms, what, describe) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = await f();
        if (v) {
            return v;
        }
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${ms} ms waiting for ${what}: ${describe ? await describe() : ""}`);
        }
        await new Promise((r) => setTimeout(r, 50));
    }
}

async function waitMembers(p, want) {
    const sorted = [...want].sort();
    await waitFor(async () => JSON.stringify((await memberNames(p.page)).sort()) === JSON.stringify(sorted), TIMEOUT,
        `${p.name}'s member list to be ${JSON.stringify(sorted)}`, async () => JSON.stringify(await memberNames(p.page)));
}

async function transportOf(p) {
    return p.page.evaluate(() => document.body.dataset.transport);
}

/**
 * a and b send n messages each, at the same time; both must then show the
 * same 2n messages in the same order, each sender's in the order sent.
 */
async function exchange(a, b, n = 6) {
    const send = async (p, tag) => {
        for (let i = 0; i < n; i++) {
            await p.page.fill("#text", `${tag} ${i}`);
            await p.page.click("#send");
        }
    };
    await Promise.all([send(a, "from-a"), send(b, "from-b")]);
    const got = {};
    for (const p of [a, b]) {
        got[p.name] = await waitFor(async () => {
            const m = await messages(p.page);
            return m.length >= 2 * n ? m : null;
        }, TIMEOUT, `${2 * n} messages at ${p.name}`, async () => JSON.stringify(await messages(p.page)));
    }
    const ma = got[a.name], mb = got[b.name];
    assert.equal(ma.length, 2 * n, `${a.name} got extra messages: ${JSON.stringify(ma)}`);
    assert.deepEqual(mb, ma, "both pages show the same messages in the same order");
    for (const [p, tag] of [[a, "from-a"], [b, "from-b"]]) {
        const mine = ma.map((m) => m.slice(m.indexOf(": ") + 2)).filter((t) => t.startsWith(tag + " "));
        assert.deepEqual(mine, Array.from({length: n}, (_, i) => `${tag} ${i}`), `${p.name}'s messages in the order sent`);
    }
    return ma;
}

async function closeAll(...ps) {
    for (const p of ps) {
        assert.deepEqual(p.wire.errors, [], `no uncaught errors in ${p.name}'s page`);
        await p.context.close();
        contexts.splice(contexts.indexOf(p.context), 1);
    }
}

/** A full chat scenario between two pages on the given options. */
async function chatScenario(label, optsA, optsB, check) {
    const room = uniq(label.replace(/[^a-z]/g, ""));
    const a = await openChat("alice", room, optsA);
    const b = await openChat("bob <b>&amp;</b>", room, optsB); // markup in a name stays text
    await waitMembers(a, [a.name, b.name]);
    await waitMembers(b, [a.name, b.name]);
    await check(a, b);
    await exchange(a, b);
    // Markup typed into a message is shown as text, never parsed.
    await a.page.fill("#text", '<img src=x onerror="window.__owned=1"> & <script>window.__owned=1</script>');
    await a.page.click("#send");
    await waitFor(async () => (await messages(b.page)).some((m) => m.includes("<img src=x")), TIMEOUT, "the markup message at bob");
    for (const p of [a, b]) {
        assert.equal(await p.page.$$eval("#messages img, #messages script, #members b", (els) => els.length), 0, "user text is never markup");
        assert.equal(await p.page.evaluate(() => window.__owned), undefined);
    }
    await screenshot(a.page, `${label}-alice`);
    await screenshot(b.page, `${label}-bob`);
    // bob's page goes away (pagehide: a beacon with his leave and a
    // disconnect): alice sees him leave.
    await b.page.goto("about:blank");
    await waitMembers(a, [a.name]);
    await closeAll(a, b);
}

describe("browser demo", {concurrency: 1}, () => {
    if (scenarios.includes("websocket")) {
        test("chat over websocket", async () => {
            await chatScenario("websocket", {query: "transport=websocket"}, {query: ""}, async (a, b) => {
                for (const p of [a, b]) {
                    assert.equal(await transportOf(p), "websocket");
                    assert.ok(p.wire.sockets.length >= 1, `${p.name} opened a websocket`);
                    assert.equal(p.wire.posts + p.wire.jsonp, 0, `${p.name} made no HTTP Bayeux request`);
                }
            });
        });
    }
    if (scenarios.includes("long-polling")) {
        test("chat over long-polling (WebSocket disabled in the browser)", async () => {
            await chatScenario("long-polling", {noWebSocket: true}, {noWebSocket: true}, async (a, b) => {
                for (const p of [a, b]) {
                    assert.equal(await transportOf(p), "long-polling");
                    assert.equal(p.wire.sockets.length, 0, `${p.name} opened no websocket`);
                    assert.ok(p.wire.posts > 0, `${p.name} posted`);
                    assert.equal(p.wire.jsonp, 0);
                }
            });
        });
    }
    if (scenarios.includes("callback-polling")) {
        test("chat over callback-polling (JSONP)", async () => {
            await chatScenario("callback-polling", {query: "transport=callback-polling"}, {query: "transport=callback-polling"}, async (a, b) => {
                for (const p of [a, b]) {
                    assert.equal(await transportOf(p), "callback-polling");
                    assert.equal(p.wire.sockets.length, 0, `${p.name} opened no websocket`);
                    assert.equal(p.wire.posts, 0, `${p.name} made no POST`);
                    assert.ok(p.wire.jsonp > 0, `${p.name} made JSONP requests`);
                }
            });
        });
    }
    if (scenarios.includes("cometd")) {
        test("chat between the CometD JavaScript client and ours", async () => {
            await chatScenario("cometd", {query: "client=cometd", cometd: true}, {query: "transport=long-polling"}, async (a, b) => {
                assert.equal(await a.page.evaluate(() => document.body.dataset.client), "cometd");
                assert.equal(await transportOf(a), "websocket", "CometD picks websocket");
                assert.ok(a.wire.sockets.length >= 1);
                assert.equal(await b.page.evaluate(() => document.body.dataset.client), "bayeux");
                assert.equal(await transportOf(b), "long-polling");
            });
        });
    }
    if (scenarios.includes("cluster")) {
        test(`cluster page lists ${expectNodes} node(s)`, async () => {
            const p = await openPage({page: "/cluster"});
            p.name = "cluster";
            await waitFor(async () => Number(await p.page.textContent("#node-count")) === expectNodes
                && (await p.page.$$("#node-rows tr")).length === expectNodes, TIMEOUT, `${expectNodes} node(s) on the cluster page`,
            async () => p.page.$$eval("#node-rows tr", (trs) => trs.map((tr) => tr.textContent).join(" | ")));
            const ids = await p.page.$$eval("#node-rows tr", (trs) => trs.map((tr) => tr.dataset.node));
            assert.equal(new Set(ids).size, expectNodes, `distinct node ids: ${ids}`);
            if (expectNodes > 1) {
                const tags = await p.page.$$eval("#node-rows tr", (trs) => trs.map((tr) => tr.dataset.tag));
                assert.equal(new Set(tags.filter(Boolean)).size, expectNodes, `distinct node tags: ${tags}`);
            }
            const sessions = Number(await p.page.textContent("#session-total"));
            assert.ok(sessions >= 1, `sessions counted (the page's own at least): ${sessions}`);
            await screenshot(p.page, "cluster");
            await closeAll(p);
        });
    }
});
