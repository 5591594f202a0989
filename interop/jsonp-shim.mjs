// A minimal browser environment for CometD's CallbackPollingTransport (JSONP)
// in Node. It implements only what that transport touches:
//   window (=== globalThis, as in a browser), window.document,
//   document.getElementsByTagName("head")[0], document.createElement("script"),
//   head.appendChild(script) / head.removeChild(script),
//   script.src / script.onerror / script.onload.
// appendChild performs an HTTP GET of script.src with this "browser"'s cookies
// (Set-Cookie replies are stored, e.g. BAYEUX_BROWSER) and evaluates a 2xx body
// in the global context with vm.runInThisContext, so `window[cb](...)` fires.
// Network errors, non-2xx statuses and (with X-Content-Type-Options: nosniff)
// non-JavaScript content types fire script.onerror, as browsers do.
//
// One shim = one browser window: install it once per worker thread (the suite
// runs each CometD client in its own worker, i.e. its own browser).
import * as http from "node:http";
import * as https from "node:https";
import * as vm from "node:vm";

const agentOptions = {keepAlive: true, maxSockets: 6}; // browser-like per-host limit
const agents = {"http:": new http.Agent(agentOptions), "https:": new https.Agent(agentOptions)};

/** Cookie store of this browser: hostname -> Map(name -> value). */
const cookieJar = new Map();
/** What happened, for tests and diagnostics. */
export const shimLog = {requests: 0, scriptErrors: [], loadErrors: [], contentTypes: new Set()};

function storeCookies(hostname, setCookie) {
    if (!setCookie) {
        return;
    }
    let jar = cookieJar.get(hostname);
    if (!jar) {
        cookieJar.set(hostname, (jar = new Map()));
    }
    for (const header of [].concat(setCookie)) {
        const parts = header.split(";").map((s) => s.trim());
        const eq = parts[0].indexOf("=");
        if (eq <= 0) {
            continue;
        }
        const name = parts[0].substring(0, eq);
        const value = parts[0].substring(eq + 1);
        const expired = parts.slice(1).some((a) => {
            const m = /^max-age=(-?\d+)$/i.exec(a);
            if (m) {
                return Number(m[1]) <= 0;
            }
            const e = /^expires=(.*)$/i.exec(a);
            return e ? Date.parse(e[1]) < Date.now() : false;
        });
        if (expired) {
            jar.delete(name);
        } else {
            jar.set(name, value);
        }
    }
}

function cookieHeader(hostname) {
    const jar = cookieJar.get(hostname);
    if (!jar || jar.size === 0) {
        return undefined;
    }
    return [...jar].map(([n, v]) => `${n}=${v}`).join("; ");
}

/** The cookies this browser holds for hostname, as an object. */
export function cookiesFor(hostname) {
    return Object.fromEntries(cookieJar.get(hostname) || []);
}

function fireLater(fn, arg) {
    if (typeof fn === "function") {
        setTimeout(() => fn(arg), 0);
    }
}

class Element {
    constructor(tagName) {
        this.tagName = tagName.toUpperCase();
        this.children = [];
        this.parentNode = null;
    }

    appendChild(child) {
        if (child.parentNode) {
            child.parentNode.removeChild(child);
        }
        this.children.push(child);
        child.parentNode = this;
        if (child instanceof ScriptElement) {
            child._insert();
        }
        return child;
    }

    removeChild(child) {
        const i = this.children.indexOf(child);
        if (i < 0) {
            throw new Error("NotFoundError: the node to be removed is not a child of this node");
        }
        this.children.splice(i, 1);
        child.parentNode = null;
        return child;
    }
}

class ScriptElement extends Element {
    constructor() {
        super("script");
        this.src = "";
        this.type = "";
        this.async = true;
        this.onerror = null;
        this.onload = null;
        this._started = false;
    }

    _insert() {
        // Like a browser: a script element is fetched once, when first inserted with a src.
        if (this._started || !this.src) {
            return;
        }
        this._started = true;
        const src = this.src;
        let url;
        try {
            url = new URL(src);
        } catch (x) {
            shimLog.loadErrors.push(`${src}: ${x.message}`);
            fireLater(this.onerror, {type: "error", target: this});
            return;
        }
        const client = url.protocol === "https:" ? https : http;
        const headers = {Accept: "*/*"};
        const cookie = cookieHeader(url.hostname);
        if (cookie) {
            headers.Cookie = cookie;
        }
        shimLog.requests++;
        const req = client.get(url, {headers, agent: agents[url.protocol]}, (res) => {
            storeCookies(url.hostname, res.headers["set-cookie"]);
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (c) => (body += c));
            res.on("error", (e) => this._fail(src, `response error ${e.message}`));
            res.on("end", () => {
                if (res.statusCode < 200 || res.statusCode > 299) {
                    this._fail(src, `HTTP ${res.statusCode} ${body.slice(0, 200)}`);
                    return;
                }
                const type = String(res.headers["content-type"] || "");
                shimLog.contentTypes.add(type);
                // As browsers do: with nosniff, a script must be served with a JavaScript MIME type.
                if (/nosniff/i.test(String(res.headers["x-content-type-options"] || "")) &&
                    !/^\s*(text|application)\/(x-)?(javascript|ecmascript)\s*(;|$)/i.test(type)) {
                    this._fail(src, `blocked: nosniff and Content-Type ${type}`);
                    return;
                }
                try {
                    vm.runInThisContext(body, {filename: src.slice(0, 200)});
                } catch (x) {
                    // A browser reports script errors to window.onerror, not to script.onerror.
                    shimLog.scriptErrors.push(`${src.slice(0, 200)}: ${x && x.stack}\nbody: ${body.slice(0, 500)}`);
                    console.error("jsonp-shim: script error", x, "body:", body.slice(0, 500));
                    return;
                }
                fireLater(this.onload, {type: "load", target: this});
            });
        });
        req.on("error", (e) => this._fail(src, e.message));
    }

    _fail(src, why) {
        if (this._failed) {
            return;
        }
        this._failed = true;
        shimLog.loadErrors.push(`${src.slice(0, 200)}: ${why}`);
        fireLater(this.onerror, {type: "error", target: this});
    }
}

/** Installs window/document on globalThis. Call before cometd-nodejs-client's adapt(). */
export function installBrowserShim() {
    if (globalThis.document) {
        return globalThis.document;
    }
    const html = new Element("html");
    const head = new Element("head");
    const body = new Element("body");
    html.appendChild(head);
    html.appendChild(body);
    const document = {
        documentElement: html,
        head,
        body,
        getElementsByTagName(name) {
            const n = String(name).toLowerCase();
            if (n === "head") {
                return [head];
            }
            if (n === "body") {
                return [body];
            }
            if (n === "script") {
                return head.children.filter((c) => c instanceof ScriptElement);
            }
            return [];
        },
        createElement(name) {
            return String(name).toLowerCase() === "script" ? new ScriptElement() : new Element(name);
        },
    };
    // In a browser the global object is the window: a JSONP body calling
    // `cb(...)` or `window.cb(...)` finds what `window[cb] = ...` stored.
    globalThis.window = globalThis;
    globalThis.document = document;
    return document;
}
