// The lobby's reception screen: a guest finds themselves (name or invitation
// code) and checks in; a walk-in leaves their details. Back to the welcome
// screen after IDLE_MS without a touch. The token is an HttpOnly cookie the
// page never sees (set by /pair).

const IDLE_MS = 30_000;
const SEARCH_DELAY_MS = 350; // typing pauses this long before a search is sent
const $ = (id) => document.getElementById(id);
const screens = ["welcome", "find", "done", "walkin", "thanks", "unpaired"];

let idleTimer = 0;
let searchTimer = 0;
let searchSeq = 0;
let busy = false;

function show(name) {
  for (const s of screens) $(s).hidden = s !== name;
  document.body.dataset.screen = name;
  touched();
}

function home() {
  clearTimeout(searchTimer);
  searchSeq++; // an answer still on its way is dropped
  $("q").value = "";
  $("results").replaceChildren();
  $("find-msg").textContent = "";
  $("walkin-form").reset();
  $("walkin-msg").textContent = "";
  $("wifi").hidden = true;
  show("welcome");
}

function touched() {
  clearTimeout(idleTimer);
  const current = document.body.dataset.screen;
  if (current !== "welcome" && current !== "unpaired") idleTimer = setTimeout(home, IDLE_MS);
}

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

// A refusal's words: aiohttp sends "<status>: <reason>" as text.
async function why(r) {
  const text = await r.text();
  try {
    const body = JSON.parse(text);
    if (body && body.message) return body;
  } catch {}
  return { error: "", message: text.replace(/^\d+: /, "") || r.statusText };
}

function unpaired(message) {
  $("unpaired-why").textContent = message;
  show("unpaired");
}

async function call(path, body) {
  const init = { credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch {
    banner("Offline: the gateway cannot be reached. Please ask at the front desk.");
    return null;
  }
  banner("");
  if (r.status === 401 || r.status === 403) {
    const { message } = await why(r);
    unpaired(message.charAt(0).toUpperCase() + message.slice(1) + ".");
    return null;
  }
  return r;
}

// --- guests -----------------------------------------------------------------------

function searchSoon() {
  clearTimeout(searchTimer);
  const q = $("q").value.trim();
  if (q.length < 2) {
    searchSeq++;
    $("results").replaceChildren();
    $("find-msg").textContent = q ? "Keep typing…" : "";
    return;
  }
  searchTimer = setTimeout(() => search(q), SEARCH_DELAY_MS);
}

async function search(q) {
  const seq = ++searchSeq;
  $("find-msg").textContent = "Looking…";
  const r = await call(`/api/reception/guests?q=${encodeURIComponent(q)}`);
  if (r === null || seq !== searchSeq) return;
  if (!r.ok) {
    const { message } = await why(r);
    $("find-msg").textContent =
      r.status === 429 ? "Too many searches. Please wait a moment and try again." : message;
    return;
  }
  const { guests, more } = await r.json();
  if (seq !== searchSeq) return;
  const list = guests.map((g) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "guest";
    b.dataset.guest = g.guest;
    const name = document.createElement("span");
    name.className = "guest-name";
    name.textContent = g.name;
    const host = document.createElement("span");
    host.className = "guest-host";
    host.textContent = g.host ? `visiting ${g.host}${g.company ? ` · ${g.company}` : ""}` : "";
    b.append(name, host);
    b.addEventListener("click", () => checkin(g.guest));
    li.append(b);
    return li;
  });
  $("results").replaceChildren(...list);
  $("find-msg").textContent = guests.length
    ? more
      ? "Tap your name (or type more of it)."
      : "Tap your name."
    : "No one by that name or code is expected today. Check the spelling, or go back and choose “I'm not expected”.";
}

async function checkin(guest) {
  if (busy) return;
  busy = true;
  $("find-msg").textContent = "Checking you in…";
  try {
    const r = await call("/api/reception/checkin", { guest });
    if (r === null) return;
    if (!r.ok) {
      const { error, message } = await why(r);
      $("find-msg").textContent =
        error === "guest_expired"
          ? "Your visit is over. Please ask at the front desk."
          : error === "guest_not_started"
            ? "Your visit is not today. Please ask at the front desk."
            : `Sorry, that did not work: ${message}.`;
      return;
    }
    const done = await r.json();
    $("done-title").textContent = done.welcome;
    $("done-detail").textContent = done.detail;
    if (done.wifi) {
      $("wifi-ssid").textContent = done.wifi.ssid;
      $("wifi-pass").textContent = done.wifi.passphrase;
      $("wifi").hidden = false;
    }
    show("done");
  } finally {
    busy = false;
  }
}

// --- walk-ins ---------------------------------------------------------------------

async function walkin(ev) {
  ev.preventDefault();
  if (busy) return;
  const form = $("walkin-form");
  const body = {};
  for (const [k, v] of new FormData(form)) if (String(v).trim()) body[k] = String(v).trim();
  if (!body.name) {
    $("walkin-msg").textContent = "Please tell us your name.";
    form.elements.name.focus();
    return;
  }
  busy = true;
  $("walkin-submit").disabled = true;
  try {
    const r = await call("/api/reception/walkin", body);
    if (r === null) return;
    if (!r.ok) {
      const { message } = await why(r);
      $("walkin-msg").textContent =
        r.status === 429 ? "Please wait a moment and try again." : `Please check: ${message}.`;
      return;
    }
    $("thanks-detail").textContent = (await r.json()).message;
    show("thanks");
  } finally {
    busy = false;
    $("walkin-submit").disabled = false;
  }
}

// --- the screen -------------------------------------------------------------------

function tick() {
  $("clock").textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

async function connect() {
  const r = await call("/api/reception");
  if (r === null) {
    if (document.body.dataset.screen !== "unpaired") setTimeout(connect, 5_000);
    return;
  }
  if (r.ok) {
    const { site } = await r.json();
    $("site-name").textContent = site ? ` to ${site}` : "";
    home();
  } else {
    banner(`The gateway refused this screen: ${(await why(r)).message}`);
  }
}

function start() {
  $("go-guest").addEventListener("click", () => {
    show("find");
    $("q").focus();
  });
  $("go-walkin").addEventListener("click", () => {
    show("walkin");
    $("walkin-form").elements.name.focus();
  });
  for (const b of document.querySelectorAll("[data-back]")) b.addEventListener("click", home);
  $("q").addEventListener("input", searchSoon);
  $("find-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("q").value.trim();
    if (q.length >= 2) {
      clearTimeout(searchTimer);
      search(q);
    }
  });
  $("walkin-form").addEventListener("submit", walkin);
  for (const kind of ["pointerdown", "keydown", "input"]) document.addEventListener(kind, touched, true);
  tick();
  setInterval(tick, 10_000);
  connect();
}

start();
