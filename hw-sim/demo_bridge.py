"""The demo's platform act: the operator's Nexudus drives the doors.

A simulated Nexudus with the example story (`hwsim.platforms.nexudus`), the
platform bridge (`edge-bridge run`) reading it, and a fresh gateway whose
`[cloud]` is the bridge and whose embedded broker carries the bridge's signed
pushes. Then, on the real clock:
- an invoice marked unpaid past its grace: the member's badge is refused
  within a second of Nexudus's webhook;
- a day-pass holder badges in: the entry appears in Nexudus as a check-in
  that used one of his passes;
- a plan cancelled as of today: the door admits the member until midnight and
  refuses her after it;
- `edge-bridge status`, as an operator sees it.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from edge.ops.edgectl import Client, RemoteError, Unreachable
from edge.secrets import write_secret
from hwsim.platforms.nexudus import NexudusSim
from hwsim.platforms.rig import GATEWAY_TOKEN, PUSH_KEY_ID, BridgeProcess, bridge_config, provision
from hwsim.sitegen import EXAMPLE_PIN_KEY, TIMEZONE

T = TypeVar("T")
TZ = ZoneInfo(TIMEZONE)
CARDS = {
    "ada": "H10301:12:3456",
    "grace": "H10306:1000:50001",
    "linus": "H10301:12:4000",
    "ken": "H10301:12:4001",
    "alan": "raw:0A0B0C0D",
    "radia": "H10301:12:4005",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(done: Callable[[], T | None], timeout: float = 20) -> T | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = done()
        if value:
            return value
        time.sleep(0.01)
    return None


class Gateway:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def ctl(self, *args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "edge.ops.edgectl", "--state-dir", str(self.state_dir), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if show:
            print(f"$ edgectl {shlex.join(args)}")
            out = (r.stdout + r.stderr).rstrip()
            if out:
                print("  " + out.replace("\n", "\n  "))
        return r

    def reason(self, who: str, at: str | None = None) -> str:
        """A dry run at the front door, straight on the admin socket (as a reader
        would be answered: no process started per question)."""
        params = {"door": "front", "card": CARDS[who], **({"at": at} if at else {})}
        try:
            c = Client(self.state_dir / "admin.sock", timeout=10)
        except Unreachable as exc:
            return f"? ({exc})"
        try:
            return str(c.call("decide", params)["reason"])
        except (RemoteError, OSError, KeyError) as exc:
            return f"? ({exc})"
        finally:
            c.close()


def run_platform_act(work: Path) -> list[str]:
    """The act; what did not happen in time, in words."""
    problems: list[str] = []
    print("\n\n== The operator's platform drives the doors")
    print("   simulated Nexudus -> edge-bridge -> a gateway fed by it")
    sim = NexudusSim().start()
    ids = sim.load_example(datetime.now(TZ).date())
    broker_port = _free_port()
    bridge_state = work / "bridge"
    public = provision(bridge_state)
    bridge = BridgeProcess(
        bridge_state,
        bridge_config(
            "nexudus",
            sim.base_url,
            str(ids["mitte"]),
            port=0,
            broker=("127.0.0.1", broker_port),
            hot_desk_schedule="always",
            level="info",
        ),
    ).start()
    gw_state = work / "gw-bridge"
    gw_state.mkdir()
    write_secret(gw_state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    write_secret(gw_state, "cloud_token", GATEWAY_TOKEN.encode())
    daemon: subprocess.Popen[bytes] | None = None
    log = (work / "gw-bridge.log").open("wb")
    try:
        status = bridge.wait_ready()
        url = f"http://{status['listening']}/api/edge/v1"
        counts = status["sites"]["mitte"]["objects"]
        print(
            f"   Nexudus at {sim.base_url}: the example story (coworkers with cards and PINs,\n"
            f"   Hot Desk / Resident / Server Access contracts, unpaid invoices, day passes,\n"
            f"   teams ACME and Initech, a visitor, a booking of the Ada room)\n"
            f"   edge-bridge at {url}: site 'mitte' built from it: "
            + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        )
        base = url.removesuffix("/api/edge/v1")
        for action in ("CoworkerInvoiceCreate", "CoworkerInvoiceUpdate", "CoworkerContractCancel"):
            sim.add_webhook(f"{base}/webhooks/nexudus/{action}", [action])
        print(
            f"   Nexudus webhooks -> {base}/webhooks/nexudus/<Action> (signed with the app secret)"
        )
        config = work / "gw-bridge.toml"
        config.write_text(
            '[site]\nid = "mitte"\n[gateway]\nid = "gw-2"\n[log]\nlevel = "info"\n'
            f'[cloud]\nurl = "{url}"\npull_interval_s = 30\n'
            "allow_insecure_http_for_lab = true\n"
            f'[cloud.keys]\n{PUSH_KEY_ID} = "{public}"\n'
            f'[mqtt]\nembedded = true\nhost = "127.0.0.1"\nport = {broker_port}\n'
        )
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge.ops.cli", "run", "--config", str(config),
             "--state-dir", str(gw_state)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        gw = Gateway(gw_state)
        if not _until(lambda: gw.ctl("sync", "status", "--json", show=False).returncode == 0
                      and gw.reason("grace") == "plan", 60):  # fmt: skip
            problems.append("the gateway's first sync from the bridge")
            return problems
        print("\n== The gateway decides from what the bridge serves (dry runs at the front door)")
        for who, what in (
            ("ada", "Ada, invoice due yesterday (in grace)"),
            ("grace", "Grace Brewster, Resident"),
            ("linus", "Linus, invoice 40 days overdue"),
            ("ken", "Ken, Hot Desk cancelled yesterday"),
            ("alan", "Alan, no plan, two day passes"),
        ):
            print(f"   {what:<36} -> {gw.reason(who)}")

        print("\n== Grace's Resident plan is cancelled as of today (CancellationDate = today)")
        today = datetime.now(TZ).date()
        sim.cancel_contract(ids["grace_contract"], today)
        midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), TZ)
        before = (midnight - timedelta(minutes=1)).isoformat(timespec="seconds")
        after = (midnight + timedelta(minutes=1)).isoformat(timespec="seconds")
        if _until(lambda: gw.reason("grace", after) == "contract_ended", 10):
            print(f"   Grace at {before}: {gw.reason('grace', before)}")
            print(f"   Grace at {after}: {gw.reason('grace', after)}")
        else:
            problems.append("Grace's plan ending at midnight")

        print(
            "\n== An invoice of Grace's turns out unpaid: due 4 days ago, past the 3 days of grace"
        )
        _until(lambda: '"connected": true' in gw.ctl("sync", "status", "--json", show=False).stdout)
        t0 = time.perf_counter()
        sim.add_invoice(ids["grace"], datetime.now(UTC) - timedelta(days=4))
        if _until(lambda: gw.reason("grace") == "billing_suspended", 10):
            ms = (time.perf_counter() - t0) * 1000
            print(
                "   Nexudus webhook -> the bridge re-reads the invoice -> signed push -> gateway:\n"
                f"   Grace's badge refused (billing_suspended) {ms:.0f} ms after the change"
            )
        else:
            problems.append("Grace refused after her unpaid invoice")

        print("\n== Alan (two day passes, no plan) badges in at the front door")
        gw.ctl("present", "--door", "front", "--card", CARDS["alan"])
        checkin = _until(
            lambda: [c for c in sim.records("checkins") if c.get("CoworkerId") == ids["alan"]]
        )
        if checkin:
            c = checkin[0]
            used = [p for p in sim.records("coworkertimepasses")
                    if p["CoworkerId"] == ids["alan"] and p.get("Used")]  # fmt: skip
            print(
                f"   in Nexudus: Checkin {c['Id']} of {c['CoworkerFullName']} at "
                f"{c['FromTimeLocal']} (SystemId {c['SystemId']}),\n"
                f"   using time pass {c.get('CoworkerTimePassGuid')}: {len(used)} of his 2 used"
            )
        else:
            problems.append("Alan's check-in in Nexudus")

        print("\n== What the operator sees")
        r = bridge.ctl("status")
        print("$ edge-bridge status")
        print("  " + r.stdout.rstrip().replace("\n", "\n  "))
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(30)
        log.close()
        bridge.stop()
        sim.stop()
    return problems
