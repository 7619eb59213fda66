"""The README's run command: the gateway on the simulated site.

Starts the simulated hardware (OSDP readers with the secure channel on a
simulated RS-485 cable, a Wiegand reader, a Modbus relay/IO board with the
strikes, door contacts and exit button), then `edge-gateway run` as a real
daemon configured for it, imports the generated example site through
`edgectl import`, and plays a scripted scenario: badges and PINs at the
readers, a door forced, a door held open, the exit button, a lockdown. After
each step it prints what the hardware was told (strike relays, reader LEDs)
and the doors as `edgectl status` shows them. Dry-run decisions at fixed local
times of this week's Monday come first (the same output whatever the time).

Then the Ada meeting room goes through a booking on the real clock, in about a
minute: its devices (a Tasmota TV plug, a Zigbee2MQTT ceiling light, a room
panel) on the gateway's embedded MQTT broker and an HVAC unit on Modbus TCP.
It prints the panel's state and the devices' as they change: HVAC to comfort
before the start, check-in with a badge, devices on, the ending warning, the
grace period, everything off; a TV switched on in the free room and off again;
book-now at the panel paid in credits, and refused without; the guest Wi-Fi
passphrase; the booking and usage events.

Last, the platform act (`hwsim.demo_bridge`): a simulated Nexudus, the
platform bridge reading it and a second gateway fed by the bridge: a plan
cancelled as of today ends at midnight, an unpaid invoice past its grace
refuses the badge within a second of the webhook, and a day-pass entry shows
up in Nexudus as a door check-in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge.secrets import write_secret
from hwsim.demo_bridge import run_platform_act
from hwsim.devices import SimPanel, SimTasmotaPlug, SimZigbee2Mqtt
from hwsim.hvac import COMFORT, STANDBY, SimHvac
from hwsim.site import SimDoor, SimSite, SiteThread
from hwsim.sitegen import EXAMPLE_PIN_KEY, SITE_ID, TIMEZONE, example_site, reference_monday

DOORS = (
    SimDoor("front", "osdp", "osdp", held_open_seconds=6, prealarm_seconds=3),
    SimDoor("server-room", "wiegand", exit_button=False),
    SimDoor("office-12", "osdp", exit_button=False),
)

CONFIG = f"""\
[site]
id = "{SITE_ID}"

[gateway]
id = "demo-gw"

[log]
level = "info"
timestamps = false
"""

# The Ada room's part runs on the real clock, so its timings are fractions of a
# minute (0.1 is 6 s): a whole booking, from the HVAC's pre-conditioning to the
# end of the grace period, fits in under a minute.
PRECONDITIONING_S = 6
WARNING_S = 12
GRACE_S = 6
BOOKING_S = 30
BOOKING_IN_S = 8  # from the import of the booking to its start
HVAC_UNIT = 10
# The demo's console account: the demo listens on loopback only.
DEMO_USER = "demo"
DEMO_PASSWORD = "coworking-demo"  # noqa: S105 - printed for the person running the demo
ALAN_CARD = "raw:0A0B0C0D"  # m-1008: the booking's member; no credits, no company
FRANCES_CARD = "H10301:12:4003"  # m-1009: ACME employee; ACME has credits
MODES = {0: "off", COMFORT: "comfort", STANDBY: "standby"}


def rooms_config(mqtt_port: int, hvac_port: int) -> str:
    """The room part of the config: broker, Ada room, its devices, guest Wi-Fi."""
    return f"""\
[mqtt]
# A broker inside the gateway (amqtt): the demo needs no Mosquitto.
embedded = true
host = "127.0.0.1"
port = {mqtt_port}

[buses.hvac]
type = "modbus_tcp"
host = "127.0.0.1"
port = {hvac_port}

[rooms.ada]
preconditioning_min = {PRECONDITIONING_S / 60:g}
ending_warning_min = {WARNING_S / 60:g}
grace_min = {GRACE_S / 60:g}

[devices.ada-tv]
type = "tasmota"
room = "ada"
topic = "ada_tv"
role = "tv"

