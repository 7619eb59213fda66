"""Web panels at site scale: 50 room panels and 3 consoles in a real browser.

The gateway runs as a process with 50 rooms on one Mosquitto and its web
server on; Debian's Chromium (through Playwright) opens 50 paired panel pages,
each in a browser context of its own (its own pairing cookie), and 3 console
pages signed in on the doors page. Bookings change through the rooms' MQTT
panel topics (a `book` then an `end` at each room, two rounds, rooms in random
order) and doors through `door.unlock` on the admin socket.

- **update**: from just before a booking request is published (wall clock,
  ms) to the panel page's `<body data-phase>` changing to the new phase, as a
  MutationObserver in the page stamps it (`Date.now()`: the same clock, one
  machine). Console pages stamp each live message as it arrives.
- **idle_cpu_pct**: the daemon's utime + stime over 30 s with every page
  connected and nothing happening, as a percentage of one core.
- **page_kb**: every response the panel page loads (html, js, css, icon,
  manifest, service worker), by body size.
- **first_render_ms**: a fresh page with Chromium's CPU throttled 4x
  (`Emulation.setCPUThrottlingRate`), from navigation start to the room's
  phase shown (the MutationObserver's `performance.now()`), median of 5;
  `fcp_ms` is Chromium's first contentful paint in the same runs.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import shutil
import socket
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import percentile, result, start_daemon
from rooms import ROOMS, Room, TimedPanel, _cpu, _import, _site, _stop

from edge.ops.edgectl import Client
from edge.secrets import write_secret
from hwsim.broker import Mosquitto
from hwsim.devices import SimDevices
from hwsim.sitegen import EXAMPLE_PIN_KEY, reference_monday

CONSOLES = 3
ROUNDS = 2
IDLE_S = 30.0
TIMEOUT_S = 10.0
THROTTLE = 4
RENDER_RUNS = 5
SITE = "mitte"

# Runs in every page before its own scripts (CDP, so the page's CSP does not apply).
STAMPS = """
window.__phases = [];
window.__messages = [];
window.__firstPhase = null;
const NativeSocket = window.WebSocket;
window.WebSocket = class extends NativeSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => {
      window.__messages.push([Date.now(), e.data.slice(0, 80)]);
    });
  }
};
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    const phase = document.body.dataset.phase;
    if (phase === undefined) return;
    if (window.__firstPhase === null) window.__firstPhase = performance.now();
    const last = window.__phases[window.__phases.length - 1];
    if (!last || last[1] !== phase) window.__phases.push([Date.now(), phase]);
  }).observe(document.body, { attributes: true, attributeFilter: ["data-phase"] });
});
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(broker: Mosquitto, rooms: list[Room], web_port: int) -> str:
    text = (
        f'[site]\nid = "{SITE}"\n[log]\nlevel = "warning"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {web_port}\nlogin_per_minute = 600\n'
    )
    for r in rooms:
        text += f"[rooms.{r.id}]\n"
    return text


