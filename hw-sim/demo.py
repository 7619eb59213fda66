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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.secrets import write_secret
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


class Demo:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def ctl(self, *args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "edge.edgectl", "--state-dir", str(self.state_dir), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if show:
            print(f"$ edgectl {shlex.join(args)}")
            out = (result.stdout + result.stderr).rstrip()
            if out:
                print("  " + out.replace("\n", "\n  "))
        return result


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
    write_secret(state_dir, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    hw.site.provision(state_dir)
    config = work / "gateway.toml"
    config.write_text(CONFIG + "\n" + hw.site.config())
    day = reference_monday(date.today())
    doc, cast = example_site(day)
    snapshot = work / "site.json"
    snapshot.write_text(json.dumps(doc, indent=1))
    log_path = work / "gateway.log"

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
    print(f"\n== Starting the daemon (state in {state_dir}, log in {log_path})")
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge.cli",
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
            _script(demo, snapshot, day)
            _doors(demo, hw)
            _admin(demo, hw)
            _logs(demo, snapshot)
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
            if daemon.poll() is None:
                daemon.terminate()
            code = daemon.wait(30)
    print(f"\n== Daemon stopped on SIGTERM with exit status {code}")
    return 0 if code == 0 else 1


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


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