[devices.ada-light]
type = "zigbee2mqtt"
room = "ada"
name = "ada/ceiling"
role = "light"

[devices.ada-hvac]
type = "modbus_hvac"
room = "ada"
bus = "hvac"
unit = {HVAC_UNIT}
poll_s = 0

[wifi]
ssid = "Mitte Guest"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def ctl(
        self, *args: str, show: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "edge.ops.edgectl", "--state-dir", str(self.state_dir), *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=120, check=False
        )
        if show:
            print(f"$ edgectl {shlex.join(args)}")
            out = (result.stdout + result.stderr).rstrip()
            if out:
                print("  " + out.replace("\n", "\n  "))
        return result


def _web(demo: Demo) -> None:
    """The console account and the pairing codes the opening lines promise."""
    demo.ctl(
        "user",
        "add",
        DEMO_USER,
        "--role",
        "admin",
        "--password-stdin",
        show=False,
        input=DEMO_PASSWORD + "\n",
    )
    print("\n== Web: the console account, and a pairing code per tablet")
    demo.ctl("user", "list")
    demo.ctl("panel", "pair", "ada")
    demo.ctl("panel", "pair", "reception")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep the gateway's state here (default: a temporary directory)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the daemon running after the script, until Ctrl-C",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edge-demo-") as tmp:
        state_dir = args.state_dir or Path(tmp) / "state"
        state_dir.mkdir(parents=True, exist_ok=True)
        site = SimSite(Path(tmp), DOORS)
        with SiteThread(site) as hw:
            return run(state_dir, Path(tmp), args.keep_running, hw)


def run(state_dir: Path, work: Path, keep_running: bool, hw: SiteThread) -> int:
    hvac = SimHvac(unit=HVAC_UNIT, mode=STANDBY, setpoint_c=17.0)
    hw.call(hvac.start())
    try:
        return _run(state_dir, work, keep_running, hw, hvac)
    finally:
        hw.call(hvac.stop())


