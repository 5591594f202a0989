// The chat page: rooms, a member list kept by the server
// (/service/members, /members/<room>) and messages (/chat/<room>).
// Everything users type is shown with textContent, never as markup.
import {makeClient, pageOptions} from "./client.js";

const $ = (id) => document.getElementById(id);
const log = (...args) => console.debug("[bayeux]", ...args);
const MAX_MESSAGES = 500;
const REFRESH_MS = 10000; // the server forgets a member 30 s after its last join

function randomToken() {
    const b = new Uint8Array(18);
    crypto.getRandomValues(b);
    return btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_");
}

const state = {
    joined: null, // {room, name}
    token: randomToken(), // secret: the server derives our public member id from it
    me: null, // our public member id
    version: 0, // of the member list shown
    refresh: null,
    rejoinAfter: 0,
};

function showError(msg) {
    const p = $("error");
    p.textContent = msg;
    p.hidden = !msg;
}

function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) {
        e.className = className;
    }
    if (text !== undefined) {
        e.textContent = text;
    }
    return e;
}

function keepQuery() {
    // Links keep ?transport and ?client.
    for (const a of document.querySelectorAll("nav a")) {
        const u = new URL(a.href);
        u.search = location.search;
        a.href = u.href;
    }
}

async function main() {
    keepQuery();
    const q = new URLSearchParams(location.search);
    if (q.get("name")) {
        $("name").value = q.get("name");
    }
    if (q.get("room")) {
        $("room").value = q.get("room");
    }
    const opts = pageOptions();
    document.body.dataset.client = opts.kind;
    $("client-kind").textContent = opts.kind === "cometd" ? "CometD" : "bayeux.js";
    let client;
    try {
        client = await makeClient(opts, log);
    } catch (e) {
        document.body.dataset.state = "error";
        $("state").textContent = "error";
        showError("Cannot load the client: " + e.message);
        return;
    }
    window.bayeuxDemo = {client, state};

    const status = () => {
        const s = client.state;
        document.body.dataset.state = s;
        $("state").textContent = s;
        $("state").className = "badge " + s;
        const t = client.transportName || "-";
        document.body.dataset.transport = t;
        $("transport").textContent = t;
        const id = client.clientId || "";
        // Cluster clientIds start with the owner node's tag (26 random characters follow).
        $("node-tag").textContent = id.length > 26 ? id.slice(0, id.length - 26) : "-";
    };
    client.onState(status);

    function onChat(m) {
        if (!state.joined || m.channel !== "/chat/" + state.joined.room) {
            return;
        }
        const d = m.data && typeof m.data === "object" ? m.data : {};
        const li = el("li", d.from && d.from === state.me ? "mine" : "");
        li.append(el("span", "who", String(d.name ?? "?")), el("span", "text", String(d.text ?? "")));
        const list = $("messages");
        list.append(li);
        while (list.children.length > MAX_MESSAGES) {
            list.firstElementChild.remove();
        }
        list.scrollTop = list.scrollHeight;
    }

    function renderMembers(members) {
        const ul = $("members");
        ul.replaceChildren();
        for (const m of members) {
            const li = el("li", m.id === state.me ? "me" : "");
            li.dataset.id = String(m.id);
            li.append(el("span", "name", String(m.name)));
            if (m.id === state.me) {
                li.append(" ", el("span", "you", "you"));
            }
            ul.append(li);
        }
        $("member-count").textContent = String(members.length);
    }

    function onMembers(m) {
        const d = m.data;
        if (!d || !state.joined || d.room !== state.joined.room || !Array.isArray(d.members)) {
            return;
        }
        if (d.you) {
            state.me = d.you;
        }
        // Lists come from any node in any order: keep the newest.
        if (typeof d.version !== "number" || d.version < state.version) {
            return;
        }
        state.version = d.version;
        renderMembers(d.members);
        if (state.me && !d.members.some((x) => x.id === state.me) && Date.now() > state.rejoinAfter) {
            // We were dropped (our session ended or moved): join again.
            state.rejoinAfter = Date.now() + 2000;
            sendJoin().catch((e) => log("rejoin", e));
        }
    }

    function sendJoin() {
        const j = state.joined;
        if (!j) {
            return Promise.resolve();
        }
        return client.publish("/service/members", {op: "join", room: j.room, name: j.name, token: state.token});
    }

    function setJoined(on) {
        $("leave").disabled = !on;
        $("text").disabled = !on;
        $("send").disabled = !on;
        document.body.dataset.joined = on ? state.joined.room : "";
    }

    async function leave() {
        const j = state.joined;
        if (!j) {
            return;
        }
        state.joined = null;
        clearInterval(state.refresh);
        setJoined(false);
        try {
            await client.publish("/service/members", {op: "leave", room: j.room, token: state.token});
            await client.unsubscribe("/chat/" + j.room, onChat);
            await client.unsubscribe("/members/" + j.room, onMembers);
        } catch (e) {
            log("leave", e);
        }
    }

    async function join(room, name) {
        await leave();
        state.joined = {room, name};
        state.version = 0;
        state.me = null;
        $("room-name").textContent = room;
        $("messages").replaceChildren();
        renderMembers([]);
        try {
            await client.subscribe("/members/" + room, onMembers);
            await client.subscribe("/chat/" + room, onChat);
            await sendJoin();
        } catch (e) {
            showError("Cannot join: " + e.message);
            state.joined = null;
            return;
        }
        state.refresh = setInterval(() => sendJoin().catch((e) => log("refresh", e)), REFRESH_MS);
        setJoined(true);
        $("text").focus();
    }

    client.addListener("/service/members", onMembers);
    client.onHandshake(() => {
        status();
        // A new session (first, or after the server forgot the old one):
        // subscriptions are back, membership follows.
        sendJoin().catch((e) => log("join after handshake", e));
    });

    $("join-form").addEventListener("submit", (ev) => {
        ev.preventDefault();
        showError("");
        const room = $("room").value.trim();
        const name = $("name").value.trim();
        if (!/^[A-Za-z0-9_-]{1,32}$/.test(room)) {
            showError("A room name is 1 to 32 letters, digits, - or _.");
            return;
        }
        if (!name) {
            showError("Choose a name.");
            return;
        }
        join(room, name);
    });
    $("leave").addEventListener("click", () => leave());
    $("send-form").addEventListener("submit", (ev) => {
        ev.preventDefault();
        const input = $("text");
        const text = input.value.trim();
        const j = state.joined;
        if (!text || !j) {
            return;
        }
        input.value = "";
        client.publish("/chat/" + j.room, {name: j.name, text, from: state.me}).catch((e) => showError("Not sent: " + e.message));
    });
    window.addEventListener("pagehide", () => {
        const j = state.joined;
        client.beacon(j ? [{channel: "/service/members", data: {op: "leave", room: j.room, token: state.token}}] : []);
    });
    window.addEventListener("pageshow", (ev) => {
        if (ev.persisted) {
            location.reload(); // back from the page cache with a stopped client
        }
    });

    status();
    await client.start();
    status();
    $("join").disabled = false;
}

main();
