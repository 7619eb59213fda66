"""Platform bridge figures, per platform (the simulated Nexudus and OfficeRnD):

- `bridge-full-sync`: an operator with 5,000 members, 500 companies and 20,000
  bookings behind a 5 requests/s limit; from starting the bridge to the first
  complete site at a gateway, and the API calls it took;
- `bridge-change`: a platform change (an invoice past its grace) to the door's
  decision, by webhook (webhook -> re-read -> push -> gateway) and by polling
  alone (poll -> push -> gateway);
- `bridge-idle`: API calls per hour with nothing changing;
- `bridge-usage`: 10,000 billable events delivered while the bridge is killed
  with SIGKILL 20 times and the platform fails and times out; lost and
  duplicated counted at the platform.

The bridge and the gateway run as processes; the platform runs in this process
(a thread per connection). Latencies are from the operator's change to the
gateway's answer, read on the gateway's admin socket.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import statistics
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common import _rpc, percentile, result, start_daemon, stop_daemon
from sync import Decider

from edge.secrets import write_secret
from hwsim.broker import Mosquitto
from hwsim.platforms.nexudus import NexudusSim
from hwsim.platforms.officernd import OfficeRndSim
from hwsim.platforms.rig import GATEWAY_TOKEN, PUSH_KEY_ID, BridgeProcess, bridge_config, provision
from hwsim.sitegen import EXAMPLE_PIN_KEY

TZ = ZoneInfo("Europe/Berlin")
MEMBERS, COMPANIES, BOOKINGS = 5000, 500, 20_000
RATE = 5  # requests a second, at the platform and in the bridge's own budget
PLATFORMS = ("nexudus", "officernd")


def _sim(platform: str) -> Any:
    return NexudusSim() if platform == "nexudus" else OfficeRndSim()


def _location(sim: Any) -> str:
    if isinstance(sim, NexudusSim):
        return str(sim.records("businesses")[0]["Id"])
    return str(sim.records("locations")[0]["_id"])


def _extra(sim: Any) -> str:
    if isinstance(sim, OfficeRndSim):
        plan = next(p["_id"] for p in sim.records("plans") if p["name"] == "Services")
        return f'fee_plan = "{plan}"\n'
    return ""


@contextmanager
def _world(platform: str, broker: bool = True) -> Iterator[tuple[Any, Mosquitto | None, Path]]:
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        root = Path(tmp)
        mosquitto = Mosquitto(root) if broker else None
        if mosquitto is not None:
            mosquitto.start()
        sim = _sim(platform)
        sim.load_large(MEMBERS, COMPANIES, BOOKINGS, datetime.now(TZ).date())
        sim.start()
        try:
            yield sim, mosquitto, root
        finally:
            sim.stop()
            if mosquitto is not None:
                mosquitto.stop()


def _bridge(
    root: Path, sim: Any, broker: Mosquitto | None, name: str = "bridge", **kw: Any
) -> tuple[BridgeProcess, str]:
    state = root / name
    public = provision(state)
    platform = "nexudus" if isinstance(sim, NexudusSim) else "officernd"
    kw.setdefault("requests_per_s", RATE)
    text = bridge_config(
        platform,
        sim.base_url,
        _location(sim),
        port=0,
        broker=(broker.host, broker.port) if broker else None,
        platform_extra=_extra(sim) + kw.pop("platform_extra", ""),
        level="warning",
        **kw,
    )
    return BridgeProcess(state, text).start(), public


def _gateway_config(url: str, public: str, broker: Mosquitto | None, pull_s: float) -> str:
    text = (
        '[site]\nid = "mitte"\n[log]\nlevel = "warning"\n'
        f'[cloud]\nurl = "{url}"\nallow_insecure_http_for_lab = true\n'
        f"pull_interval_s = {pull_s}\nchanges_limit = 1000\n"
        f"backoff_min_s = 0.2\nbackoff_max_s = 1\npush = {'true' if broker else 'false'}\n"
        f'[cloud.keys]\n{PUSH_KEY_ID} = "{public}"\n'
    )
    if broker is not None:
        text += f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    return text


def _gateway_state(root: Path) -> Path:
    state = root / "gw"
    state.mkdir()
    write_secret(state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
    write_secret(state, "cloud_token", GATEWAY_TOKEN.encode())
    return state


def _listening(b: BridgeProcess, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = b.status()
        if status is not None and not status["listening"].endswith(":0"):
            return f"http://{status['listening']}/api/edge/v1"
        time.sleep(0.05)
    raise RuntimeError(f"the bridge did not come up:\n{b.output()[-3000:]}")


# --- full sync --------------------------------------------------------------------------


def bench_full_sync(platform: str, pins: bool = True) -> None:
    with _world(platform) as (sim, broker, root):
        sim.rate.set(RATE, 1.0)
        extra = "" if pins or platform != "nexudus" else "read_pins = false\n"
        started = time.monotonic()
        b, public = _bridge(root, sim, broker, platform_extra=extra)
        try:
            url = _listening(b)
            state = _gateway_state(root)

            def complete(status: dict[str, Any]) -> bool:
                return bool(status["ready"] and status.get("cursor"))

            proc, _ = start_daemon(
                state, _gateway_config(url, public, broker, 3600), complete, 7200
            )
            first_site_s = time.monotonic() - started
            calls = sim.api_calls()
            members = _rpc(state / "admin.sock", "status")["result"]["members"]
            stop_daemon(proc)
            status = b.status() or {}
        finally:
            b.stop()
        api = status.get("platforms", {}).get(platform, {}).get("api", {})
    result(
        bench="bridge-full-sync",
        platform=platform,
        members=MEMBERS,
        companies=COMPANIES,
        bookings=BOOKINGS,
        rate_per_s=RATE,
        **({"pins": "on" if pins else "off"} if platform == "nexudus" else {}),
        first_site_s=f"{first_site_s:.1f}",
        api_calls=calls,
        throttled=api.get("throttled", 0),
        gateway_members=members,
    )


# --- change to decision -----------------------------------------------------------------


def _candidates(sim: Any, d: Decider, n: int) -> list[tuple[str, str]]:
    """(platform id, card) of members the front door admits on their own plan."""
    out = []
    if isinstance(sim, NexudusSim):
        people = [(str(c["Id"]), c.get("AccessCardId")) for c in sim.records("coworkers")]
    else:
        people = [
            (m["_id"], (m.get("properties") or {}).get("cardNumber"))
            for m in sim.records("members")
        ]
    random.Random(5).shuffle(people)
    for pid, card in people:
        if len(out) == n:
            break
        if not card or ":" not in card:
            continue
        spec = card if card.count(":") == 2 else f"H10301:{card}"
        if d.reason(spec) == "plan":
            out.append((pid, spec))
    return out


def _overdue(sim: Any, pid: str) -> None:
    due = datetime.now(UTC) - timedelta(days=10)
    if isinstance(sim, NexudusSim):
        sim.add_invoice(int(pid), due)
    else:
        sim.add_invoice(member=pid, due=due.date())


def bench_change(platform: str, mode: str, n: int = 50) -> None:
    poll_s = 5.0
    with _world(platform) as (sim, broker, root):
        # The initial read without limits (bridge-full-sync measures that), then
        # the bridge again on the same state with the 5 requests/s budget and limit.
        b, _ = _bridge(root, sim, broker, requests_per_s=1000)
        _listening(b)
        b.wait_ready(timeout=3600)
        b.stop()
        sim.rate.set(RATE, 1.0)
        b, public = _bridge(
            root,
            sim,
            broker,
            poll_interval_s=3600 if mode == "webhook" else poll_s,
            requests_per_s=RATE,
        )
        try:
            url = _listening(b)
            b.wait_ready(timeout=600)
            base = url.removesuffix("/api/edge/v1")
            if mode == "webhook":
                if isinstance(sim, NexudusSim):
                    for action in ("CoworkerInvoiceCreate", "CoworkerInvoiceUpdate"):
                        sim.add_webhook(f"{base}/webhooks/{platform}/{action}", [action])
                else:
                    secret = sim.add_webhook(f"{base}/webhooks/{platform}", ["invoice.created"])
                    write_secret(b.state_dir, "officernd_webhook_secret", secret.encode())
            state = _gateway_state(root)
            proc, _ = start_daemon(
                state,
                _gateway_config(url, public, broker, 3600),
                lambda s: bool(s["ready"] and s.get("cursor")),
                600,
            )
            d = Decider(state / "admin.sock")
            latencies: list[float] = []
            rng = random.Random(3)
            try:
                deadline = time.monotonic() + 30
                while not _rpc(state / "admin.sock", "sync.status")["result"]["push"]["connected"]:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the gateway did not connect to the broker")
                    time.sleep(0.05)
                for pid, card in _candidates(sim, d, n):
                    time.sleep(rng.uniform(0, 0.5 if mode == "webhook" else poll_s))
                    t0 = time.perf_counter()
                    _overdue(sim, pid)
                    while d.reason(card) != "billing_suspended":
                        if time.perf_counter() - t0 > 60:
                            raise RuntimeError(f"{pid} was not refused within 60 s")
                        time.sleep(0.002)
                    latencies.append((time.perf_counter() - t0) * 1000)
            finally:
                d.close()
                stop_daemon(proc)
        finally:
            b.stop()
    result(
        bench="bridge-change",
        platform=platform,
        mode=mode,
        members=MEMBERS,
        changes=len(latencies),
        **({"poll_interval_s": f"{poll_s:g}"} if mode == "poll" else {}),
        p50_ms=f"{statistics.median(latencies):.1f}",
        p99_ms=f"{percentile(latencies, 0.99):.1f}",
        max_ms=f"{max(latencies):.1f}",
    )


# --- idle -------------------------------------------------------------------------------


def bench_idle(platform: str, scale: float = 10.0) -> None:
    """An hour at the default intervals, emulated with every interval divided by
    `scale` for 3600/scale seconds: the same reads, in less time."""
    with _world(platform, broker=False) as (sim, _, root):
        extra = f"sweep_interval_s = {3600 / scale}\noverlap_s = {120 / scale}\n" + (
            f"full_read_interval_s = {600 / scale}\n" if platform == "officernd" else ""
        )
        b, _ = _bridge(
            root,
            sim,
            None,
            poll_interval_s=60 / scale,
            slow_poll_interval_s=900 / scale,
            platform_extra=extra,
            requests_per_s=1000,
        )
        try:
            _listening(b)
            b.wait_ready(timeout=3600)
            # Steady state: from one poll after the site is ready (that poll reads
            # again what the initial read saw in the second of its change). The
            # first sweep is an hour after the initial read, as in production.
            time.sleep(2 * 60 / scale)
            before = sim.api_calls()
            by_endpoint_before = Counter(sim.calls)
            time.sleep(3600 / scale + 1)
            calls = sim.api_calls() - before
            by_endpoint = Counter(sim.calls) - by_endpoint_before
        finally:
            b.stop()
    top = ",".join(f"{k[1].rsplit('/', 1)[-1]}:{v}" for k, v in by_endpoint.most_common(4))
    result(
        bench="bridge-idle",
        platform=platform,
        members=MEMBERS,
        api_calls_per_hour=calls,
        emulated=f"1h_at_1/{scale:g}",
        top=top,
    )


# --- usage exactly once -----------------------------------------------------------------


def _post(url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps({"events": events}).encode()
    request = urllib.request.Request(  # noqa: S310 - the bridge on loopback
        f"{url}/sites/mitte/events",
        data=body,
        headers={"Authorization": f"Bearer {GATEWAY_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        reply: dict[str, Any] = json.loads(answer.read())
        return reply


def _events(members: list[str], guests_host: list[str], n: int) -> list[dict[str, Any]]:
    """n billable events as gateways send them: check-ins on two days, guest entries,
    overtime and credits; each writes exactly one record at the platform (each
    check-in is a holder's first of its site-local day: 01:00 to 09:00)."""
    rng = random.Random(9)
    today = datetime.now(TZ).replace(hour=9, minute=0, second=0, microsecond=0)
    out: list[dict[str, Any]] = []
    kinds = ["access.granted"] * 5 + ["usage.guest_entry", "usage.room_overtime", "usage.credits"]
    slots = [(m, d) for m in members for d in (1, 2)]
    rng.shuffle(slots)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        base: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": kind,
            "site": "mitte",
            "gateway": "gw-1",
        }
        if kind == "access.granted":
            holder, days = slots.pop()
            at = today - timedelta(days=days, minutes=rng.randrange(480))
            base.update(door="front", holder=holder, reason="plan", at=at.isoformat())
        elif kind == "usage.guest_entry":
            host = rng.choice(guests_host)
            at = today - timedelta(minutes=rng.randrange(480))
            base.update(
                holder=f"g-{i}",
                at=at.isoformat(),
                details={"host": host, "date": at.date().isoformat()},
            )
        elif kind == "usage.room_overtime":
            at = today - timedelta(minutes=rng.randrange(480))
            base.update(
                holder=rng.choice(members),
                at=at.isoformat(),
                details={"room": "ada", "booking": f"b-{i}", "minutes": 15},
            )
        else:
            at = today - timedelta(minutes=rng.randrange(480))
            base.update(
                holder=rng.choice(members),
                at=at.isoformat(),
                details={"room": "ada", "booking": f"b-{i}", "credits": 2},
            )
        out.append(base)
    return out