def _run(state_dir: Path, work: Path, keep_running: bool, hw: SiteThread, hvac: SimHvac) -> int:
    write_secret(state_dir, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    hw.site.provision(state_dir)
    mqtt_port = free_port()
    web_port = free_port()
    assert hvac.tcp_port is not None
    config = work / "gateway.toml"
    web = f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {web_port}\n'
    config.write_text(
        CONFIG
        + "\n"
        + rooms_config(mqtt_port, hvac.tcp_port)
        + "\n"
        + web
        + "\n"
        + hw.site.config()
    )
    day = reference_monday(date.today())
    doc, cast = example_site(day)
    # With rooms on, the gateway would release Alan's booking as a no-show when
    # the demo runs between 10:15 on the reference Monday and a day later, and
    # the event log below would change with the time the demo is run.
    # Invoiced bookings are never released.
    for b in doc["bookings"]:
        b["invoiced"] = True
    snapshot = work / "site.json"
    snapshot.write_text(json.dumps(doc, indent=1))
    log_path = work / "gateway.log"

    web_url = f"https://127.0.0.1:{web_port}"
    print("== Web pages (open them while the demo runs; --keep-running keeps them up)")
    print(f"   site console  {web_url}/   sign in as {DEMO_USER!r}, password {DEMO_PASSWORD!r}")
    print(f"   room panel    {web_url}/pair, then the pairing code printed below: /panel/ada")
    print(f"   reception     {web_url}/pair, then its own code: /reception")
    print(f"   metrics       {web_url}/metrics")
    print("   (a self-signed certificate: its SHA-256 fingerprint is printed below)\n")
    print(f"== Simulated site {SITE_ID!r}: {len(cast)} holders, reference day {day} (Monday)")
    for c in cast:
        how = " + ".join(x for x in (c.card, c.pin and f"PIN {c.pin}") if x)
        print(f"   {c.id:<7} {how:<28} {c.story}")
    print("\n== Simulated hardware")
    for r in hw.site.readers.values():
        where = f"OSDP address {r.address}" if r.kind == "osdp" else f"Wiegand edges to {r.socket}"
        print(f"   reader {r.name:<15} {r.door} ({r.side} side), {where}")
    print(
        f"   OSDP bus: libosdp peripherals on {hw.site.osdp_link.a} at {hw.site.osdp_baudrate} baud"
    )
    assert hw.site.board is not None
    print(f"   relay/IO board: Modbus TCP on 127.0.0.1:{hw.site.board.tcp_port}")
    print(
        f"   Ada room: Tasmota TV plug ada_tv, Zigbee2MQTT light ada/ceiling and a panel on the\n"
        f"     gateway's embedded MQTT broker 127.0.0.1:{mqtt_port}; HVAC unit {HVAC_UNIT} on "
        f"Modbus TCP 127.0.0.1:{hvac.tcp_port}"
    )
    print(f"\n== Starting the daemon (state in {state_dir}, log in {log_path})")
    room = AdaRoom("127.0.0.1", mqtt_port, hvac)
    problems: list[str] = []
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge.ops.cli",
                "run",
                "--config",
                str(config),
                "--state-dir",
                str(state_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            demo = Demo(state_dir)
            if not _wait_ready(demo, daemon):
                print(log_path.read_text(), file=sys.stderr)
                return 1
            room.start()  # the devices find the broker once the daemon has started it
            _script(demo, snapshot, day)
            _web(demo)
            _doors(demo, hw)
            _admin(demo, hw)
            _logs(demo, snapshot)
            problems = _rooms(demo, room, doc, work)
            print("\n== The gateway's own log (one line per event):")
            for line in log_path.read_text().splitlines()[-12:]:
                print(f"   {line}")
            if keep_running:
                print(
                    f"\nThe daemon keeps running; try: .venv/bin/edgectl --state-dir "
                    f"{state_dir} status   (Ctrl-C stops it)"
                )
                with contextlib.suppress(KeyboardInterrupt):
                    daemon.wait()
        finally:
            room.stop()  # before the daemon, whose broker they are connected to
            if daemon.poll() is None:
                daemon.terminate()
            code = daemon.wait(30)
    print(f"\n== Daemon stopped on SIGTERM with exit status {code}")
    problems += run_platform_act(work)
    for what in problems:
        print(f"!! did not happen in time: {what}", file=sys.stderr)
    return 0 if code == 0 and not problems else 1


def _wait_ready(demo: Demo, daemon: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            return False
        r = demo.ctl("status", "--json", show=False)
        if r.returncode == 0 and json.loads(r.stdout)["ready"]:
            return True
        time.sleep(0.1)
    return False


def _at(day: date, hhmm: str) -> str:
    """An instant at a local time of the site's day, with the offset it has then."""
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, dtime(h, m), tzinfo=ZoneInfo(TIMEZONE)).isoformat()


def _script(demo: Demo, snapshot: Path, day: date) -> None:
    ten = _at(day, "10:00")
    print("\n== Import the cloud's snapshot, then look at the gateway")
    demo.ctl("import", str(snapshot))
    demo.ctl("status")

    print(f"\n== Decisions at {ten} (dry runs: nothing unlocked or consumed)")
    for door, card, pin in (
        ("front", "H10301:12:3456", None),  # Ada: past due, inside her grace
        ("office-12", "H10301:12:3456", None),  # Ada: her company's office
        ("front", "H10301:12:4000", None),  # Linus: billing suspended
        ("front", "H10301:12:4001", None),  # Ken: contract ended yesterday
        ("front", "H10301:12:4002", None),  # Dennis: contract starts next week
        ("front", "C1000:100:70001", None),  # Barbara: grace period over
        ("front", "H10304:500:12345", None),  # Margaret: today's day pass
        ("front", "raw:0a0b0c0d", None),  # Alan: a pass from his balance
        ("room-ada", "raw:0A0B0C0D", None),  # Alan: his booking 10:00-11:00
        ("front", "H10301:12:4003", None),  # Frances: company access
        ("front", "H10301:12:4004", None),  # Edsger: card disabled
        ("office-12", "H10301:12:4006", None),  # Bjarne: company suspended
        ("server-room", "H10301:12:4005", None),  # Radia: card alone -> PIN needed
        ("server-room", "H10301:12:4005", "9753"),  # Radia: card then PIN
        ("server-room", "H10301:12:4005", "0000"),  # Radia: wrong PIN
        ("front", None, "1111"),  # Grace Hopper, guest, by PIN
        ("front", "H10301:99:99", None),  # a card nobody holds
    ):
        args = ["decide", "--door", door, "--at", ten]
        if card:
            args += ["--card", card]
        if pin:
            args += ["--pin", pin]
        demo.ctl(*args)
    print(
        f"\n== At 20:00 day passes no longer open the front door; at {day}T12:30 the "
        "front door's lunch unlock schedule waits for the first person in"
    )
    demo.ctl("decide", "--door", "front", "--card", "raw:0a0b0c0d", "--at", _at(day, "20:00"))
    demo.ctl("decide", "--door", "front", "--card", "H10301:99:99", "--at", _at(day, "12:30"))

    print("\n== Why: a member's entitlements at 10:00")
    demo.ctl("member", "show", "m-1001", "--at", ten)


def _admin(demo: Demo, hw: SiteThread) -> None:
    site = hw.site
    print("\n== Lockdown: every strike stays locked, whoever badges; then a remote unlock")
    demo.ctl("lockdown", "on")
    hw.call(site.badge("front-in", "H10306:1000:50001"))
    time.sleep(0.5)
    _hardware(hw, "front")
    demo.ctl("door", "unlock", "front", "--seconds", "3")
    demo.ctl("lockdown", "off")
    demo.ctl("door", "unlock", "front", "--seconds", "3")
    time.sleep(0.3)
    _hardware(hw, "front")


def _logs(demo: Demo, snapshot: Path) -> None:
    print("\n== A document that breaks the contract is refused and changes nothing")
    broken = json.loads(snapshot.read_text())
    broken["members"][3]["contract"]["end"] = "31.12.2026"
    bad = snapshot.with_name("broken.json")
    bad.write_text(json.dumps(broken))
    demo.ctl("import", str(bad))
    demo.ctl("decide", "--door", "front", "--card", "H10306:1000:50001")

    print("\n== The durable event log (what the cloud will receive)")
    demo.ctl("events", "--limit", "8")
    print("\n== The audit log of admin actions, with the caller's uid")
    demo.ctl("audit", "--limit", "5")


def _hardware(hw: SiteThread, *doors: str) -> None:
    """What the simulated hardware was told: strike relays and reader LEDs."""
    site = hw.site
    for door in doors:
        strike = "UNLOCKED (relay energised)" if site.unlocked(door) else "locked"
        leds = ", ".join(
            f"{r.name} LED {site.led(r.name) or '-'}"
            for r in site.readers.values()
            if r.door == door and r.kind == "osdp"
        )
        print(f"   [site] {door}: strike {strike}" + (f"; {leds}" if leds else ""))


def _wait(hw: SiteThread, door: str, unlocked: bool = True) -> None:
    with contextlib.suppress(TimeoutError):
        hw.call(hw.site.wait_unlocked(door, unlocked), timeout=5)


def _doors(demo: Demo, hw: SiteThread) -> None:
    site = hw.site
    print("\n== The doors, readers and buses as the gateway sees them")
    demo.ctl("status")

    print("\n== Grace (resident) holds her card to the front door's OSDP reader (secure channel)")
    hw.call(site.badge("front-in", "H10306:1000:50001"))
    _wait(hw, "front")
    time.sleep(0.2)
    _hardware(hw, "front")
    print("   ...she opens the door, walks through, it closes behind her and relocks at once")
    hw.do(site.open_door, "front")
    time.sleep(0.3)
    hw.do(site.close_door, "front")
    time.sleep(0.3)
    _hardware(hw, "front")

    print("\n== Linus, whose billing is suspended, tries the same reader")
    hw.call(site.badge("front-in", "H10301:12:4000"))
    time.sleep(0.5)
    _hardware(hw, "front")

    print("\n== Radia, on call, at the server room's Wiegand reader: card, then PIN 9753 and #")
    hw.call(site.badge("server-room-in", "H10301:12:4005"))
    time.sleep(0.3)
    _hardware(hw, "server-room")
    hw.call(site.pin("server-room-in", "9753"))
    _wait(hw, "server-room")
    _hardware(hw, "server-room")

    print("\n== Someone leaves by the front door's exit button; nobody is alarmed")
    hw.call(site.press_exit("front"))
    _wait(hw, "front")
    _hardware(hw, "front")
    hw.do(site.open_door, "front")
    time.sleep(0.3)
    hw.do(site.close_door, "front")

    print("\n== Office 12's door is pried open: no grant, no exit request")
    hw.do(site.open_door, "office-12")
    time.sleep(0.5)
    demo.ctl("events", "--type", "door.forced", "--limit", "1")
    hw.do(site.close_door, "office-12")

    print("\n== Grace badges in again and props the front door open (held-open alarm at 6 s)")
    hw.call(site.badge("front-in", "H10306:1000:50001"))
    _wait(hw, "front")
    hw.do(site.open_door, "front")
    time.sleep(6.5)
    demo.ctl("status")
    hw.do(site.close_door, "front")
    time.sleep(0.3)

    print("\n== What happened at the doors, as the cloud will receive it")
    demo.ctl("events", "--type", "door.", "--limit", "6")
    demo.ctl("events", "--type", "access.", "--limit", "6")


# --- the Ada room ---------------------------------------------------------------------------


class AdaRoom:
    """The Ada room's simulated devices, and a timeline of what they and its panel showed.

    The TV plug, the light and the panel are MQTT clients of the gateway's
    embedded broker; the HVAC unit is a Modbus TCP server on the hardware's
    loop. A thread follows the panel's retained state; `flush` prints what
    changed since the last call, the panel's and the devices' in time order.
    """

    def __init__(self, host: str, port: int, hvac: SimHvac) -> None:
        self.tv = SimTasmotaPlug(host, port, "ada_tv")
        self.z2m = SimZigbee2Mqtt(host, port)
        self.panel = SimPanel(host, port, SITE_ID, "ada")
        self.hvac = hvac
        self.t0 = time.time()  # the booking's start, once there is one
        self.problems: list[str] = []
        self._panel_seen: list[tuple[int, str, str]] = []  # (monotonic ns, phase, text)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._printed = {"panel": 0, "TV": 0, "light": 0, "HVAC": 0}
        self._since_ns = time.monotonic_ns()
        self._hvac_last: tuple[int, float] | None = (hvac.mode, hvac.setpoint_c)

    def start(self) -> None:
        self.tv.start(timeout=30)
        self.z2m.start(timeout=30)
        self.light = self.z2m.add_light("ada/ceiling")

    def watch_panel(self) -> None:
        self.panel.start(timeout=30)
        self._since_ns = time.monotonic_ns()
        self._hvac_last = (self.hvac.mode, self.hvac.setpoint_c)
        self._watcher = threading.Thread(target=self._watch, name="demo-panel", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        for dev in (self.panel, self.z2m, self.tv):
            dev.stop()

    # --- what happened ------------------------------------------------------------------

    def _watch(self) -> None:
        shown: tuple[str, str] | None = None
        wifi: Any = None
        while not self._stop.is_set():
            try:
                state = self.panel.wait_state(
                    lambda s, seen=shown, w=wifi: (_panel(s), s.get("wifi")) != (seen, w),
                    timeout=0.2,
                )
            except TimeoutError:
                continue
            now = time.monotonic_ns()
            phase_text = _panel(state)
            with self._lock:
                if phase_text != shown:
                    self._panel_seen.append((now, *phase_text))
                if state.get("wifi") != wifi and state.get("wifi"):
                    w = state["wifi"]
                    self._panel_seen.append(
                        (now, "", f"shows the guest Wi-Fi: {w['ssid']!r}, {w['passphrase']}")
                    )
            shown, wifi = phase_text, state.get("wifi")

    def shown(self) -> bool:
        with self._lock:
            return bool(self._panel_seen)

    def saw(self, phase: str) -> bool:
        """Whether the panel showed `phase` since it started watching."""
        with self._lock:
            return any(p == phase for _, p, _ in self._panel_seen)

    def showing(self, phase: str) -> bool:
        with self._lock:
            return bool(self._panel_seen) and self._panel_seen[-1][1] == phase

    def flush(self) -> None:
        """Print the panel's and the devices' changes not printed yet, oldest first."""
        lines: list[tuple[int, str, str]] = []
        with self._lock:
            panel = self._panel_seen[self._printed["panel"] :]
            self._printed["panel"] += len(panel)
        lines += [(ns, "panel", text) for ns, _, text in panel]
        for who, dev in (("TV", self.tv), ("light", self.light)):
            changes = [(ns, on) for ns, on in dev.history if ns >= self._since_ns]
            new = changes[self._printed[who] :]
            self._printed[who] += len(new)
            lines += [(ns, who, "ON" if on else "off") for ns, on in new]
        writes = [w for w in self.hvac.history if w.ns >= self._since_ns]
        new_writes = writes[self._printed["HVAC"] :]
        self._printed["HVAC"] += len(new_writes)
        for w in new_writes:
            if (w.mode, w.setpoint_c) == self._hvac_last:
                continue  # written again as it was: nothing changes in the room
            self._hvac_last = (w.mode, w.setpoint_c)
            how = "written over Modbus" if w.by == "modbus" else "set at the wall unit"
            text = f"{MODES.get(w.mode, w.mode)}, {w.setpoint_c:g} °C ({how})"
            lines.append((w.ns, "HVAC", text))
        offset = time.time() - time.monotonic_ns() / 1e9
        for ns, who, text in sorted(lines, key=lambda x: x[0]):
            t = ns / 1e9 + offset - self.t0
            print(f"   T{t:+6.1f} s  {who:<6} {text}")

    def until(self, what: str, done: Callable[[], bool], timeout: float = 30) -> bool:
        """Wait for `done`, printing what happens meanwhile; note it if it never comes."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                self.flush()
                print(f"   !! {what}: not within {timeout:g} s")
                self.problems.append(what)
                return False
            time.sleep(0.05)
        self.flush()
        return True

    def devices(self, on: bool) -> bool:
        return self.tv.on == on and self.light.on == on


def _panel(s: dict[str, Any]) -> tuple[str, str]:
    """The room's phase, and what its panel shows of it in a line."""
    phase = str(s.get("state"))
    text = f"{phase} [{s.get('status')}]"
    b = s.get("booking")
    if b:
        kind = "booked at the panel" if b.get("adhoc") else "booking"
        text += f" {kind} {b['id']} {b['start'][11:19]}-{b['end'][11:19]}"
    if "minutes_left" in s:
        text += f", {s['minutes_left']} min left"
    if "release_in_min" in s:
        text += f", released in {s['release_in_min']} min without a check-in"
    if s.get("warning"):
        text += ", WARNING: ending soon"
    for n in s.get("next", []):
        text += f"; next: {n['id']} {n['start'][11:19]}-{n['end'][11:19]}"
    return phase, text


def _hhmmss(ts: float) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(TIMEZONE)).strftime("%H:%M:%S")


def _answer(who: str, card: str, answer: dict[str, Any]) -> None:
    """A panel's answer in a line: `{status, data, error, message}`."""
    if answer.get("status") != "ok":
        print(f"   {who}, card {card}: refused, {answer.get('error')}: {answer.get('message')}")
        return
    d = answer.get("data", {})
    if "start" in d:
        paid = f"{d['credits']} credit(s) paid by the {d['paid_by']}" if d.get("credits") else ""
        what = f"booked {d['booking']} {d['start'][11:19]}-{d['end'][11:19]}, {paid}"
    else:
        what = f"{d.get('booking')} ends at {d['end'][11:19]}" if "end" in d else json.dumps(d)
    print(f"   {who}, card {card}: ok, {what}")


def _rooms(demo: Demo, room: AdaRoom, doc: dict[str, Any], work: Path) -> list[str]:
    names = {m["id"]: m["name"].split()[0] for m in doc["members"]}
    alan, frances = f"{names['m-1008']} (m-1008)", f"{names['m-1009']} (m-1009, ACME)"
    print(
        "\n== Rooms: the Ada room follows its bookings, on the real clock (T: the booking's start)"
    )
    print(
        f"   [rooms.ada]: HVAC to comfort {PRECONDITIONING_S} s before the start, the panel's\n"
        f"   warning {WARNING_S} s before the end, devices on for {GRACE_S} s after it"
    )
    print(
        "   panel: the room's retained state as its panel shows it; TV, light, HVAC: the\n"
        "   simulated devices' own state, as the gateway's commands changed it"
    )
    start = math.ceil(time.time()) + BOOKING_IN_S
    end = start + BOOKING_S
    room.t0 = start
    room.watch_panel()
    room.until("the panel shows the room", room.shown)

    print(
        f"\n-- The cloud books the room for {alan} from {_hhmmss(start)} to "
        f"{_hhmmss(end)}; check-in from the start, released after 1 min without one"
    )
    rooms_doc = json.loads(json.dumps(doc))
    for r in rooms_doc["rooms"]:
        r.update(checkin_early_min=0, no_show_release_min=1)
    tz = ZoneInfo(TIMEZONE)
    rooms_doc["bookings"] = [
        {
            "id": "b-demo",
            "room": "ada",
            "member": "m-1008",
            "attendees": [],
            "start": datetime.fromtimestamp(start, tz).isoformat(),
            "end": datetime.fromtimestamp(end, tz).isoformat(),
            "status": "confirmed",
            "invoiced": False,
            "recurrence_id": None,
        }
    ]
    path = work / "site-rooms.json"
    path.write_text(json.dumps(rooms_doc, indent=1))
    demo.ctl("import", str(path))
    room.until("the panel awaits the check-in", lambda: room.saw("awaiting_checkin"))

    time.sleep(1)
    print(f"\n-- {alan} badges at the room's door: his check-in; the room's devices come on")
    demo.ctl("present", "--door", "room-ada", "--card", ALAN_CARD)
    room.until("TV and light on", lambda: room.devices(True) and room.saw("in_use"))

    print("\n-- The warning on the panel, the end, the grace period, then everything off")
    room.until("the warning", lambda: room.saw("ending"), timeout=BOOKING_S + 10)
    room.until("the end", lambda: room.saw("ended"), timeout=WARNING_S + 10)
    room.until(
        "everything off, HVAC to standby",
        lambda: room.showing("free") and room.devices(False) and room.hvac.mode == STANDBY,
        timeout=GRACE_S + 15,
    )

    print("\n-- Someone switches the TV on at its plug in the free room; the gateway says no")
    changes = len(room.tv.history)
    room.tv.press()
    room.until("the TV off again", lambda: len(room.tv.history) >= changes + 2 and not room.tv.on)

    print("\n-- Book now at the panel for 30 min: paid in credits, the member's or the company's")
    _answer(alan, ALAN_CARD, room.panel.request("book", card=ALAN_CARD, minutes=30))
    _answer(frances, FRANCES_CARD, room.panel.request("book", card=FRANCES_CARD, minutes=30))
    room.until("the ad-hoc booking in use", lambda: room.devices(True) and room.showing("in_use"))
    demo.ctl("rooms")

    print(f"\n-- {frances} ends the booking at the panel as she leaves")
    _answer(frances, FRANCES_CARD, room.panel.request("end", card=FRANCES_CARD))
    room.until(
        "everything off again",
        lambda: room.showing("free") and room.devices(False) and room.hvac.mode == STANDBY,
    )

    print("\n== The guest Wi-Fi passphrase (for the access point, and on the panels)")
    demo.ctl("wifi")
    print("\n== What happened in the rooms, as the cloud will receive it")
    demo.ctl("events", "--type", "booking.", "--limit", "10")
    demo.ctl("events", "--type", "usage.", "--limit", "10")
    return room.problems


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
