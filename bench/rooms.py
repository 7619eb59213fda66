"""Rooms at site scale: 50 rooms, 200 MQTT devices on one Mosquitto.

The gateway runs as a process; the devices are the simulators of
`hw-sim/devices.py` in the benchmark's process, each with its own connection
(two Tasmota plugs and a generic JSON device per room) but for the lights,
which share one Zigbee2MQTT bridge as they would in reality. Every room has its
own door (mode "card"), its own booker and a panel (`SimPanel`). The broker is
configured as `docs/mosquitto-site.conf` has it (`set_tcp_nodelay true`).

- **on**: from a booking's start or its check-in to the last of the room's four
  devices applying ON, by the devices' own `time.monotonic_ns()` stamps in this
  process. Three kinds, one room at a time unless said:
  - `checkin`: two rounds of check-ins at the room's door, a `present` of the
    booker's card over the admin socket; t0 just before the call.
  - `start`: bookings the cloud marks checked in, all 50 opening at the same
    second (t0: that instant, wall clock taken over to the monotonic clock);
    the room controller's timer, and 200 devices switched at once.
  - `adhoc`: a `book` at the panel of a free room; t0 just before the request.
- `confirmed_*`: the same t0 to the first room state on the room's panel that
  shows all four devices on (the gateway's own view, as it publishes it).
- `off_*`: from an `end` at the panel to all four devices off.
- **idle_cpu_pct**: the daemon's utime + stime (`/proc/<pid>/stat`, every
  thread) over 30 s with nothing happening, as a percentage of one core; the
  site stays up, half the rooms in use and half free. `idle_wakeups_per_s`:
  the context switches of all its threads in that time, per second.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import percentile, result, start_daemon, stop_daemon

from edge.ops.edgectl import Client
from edge.secrets import write_secret
from hwsim.broker import Mosquitto
from hwsim.devices import (
    OnOffState,
    SimDevices,
    SimJsonDevice,
    SimPanel,
    SimTasmotaPlug,
    SimZigbee2Mqtt,
)
from hwsim.sitegen import EXAMPLE_PIN_KEY, example_site, reference_monday

ROOMS = 50
DOOR_ROUNDS = 2  # check-ins at the door; then one round of ad-hoc bookings at the panel
IDLE_S = 30.0
TIMEOUT_S = 10.0
SITE = "mitte"
# BENCH_BROKER_NODELAY=0: the broker with Nagle on (Mosquitto's default) instead of
# the site configuration's `set_tcp_nodelay true`.
NODELAY = os.environ.get("BENCH_BROKER_NODELAY", "1") != "0"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class TimedPanel(SimPanel):
    """A panel that stamps every room state as it arrives (monotonic ns)."""

    def __init__(self, host: str, port: int, site: str, room: str) -> None:
        super().__init__(host, port, site, room)
        self.states: list[tuple[int, dict[str, Any]]] = []

    def _handle(self, topic: str, payload: bytes) -> None:
        at = time.monotonic_ns()
        super()._handle(topic, payload)
        if topic == f"{self.prefix}/state":
            state = self.state
            if state is not None:
                self.states.append((at, state))

    def shown(self, on: bool, since: int) -> int | None:
        """When the panel first showed every device `on` after `since`."""
        for at, state in list(self.states):
            devices = state.get("devices") or {}
            if at >= since and devices and all(d.get("on") is on for d in devices.values()):
                return at
        return None


@dataclass
class Room:
    id: str
    member: str
    card: str
    panel: TimedPanel
    devices: list[OnOffState] = field(default_factory=list)
    booking: int = 0
    ended_at: float = 0.0  # wall clock, the last early end

    @property
    def door(self) -> str:
        return f"room-{self.id}"


def _site(day: Any, rooms: list[Room]) -> dict[str, Any]:
    doc, _ = example_site(day)
    template = next(m for m in doc["members"] if m["id"] == "m-1008")  # pay-as-you-go
    for i, r in enumerate(rooms, 1):
        doc["doors"].append({"id": r.door, "name": f"Room {r.id}", "mode": "card"})
        doc["rooms"].append(
            {
                "id": r.id,
                "name": f"Room {r.id}",
                "door": r.door,
                "capacity": 6,
                "no_show_release_min": 15,
                "checkin_early_min": 1,
                "credits_per_hour": 0,  # ad-hoc bookings cost nothing: no credits to track
            }
        )
        doc["members"].append(
            {
                **template,
                "id": r.member,
                "name": f"Booker {i}",
                "credentials": [
                    {
                        "id": f"{r.member}-card",
                        "type": "card",
                        "format": "raw",
                        "value": r.card.removeprefix("raw:"),
                        "status": "active",
                    }
                ],
            }
        )
    doc["bookings"] = []
    return doc


def _book_round(
    doc: dict[str, Any], rooms: list[Room], start: int | None = None, status: str = "confirmed"
) -> None:
    """A booking for every room (started 30 s ago unless `start` is given, never before
    the room's last early end); the previous one ends where it was ended, as the cloud
    has it once it has the `booking.ended_early` event."""
    now = math.floor(time.time())
    for r in rooms:
        if r.booking:
            previous = next(b for b in doc["bookings"] if b["id"] == f"b-{r.id}-{r.booking}")
            previous["end"] = _iso(math.ceil(r.ended_at))
        r.booking += 1
        begin = max(now - 30 if start is None else start, math.ceil(r.ended_at))
        doc["bookings"].append(
            {
                "id": f"b-{r.id}-{r.booking}",
                "room": r.id,
                "member": r.member,
                "attendees": [],
                "start": _iso(begin),
                "end": _iso(begin + 3600),
                "status": status,
                "invoiced": False,
                "recurrence_id": None,
            }
        )


def _after_ends(rooms: list[Room]) -> None:
    """Past the last early end, so that the next bookings never overlap them."""
    while time.time() < max(math.ceil(r.ended_at) for r in rooms) + 1:
        time.sleep(0.1)


def _config(broker: Mosquitto, rooms: list[Room]) -> str:
    text = (
        f'[site]\nid = "{SITE}"\n[log]\nlevel = "warning"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    )
    for r in rooms:
        text += f"[rooms.{r.id}]\npreconditioning_min = 1\n"
        text += f'[devices.{r.id}-tv]\ntype = "tasmota"\nroom = "{r.id}"\ntopic = "{r.id}_tv"\n'
        text += 'role = "tv"\n'
        text += f'[devices.{r.id}-plug]\ntype = "tasmota"\nroom = "{r.id}"\n'
        text += f'topic = "{r.id}_plug"\n'
        text += f'[devices.{r.id}-light]\ntype = "zigbee2mqtt"\nroom = "{r.id}"\n'
        text += f'name = "{r.id}/ceiling"\nrole = "light"\n'
        text += f'[devices.{r.id}-screen]\ntype = "json"\nroom = "{r.id}"\n'
        text += f'base = "devices/{r.id}-screen"\nrole = "screen"\n'
    return text


def _import(client: Client, doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc))
    client.call("import", {}, payload=path)


def _wait_rooms(
    client: Client, rooms: list[Room], phase: str, what: str, timeout: float = 30
) -> None:
    """Until every bench room is in `phase` and its devices have reported, all off."""
    ids = {r.id for r in rooms}
    deadline = time.monotonic() + timeout
    while True:
        views = [v for v in client.call("rooms") if v["room"] in ids]
        ready = len(views) == len(ids) and all(
            r["state"] == phase
            and len(r["devices"]) == 4
            and all(d["on"] is False and d["available"] for d in r["devices"].values())
            for r in views
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: rooms not {phase} with all devices off in {timeout:.0f} s")
        time.sleep(0.1)


def _switched(r: Room, on: bool, since: int) -> tuple[float, float]:
    """(devices applied, panel showed) for `on`, in ms after `since`."""
    word = "on" if on else "off"
    applied = []
    for d in r.devices:
        if not d.wait_on(on, TIMEOUT_S):
            raise RuntimeError(f"{r.id}: a device was not switched {word} in {TIMEOUT_S:g} s")
        at = next((t for t, state in d.history if state is on and t >= since), None)
        if at is None:
            raise RuntimeError(f"{r.id}: a device was switched {word} before t0")
        applied.append(at)
    r.panel.wait_state(
        lambda s: all(d.get("on") is on for d in (s.get("devices") or {}).values()), TIMEOUT_S
    )
    shown = r.panel.shown(on, since)
    if shown is None:
        raise RuntimeError(f"{r.id}: the panel did not show the devices {word}")
    return (max(applied) - since) / 1e6, (shown - since) / 1e6


def _end(r: Room) -> float:
    t0 = time.monotonic_ns()
    answer = r.panel.request("end", card=r.card, timeout=TIMEOUT_S)
    if answer["status"] != "ok":
        raise RuntimeError(f"{r.id}: end refused: {answer}")
    r.ended_at = time.time()
    off, _ = _switched(r, False, t0)
    r.panel.wait_state(lambda s: s.get("state") == "free", TIMEOUT_S)
    return off


def _cpu(pid: int) -> tuple[float, int]:
    """CPU seconds of the whole process, and the context switches of its live threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    switches += int(line.split()[1])
    return seconds, switches


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        stop_daemon(proc)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_rooms() -> None:
    rng = random.Random(13)
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        broker = Mosquitto(root)
        if NODELAY:  # as docs/mosquitto-site.conf has it; hwsim's broker leaves Nagle on
            broker.config.write_text(broker.config.read_text() + "set_tcp_nodelay true\n")
        broker.start()
        stack.callback(broker.stop)

        sims = SimDevices(broker.host, broker.port)
        bridge = sims.add(SimZigbee2Mqtt(broker.host, broker.port))
        rooms: list[Room] = []
        for i in range(1, ROOMS + 1):
            rid = f"r{i:02d}"
            r = Room(
                rid,
                f"m-bench-{i}",
                f"raw:BE{i:06X}",
                sims.add(TimedPanel(broker.host, broker.port, SITE, rid)),
            )
            r.devices = [
                sims.add(SimTasmotaPlug(broker.host, broker.port, f"{rid}_tv")),
                sims.add(SimTasmotaPlug(broker.host, broker.port, f"{rid}_plug")),
                bridge.add_light(f"{rid}/ceiling"),
                sims.add(SimJsonDevice(broker.host, broker.port, f"devices/{rid}-screen")),
            ]
            rooms.append(r)
        sims.start()
        stack.callback(sims.stop)

        state = root / "gw"
        state.mkdir()
        write_secret(state, "pin_key", EXAMPLE_PIN_KEY.hex().encode())
        proc, _ = start_daemon(state, _config(broker, rooms))
        stack.callback(_stop, proc)
        client = Client(state / "admin.sock", timeout=60)
        stack.callback(client.close)

        doc = _site(reference_monday(datetime.now().date()), rooms)
        site_json = root / "site.json"
        _book_round(doc, rooms)
        _import(client, doc, site_json)
        _wait_rooms(client, rooms, "awaiting_checkin", "first import")

        checkin: list[float] = []
        starts: list[float] = []
        adhoc: list[float] = []
        confirmed: list[float] = []
        off: list[float] = []
        for k in range(DOOR_ROUNDS):
            if k:
                _after_ends(rooms)
                _book_round(doc, rooms)
                _import(client, doc, site_json)
                _wait_rooms(client, rooms, "awaiting_checkin", f"round {k + 1}")
            for r in rng.sample(rooms, len(rooms)):
                time.sleep(rng.uniform(0.01, 0.05))
                t0 = time.monotonic_ns()
                decision = client.call("present", {"door": r.door, "card": r.card})
                if not decision["granted"] or decision["reason"] != "booking":
                    raise RuntimeError(f"{r.id}: check-in at the door refused: {decision}")
                on_ms, shown_ms = _switched(r, True, t0)
                checkin.append(on_ms)
                confirmed.append(shown_ms)
            for r in rng.sample(rooms, len(rooms)):
                off.append(_end(r))

        # Bookings checked in beforehand (by the cloud), all 50 starting at the same
        # second: the room controller's timer, and 200 devices switched at once. They
        # open a minute before their start (checkin_early_min = 1); t0 is that instant.
        _after_ends(rooms)
        opens = math.ceil(time.time()) + 3
        _book_round(doc, rooms, start=opens + 60, status="checked_in")
        _import(client, doc, site_json)
        t0 = time.monotonic_ns() + round((opens - time.time()) * 1e9)
        if time.monotonic_ns() > t0 - 500_000_000:
            raise RuntimeError("the import took too long: the bookings opened before it was in")
        for r in rooms:
            on_ms, shown_ms = _switched(r, True, t0)
            starts.append(on_ms)
            confirmed.append(shown_ms)
        for r in rng.sample(rooms, len(rooms)):
            off.append(_end(r))

        # Ad-hoc bookings at the panel of a free room.
        _wait_rooms(client, rooms, "free", "before the ad-hoc round")
        for r in rng.sample(rooms, len(rooms)):
            time.sleep(rng.uniform(0.01, 0.05))
            t0 = time.monotonic_ns()
            answer = r.panel.request("book", card=r.card, minutes=30, timeout=TIMEOUT_S)
            if answer["status"] != "ok":
                raise RuntimeError(f"{r.id}: ad-hoc booking refused: {answer}")
            on_ms, shown_ms = _switched(r, True, t0)
            adhoc.append(on_ms)
            confirmed.append(shown_ms)
        for r in rooms[::2]:  # half the rooms stay in use through the idle time
            off.append(_end(r))

        time.sleep(3)  # let the last records and retained states settle
        cpu0, switches0 = _cpu(proc.pid)
        t0 = time.monotonic()
        time.sleep(IDLE_S)
        cpu1, switches1 = _cpu(proc.pid)
        idle_s = time.monotonic() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")

    on = checkin + starts + adhoc
    result(
        bench="rooms",
        rooms=ROOMS,
        devices=4 * ROOMS,
        on_p50_ms=f"{statistics.median(on):.1f}",
        on_p99_ms=f"{percentile(on, 0.99):.1f}",
        idle_cpu_pct=f"{100 * (cpu1 - cpu0) / idle_s:.2f}",
        samples=len(on),
        on_max_ms=f"{max(on):.1f}",
        checkin_p50_ms=f"{statistics.median(checkin):.1f}",
        checkin_p99_ms=f"{percentile(checkin, 0.99):.1f}",
        start_p50_ms=f"{statistics.median(starts):.1f}",
        start_p99_ms=f"{percentile(starts, 0.99):.1f}",
        adhoc_p50_ms=f"{statistics.median(adhoc):.1f}",
        adhoc_p99_ms=f"{percentile(adhoc, 0.99):.1f}",
        confirmed_p50_ms=f"{statistics.median(confirmed):.1f}",
        confirmed_p99_ms=f"{percentile(confirmed, 0.99):.1f}",
        off_p50_ms=f"{statistics.median(off):.1f}",
        off_p99_ms=f"{percentile(off, 0.99):.1f}",
        off_samples=len(off),
        idle_s=f"{idle_s:.0f}",
        idle_wakeups_per_s=f"{(switches1 - switches0) / idle_s:.1f}",
        broker_nodelay=int(NODELAY),
    )


def bench_room_evaluate() -> None:
    """One room's phase (`edge.rooms.phases.evaluate`) with N bookings of 30 minutes
    back to back, `now` after them all so that every one is looked at: what the
    room controller's clock pays per room per wake-up. Median of 21 calls."""
    from edge.config import RoomConfig
    from edge.rooms.phases import Slot, evaluate
    from edge.site.model import Booking

    rc = RoomConfig(preconditioning_min=15, ending_warning_min=5, grace_min=5)
    t0 = 1_800_000_000.0
    for n in (100, 1000, 3000):
        slots = [
            Slot(
                Booking(
                    id=f"b-{i}",
                    room="ada",
                    door="room-ada",
                    member="m-1",
                    holders=frozenset({"m-1"}),
                    start=t0 + 1800 * i,
                    end=t0 + 1800 * (i + 1),
                    opens=t0 + 1800 * i - 600,
                    release_at=t0 + 1800 * i + 900,
                    status="confirmed",
                    invoiced=False,
                ),
                False,
                False,
                False,
                None,
                False,
            )
            for i in range(n)
        ]
        now = t0 + 1800 * (n + 1)
        times = []
        for _ in range(21):
            started = time.perf_counter()
            evaluate(slots, rc, now)
            times.append(time.perf_counter() - started)
        result(
            bench="room_evaluate", bookings=n, median_ms=round(statistics.median(times) * 1e3, 3)
        )
