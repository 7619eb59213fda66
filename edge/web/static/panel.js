// The room panel: one WebSocket to the gateway, the room's state pushed on it,
// requests answered by id (the protocol is in edge/web/panel.py). Plain ES2020,
// no framework, no build step; the CSP allows nothing inline, so all is here.

const PING_MS = 10_000; // a ping every 10 s...
const MISSED_PONGS = 2; // ...and "offline" once two in a row go unanswered
const IDLE_MS = 30_000; // back to the idle screen after 30 s without a touch
const RESULT_MS = 10_000; // how long a result stays up
const BACKOFF_MIN_MS = 1_000; // reconnect after 1 s, 2 s, 4 s... (jittered)
const BACKOFF_MAX_MS = 20_000; // ...never waiting longer than this
const CHOICES = [15, 30, 60]; // minutes offered by Book now and Extend
const ACTIONS = {
  free: ["book"],
  upcoming: ["book"],
  awaiting_checkin: ["check_in"],
  in_use: ["extend", "end"],
  ending: ["extend", "end"],
  ended: ["extend"],
  overtime: ["extend"],
};
const TITLES = { check_in: "Check in", book: "Book now", extend: "Extend", end: "End the meeting" };
const WAITING = { check_in: "Checking in…", book: "Booking…", extend: "Extending…", end: "Ending…" };
const ERRORS = {
  not_authorised: "Not accepted",
  no_credits: "Not enough credits",
  room_busy: "The room is not free then",
  no_booking: "No booking for that",
  timeout: "No badge was shown",
  no_reader: "This room has no badge reader",
  not_ready: "The gateway is starting",
  failed: "It could not be saved",
  internal: "The gateway failed",
  bad_request: "The panel sent a bad request",
  cancelled: "Cancelled",
  offline: "Offline",
};

