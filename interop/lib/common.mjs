// Shared helpers for the interop suite: environment, polling waits, unique
// channel names, the server's test-only debug API and raw wire requests.
import {randomBytes} from "node:crypto";
import * as http from "node:http";
import * as vm from "node:vm";
import WebSocket from "ws";

/** Reads BAYEUX_URL and BAYEUX_DEBUG_URL; throws (loudly) if either is unset. */
export function env() {
    const url = process.env.BAYEUX_URL;
    const debugUrl = process.env.BAYEUX_DEBUG_URL;
    if (!url || !debugUrl) {
        throw new Error("BAYEUX_URL and BAYEUX_DEBUG_URL must both be set " +
            `(got BAYEUX_URL=${url}, BAYEUX_DEBUG_URL=${debugUrl})`);
    }
    return {url, debugUrl, wsUrl: url.replace(/^http/, "ws")};
}

/** A channel-safe unique token. */
export function uniq(prefix = "t") {
    return prefix + "-" + randomBytes(6).toString("hex");
}

/**
 * Polls predicate() every few ms until it returns a truthy value or the
 * deadline passes; then throws with `what` and, if given, describe() output.
 */
export async function waitFor(predicate, ms, what = "condition", describe) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = await predicate();
        if (v) {
            return v;
        }
        if (Date.now() > deadline) {
            const extra = describe ? ": " + describe() : "";
            throw new Error(`timed out after ${ms} ms waiting for ${what}${extra}`);
        }
        await new Promise((r) => setTimeout(r, 10));
    }
}

/** Races a promise against a deadline. */
export function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
        }),
    ]).finally(() => clearTimeout(timer));
}

/** Plain HTTP request; resolves {status, headers, body}. Never keeps the process alive. */
export function httpRequest(method, url, {headers = {}, body} = {}) {
    return new Promise((resolve, reject) => {
        const req = http.request(url, {method, headers, agent: false}, (res) => {
            let data = "";
            res.setEncoding("utf8");
            res.on("data", (c) => (data += c));
            res.on("end", () => resolve({status: res.statusCode, headers: res.headers, body: data}));
            res.on("error", reject);
        });
        req.on("error", reject);
        req.setTimeout(20000, () => req.destroy(new Error(`${method} ${url}: no answer in 20 s`)));
        if (body !== undefined) {
            req.write(body);
        }
        req.end();
    });
}

// ---- debug API ---------------------------------------------------------

export async function debugExpire(clientId) {
    const {debugUrl} = env();
    const r = await httpRequest("POST", `${debugUrl}/sessions/${encodeURIComponent(clientId)}/expire`);
    if (r.status !== 204) {
        throw new Error(`debug expire of ${clientId}: HTTP ${r.status} ${r.body}`);
    }
}

export async function debugDropNextConnect(clientId) {
    const {debugUrl} = env();
    const r = await httpRequest("POST", `${debugUrl}/sessions/${encodeURIComponent(clientId)}/drop-next-connect`);
    if (r.status !== 204) {
        throw new Error(`debug drop-next-connect of ${clientId}: HTTP ${r.status} ${r.body}`);
    }
}

// ---- raw wire requests (one per transport) -----------------------------

function parseReplies(text, where) {
    let v;
    try {
        v = JSON.parse(text);
    } catch (e) {
        throw new Error(`${where}: reply is not JSON: ${JSON.stringify(text.slice(0, 500))}`);
    }
    return Array.isArray(v) ? v : [v];
}

/** long-polling: POST a JSON array; returns the reply array. */
export async function rawLongPolling(messages) {
    const {url} = env();
    const body = JSON.stringify(messages);
    const r = await httpRequest("POST", url, {headers: {"Content-Type": "application/json;charset=UTF-8"}, body});
    if (r.status !== 200) {
        throw new Error(`raw long-polling POST ${body}: HTTP ${r.status} ${r.body}`);
    }
    return {replies: parseReplies(r.body, `raw long-polling POST ${body}`), wire: r};
}

/**
 * callback-polling: GET ?<param>=cb&message=..., evaluates the returned script
 * in an isolated context where only the callback exists; returns what it was called with.
 */
export async function rawJsonp(messages, param = "jsonp") {
    const {url} = env();
    const cb = "_interop_cb_" + randomBytes(3).toString("hex");
    const full = `${url}${url.includes("?") ? "&" : "?"}${param}=${cb}&message=${encodeURIComponent(JSON.stringify(messages))}`;
    const r = await httpRequest("GET", full);
    if (r.status !== 200) {
        throw new Error(`raw JSONP GET ${full}: HTTP ${r.status} ${r.body}`);
    }
    const calls = [];
    const sandbox = {};
    sandbox[cb] = (arg) => calls.push(arg);
    sandbox.window = sandbox;
    try {
        vm.runInNewContext(r.body, sandbox, {timeout: 1000});
    } catch (e) {
        throw new Error(`raw JSONP GET ${full}: body does not evaluate (${e.message}): ${JSON.stringify(r.body.slice(0, 500))}`);
    }
    if (calls.length !== 1) {
        throw new Error(`raw JSONP GET ${full}: callback ${cb} called ${calls.length} times; body ${JSON.stringify(r.body.slice(0, 500))}`);
    }
    // Round-trip through JSON so the objects belong to this realm.
    const arg = calls[0];
    const replies = typeof arg === "string" ? parseReplies(arg, "raw JSONP") : JSON.parse(JSON.stringify(arg));
    return {replies: Array.isArray(replies) ? replies : [replies], wire: r};
}

/** websocket: opens a socket, sends one frame, resolves the first reply frame, closes. */
export function rawWebSocket(messages, ms = 10000) {
    const {wsUrl} = env();
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(wsUrl);
        const timer = setTimeout(() => {
            ws.terminate();
            reject(new Error(`raw websocket ${JSON.stringify(messages)}: no reply in ${ms} ms`));
        }, ms);
        ws.on("open", () => ws.send(JSON.stringify(messages)));
        ws.on("message", (data) => {
            clearTimeout(timer);
            ws.close();
            try {
                resolve({replies: parseReplies(data.toString(), "raw websocket"), wire: {frame: data.toString()}});
            } catch (e) {
                reject(e);
            }
        });
        ws.on("error", (e) => {
            clearTimeout(timer);
            reject(new Error(`raw websocket: ${e.message}`));
        });
        ws.on("close", (code, reason) => {
            clearTimeout(timer);
            reject(new Error(`raw websocket closed (${code} ${reason}) before a reply`));
        });
    });
}

/** Sends `messages` raw on the given transport name; resolves {replies, wire}. */
export function rawSend(transport, messages) {
    switch (transport) {
        case "long-polling":
            return rawLongPolling(messages);
        case "callback-polling":
            return rawJsonp(messages);
        case "websocket":
            return rawWebSocket(messages);
        default:
            throw new Error("unknown transport " + transport);
    }
}
