// The site console: a sign-in form, then pages under hash routes (#doors,
// #events, #members[/<id>], #sync, #rooms, #reports, #audit) and one WebSocket
// (/api/live) that pushes door states and events. The API is edge/web/console.py.
// Plain ES2020 module, no framework, no build step; the CSP allows nothing
// inline, so every element is made here with textContent (names come from the
// cloud's data and are never parsed as HTML).

const BACKOFF_MIN_MS = 1_000; // reconnect after 1 s, 2 s, 4 s... (jittered)
const BACKOFF_MAX_MS = 30_000; // ...never waiting longer than this
const PING_MS = 15_000; // a ping every 15 s; two unanswered: the link is dead
const SESSION_ENDED = 4401; // the live socket's close code when the session ends
const REFRESH_MS = 15_000; // sync and rooms are re-read this often while shown
const EVENT_ROWS = 200; // rows kept on the events page
const UNLOCK_CHOICES = [3, 5, 10, 30, 60, 300, 900, 3600]; // seconds
const ROLES = ["viewer", "operator", "admin"];

const CAUSES = {
  admin: "by an operator",
  grant: "for an allowed badge",
  exit: "by the exit button",
  schedule: "by its opening hours",
};
const MODES = { card: "a card", pin: "a PIN", card_or_pin: "a card or a PIN", card_and_pin: "a card, then its PIN" };
const ALARMS = {
  forced: "Forced open: the door opened without a badge or an unlock",
  held_open: "Held open: the door has stayed open too long",
};
const EVENT_TYPES = {
  "access.granted": "Allowed",
  "access.denied": "Refused",
  "door.unlocked": "Door unlocked",
  "door.locked": "Door locked",
  "door.forced": "Door forced open",
  "door.held_open": "Door held open",
  "admin.action": "Operator action",
  "reader.online": "Reader online",
  "reader.offline": "Reader offline",
  "reader.tamper": "Reader tampered with",
  "booking.created": "Booking made",
  "booking.checked_in": "Checked in",
  "booking.released": "Booking released",
  "booking.ended_early": "Booking ended early",
  "usage.day_pass": "Day pass used",
  "usage.guest_entry": "Guest entry",
  "usage.credits": "Credits charged",
  "usage.room_overtime": "Room overtime",
  "gateway.started": "Gateway started",
  "gateway.alarm": "Gateway alarm",
};

const $ = (id) => document.getElementById(id);

// An element: h("p", {class: "x", text: "y", onclick: f}, child, ...).
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

const NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, text = null) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== null) el.textContent = text;
  return el;
}

