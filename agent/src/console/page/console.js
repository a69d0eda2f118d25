// Tandem's console: logs in, polls /api/v1/status and /api/v1/events every
// second, and sends the administrator's actions with the session's CSRF token.
// Text from the agent is only ever set with textContent, never as HTML.
"use strict";

const POLL_MS = 1000;
let csrf = null;
let lastSeq = null;
let timer = null;
let lastStatus = null;

const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch (e) { /* an empty answer */ }
  return { ok: r.ok, code: r.status, data };
}

function show(loggedIn) {
  $("login").hidden = loggedIn;
  $("dashboard").hidden = !loggedIn;
  $("logout").hidden = !loggedIn;
}

async function login(secret) {
  const r = await api("POST", "/api/v1/login", { secret });
  if (!r.ok) {
    $("login-error").textContent = r.data.error || ("login failed (" + r.code + ")");
    return false;
  }
  csrf = r.data.csrf;
  show(true);
  start();
  return true;
}

// The same shades as `tandem status`: a PRIM or ALONE is ready when its
// application runs, a SECOND when in sync; STOP and WAIT are red.
function shade(state, ready) {
  if (state === "PRIM" || state === "ALONE" || state === "SECOND") {
    return ready ? "ready" : "transient";
  }
  return "down";
}

function fill(id, name, state, cls, reason, detail) {
  const el = $(id);
  el.className = "node " + cls;
  el.querySelector(".name").textContent = name;
  el.querySelector(".state").textContent = state;
  el.querySelector(".reason").textContent = reason;
  el.querySelector(".detail").textContent = detail;
}

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
}