def _wait_phase(page: Any, after_ms: float, phase: str) -> float:
    """When (wall clock ms) the page first showed `phase` after `after_ms`."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for at, shown in page.evaluate("window.__phases"):
            if at >= after_ms and shown == phase:
                return float(at)
        time.sleep(0.005)
    raise RuntimeError(f"{page.url}: the page did not show {phase} in {TIMEOUT_S:g} s")


def _wait_message(page: Any, after_ms: float, needle: str) -> float:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for at, text in page.evaluate("window.__messages"):
            if at >= after_ms and needle in text:
                return float(at)
        time.sleep(0.005)
    raise RuntimeError(f"{page.url}: no live message with {needle!r} in {TIMEOUT_S:g} s")


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("chromium is missing: run ./scripts/bootstrap")
    return path


def bench_panels() -> None:
    from playwright.sync_api import sync_playwright

    rng = random.Random(14)
    with (
        tempfile.TemporaryDirectory(prefix="bench-panels-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        broker = Mosquitto(root)
        broker.config.write_text(broker.config.read_text() + "set_tcp_nodelay true\n")
        broker.start()
        stack.callback(broker.stop)
        sims = SimDevices(broker.host, broker.port)
        rooms = [
            Room(
                f"r{i:02d}",
                f"m-bench-{i}",
                f"raw:BE{i:06X}",
                sims.add(TimedPanel(broker.host, broker.port, SITE, f"r{i:02d}")),
            )
            for i in range(1, ROOMS + 1)
        ]
        sims.start()
        stack.callback(sims.stop)

        state = root / "gw"
        state.mkdir()
        write_secret(state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
        web_port = _free_port()
        proc, _ = start_daemon(state, _config(broker, rooms, web_port))
        stack.callback(_stop, proc)
        client = Client(state / "admin.sock", timeout=60)
        stack.callback(client.close)
        doc = _site(reference_monday(datetime.now().date()), rooms)
        _import(client, doc, root / "site.json")
        password = secrets.token_urlsafe(16)
        client.call("user.add", {"name": "bench", "role": "operator", "password": password})
        base = f"https://127.0.0.1:{web_port}"

        pw = sync_playwright().start()
        stack.callback(pw.stop)
        browser = pw.chromium.launch(executable_path=_chromium(), headless=True)
        stack.callback(browser.close)

        def context() -> Any:
            ctx = browser.new_context(
                ignore_https_errors=True,
                viewport={"width": 1280, "height": 800},
                bypass_csp=True,  # Playwright's waits evaluate strings; the pages do not
            )
            ctx.add_init_script(STAMPS)
            return ctx

        # Page weight: everything one panel page loads, on its first visit.
        panels: dict[str, Any] = {}
        weight = 0
        for i, r in enumerate(rooms):
            ctx = context()
            code = client.call("panel.pair", {"room": r.id})["code"]
            answer = ctx.request.post(f"{base}/api/pair", data={"code": code})
            if not answer.ok:
                raise RuntimeError(f"{r.id}: pairing refused: {answer.status} {answer.status_text}")
            page = ctx.new_page()
            sizes: list[int] = []
            if i == 0:
                page.on("response", lambda resp, s=sizes: s.append(len(resp.body())))
            page.goto(f"{base}/panel/{r.id}")
            page.wait_for_selector("body[data-phase]", timeout=TIMEOUT_S * 1000)
            if i == 0:
                page.wait_for_load_state("networkidle")
                weight = sum(sizes)
            panels[r.id] = page
        consoles = []
        for _ in range(CONSOLES):
            ctx = context()
            answer = ctx.request.post(
                f"{base}/api/login", data={"name": "bench", "password": password}
            )
            if not answer.ok:
                raise RuntimeError(f"console login refused: {answer.status} {answer.status_text}")
            page = ctx.new_page()
            page.goto(f"{base}/")
            page.wait_for_function("window.__messages !== undefined", timeout=TIMEOUT_S * 1000)
            consoles.append(page)
        time.sleep(2)  # the consoles' live sockets open

        updates: list[float] = []
        for _ in range(ROUNDS):
            for r in rng.sample(rooms, len(rooms)):
                time.sleep(rng.uniform(0.01, 0.05))
                for op, phase in (("book", "in_use"), ("end", "free")):
                    t0 = time.time() * 1000
                    answer = r.panel.request(op, card=r.card, minutes=30, timeout=TIMEOUT_S)
                    if answer["status"] != "ok":
                        raise RuntimeError(f"{r.id}: {op} refused: {answer}")
                    updates.append(_wait_phase(panels[r.id], t0, phase) - t0)
        door_updates: list[float] = []
        for _ in range(20):
            time.sleep(rng.uniform(1.2, 1.5))  # the last unlock has ended
            t0 = time.time() * 1000
            client.call("door.unlock", {"door": "front", "seconds": 1})
            for page in consoles:
                door_updates.append(_wait_message(page, t0, '"unlocked"') - t0)

        time.sleep(3)
        cpu0, _ = _cpu(proc.pid)
        t_idle = time.monotonic()
        time.sleep(IDLE_S)
        cpu1, _ = _cpu(proc.pid)
        idle_s = time.monotonic() - t_idle
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")

        # First render on a tablet-class CPU: Chromium throttled 4x, a fresh context
        # each time (no cache, no service worker), already paired.
        renders: list[float] = []
        paints: list[float] = []
        for k in range(RENDER_RUNS):
            ctx = context()
            code = client.call("panel.pair", {"room": rooms[k].id})["code"]
            ctx.request.post(f"{base}/api/pair", data={"code": code})
            page = ctx.new_page()
            cdp = ctx.new_cdp_session(page)
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": THROTTLE})
            page.goto(f"{base}/panel/{rooms[k].id}")
            page.wait_for_function("window.__firstPhase !== null", timeout=TIMEOUT_S * 1000)
            renders.append(float(page.evaluate("window.__firstPhase")))
            fcp = page.evaluate(
                "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
            )
            if fcp is not None:
                paints.append(float(fcp))
            ctx.close()

    result(
        bench="panels",
        panels=len(panels),
        consoles=len(consoles),
        update_p50_ms=f"{statistics.median(updates):.1f}",
        update_p99_ms=f"{percentile(updates, 0.99):.1f}",
        idle_cpu_pct=f"{100 * (cpu1 - cpu0) / idle_s:.2f}",
        page_kb=f"{weight / 1024:.1f}",
        first_render_ms=f"{statistics.median(renders):.0f}",
        samples=len(updates),
        update_max_ms=f"{max(updates):.1f}",
        console_door_p50_ms=f"{statistics.median(door_updates):.1f}",
        console_door_p99_ms=f"{percentile(door_updates, 0.99):.1f}",
        fcp_ms=f"{statistics.median(paints):.0f}" if paints else "n/a",
        throttle=THROTTLE,
        idle_s=f"{idle_s:.0f}",
    )