// --- time and words -----------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");
const isoDate = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
const clock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
const hm = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return isoDate(d) === isoDate(new Date()) ? clock(d) : `${isoDate(d)} ${clock(d)}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const n = Math.max(0, Math.round(seconds));
  if (n < 60) return `${n} s`;
  if (n < 3600) return `${Math.floor(n / 60)} min ${n % 60 ? `${n % 60} s` : ""}`.trim();
  if (n < 86400) return `${Math.floor(n / 3600)} h ${n % 3600 ? `${Math.floor((n % 3600) / 60)} min` : ""}`.trim();
  return `${Math.floor(n / 86400)} d ${Math.floor((n % 86400) / 3600)} h`;
}

const sentence = (t) => (t ? t.charAt(0).toUpperCase() + t.slice(1) : t);
const doorName = (id) => (id && doors.get(id)?.name) || id || "";
const may = (role) => me !== null && ROLES.indexOf(me.role) >= ROLES.indexOf(role);

// --- what the page knows ------------------------------------------------------------

let me = null; // {user, role, csrf} while signed in
const doors = new Map(); // door id -> the door from /api/doors, its state kept live
let siteLockdown = false;
let current = null; // the page shown
let refreshTimer = null;

// --- the API ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// The gateway's refusals say why in the body ("409: door front is in lockdown").
async function reasonOf(r) {
  let text = "";
  try {
    text = (await r.text()).trim().replace(/^\d{3}: /, "");
  } catch {
    text = "";
  }
  if (!text || text.length > 300 || text.startsWith("<")) text = r.statusText || `HTTP ${r.status}`;
  return text;
}

async function api(path, { method = "GET", body, timeoutMs } = {}) {
  const headers = {};
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (timeoutMs) init.signal = AbortSignal.timeout(timeoutMs);
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && me) headers["X-CSRF-Token"] = me.csrf;
  let r;
  try {
    r = await fetch(path, init);
  } catch {
    throw new ApiError(0, "the gateway cannot be reached");
  }
  if (!r.ok) {
    const retry = Number(r.headers.get("Retry-After")) || null;
    const err = new ApiError(r.status, await reasonOf(r), retry);
    if (r.status === 401 && me) signedOut("Your session has ended. Sign in again.");
    throw err;
  }
  return r.json();
}

// A message at the top of the page (errors stay until the next one).
let toastTimer = null;
function toast(text, bad = false) {
  const t = $("toast");
  t.textContent = text;
  t.classList.toggle("bad", bad);
  t.hidden = false;
  clearTimeout(toastTimer);
  if (!bad) toastTimer = setTimeout(() => (t.hidden = true), 6000);
}

function failed(what, e) {
  if (e.status === 401) return; // back at the sign-in form already
  toast(`${what}: ${e.message}.`, true);
}

// --- signing in and out -------------------------------------------------------------

function loginError(e) {
  if (e.status === 401) return "Wrong user name or password.";
  if (e.status === 403) return `${sentence(e.message)}.`; // locked, with the minutes left
  if (e.status === 429) {
    const wait = e.retryAfter ? ` Try again in ${duration(e.retryAfter)}.` : "";
    return `Too many sign-in attempts from this computer.${wait}`;
  }
  if (e.status === 0) return "The gateway cannot be reached. Check the network and try again.";
  return `Sign-in failed: ${e.message}.`;
}

let signinHold = null;
$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("signin-name").value.trim();
  const password = $("signin-password").value;
  const error = $("signin-error");
  if (!name || !password) {
    error.textContent = "Type your user name and your password.";
    error.hidden = false;
    return;
  }
  const button = $("signin-submit");
  button.disabled = true;
  button.textContent = "Signing in…";
  let hold = 0;
  try {
    const session = await api("/api/login", { method: "POST", body: { name, password } });
    $("signin-password").value = "";
    error.hidden = true;
    start(session);
  } catch (e) {
    error.textContent = loginError(e);
    error.hidden = false;
    if (e.status === 429 && e.retryAfter) hold = Math.min(e.retryAfter, 300);
    $("signin-password").select();
  } finally {
    button.textContent = "Sign in";
    clearTimeout(signinHold);
    if (hold) signinHold = setTimeout(() => (button.disabled = false), hold * 1000);
    else button.disabled = false;
  }
});

$("signout").addEventListener("click", async () => {
  try {
    await api("/api/logout", { method: "POST" });
  } catch (e) {
    if (e.status !== 401) toast(`Not signed out: ${e.message}.`, true);
    if (e.status !== 401) return;
  }
  signedOut("You have signed out.");
});

function start(session) {
  me = session;
  document.body.dataset.role = me.role;
  $("who").textContent = `${me.user} · ${me.role}`;
  $("tab-audit").hidden = !may("admin");
  $("site-lockdown").hidden = !may("operator");
  $("viewer-note").hidden = may("operator");
  $("signin").hidden = true;
  $("signin-note").hidden = true;
  $("app").hidden = false;
  live.open();
  route();
}

function signedOut(note) {
  me = null;
  live.close();
  live.show("connecting", "Signed out");
  $("who").textContent = "";
  clearInterval(refreshTimer);
  current = null;
  doors.clear();
  eventRows = [];
  // Nothing of what was shown stays in the page once signed out.
  for (const id of ["doors", "events", "member-results", "member-detail", "sync", "rooms", "audit"]) {
    $(id).replaceChildren();
  }
  $("member-status").textContent = "";
  $("app").hidden = true;
  $("toast").hidden = true;
  $("signin").hidden = false;
  const n = $("signin-note");
  n.textContent = note || "";
  n.hidden = !note;
  $("signin-error").hidden = true;
  $("signin-name").focus();
}

// --- the live socket ----------------------------------------------------------------

const live = {
  ws: null,
  attempt: 0,
  retryAt: 0,
  retryTimer: null,
  tickTimer: null,
  pingTimer: null,
  unanswered: 0,
  wasDown: false,
  turn: 0,

  open() {
    this.close();
    this.show("connecting", "Connecting…");
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.unanswered = 0;
      this.show("live", "Live");
      this.pingTimer = setInterval(() => this.ping(), PING_MS);
      if (this.wasDown) reloadAfterGap(); // what changed while the link was down
      this.wasDown = false;
    };
    ws.onmessage = (m) => {
      this.unanswered = 0;
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch {
        return;
      }
      if (msg.type === "door") doorChanged(msg.door, msg.state);
      else if (msg.type === "event") eventArrived(msg.event);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return; // closed by us
      if (ev.code === SESSION_ENDED) {
        this.close();
        signedOut("Your session has ended. Sign in again.");
        return;
      }
      this.lost();
    };
  },

  lost() {
    this.close();
    this.wasDown = true;
    this.retry();
  },

  ping() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (this.unanswered >= 2) {
      this.lost(); // silent for two pings: dead, whatever TCP thinks
      return;
    }
    this.unanswered += 1;
    this.ws.send('{"type":"ping"}');
  },

  // Refused at the upgrade looks like any other failure: ask whether the
  // session still stands before trying again.
  async retry() {
    this.show("down", "Disconnected");
    const turn = ++this.turn;
    try {
      await api("/api/session", { timeoutMs: 5000 });
    } catch (e) {
      if (e.status === 401) return; // signed out by api()
    }
    if (!me || turn !== this.turn || this.ws) return; // signed out or reconnected meanwhile
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const wait = base / 2 + (Math.random() * base) / 2;
    this.attempt += 1;
    this.retryAt = Date.now() + wait;
    this.retryTimer = setTimeout(() => this.open(), wait);
    const tick = () => {
      const left = Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
      this.show("down", `Disconnected: retrying in ${left} s`);
    };
    tick();
    this.tickTimer = setInterval(tick, 1000);
  },

  close() {
    this.turn += 1;
    clearTimeout(this.retryTimer);
    clearInterval(this.tickTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
  },

  // Said to a screen reader once per change of state, not at every second.
  show(state, text) {
    const el = $("live");
    if (el.dataset.link !== state) {
      $("live-said").textContent = state === "down" ? "Disconnected from the gateway: retrying" : text;
    }
    el.dataset.link = state;
    el.textContent = text;
    document.body.classList.toggle("link-down", state === "down");
  },

  get up() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  },
};

function reloadAfterGap() {
  if (current === "doors") loadDoors();
  if (current === "events") loadEvents();
}

// --- pages and routes ---------------------------------------------------------------

function route() {
  if (!me) return;
  const [name, ...rest] = location.hash.slice(1).split("/");
  const key = PAGES[name] && (name !== "audit" || may("admin")) ? name : "doors";
  clearInterval(refreshTimer);
  for (const sec of document.querySelectorAll(".page")) sec.hidden = sec.dataset.page !== key;
  for (const a of document.querySelectorAll(".tabs a")) {
    if (a.dataset.page === key) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const changed = current !== key;
  current = key;
  PAGES[key].show(rest.map(decodeURIComponent), changed);
  if (PAGES[key].refresh) refreshTimer = setInterval(() => PAGES[key].refresh(), REFRESH_MS);
}
window.addEventListener("hashchange", route);

for (const b of document.querySelectorAll("[data-refresh]")) {
  b.addEventListener("click", () => PAGES[b.dataset.refresh].refresh());
}

// --- doors --------------------------------------------------------------------------

async function loadDoors() {
  let r;
  try {
    r = await api("/api/doors");
  } catch (e) {
    failed("The doors could not be read", e);
    return;
  }
  const seen = new Set();
  for (const d of r.doors) {
    doors.set(d.id, d);
    seen.add(d.id);
  }
  for (const id of [...doors.keys()]) if (!seen.has(id)) doors.delete(id);
  siteLockdown = r.lockdown_site;
  renderDoors();
  doorOptions();
}

// A push names the door and its new state; the list is read again shortly after
// for what a push does not carry (unlocked until, reader details, site lockdown).
let doorsReload = null;
function doorChanged(id, state) {
  const d = doors.get(id);
  if (d) {
    d.state = state;
    if (state.lock !== "unlocked") d.unlocked_until = null;
    renderDoor(d);
  }
  clearTimeout(doorsReload);
  doorsReload = setTimeout(() => {
    if (me && current === "doors") loadDoors();
  }, 300);
}

function renderDoors() {
  const grid = $("doors");
  const cards = new Map([...grid.children].map((c) => [c.dataset.door, c]));
  for (const [id, c] of cards) if (!doors.has(id)) c.remove();
  for (const d of doors.values()) renderDoor(d);
  const state = $("site-lockdown-state");
  state.textContent = siteLockdown ? "Site-wide lockdown is ON" : "Site-wide lockdown: off";
  state.classList.toggle("alarm", siteLockdown);
  const b = $("site-lockdown");
  b.textContent = siteLockdown ? "Lift the site lockdown" : "Lock down the whole site";
  b.classList.toggle("danger", !siteLockdown);
}

function doorCard(d) {
  const id = d.id;
  const key = id.replace(/[^A-Za-z0-9_-]/g, "_");
  const card = h(
    "article",
    { class: "door-card", "data-door": id, "aria-labelledby": `door-${key}` },
    h("header", { class: "door-head" }, h("h2", { id: `door-${key}` }), h("span", { class: "door-id" })),
    h("p", { class: "door-lock" }),
    h("p", { class: "door-cause" }),
    h("p", { class: "door-alarm", role: "alert", hidden: true }),
    h(
      "dl",
      { class: "door-facts" },
      h("dt", { text: "Opens with" }),
      h("dd", { class: "door-mode" }),
      h("dt", { text: "Door" }),
      h("dd", { class: "door-contact" }),
      h("dt", { text: "Readers" }),
      h("dd", {}, h("ul", { class: "door-readers" })),
      h("dt", { class: "fault-label", text: "Fault", hidden: true }),
      h("dd", { class: "door-fault", hidden: true }),
    ),
  );
  if (may("operator")) {
    const select = h(
      "select",
      { id: `secs-${key}`, class: "unlock-seconds" },
      UNLOCK_CHOICES.map((n) => h("option", { value: n, text: duration(n), selected: n === 5 })),
    );
    card.append(
      h(
        "div",
        { class: "door-actions" },
        h("label", { for: `secs-${key}`, text: "Unlock for" }),
        select,
        h("button", { type: "button", class: "act-unlock primary", text: "Unlock", onclick: () => unlock(id, Number(select.value)) }),
        h("button", { type: "button", class: "act-lockdown", onclick: () => lockdown(id) }),
      ),
    );
  }
  return card;
}

function renderDoor(d) {
  const grid = $("doors");
  let card = grid.querySelector(`[data-door="${CSS.escape(d.id)}"]`);
  if (!card) {
    card = doorCard(d);
    grid.append(card);
  }
  const st = d.state || {};
  const q = (sel) => card.querySelector(sel);
  q("h2").textContent = d.name || d.id;
  q(".door-id").textContent = d.name ? d.id : "";
  let word = "Locked";
  let cause = "Badges are decided as usual";
  if (st.lockdown) {
    word = "Lockdown";
    cause = siteLockdown ? "Site-wide lockdown: every badge is refused" : "In lockdown: every badge is refused";
  } else if (st.lock === "unlocked") {
    word = "Unlocked";
    cause = `Unlocked ${CAUSES[st.cause] || st.cause || ""}`.trim();
    if (d.unlocked_until) cause += ` until ${clock(new Date(d.unlocked_until))}`;
  }
  q(".door-mode").textContent = MODES[d.mode] || (d.mode ? d.mode.replace(/_/g, " ") : "—");
  card.dataset.lock = st.lockdown ? "lockdown" : st.lock || "locked";
  q(".door-lock").textContent = word;
  q(".door-cause").textContent = cause;
  const alarm = q(".door-alarm");
  alarm.hidden = !st.alarm;
  alarm.textContent = ALARMS[st.alarm] || st.alarm || "";
  card.dataset.alarm = st.alarm || "";
  const contact = q(".door-contact");
  contact.textContent = st.contact === "open" ? "Open" : st.contact === "closed" ? "Closed" : "No door contact";
  contact.dataset.contact = st.contact || "";
  const readers = q(".door-readers");
  const details = new Map((d.readers || []).map((r) => [r.name, r]));
  const names = Object.keys(st.readers || {});
  readers.replaceChildren(
    ...(names.length
      ? names.map((name) => {
          const online = st.readers[name];
          const r = details.get(name);
          let text = online ? "online" : "offline";
          if (online && r && r.state.startsWith("online (")) text = r.state;
          if (!online && r && r.fault) text += `: ${r.fault}`;
          return h("li", { class: online ? "ok" : "bad" }, h("span", { class: "reader-name", text: name }), ` ${text}`);
        })
      : [h("li", { class: "muted", text: "No readers configured" })]),
  );
  const fault = q(".door-fault");
  fault.hidden = !st.fault;
  q(".fault-label").hidden = !st.fault;
  fault.textContent = st.fault ? sentence(st.fault) : "";
  const unlockButton = q(".act-unlock");
  if (unlockButton) {
    unlockButton.disabled = Boolean(st.lockdown);
    unlockButton.title = st.lockdown ? "Lift the lockdown first" : "";
    const lock = q(".act-lockdown");
    lock.textContent = st.lockdown ? "Lift lockdown" : "Lock down";
    lock.classList.toggle("danger", !st.lockdown);
    lock.disabled = siteLockdown;
    lock.title = siteLockdown ? "The whole site is in lockdown: lift it at the top of the page" : "";
  }
}

async function unlock(id, seconds) {
  try {
    const r = await api(`/api/doors/${encodeURIComponent(id)}/unlock`, { method: "POST", body: { seconds } });
    const d = doors.get(id);
    if (d) d.unlocked_until = r.unlocked_until;
    toast(`${doorName(id)} unlocked for ${duration(seconds)}.`);
    if (!live.up) loadDoors(); // no push to wait for
  } catch (e) {
    failed(`${doorName(id)} was not unlocked`, e);
  }
}

async function lockdown(id) {
  const d = doors.get(id);
  const name = doorName(id);
  const on = !(d && d.state && d.state.lockdown);
  const ok = await confirmDialog(
    on
      ? {
          title: `Lock down ${name}?`,
          text: `Every badge and PIN will be refused at ${name}, and an unlock in progress ends at once. ${name} stays locked until the lockdown is lifted here.`,
          ok: `Lock down ${name}`,
        }
      : {
          title: `Lift the lockdown of ${name}?`,
          text: `Badges and PINs at ${name} will be decided as usual again.`,
          ok: "Lift the lockdown",
        },
  );
  if (ok) await setLockdown(on, [id], on ? `${name} is in lockdown.` : `The lockdown of ${name} is lifted.`);
}

$("site-lockdown").addEventListener("click", async () => {
  const on = !siteLockdown;
  const names = [...doors.values()].map((d) => d.name || d.id).join(", ");
  const ok = await confirmDialog(
    on
      ? {
          title: "Lock down the whole site?",
          text: `Every badge and PIN will be refused at all ${doors.size} doors (${names}), and every unlock in progress ends at once. The doors stay locked until the lockdown is lifted here.`,
          ok: "Lock down every door",
        }
      : {
          title: "Lift the site-wide lockdown?",
          text: "Badges and PINs will be decided as usual again at every door. Lockdowns of single doors are lifted too.",
          ok: "Lift every lockdown",
        },
  );
  if (ok) await setLockdown(on, [], on ? "The whole site is in lockdown." : "Every lockdown is lifted.");
});

async function setLockdown(on, ids, done) {
  try {
    await api("/api/lockdown", { method: "POST", body: { on, doors: ids, confirm: true } });
    toast(done);
    await loadDoors();
  } catch (e) {
    failed("The lockdown was not changed", e);
  }
}

// A modal question; resolves true for the named action, false for Cancel or Esc.
function confirmDialog({ title, text, ok }) {
  const dlg = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  dlg.returnValue = "";
  const back = document.activeElement;
  dlg.showModal();
  $("confirm-cancel").focus(); // the safe answer is the default
  return new Promise((resolve) => {
    dlg.addEventListener(
      "close",
      () => {
        if (back && back.isConnected) back.focus();
        resolve(dlg.returnValue === "ok");
      },
      { once: true },
    );
  });
}
$("confirm-ok").addEventListener("click", () => $("confirm").close("ok"));
$("confirm-cancel").addEventListener("click", () => $("confirm").close("cancel"));

// --- events -------------------------------------------------------------------------

let eventRows = []; // newest first
let eventsLoading = 0;
let eventsSeq = 0;
let arrivedWhileLoading = []; // pushed during a load: kept unless the answer has them
let eventFilter = { type: "", door: "", holder: "", outcome: "" }; // as last applied

function doorOptions() {
  const sel = $("f-door");
  const chosen = sel.value;
  sel.replaceChildren(
    h("option", { value: "", text: "All doors" }),
    ...[...doors.values()].map((d) => h("option", { value: d.id, text: d.name || d.id })),
  );
  sel.value = chosen;
}

async function loadEvents() {
  eventFilter = {
    type: $("f-type").value,
    door: $("f-door").value,
    holder: $("f-holder").value.trim(),
    outcome: $("f-outcome").value,
  };
  const q = new URLSearchParams({ limit: "100" });
  for (const [k, v] of Object.entries(eventFilter)) if (v) q.set(k, v);
  eventsLoading += 1;
  const seq = ++eventsSeq;
  let r = null;
  try {
    r = await api(`/api/events?${q}`);
  } catch (e) {
    failed("The events could not be read", e);
  } finally {
    eventsLoading -= 1;
  }
  const early = eventsLoading ? [] : arrivedWhileLoading;
  if (!eventsLoading) arrivedWhileLoading = [];
  if (r && seq === eventsSeq) {
    eventRows = r.events; // else a later load (other filters) has answered instead
    $("events").replaceChildren(...eventRows.map((ev) => eventRow(ev)));
  }
  const ids = new Set(eventRows.map((ev) => ev.id));
  for (const ev of early) if (!ids.has(ev.id)) eventArrived(ev);
  $("events-empty").hidden = eventRows.length > 0;
}

function matches(ev, f) {
  if (f.type && !String(ev.type).startsWith(f.type)) return false;
  if (f.door && ev.door !== f.door) return false;
  if (f.holder && ev.holder !== f.holder) return false;
  if (f.outcome && ev.type !== `access.${f.outcome}`) return false;
  return true;
}

function eventArrived(ev) {
  if (!ev || !matches(ev, eventFilter)) return;
  if (eventsLoading) {
    arrivedWhileLoading.push(ev);
    return;
  }
  eventRows.unshift(ev);
  const body = $("events");
  body.prepend(eventRow(ev, true));
  while (eventRows.length > EVENT_ROWS) {
    eventRows.pop();
    body.lastElementChild?.remove();
  }
  $("events-empty").hidden = true;
}

function eventDetail(ev) {
  const d = ev.details || {};
  if (ev.why !== undefined) {
    const where = d.reader ? ` (reader ${d.reader})` : "";
    return `${sentence(ev.why)}${where}`;
  }
  if (ev.type === "admin.action") {
    const by = d.by ? ` by ${d.by}` : "";
    if (d.action === "unlock") return `Unlock for ${duration(d.seconds)}${by}`;
    if (d.action === "lockdown") {
      const which = d.doors === "all" ? "every door" : [].concat(d.doors || []).map(doorName).join(", ");
      return `Lockdown ${d.on ? "on" : "off"} for ${which}${by}`;
    }
    return `${d.action || "action"}${by}`;
  }
  if (ev.type === "door.unlocked" || ev.type === "door.locked") {
    const cause = d.cause === "admin" ? "by an operator" : d.cause ? `(${d.cause})` : "";
    const by = d.by ? ` ${d.by}` : "";
    const secs = d.seconds ? ` for ${duration(d.seconds)}` : "";
    return `${cause}${by}${secs}`.trim();
  }
  return Object.entries(d)
    .filter(([, v]) => v !== null && typeof v !== "object")
    .map(([k, v]) => `${k.replace(/_/g, " ")}: ${v}`)
    .join(", ");
}

function eventRow(ev, fresh = false) {
  const type = ev.type || "";
  const outcome = type === "access.granted" ? "granted" : type === "access.denied" ? "denied" : "";
  const member = ev.holder
    ? h("a", { href: `#members/${encodeURIComponent(ev.holder)}`, text: ev.holder })
    : "";
  return h(
    "tr",
    { class: `${fresh ? "fresh " : ""}${outcome}`.trim(), "data-type": type },
    h("td", { class: "nowrap", text: when(ev.at) }),
    h("td", {}, h("span", { class: `ev-type ${outcome}`, text: EVENT_TYPES[type] || type })),
    h("td", { text: doorName(ev.door) }),
    h("td", {}, member),
    h("td", { class: "why", text: eventDetail(ev) }),
  );
}

