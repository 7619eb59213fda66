"""The README's run command: the gateway on the simulated site.

Starts `edge-gateway run` as a real daemon on a fresh state directory, imports
the generated example site through `edgectl import`, and runs a scripted set
of badges through `edgectl`, printing each command as an operator would type
it. Decisions at fixed local times of this week's Monday are dry runs (so the
output is the same whatever the time of day); the presentations marked
"for real" are recorded, consume passes and appear in the event log.
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
from hwsim.sitegen import EXAMPLE_PIN_KEY, SITE_ID, TIMEZONE, example_site, reference_monday

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
        return run(state_dir, Path(tmp), args.keep_running)


def run(state_dir: Path, work: Path, keep_running: bool) -> int:
    write_secret(state_dir, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    config = work / "gateway.toml"
    config.write_text(CONFIG)
    day = reference_monday(date.today())
    doc, cast = example_site(day)
    snapshot = work / "site.json"
    snapshot.write_text(json.dumps(doc, indent=1))
    log_path = work / "gateway.log"

    print(f"== Simulated site {SITE_ID!r}: {len(cast)} holders, reference day {day} (Monday)")
    for c in cast:
        how = " + ".join(x for x in (c.card, c.pin and f"PIN {c.pin}") if x)
        print(f"   {c.id:<7} {how:<28} {c.story}")
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

    print("\n== For real, now: a resident badges in, then the site goes into lockdown")
    demo.ctl("present", "--door", "front", "--card", "H10306:1000:50001")
    demo.ctl("lockdown", "on")
    demo.ctl("present", "--door", "front", "--card", "H10306:1000:50001")
    demo.ctl("door", "unlock", "front", "--seconds", "3")
    demo.ctl("lockdown", "off")
    demo.ctl("door", "unlock", "front", "--seconds", "3")

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


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