def _written(sim: Any, batch: list[dict[str, Any]]) -> Counter[str]:
    """Event ids as the platform recorded them (one per check-in, charge or fee).
    OfficeRnD check-ins carry no tag: they are matched to their event by member
    and minute (each member's check-ins in the batch fall on different days)."""
    ids: Counter[str] = Counter()
    if isinstance(sim, NexudusSim):
        for c in sim.records("checkins"):
            if str(c.get("SystemId") or "").startswith("edge:"):
                ids[c["SystemId"][5:]] += 1
        for c in sim.records("charges"):
            desc = str(c.get("Description") or "")
            if "[edge " in desc:
                ids[desc.rsplit("[edge ", 1)[1].rstrip("]")] += 1
    else:
        for f in sim.records("fees"):
            name = str(f.get("name") or "")
            if "[edge " in name:
                ids[name.rsplit("[edge ", 1)[1].rstrip("]")] += 1
        by_minute = {
            (e["holder"][2:], _utc_minute(e["at"])): e["id"]
            for e in batch
            if e["type"] == "access.granted"
        }
        for c in sim.records("checkins"):
            eid = by_minute.get((str(c.get("member")), _utc_minute(c.get("start"))))
            if eid is not None:
                ids[eid] += 1
    return ids


def _utc_minute(text: object) -> str:
    stamp = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _checkins_by_minute(sim: Any) -> Counter[tuple[str, str]]:
    if isinstance(sim, NexudusSim):
        return Counter(
            (str(c.get("CoworkerId")), str(c.get("FromTime"))[:16]) for c in sim.records("checkins")
        )
    return Counter(
        (str(c.get("member")), str(c.get("start"))[:16]) for c in sim.records("checkins")
    )