$("event-filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadEvents();
});
for (const id of ["f-type", "f-door", "f-outcome"]) $(id).addEventListener("change", () => loadEvents());

// --- member lookup ------------------------------------------------------------------

$("member-search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("member-q").value.trim();
  if (!text) return;
  const status = $("member-status");
  status.textContent = "Searching…";
  $("member-detail").replaceChildren();
  let r;
  try {
    r = await api(`/api/members?${new URLSearchParams({ q: text })}`);
  } catch (e) {
    status.textContent = e.status === 401 ? "" : `Search failed: ${e.message}.`;
    return;
  }
  const n = r.members.length;
  status.textContent = n ? `${n} found.` : `Nobody matches “${text}”.`;
  $("member-results").replaceChildren(
    ...r.members.map((m) =>
      h(
        "li",
        {},
        h(
          "a",
          { href: `#members/${encodeURIComponent(m.id)}`, class: "result" },
          h("strong", { text: m.name || m.id }),
          ` ${m.id} · ${m.kind}`,
        ),
      ),
    ),
  );
  if (n === 1) location.hash = `#members/${encodeURIComponent(r.members[0].id)}`;
});

async function showMember(id) {
  const box = $("member-detail");
  box.replaceChildren(h("p", { class: "muted", text: "Reading…" }));
  if (!doors.size) await loadDoors(); // for the doors' names
  let m;
  try {
    m = await api(`/api/members/${encodeURIComponent(id)}`);
  } catch (e) {
    box.replaceChildren(h("p", { class: "error", text: e.status === 404 ? sentence(e.message) + "." : `Not read: ${e.message}.` }));
    return;
  }
  const billing = m.billing || {};
  const contract = m.contract || {};
  const facts = [
    ["Kind", m.kind],
    ["Plan", m.plan || "none"],
    ["Company", m.company || "none"],
    ["Contract", contract.start ? `${contract.start} to ${contract.end || "open-ended"}` : "—"],
    [
      "Billing",
      `${billing.status || "—"}${billing.grace_until ? `, grace until ${when(billing.grace_until)}` : ""} (${m.billing_allows_access ? "access allowed" : "access suspended"})`,
    ],
    ["Day passes", `${m.day_pass_balance ?? 0} left${m.day_pass_used_today ? ", one used today" : ""}`],
  ];
  if (m.host) facts.push(["Host", m.host]);
  const creds = m.credentials.length
    ? h(
        "ul",
        { class: "creds" },
        m.credentials.map((c) =>
          h("li", { class: c.active ? "" : "bad" }, `${c.type === "pin" ? "PIN" : `Card ${c.card}`} (${c.id})${c.active ? "" : ": disabled"}`),
        ),
      )
    : h("p", { class: "muted", text: "No card or PIN." });
  const answers = h(
    "table",
    { class: "grid answers" },
    h("caption", { text: `Every door's answer now (${when(m.at)})` }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Door" }), h("th", { scope: "col", text: "Answer" }), h("th", { scope: "col", text: "Why" }))),
    h(
      "tbody",
      {},
      m.doors.map((d) =>
        h(
          "tr",
          { class: d.granted ? "granted" : "denied", "data-door": d.door },
          h("td", { text: doorName(d.door) }),
          h("td", {}, h("span", { class: `ev-type ${d.granted ? "granted" : "denied"}`, text: d.granted ? "Allowed" : "Refused" })),
          h("td", { class: "why", text: sentence(d.why) }),
        ),
      ),
    ),
  );
  const bookings = m.bookings.length
    ? h(
        "ul",
        {},
        m.bookings.map((b) => h("li", { text: `${b.room}: ${when(b.start)}–${hm(new Date(b.end))} (${b.status}${b.checked_in ? ", checked in" : ""})` })),
      )
    : null;
  box.replaceChildren(
    h("h2", { id: "member-name", text: m.name || m.id }),
    h("p", { class: "muted", text: m.id }),
    h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])),
    answers,
    h("h3", { text: "Cards and PINs" }),
    creds,
    bookings && h("h3", { text: "Bookings" }),
    bookings,
  );
}