function render(s) {
  lastStatus = s;
  const r = s.replication;
  const mineReady = (s.state === "SECOND") ? r.in_sync
    : (s.state === "PRIM" || s.state === "ALONE") ? s.application.running : false;
  fill("node-self", s.node, s.state, shade(s.state, mineReady), s.reason,
    "VIP " + (s.vip.held ? "held here" : "not here") + "; application " +
    (s.application.running ? "running" : "not running") +
    (s.can_run ? "" : "; cannot run the application"));
  const p = s.peer;
  const peerState = p.connected && p.state ? p.state : (p.state ? p.state + "?" : "?");
  const peerReady = p.state === "SECOND" ? r.in_sync : p.connected;
  fill("node-peer", p.name, peerState,
    p.connected ? shade(p.state, peerReady) : "down",
    p.connected ? "connected" : "not heard",
    p.can_run === false ? "cannot run the application" : "");

  const lag = r.lag_bytes + " bytes behind, " + r.lag_seconds.toFixed(3) + " s";
  $("replication").textContent =
    (r.in_sync ? "in sync" : (r.resyncing ? "resyncing" : "not in sync")) +
    "; link " + (r.linked ? "up" : "down") + "; lag " + lag + "; " +
    r.bytes_total + " bytes replicated; " + r.released_unprotected +
    " durability calls released without the peer";
  const total = r.resync_total_bytes;
  const done = total > 0 ? total - r.resync_remaining_bytes : 0;
  $("resync").max = Math.max(total, 1);
  $("resync").value = total > 0 ? done : (r.in_sync ? 1 : 0);
  $("resync-text").textContent = total > 0
    ? done + " of " + total + " bytes (" + Math.floor(100 * done / total) + "%)"
    : (r.in_sync ? "complete" : "");

  const nets = $("networks").tBodies[0];
  nets.replaceChildren();
  for (const n of p.networks) {
    row(nets, [[n.name], [n.up ? "up" : "down", n.up ? "ok" : "bad"],
      [n.rtt_us == null ? "-" : (n.rtt_us / 1000).toFixed(2) + " ms"]]);
  }
  const wits = $("witnesses");
  wits.replaceChildren();
  for (const w of p.witnesses) {
    const li = document.createElement("li");
    li.textContent = w.address + ": " + (w.reachable ? "reachable" : "unreachable");
    li.className = w.reachable ? "ok" : "bad";
    wits.appendChild(li);
  }
  const checks = $("checkers").tBodies[0];
  checks.replaceChildren();
  for (const c of s.checkers) {
    const cls = c.state === "failing" ? "bad" : (c.state === "ok" ? "ok" : "pending");
    row(checks, [[c.name], [c.scope], [c.state, cls]]);
  }
  if (s.checkers.length === 0) row(checks, [["none configured"], [""], [""]]);
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function addEvents(events) {
  const ol = $("timeline");
  for (const e of events) {
    lastSeq = e.seq;
    const li = document.createElement("li");
    const when = new Date(e.at_ms).toLocaleTimeString();
    li.textContent = e.kind === "transition"
      ? when + "  " + e.from + " -> " + e.to + ": " + e.text
      : when + "  " + e.text;
    ol.insertBefore(li, ol.firstChild);
  }
  while (ol.children.length > 200) ol.removeChild(ol.lastChild);
}

async function poll() {
  const s = await api("GET", "/api/v1/status");
  if (s.code === 401) { stop(); show(false); return; }
  if (s.ok) render(s.data);
  const q = lastSeq === null ? "" : "?after=" + lastSeq;
  const e = await api("GET", "/api/v1/events" + q);
  if (e.ok) addEvents(e.data.events);
}

function start() {
  stop();
  const tick = async () => {
    try { await poll(); } catch (e) { $("updated").textContent = "agent unreachable"; }
    if (timer !== null) timer = setTimeout(tick, POLL_MS);
  };
  timer = 0;
  tick();
}

function stop() {
  if (timer) clearTimeout(timer);
  timer = null;
}

async function act(action) {
  if (action === "prim-force" && !window.confirm(
    "Force this node to run the application even if the peer may hold newer data?")) {
    return null;
  }
  const r = await api("POST", "/api/v1/actions/" + action);
  $("action-result").textContent = r.ok
    ? action + ": sent to the agent"
    : action + " refused: " + (r.data.error || r.code);
  return r;
}

// Test hooks (console.test_hooks: true only): `#autotest=swap&token=T` logs in
// with the token and clicks Swap once both nodes are ready; `#autotest=login`
// only logs in. The fragment never reaches the server.
async function autotest() {
  const params = new URLSearchParams(location.hash.slice(1));
  const mode = params.get("autotest");
  if (!mode || !(await login(params.get("token") || ""))) return false;
  $("autotest").textContent = "autotest: logged in";
  if (mode !== "swap") return true;
  const ready = () => {
    const s = lastStatus;
    return s && s.peer.connected && s.replication.in_sync &&
      ((s.state === "PRIM" && s.peer.state === "SECOND") ||
       (s.state === "SECOND" && s.peer.state === "PRIM"));
  };
  for (let i = 0; i < 60 && !ready(); i++) {
    await new Promise((res) => setTimeout(res, 250));
  }
  if (!ready()) { $("autotest").textContent = "autotest: the pair never got ready"; return true; }
  // What the page showed when it clicked, since polling goes on afterwards.
  const shown = (id) => $(id).querySelector(".name").textContent + " " +
    $(id).querySelector(".state").textContent;
  const before = shown("node-self") + ", " + shown("node-peer");
  $("act-swap").click();
  $("autotest").textContent = "autotest: swap clicked (" + before + ")";
  return true;
}

async function init() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    login($("secret").value);
    $("secret").value = "";
  });
  $("logout").addEventListener("click", async () => {
    await api("POST", "/api/v1/logout");
    csrf = null; stop(); show(false);
  });
  for (const b of document.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", () => act(b.dataset.action));
  }
  if (document.body.dataset.testHooks === "on" && (await autotest())) return;
  const r = await api("GET", "/api/v1/session");
  if (r.ok) { csrf = r.data.csrf; show(true); start(); } else { show(false); }
}

init();