def bench_usage(platform: str, events: int = 10_000, kills: int = 20) -> None:
    with _world(platform, broker=False) as (sim, _, root):
        b, _ = _bridge(root, sim, None, requests_per_s=1000, timeout_s=1)
        try:
            url = _listening(b)
            b.wait_ready(timeout=3600)
            token_hdr = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
            request = urllib.request.Request(f"{url}/sites/mitte/snapshot", headers=token_hdr)  # noqa: S310
            with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
                snapshot = json.loads(answer.read())
            members = [m["id"] for m in snapshot["members"] if m["kind"] == "member"]
            batch = _events(members, members, events)
            for i in range(0, len(batch), 500):
                reply = _post(url, batch[i : i + 500])
                assert not reply["rejected"], reply["rejected"][:3]
            # The platform misbehaves from here on.
            sim.faults.error_rate = 0.03
            sim.faults.timeout_rate = 0.01
            sim.faults.late_rate = 0.01
            sim.faults.timeout_s = 1.5
            rng = random.Random(17)
            db = b.state_dir / "bridge.db"
            killed = 0
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.5, 4.0))
                if killed < kills:
                    b.stop(signal.SIGKILL)
                    killed += 1
                    b.start()
                    _listening(b)
                if _open(db) == 0:
                    break
            sim.faults.clear()
            while _open(db) and time.monotonic() < deadline:
                time.sleep(0.5)
            states = _states(db)
        finally:
            b.stop()
        written = _written(sim, batch)
        expected = {e["id"] for e in batch}
        lost = len(expected - set(written))
        duplicated = sum(n - 1 for eid, n in written.items() if eid in expected and n > 1)
        same_minute = sum(n - 1 for n in _checkins_by_minute(sim).values() if n > 1)
    result(
        bench="bridge-usage",
        platform=platform,
        events=events,
        kills=killed,
        lost=lost,
        duplicated=duplicated,
        duplicate_checkin_minutes=same_minute,
        states=";".join(f"{k}:{v}" for k, v in sorted(states.items())),
    )


def _open(db: Path) -> int:
    try:
        conn = sqlite3.connect(db, timeout=30)
        try:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM events WHERE state IN ('pending', 'sending', 'unknown')"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return -1
    return int(n)


def _states(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return {s: n for s, n in conn.execute("SELECT state, COUNT(*) FROM events GROUP BY state")}
    finally:
        conn.close()