// --- sync and outbox ----------------------------------------------------------------

async function loadSync() {
  let r;
  try {
    r = await api("/api/sync");
  } catch (e) {
    failed("Sync status not read", e);
    return;
  }
  const ob = r.outbox;
  const c = r.cloud;
  const card = (title, rows, cls = "") =>
    h("section", { class: `card ${cls}`.trim() }, h("h2", { text: title }), h("dl", { class: "facts" }, rows.flatMap(([k, v, bad]) => [h("dt", { text: k }), h("dd", { class: bad ? "bad" : "", text: v })])));
  const age = c && c.age_s !== null && c.age_s !== undefined ? c.age_s : r.synced_at ? (Date.now() - Date.parse(r.synced_at)) / 1000 : null;
  const cards = [
    card("Site data", [
      ["Last sync", r.synced_at ? when(r.synced_at) : "never"],
      ["Age", age === null ? "—" : duration(age)],
      ["Generation", String(r.generation)],
    ]),
    card(
      "Outbox",
      [
        ["Waiting to go up", String(ob.pending)],
        ["Oldest waiting for", ob.oldest_pending_s === null ? "nothing waits" : duration(ob.oldest_pending_s)],
        ["Refused by the cloud", String(ob.rejected), ob.rejected > 0],
      ],
      ob.rejected > 0 ? "warn" : "",
    ),
  ];
  if (!c) {
    cards.push(card("Cloud", [["Link", "No cloud configured: this gateway runs on imported site data"]]));
  } else {
    const part = (x) => [
      ["Last success", x.last_ok ? when(x.last_ok) : "never"],
      ["Last error", x.last_error ? `${x.last_error} (${when(x.last_error_at)})` : "none", Boolean(x.last_error)],
      ["Failures in a row", String(x.failures)],
      ["Next try", x.retry_at ? when(x.retry_at) : "—"],
    ];
    cards.push(
      card("Cloud", [
        ["Address", c.url],
        ["State", c.stopped ? "stopped: the cloud refused the gateway's credentials" : "running", c.stopped],
        ["Push channel", c.push && c.push.enabled ? c.push.state || "on" : "off"],
      ], c.stopped ? "warn" : ""),
      card("Pull (site data)", part(c.pull), c.pull.failures ? "warn" : ""),
      card("Upload (events)", part(c.upload), c.upload.failures ? "warn" : ""),
    );
    if (c.refused_changes && c.refused_changes.length) {
      cards.push(card("Changes refused", c.refused_changes.map((x) => [when(x.at), `${x.path}: ${x.error}`, true]), "warn"));
    }
  }
  $("sync").replaceChildren(...cards);
}