const $ = (id) => document.getElementById(id);
const root = document.documentElement;
const body = document.body;
const room = decodeURIComponent(location.pathname.split("/")[2] || "");
const roomPath = encodeURIComponent(room);
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/panel/${roomPath}/ws`;
const storeKey = `edge-panel:${room}`;
const theme = new URLSearchParams(location.search).get("theme"); // "day" or "night" pins it

// --- what the page knows -------------------------------------------------------------

let state = null; // the room's panel state, as pushed
let info = {}; // {tz, max_minutes, credits_per_hour}: the room's panel settings
let stateAt = 0; // when the state last came (ms)
let link = "connecting"; // connecting | online | offline | unpaired

let ws = null;
let attempt = 0;
let retryTimer = null;
let pingTimer = null;
let unanswered = 0;
let revoked = false;

let lastId = 0;
const pending = new Map(); // request id -> {op, minutes}
let flow = null; // the action being taken: {op, minutes, rid, badge}
let pin = "";
let idleTimer = null;
let resultTimer = null;
let countTimer = null;

// --- time, in the site's zone ------------------------------------------------------

let fmtZone = null;
let hhmm = null;
let parts = null;

function formats() {
  const tz = info.tz || undefined;
  if (hhmm === null || fmtZone !== tz) {
    fmtZone = tz;
    const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    const all = { year: "numeric", month: "numeric", day: "numeric", second: "numeric", ...opts };
    try {
      hhmm = new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: tz });
      parts = new Intl.DateTimeFormat("en-GB", { ...all, timeZone: tz });
    } catch {
      hhmm = new Intl.DateTimeFormat("en-GB", opts); // an unknown zone: the tablet's own
      parts = new Intl.DateTimeFormat("en-GB", all);
    }
  }
  return { hhmm, parts };
}

const fmt = (ms) => formats().hhmm.format(new Date(ms));

function wall(ms) {
  const p = {};
  for (const x of formats().parts.formatToParts(new Date(ms))) p[x.type] = Number(x.value);
  return p;
}

// The site's offset from UTC at `ms`, so that ticks fall on its own quarter hours.
function offsetMs(ms) {
  const p = wall(ms);
  const local = Date.UTC(p.year, p.month - 1, p.day, p.hour % 24, p.minute, p.second);
  return local - Math.floor(ms / 1000) * 1000;
}

function isNight(ms) {
  if (theme === "night") return true;
  if (theme === "day") return false;
  const h = wall(ms).hour % 24;
  return h >= 20 || h < 7;
}

// --- rendering ---------------------------------------------------------------------

const minutesLeft = (n) => (n === 1 ? "1 min left" : `${n} min left`);
const span = (b) => `${fmt(Date.parse(b.start))}–${fmt(Date.parse(b.end))}`;

function describe(st) {
  const b = st.booking;
  const end = b ? fmt(Date.parse(b.end)) : "";
  const nextStart = st.next && st.next.length ? Date.parse(st.next[0].start) : null;
  switch (st.state) {
    case "free":
      return {
        tone: "free",
        word: "Free",
        detail: nextStart ? `Free until ${fmt(nextStart)}` : "No booking in the next 4 hours",
      };
    case "upcoming":
      return { tone: "free", word: "Free", detail: b ? `Booked from ${fmt(Date.parse(b.start))}` : "" };
    case "awaiting_checkin": {
      const release = Number.isInteger(st.release_in_min)
        ? `released in ${st.release_in_min} min without a check-in`
        : "waiting for a check-in";
      return { tone: "wait", word: "Check in", detail: `Booked ${span(b)} · ${release}` };
    }
    case "in_use":
      return { tone: "busy", word: "In use", detail: `Until ${end} · ${minutesLeft(st.minutes_left)}` };
    case "ending":
      return {
        tone: "busy",
        word: "Ending soon",
        detail: `Ends at ${end} · ${minutesLeft(st.minutes_left)}`,
        warning: true,
      };
    case "ended":
      return { tone: "busy", word: "Ended", detail: `The booking ended at ${end}. Please wrap up.` };
    case "overtime":
      return { tone: "busy", word: "Overtime", detail: `The booking ended at ${end}` };
    default:
      return {
        tone: st.status === "free" ? "free" : st.status === "busy" ? "busy" : "wait",
        word: String(st.status || st.state || ""),
        detail: "",
      };
  }
}

function render() {
  const st = state;
  const name = st ? st.name || st.room : room;
  $("room-name").textContent = name;
  document.title = `${name} · room panel`;
  body.classList.toggle("offline", link === "offline");
  if (!st) {
    body.classList.add("connecting");
    $("status-word").textContent = link === "offline" ? "Offline" : "Connecting…";
    $("status-detail").textContent = "";
    return;
  }
  const d = describe(st);
  body.classList.remove("connecting");
  for (const tone of ["free", "busy", "wait"]) body.classList.toggle(`tone-${tone}`, d.tone === tone);
  body.classList.toggle("warning", Boolean(d.warning));
  body.dataset.phase = st.state;
  $("status-word").textContent = d.word;
  $("status-detail").textContent = d.detail;
  renderTimeline(st, Date.now());
  renderActions(st);
}

function bookingsOf(st) {
  const out = [];
  if (st.booking) out.push({ ...st.booking, current: true });
  for (const n of st.next || []) if (!st.booking || n.id !== st.booking.id) out.push(n);
  return out;
}

function renderTimeline(st, now) {
  const items = bookingsOf(st);
  let end = now + 3_600_000;
  for (const b of items) end = Math.max(end, Date.parse(b.end));
  end = Math.min(end, now + 4 * 3_600_000);
  const step = end - now <= 3_600_000 ? 900_000 : end - now <= 7_200_000 ? 1_800_000 : 3_600_000;
  const off = offsetMs(now);
  end = Math.ceil((end + off) / step) * step - off;
  const whole = end - now;
  const pos = (t) => `${(100 * (t - now)) / whole}%`;

  const track = $("tl-track");
  for (const old of track.querySelectorAll(".tl-block")) old.remove();
  for (const b of items) {
    const s = Math.max(Date.parse(b.start), now);
    const e = Math.min(Date.parse(b.end), end);
    if (e <= s) continue;
    const el = document.createElement("div");
    el.className = "tl-block";
    if (b.current && st.state === "awaiting_checkin") el.classList.add("awaiting");
    if (b.current) el.classList.add("current");
    el.style.left = pos(s); // CSSOM, which the CSP allows (inline style attributes it does not)
    el.style.width = `${(100 * (e - s)) / whole}%`;
    el.textContent = span(b);
    track.append(el);
  }
  const ticks = $("tl-ticks");
  ticks.replaceChildren();
  for (let t = Math.ceil((now + off) / step) * step - off; t <= end; t += step) {
    if (t - now < whole * 0.04) continue; // no label under the "now" edge
    const el = document.createElement("span");
    el.className = "tl-tick";
    el.style.left = pos(t);
    el.textContent = fmt(t);
    ticks.append(el);
  }
  const next = (st.next || []).filter((n) => !st.booking || n.id !== st.booking.id);
  $("upcoming").textContent = next.length
    ? `Next: ${next.map(span).join(", ")}`
    : "No other booking in the next 4 hours";
}

function renderActions(st) {
  const ops = ACTIONS[st.state] || [];
  for (const btn of document.querySelectorAll(".action")) {
    const op = btn.dataset.op;
    btn.hidden = !ops.includes(op);
    btn.disabled = (op === "book" || op === "extend") && choices(op).length === 0;
  }
}

// The minutes Book now and Extend offer: within the room's limit, and before the
// next booking as far as the panel knows (the gateway checks again).
function choices(op) {
  if (!state) return [];
  const now = Date.now();
  let from = now;
  if (op === "extend" && state.booking) from = Math.max(Date.parse(state.booking.end), now);
  const starts = (state.next || []).map((b) => Date.parse(b.start));
  if (state.booking && (state.state === "upcoming" || state.state === "awaiting_checkin")) {
    starts.push(Date.parse(state.booking.start));
  }
  const later = starts.filter((s) => s >= from);
  const room = later.length ? (Math.min(...later) - from) / 60_000 : Infinity;
  const max = Number.isInteger(info.max_minutes) ? info.max_minutes : 240;
  return CHOICES.filter((m) => m <= max && m <= room);
}

function creditsFor(minutes) {
  const perHour = info.credits_per_hour;
  if (!Number.isInteger(perHour)) return "";
  const n = Math.ceil((minutes * perHour) / 60);
  return n === 0 ? "no credits" : n === 1 ? "1 credit" : `${n} credits`;
}

function setLink(next, why) {
  link = next;
  const banner = $("banner");
  if (next === "offline") {
    const since = stateAt ? ` Last update ${fmt(stateAt)}.` : "";
    banner.textContent = `Offline: the gateway cannot be reached. Trying again…${since}`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  if (next === "unpaired") {
    $("unpaired-why").textContent = why || "";
    $("unpaired").hidden = false;
    closeSheet();
  }
  render();
}

// --- the sheet: minutes, PIN or badge, result -------------------------------------

function showStep(name, title) {
  for (const step of document.querySelectorAll(".step")) step.hidden = step.id !== `step-${name}`;
  if (title !== undefined) $("sheet-title").textContent = title;
  $("sheet-close").textContent = name === "result" ? "OK" : "Cancel";
  $("sheet").hidden = false;
}

function identityTitle() {
  if (flow.op === "book") return `Book ${flow.minutes} min`;
  if (flow.op === "extend") return `Extend by ${flow.minutes} min`;
  return TITLES[flow.op];
}

function openFlow(op) {
  if (!state || link !== "online") return;
  flow = { op, minutes: null, rid: null, badge: false };
  setPin("");
  $("use-badge").hidden = info.badge === false; // a room without a reader of its own
  if (op === "book" || op === "extend") {
    const box = $("minutes");
    box.replaceChildren();
    for (const m of choices(op)) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.minutes = String(m);
      b.append(`${m} min`);
      const cost = creditsFor(m);
      if (cost) {
        const small = document.createElement("small");
        small.textContent = cost;
        b.append(small);
      }
      box.append(b);
    }
    $("minutes-hint").textContent =
      Number.isInteger(info.credits_per_hour) && info.credits_per_hour > 0
        ? "Paid in credits: yours first, then your company's."
        : "";
    showStep("minutes", op === "book" ? "Book the room now for" : "Extend the booking by");
  } else {
    showStep("identity", TITLES[op]);
  }
}

function setPin(digits) {
  pin = digits;
  $("pin-dots").textContent = "●".repeat(pin.length);
  $("pin-ok").disabled = pin.length === 0;
}

function send(identity) {
  if (!flow) return;
  if (link !== "online" || !ws || ws.readyState !== WebSocket.OPEN) {
    showResult(false, ERRORS.offline, "The gateway cannot be reached. Try again in a moment.");
    return;
  }
  const rid = ++lastId;
  const msg = { type: "request", id: rid, op: flow.op, ...identity };
  if (flow.minutes) msg.minutes = flow.minutes;
  pending.set(rid, { op: flow.op, minutes: flow.minutes });
  flow.rid = rid;
  flow.badge = Boolean(identity.badge);
  ws.send(JSON.stringify(msg));
  setPin("");
  if (flow.badge) {
    $("badge-count").textContent = "";
    showStep("badge");
  } else {
    $("wait-text").textContent = WAITING[flow.op];
    showStep("wait");
  }
}

function onBadge(msg) {
  if (!flow || !flow.badge || !pending.has(flow.rid)) return;
  if (msg.id !== undefined && msg.id !== flow.rid) return;
  clearInterval(countTimer);
  if (msg.waiting) {
    const until = Date.now() + 1000 * (Number(msg.seconds) || 30);
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      $("badge-count").textContent = String(left);
      if (left === 0) clearInterval(countTimer);
    };
    tick();
    countTimer = setInterval(tick, 250);
    showStep("badge");
  } else {
    $("wait-text").textContent = WAITING[flow.op];
    showStep("wait");
  }
}

const capital = (s) => (s ? s[0].toUpperCase() + s.slice(1) : "");

function paid(data) {
  const n = data.credits;
  if (!Number.isInteger(n)) return "";
  if (n === 0) return "No credits charged.";
  const whose = data.paid_by === "company" ? " to your company" : data.paid_by === "member" ? " to you" : "";
  return `${n} credit${n === 1 ? "" : "s"} charged${whose}.`;
}

function success(req, data) {
  const end = data.end ? fmt(Date.parse(data.end)) : "";
  switch (req.op) {
    case "check_in":
      return data.already
        ? ["Already checked in", "You are checked in to this booking."]
        : ["Checked in", state && state.booking ? `Welcome. The room is yours until ${fmt(Date.parse(state.booking.end))}.` : "Welcome."];
    case "book":
      return ["Booked", `The room is yours until ${end}. ${paid(data)}`];
    case "extend":
      return ["Extended", `The booking now ends at ${end}. ${paid(data)}`];
    default:
      return ["Meeting ended", "The room is free again. Thank you."];
  }
}

function failure(msg) {
  const title = ERRORS[msg.error] || "Refused";
  let detail = capital(msg.message || msg.error || "");
  if (msg.error === "not_authorised" && /^not recognised/.test(msg.message || "")) {
    const why = /\(([a-z_]+)\)/.exec(msg.message);
    detail = `That PIN or badge is not recognised, or may not be used now${why ? ` (${why[1].replace(/_/g, " ")})` : ""}.`;
  }
  return [title, detail];
}

function onResult(msg) {
  const req = pending.get(msg.id);
  if (!req) return; // cancelled here, or from before a reconnect
  pending.delete(msg.id);
  clearInterval(countTimer);
  if (!flow || flow.rid !== msg.id) flow = { op: req.op, minutes: req.minutes, rid: msg.id, badge: false };
  const [title, detail] = msg.ok ? success(req, msg.data || {}) : failure(msg);
  showResult(Boolean(msg.ok), title, detail);
}

function showResult(ok, title, detail) {
  $("result-title").textContent = title;
  $("result-detail").textContent = detail;
  const step = $("step-result");
  step.classList.toggle("result-ok", ok);
  step.classList.toggle("result-error", !ok);
  step.dataset.ok = String(ok);
  showStep("result", "");
  clearTimeout(resultTimer);
  resultTimer = setTimeout(closeSheet, RESULT_MS);
}

function closeSheet() {
  if (flow && flow.badge && pending.has(flow.rid)) {
    // Let go of the reader: the next badge there is not this request's any more.
    pending.delete(flow.rid);
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "cancel", id: flow.rid }));
  }
  flow = null;
  setPin("");
  clearTimeout(resultTimer);
  clearInterval(countTimer);
  $("sheet").hidden = true;
}

function touched() {
  clearTimeout(idleTimer);
  idleTimer = setTimeout(closeSheet, IDLE_MS);
}

// --- the link ------------------------------------------------------------------------

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (link === "unpaired" || ws) return;
  let sock;
  try {
    sock = new WebSocket(wsUrl);
  } catch {
    scheduleRetry();
    return;
  }
  ws = sock;
  let opened = false;
  sock.onopen = () => {
    opened = true;
    attempt = 0;
    startPings();
  };
  sock.onmessage = (ev) => {
    if (sock === ws) received(ev.data);
  };
  sock.onclose = (ev) => {
    if (sock !== ws) return;
    ws = null;
    dropped(ev.code, opened);
  };
}

function received(text) {
  unanswered = 0; // anything at all shows the link is alive
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return;
  }
  if (!msg || typeof msg !== "object") return;
  switch (msg.type) {
    case "state": {
      const zone = info.tz;
      state = msg.state;
      if (msg.panel) info = msg.panel;
      stateAt = Date.now();
      if (info.tz !== zone) tick(true); // the clock in the site's zone at once
      try {
        localStorage.setItem(storeKey, JSON.stringify({ state, info, at: stateAt }));
      } catch {
        // private mode or full: the panel just starts empty when offline
      }
      if (link !== "online") setLink("online");
      else render();
      break;
    }
    case "result":
      onResult(msg);
      break;
    case "badge":
      onBadge(msg);
      break;
    case "revoked":
      revoked = true;
      break;
    case "error":
      console.warn("the gateway refused a message:", msg.message);
      break;
    default:
      break; // pong, or something newer than this page
  }
}

function startPings() {
  clearInterval(pingTimer);
  unanswered = 0;
  pingTimer = setInterval(() => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (unanswered >= MISSED_PONGS) {
      abandon();
      return;
    }
    unanswered += 1;
    ws.send('{"type":"ping"}');
  }, PING_MS);
}

// No pong: the socket may hang for minutes before the browser calls it closed, so
// the page lets go of it now and dials again.
function abandon() {
  const sock = ws;
  ws = null;
  if (sock) {
    sock.onopen = sock.onmessage = sock.onclose = null;
    try {
      sock.close(4000, "no pong");
    } catch {
      // closing a dead socket may throw; it is gone either way
    }
  }
  dropped(1006, true);
}

function dropped(code, wasOpen) {
  clearInterval(pingTimer);
  for (const rid of pending.keys()) {
    if (flow && flow.rid === rid) {
      showResult(false, ERRORS.offline, "The connection dropped. Check the room's status, then try again.");
    }
  }
  pending.clear();
  if (code === 4001 || revoked) {
    setLink("unpaired", "Its pairing was revoked on the gateway.");
    return;
  }
  if (wasOpen) {
    setLink("offline");
    scheduleRetry();
  } else {
    checkPairing();
  }
}

// The browser does not say why a WebSocket was refused: ask over HTTP whether the
// gateway knows this screen (401/403) or is just not there.
async function checkPairing() {
  try {
    const r = await fetch(`/api/panel/${roomPath}`, { cache: "no-store", credentials: "same-origin" });
    if (r.status === 401 || r.status === 403 || r.status === 404) {
      const text = (await r.text()).replace(/^\d+: /, "");
      setLink("unpaired", capital(text || r.statusText) + ".");
      return;
    }
  } catch {
    // no answer: offline
  }
  setLink("offline");
  scheduleRetry();
}

function scheduleRetry() {
  if (retryTimer !== null || link === "unpaired") return;
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  attempt += 1;
  retryTimer = setTimeout(connect, ceiling / 2 + (Math.random() * ceiling) / 2);
}

function tick(force = false) {
  const now = Date.now();
  const clock = fmt(now);
  if (force || $("clock").textContent !== clock) {
    $("clock").textContent = clock;
    root.classList.toggle("night", isNight(now));
    if (state) renderTimeline(state, now);
  }
}

// --- start ----------------------------------------------------------------------------

function start() {
  if (theme === "day") root.classList.add("day");
  const manifest = document.createElement("link");
  manifest.rel = "manifest";
  manifest.href = `/panel/${roomPath}/manifest.webmanifest`;
  document.head.append(manifest);

  try {
    const saved = JSON.parse(localStorage.getItem(storeKey) || "null");
    if (saved && saved.state && saved.state.room === room) {
      ({ state, info } = saved);
      stateAt = saved.at;
    }
  } catch {
    // nothing kept
  }

  for (const btn of document.querySelectorAll(".action")) {
    btn.addEventListener("click", () => openFlow(btn.dataset.op));
  }
  $("minutes").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-minutes]");
    if (!b || !flow) return;
    flow.minutes = Number(b.dataset.minutes);
    showStep("identity", identityTitle());
  });
  $("pad").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-key]");
    if (!b || !flow) return;
    const key = b.dataset.key;
    if (key === "back") setPin(pin.slice(0, -1));
    else if (key === "ok") {
      if (pin) send({ pin });
    } else if (pin.length < 12) setPin(pin + key);
  });
  document.addEventListener("keydown", (ev) => {
    if ($("step-identity").hidden || $("sheet").hidden) return;
    if (/^[0-9]$/.test(ev.key) && pin.length < 12) setPin(pin + ev.key);
    else if (ev.key === "Backspace") setPin(pin.slice(0, -1));
    else if (ev.key === "Enter" && pin) send({ pin });
    else if (ev.key === "Escape") closeSheet();
  });
  $("use-badge").addEventListener("click", () => send({ badge: true }));
  $("sheet-close").addEventListener("click", closeSheet);
  document.addEventListener("pointerdown", touched, { capture: true, passive: true });
  document.addEventListener("keydown", touched, { capture: true });
  window.addEventListener("online", () => {
    if (link === "offline") {
      attempt = 0;
      connect();
    }
  });

  tick(true);
  setInterval(tick, 1000);
  render();
  connect();
  if ("serviceWorker" in navigator) {
    // Needs a certificate the tablet trusts; without it the page works, online only.
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
  }
}

start();
