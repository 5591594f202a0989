// The admin console: calls the server API with the key the operator signs
// in with (kept in sessionStorage for this tab only) and follows the
// selected channel live over Bayeux on the same listener.
import { BayeuxClient } from "/admin/bayeux.js";

const $ = (id) => document.getElementById(id);
const bayeuxPath = document.querySelector('meta[name="bayeux-path"]').content;
let key = sessionStorage.getItem("bayeux-admin-key") || "";
let bayeux = null;
let liveSub = null;
let current = "";

async function api(method, path, body) {
  const res = await fetch("/api/v1/" + path, {
    method,
    headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const out = await res.json();
  if (!res.ok) {
    const err = new Error(out.error ? out.error.message : res.statusText);
    err.status = res.status;
    throw err;
  }
  return out;
}

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = String(c);
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
}

function link(text, onclick) {
  const a = document.createElement("a");
  a.textContent = text;
  a.addEventListener("click", onclick);
  return a;
}

async function refresh() {
  try {
    const [nodes, chans] = await Promise.all([api("GET", "nodes"), api("GET", "channels")]);
    const nb = $("nodes").tBodies[0]; nb.replaceChildren();
    for (const n of nodes.nodes) row(nb, [n.id, n.sessions, n.publishRate.toFixed(1), n.deliveryRate.toFixed(1), n.version]);
    const cb = $("channels").tBodies[0]; cb.replaceChildren();
    for (const c of chans.channels) row(cb, [link(c.channel, () => select(c.channel)), c.subscribers]);
    if (current) await showChannel();
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.status === 401) return signOut(e.message);
    $("status").textContent = e.message;
  }
}

async function showChannel() {
  const pres = await api("GET", "presence?channel=" + encodeURIComponent(current));
  const pb = $("presence").tBodies[0]; pb.replaceChildren();
  for (const s of pres.sessions) {
    row(pb, [s.clientId, s.node, s.transport, s.user || "", link("disconnect", async () => {
      await api("POST", "disconnect", { clientId: s.clientId });
      await refresh();
    })]);
  }
  if (!current.includes("*")) {
    const hist = await api("GET", "history?limit=20&channel=" + encodeURIComponent(current));
    $("history").replaceChildren(...hist.messages.map((m) => item(m.replayId + ": " + JSON.stringify(m.data))));
  }
}

function item(text) {
  const li = document.createElement("li");
  li.textContent = text;
  return li;
}

async function select(ch) {
  current = ch;
  $("channel").value = ch;
  $("selected").textContent = ch;
  $("live").replaceChildren();
  if (liveSub) { bayeux.unsubscribe(liveSub); liveSub = null; }
  await bayeux.subscribe(ch, (m) => $("live").appendChild(item(m.channel + " " + JSON.stringify(m.data))));
  liveSub = ch;
  await showChannel();
}

function signOut(message) {
  sessionStorage.removeItem("bayeux-admin-key");
  key = "";
  $("console").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  if (bayeux) { bayeux.disconnect(); bayeux = null; }
}

async function signIn() {
  try {
    await api("GET", "nodes");
  } catch (e) {
    return signOut(e.message);
  }
  sessionStorage.setItem("bayeux-admin-key", key);
  $("signin").hidden = true;
  $("console").hidden = false;
  bayeux = new BayeuxClient(bayeuxPath, { transport: "long-polling" });
  bayeux.start();
  await refresh();
}

$("signin").addEventListener("submit", (ev) => { ev.preventDefault(); key = $("key").value.trim(); signIn(); });
$("signout").addEventListener("click", () => signOut(""));
$("refresh").addEventListener("click", refresh);
$("pick").addEventListener("submit", (ev) => { ev.preventDefault(); select($("channel").value.trim()).catch((e) => { $("status").textContent = e.message; }); });
$("publish").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await api("POST", "publish", { channel: current, data: JSON.parse($("data").value) });
    $("publish-result").textContent = "published, replay id " + r.replayId;
  } catch (e) {
    $("publish-result").textContent = e.message;
  }
});
setInterval(() => { if (key && !$("console").hidden) refresh(); }, 5000);
if (key) signIn();