// --- rooms --------------------------------------------------------------------------

const PHASES = {
  free: "Free",
  upcoming: "Free, booked soon",
  awaiting_checkin: "Waiting for check-in",
  in_use: "In use",
  ending: "Ending soon",
  ended: "Ended",
  overtime: "Overtime",
};

const span = (b) => `${when(b.start)}–${hm(new Date(b.end))}`;

async function loadRooms() {
  let r;
  try {
    r = await api("/api/rooms");
  } catch (e) {
    failed("Rooms not read", e);
    return;
  }
  $("rooms-empty").hidden = r.rooms.length > 0;
  $("rooms").replaceChildren(
    ...r.rooms.map((room) => {
      const b = room.booking;
      let now = "—";
      if (b) {
        now = `${span(b)}${b.checked_in ? ", checked in" : ""}${b.adhoc ? ", booked at the panel" : ""}`;
        if (room.minutes_left !== undefined) now += `, ${room.minutes_left} min left`;
        if (room.release_in_min !== undefined) now += `, released in ${room.release_in_min} min without a check-in`;
      }
      const next = (room.next || []).slice(0, 2).map(span).join("; ") || "nothing booked";
      const devices = Object.entries(room.devices || {}).map(([name, v]) => {
        const state = v.available === false ? "unavailable" : "on" in v ? (v.on ? "on" : "off") : v.confirmed ? "confirmed" : "waiting";
        return `${name}: ${state}`;
      });
      return h(
        "tr",
        { "data-room": room.room, class: `phase-${room.state}` },
        h("th", { scope: "row", text: room.name || room.room }),
        h("td", {}, h("span", { class: `phase ${room.state}`, text: PHASES[room.state] || room.status || room.state })),
        h("td", { text: now }),
        h("td", { text: next }),
        h("td", { class: "muted", text: devices.join(", ") || "—" }),
      );
    }),
  );
}

// --- audit --------------------------------------------------------------------------

async function loadAudit() {
  let r;
  try {
    r = await api("/api/audit");
  } catch (e) {
    failed("The audit log could not be read", e);
    return;
  }
  $("audit").replaceChildren(
    ...r.audit.map((a) =>
      h(
        "tr",
        { class: String(a.outcome).startsWith("ok") ? "" : "denied" },
        h("td", { class: "nowrap", text: when(a.at) }),
        h("td", { text: a.actor }),
        h("td", { text: a.method }),
        h("td", { class: "why", text: Object.entries(a.params || {}).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") }),
        h("td", { text: a.outcome }),
      ),
    ),
  );
}

// ===== REPORTS ========================================================================
// GET /api/reports/<kind>?from=YYYY-MM-DD&to=YYYY-MM-DD -> {columns, rows, series:
// [{name, points: [[x, y], ...]}], summary}; &format=csv is the table as CSV. The
// chart is drawn here as SVG: lines for many points (hours), grouped bars otherwise.

const CHART = { w: 1100, h: 320, left: 48, right: 12, top: 12, bottom: 56 };
const MAX_BARS = 48; // more x values than this: lines

export const Reports = {
  ready: false,

  show() {
    if (!this.ready) {
      this.ready = true;
      const [from, to] = lastFullWeek(new Date());
      $("report-from").value = from;
      $("report-to").value = to;
      $("report-form").addEventListener("submit", (ev) => {
        ev.preventDefault();
        this.load();
      });
      for (const id of ["report-kind", "report-from", "report-to"]) $(id).addEventListener("change", () => this.link());
    }
    this.load();
  },

  query(csv = false) {
    const q = new URLSearchParams({ from: $("report-from").value, to: $("report-to").value });
    if (csv) q.set("format", "csv");
    return `/api/reports/${encodeURIComponent($("report-kind").value)}?${q}`;
  },

  link() {
    const a = $("report-csv");
    a.href = this.query(true);
    a.setAttribute("download", `${$("report-kind").value}-${$("report-from").value}-${$("report-to").value}.csv`);
  },

  // Each load is numbered: the answer to an earlier one (a long period still being
  // read when another report was asked for) comes too late and is dropped.
  asked: 0,

  async load() {
    this.link();
    const asked = ++this.asked;
    const status = $("report-status");
    const [from, to] = [$("report-from").value, $("report-to").value];
    if (from > to) {
      status.textContent = "The period ends before it starts.";
      return;
    }
    const title = $("report-kind").selectedOptions[0].text; // the kind asked for, whatever is chosen meanwhile
    status.textContent = "Reading…";
    let r;
    try {
      r = await api(this.query());
    } catch (e) {
      if (e.status === 401 || asked !== this.asked) return;
      status.textContent = e.status === 404 ? "Reports are not available on this gateway yet." : `The report could not be made: ${e.message}.`;
      this.render({ columns: [], rows: [], series: [] }, title);
      return;
    }
    if (asked !== this.asked) return;
    status.textContent = `${title}, ${r.start || from} to ${r.end || to}${r.timezone ? ` (${r.timezone})` : ""}.`;
    this.render(r, title);
  },

  render(r, title) {
    $("report-summary").replaceChildren(
      ...Object.entries(r.summary || {})
        .filter(([, v]) => v === null || typeof v !== "object")
        .flatMap(([k, v]) => [h("dt", { text: sentence(k.replace(/_/g, " ")) }), h("dd", { text: v ?? "—" })]),
    );
    drawChart($("report-chart"), $("report-legend"), r.series || [], title);
    const table = $("report-table");
    table.tHead.replaceChildren(h("tr", {}, (r.columns || []).map((c) => h("th", { scope: "col", text: c.replace(/_/g, " ") }))));
    table.tBodies[0].replaceChildren(
      ...(r.rows || []).map((row) => h("tr", {}, row.map((v) => h("td", { class: typeof v === "number" ? "num" : "", text: v ?? "" })))),
    );
  },
};

// Monday to Sunday of the last week that has ended, as YYYY-MM-DD (local days).
export function lastFullWeek(today) {
  const monday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - ((today.getDay() + 6) % 7));
  const from = new Date(monday.getFullYear(), monday.getMonth(), monday.getDate() - 7);
  const to = new Date(monday.getFullYear(), monday.getMonth(), monday.getDate() - 1);
  return [isoDate(from), isoDate(to)];
}

const DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
function axisLabel(x) {
  const text = String(x);
  let m = /^(\d{4})-(\d\d)-(\d\d)$/.exec(text);
  if (m) return `${DAY_NAMES[new Date(+m[1], +m[2] - 1, +m[3]).getDay()]} ${m[3]}.${m[2]}.`;
  m = /^\d{4}-(\d\d)-(\d\d)T(\d\d):(\d\d)/.exec(text); // the site's wall clock, as sent
  if (m) return `${m[2]}.${m[1]}. ${m[3]}:${m[4]}`;
  return text.length > 14 ? `${text.slice(0, 13)}…` : text;
}

function niceStep(max, ticks = 5) {
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

export function drawChart(svg, legend, series, title) {
  const { w, h: ht, left, right, top, bottom } = CHART;
  svg.replaceChildren(s("title", {}, title));
  svg.setAttribute("viewBox", `0 0 ${w} ${ht}`);
  legend.replaceChildren();
  const xs = [];
  const seen = new Set();
  for (const sr of series) {
    for (const [x] of sr.points) {
      if (!seen.has(x)) xs.push(x);
      seen.add(x);
    }
  }
  let max = 0;
  for (const sr of series) for (const [, y] of sr.points) if (typeof y === "number") max = Math.max(max, y);
  if (!xs.length) {
    svg.append(s("text", { x: w / 2, y: ht / 2, "text-anchor": "middle", class: "axis" }, "No data for this period"));
    return;
  }
  const step = niceStep(max || 1);
  const top_ = Math.max(step, Math.ceil((max || 1) / step) * step);
  const pw = w - left - right;
  const ph = ht - top - bottom;
  const y = (v) => top + ph - (v / top_) * ph;
  for (let v = 0; v <= top_ + 1e-9; v += step) {
    svg.append(s("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), class: v ? "grid-line" : "axis-line" }));
    svg.append(s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, String(+v.toFixed(2))));
  }
  const band = pw / xs.length;
  const every = Math.max(1, Math.ceil(xs.length / 14));
  xs.forEach((x, i) => {
    if (i % every) return;
    const cx = left + band * (i + 0.5);
    svg.append(s("text", { x: cx, y: ht - bottom + 18, "text-anchor": "middle", class: "axis" }, axisLabel(x)));
  });
  const index = new Map(xs.map((x, i) => [x, i]));
  if (xs.length > MAX_BARS) {
    series.forEach((sr, k) => {
      const pts = sr.points.filter(([, v]) => typeof v === "number").map(([x, v]) => `${(left + band * (index.get(x) + 0.5)).toFixed(1)},${y(v).toFixed(1)}`);
      const line = s("polyline", { points: pts.join(" "), class: `series s${k % 8}` });
      line.append(s("title", {}, sr.name));
      svg.append(line);
    });
  } else {
    const gap = band * 0.2;
    const bw = (band - gap) / Math.max(1, series.length);
    series.forEach((sr, k) => {
      for (const [x, v] of sr.points) {
        if (typeof v !== "number") continue;
        const bx = left + band * index.get(x) + gap / 2 + bw * k;
        const bar = s("rect", { x: bx.toFixed(1), y: y(v).toFixed(1), width: Math.max(1, bw - 1).toFixed(1), height: Math.max(0, top + ph - y(v)).toFixed(1), class: `bar s${k % 8}` });
        bar.append(s("title", {}, `${sr.name}, ${axisLabel(x)}: ${v}`));
        svg.append(bar);
      }
    });
  }
  legend.append(...series.map((sr, k) => h("span", { class: "key" }, h("span", { class: `swatch s${k % 8}`, "aria-hidden": "true" }), sr.name)));
}
// ===== END REPORTS ====================================================================

const PAGES = {
  doors: { show: () => loadDoors() },
  events: {
    show: async (_args, changed) => {
      if (!doors.size) await loadDoors();
      if (changed || !eventRows.length) loadEvents();
    },
  },
  members: {
    show: ([id]) => {
      if (id) showMember(id);
      else {
        $("member-detail").replaceChildren();
        $("member-q").focus();
      }
    },
  },
  sync: { show: () => loadSync(), refresh: () => loadSync() },
  rooms: { show: () => loadRooms(), refresh: () => loadRooms() },
  reports: { show: () => Reports.show() },
  audit: { show: () => loadAudit(), refresh: () => loadAudit() },
};

// --- start --------------------------------------------------------------------------

api("/api/session").then(start, (e) => signedOut(e.status === 0 ? "The gateway cannot be reached." : ""));
