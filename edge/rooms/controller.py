"""Meeting rooms that follow their bookings: phases, devices, panels, overtime.

A room's phase is a pure function of its bookings, what happened on site
(check-ins, releases, extensions, early ends, presence after the end) and the
clock (`evaluate`):

    free -> upcoming (HVAC to comfort `preconditioning_min` before the start)
         -> awaiting_checkin (from the booking's early check-in window)
         -> in_use (checked in: devices on) -> ending (`ending_warning_min` left)
         -> ended (devices on for `grace_min`) or overtime (presence after the end)
         -> free (devices off, HVAC to standby)
    awaiting_checkin -> released (no check-in within `no_show_release_min`,
                        unless the booking is invoiced) -> free

`Rooms` applies the phases: it releases no-shows (`booking.released`), bills
overtime in units once presence stops (`usage.room_overtime`), drives the
devices (on at check-in, off at the end, a device switched on in a room not in
use switched off again), publishes each room's state for its panel (retained)
and answers the panel's requests. It wakes at the next instant anything
changes, never on a polling tick. Everything it learns is written to the
store in the same transaction as its events, so a restart picks up where it
left, and a usage event is never sent twice nor lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from drivers.hvac import HvacUnit, ModbusHvacConfig
from drivers.mqtt_devices import MqttSwitch
from edge.access.cards import CardSpecError, parse_card_spec, pin_hmac
from edge.access.policy import Presentation, identify_at_panel
from edge.config import RoomConfig
from edge.mqtt.hass import Discovery
from edge.mqtt.topics import PANEL_OPS, subscription, topic
from edge.site.events import new_event_id
from edge.site.model import Booking, Room
from edge.site.sqlite import Many, SqlOp
from edge.timeutil import iso_instant

if TYPE_CHECKING:
    from edge.access.hardware import Hardware
    from edge.mqtt.link import MqttLink
    from edge.site.recorder import Recorder
    from edge.site.state import SiteState

log = logging.getLogger("edge.rooms")

Phase = Literal["free", "upcoming", "awaiting_checkin", "in_use", "ending", "ended", "overtime"]
ON_PHASES: frozenset[str] = frozenset({"in_use", "ending", "ended", "overtime"})
COMFORT_PHASES: frozenset[str] = ON_PHASES | {"upcoming", "awaiting_checkin"}
STATUS = {
    "free": "free",
    "upcoming": "free",
    "awaiting_checkin": "awaiting_checkin",
    "in_use": "busy",
    "ending": "busy",
    "ended": "busy",
    "overtime": "busy",
}
NEXT_WINDOW_S = 3600  # the panel shows the bookings of the next hour
RELEASE_LOOKBACK_S = 24 * 3600  # a no-show older than this is the cloud's business
MAX_REQUEST_BYTES = 4096
LONGEST_SLEEP_S = 3600.0  # re-evaluated at least this often, in case the clock jumped


# --- the pure part ------------------------------------------------------------------


@dataclass
class Facts:
    """What happened on site to one booking (the `booking_facts` table)."""

    booking: str
    room: str
    released_at: float | None = None
    ended_at: float | None = None  # ended early at the panel
    extended_to: float | None = None
    presence_at: float | None = None  # the last sign of presence after the end
    overtime_billed: bool = False


@dataclass(frozen=True, slots=True)
class Slot:
    """A booking as its room sees it: its effective times and what happened to it."""

    booking: Booking  # with the site's changes applied (end, status)
    checked_in: bool
    adhoc: bool
    ended_early: bool
    presence_at: float | None
    overtime_billed: bool

    @property
    def id(self) -> str:
        return self.booking.id

    @property
    def active(self) -> bool:
        return self.booking.status not in ("cancelled", "released")


@dataclass(frozen=True, slots=True)
class RoomNow:
    phase: Phase
    slot: Slot | None  # the booking the phase is about
    until: float | None  # when this phase ends, as far as is known now
    upcoming: tuple[Slot, ...]  # active bookings starting within the next hour
    wake_at: float | None  # the next instant the phase or the panel may change


def _hold_until(s: Slot, rc: RoomConfig, cap: float | None) -> float:
    """How long a checked-in booking keeps its room after its end: the grace
    period, extended by presence, never into the next booking."""
    end = s.booking.end
    if s.ended_early:
        return end
    last = max(end, s.presence_at or end)
    hold = last + 60 * rc.grace_min
    return hold if cap is None else min(hold, cap)


def overtime_minutes(s: Slot, rc: RoomConfig, cap: float | None) -> int:
    """Minutes billed for presence after the end, in whole units (0: none)."""
    if s.ended_early or s.presence_at is None or s.presence_at <= s.booking.end:
        return 0
    last = s.presence_at if cap is None else min(s.presence_at, cap)
    if last <= s.booking.end:
        return 0
    unit = 60 * rc.overtime_unit_min
    return math.ceil((last - s.booking.end) / unit) * rc.overtime_unit_min


def _cap(slots: list[Slot], i: int) -> float | None:
    """The start of the next active booking after slot i (overtime stops there)."""
    for later in slots[i + 1 :]:
        if later.active and later.booking.start >= slots[i].booking.start:
            return later.booking.opens
    return None


def evaluate(slots: list[Slot], rc: RoomConfig, now: float) -> RoomNow:
    """The room's phase at `now`. `slots`: its bookings, sorted by start."""
    active = [s for s in slots if s.active]
    phase: Phase = "free"
    current: Slot | None = None
    until: float | None = None
    wakes: list[float] = []

    def wake(t: float) -> None:
        if t > now:
            wakes.append(t)

    for i, s in enumerate(active):
        b = s.booking
        cap = _cap(active, i)
        hold = _hold_until(s, rc, cap) if s.checked_in else b.end
        for t in (b.start - 60 * rc.preconditioning_min, b.opens, b.release_at, b.end, hold):
            wake(t)
        wake(b.end - 60 * rc.ending_warning_min)
        if s.checked_in and now < b.end and (b.opens <= now or s.adhoc):
            warn = now >= b.end - 60 * rc.ending_warning_min
            phase, current, until = ("ending" if warn else "in_use"), s, b.end
            break
        if not s.checked_in and b.opens <= now < b.end and not b.released_at(now, False):
            if phase not in ("in_use", "ending"):
                phase, current, until = "awaiting_checkin", s, b.release_at
            continue
        if s.checked_in and not s.ended_early and b.end <= now < hold:
            if phase == "free" or phase == "upcoming":
                over = s.presence_at is not None and s.presence_at > b.end
                phase, current, until = ("overtime" if over else "ended"), s, hold
            continue
        if b.start - 60 * rc.preconditioning_min <= now < b.opens and phase == "free":
            phase, current, until = "upcoming", s, b.opens
    upcoming = tuple(
        s for s in active if now <= s.booking.start <= now + NEXT_WINDOW_S and s is not current
    )
    if phase in ("in_use", "ending", "awaiting_checkin", "upcoming"):
        wake(math.floor(now / 60) * 60 + 60)  # minutes left on the panel
    for s in active:
        wake(s.booking.start - NEXT_WINDOW_S)  # comes into the panel's next hour
    return RoomNow(phase, current, until, upcoming, min(wakes) if wakes else None)


def due_releases(slots: Iterable[Slot], now: float) -> list[Slot]:
    """Confirmed, not invoiced bookings nobody checked into in time."""
    return [
        s
        for s in slots
        if s.active
        and not s.checked_in
        and s.booking.released_at(now, False)
        and now - s.booking.release_at < RELEASE_LOOKBACK_S
    ]


def due_overtime(slots: list[Slot], rc: RoomConfig, now: float) -> list[tuple[Slot, int]]:
    """Overtime whose presence has stopped (the hold is over), not yet billed."""
    out = []
    active = [s for s in slots if s.active]
    for i, s in enumerate(active):
        if not s.checked_in or s.overtime_billed or s.presence_at is None:
            continue
        cap = _cap(active, i)
        if now >= _hold_until(s, rc, cap):
            minutes = overtime_minutes(s, rc, cap)
            if minutes:
                out.append((s, minutes))
    return out


def credits_for(minutes: int, per_hour: int) -> int:
    return math.ceil(minutes * per_hour / 60)


# --- the controller ------------------------------------------------------------------


class DoorSide(Protocol):
    """What the rooms need from access (the access service is one): the site's
    PIN key for panel PINs, the hardware's Modbus buses for HVAC units, and
    check-ins made at a panel recorded like those made at the door."""

    pin_key: bytes | None
    hardware: Hardware | None

    def check_in(
        self, booking_id: str, room: str, holder: str, door: str | None, at: float, via: str
    ) -> asyncio.Future[int]: ...


class PanelError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RoomRuntime:
    room: Room
    rc: RoomConfig
    switches: list[MqttSwitch]
    hvac: list[HvacUnit]
    now: RoomNow | None = None
    published: str | None = None
    switched_off: int = 0  # devices switched off again because the room was not in use


class Rooms:
    def __init__(
        self, site: SiteState, recorder: Recorder, access: DoorSide, link: MqttLink
    ) -> None:
        self.site = site
        self.recorder = recorder
        self.access = access
        self.config = site.config
        self.link = link
        self.site_id = site.config.site.id
        self.rooms: dict[str, RoomRuntime] = {}
        self.facts: dict[str, Facts] = {}
        self.adhoc: dict[str, Booking] = {}
        self.switches: dict[str, MqttSwitch] = {}
        self.hvac: dict[str, HvacUnit] = {}
        self.by_door: dict[str, str] = {}
        self.credits_spent: dict[str, int] = {}  # holder or "company:<id>": not yet in the cloud's
        self.wifi: dict[str, str] | None = None
        self._devices_published: dict[str, bytes] = {}
        self._by_room: dict[str, list[Booking]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.discovery: Discovery | None = None
        if self.config.homeassistant.discovery:
            self.discovery = Discovery(site, link)

    # --- lifecycle ----------------------------------------------------------------------

    def build(self) -> None:
        """Create the devices and subscribe their topics; before the link starts."""
        cfg = self.config
        for name, dc in cfg.devices.items():
            if isinstance(dc, ModbusHvacConfig):
                hw = self.access.hardware
                bus = hw.modbus.get(dc.bus) if hw is not None else None
                if bus is None:
                    log.error("%s: bus %r is not a Modbus bus; HVAC unit not driven", name, dc.bus)
                    continue
                self.hvac[name] = HvacUnit(name, dc, bus, self._hvac_changed)
            else:
                sw = MqttSwitch(name, dc, self.link, self._switch_state, self._device_changed)
                self.switches[name] = sw
                for t in sw.subscriptions():
                    self.link.subscribe(t, sw.message)
        self.link.subscribe(subscription("room_request", site=self.site_id), self._on_request)
        self.link.on_connect(self._connected)

    async def start(self) -> None:
        store = self.site.store
        for row in await store.fetchall(
            "SELECT booking, room, released_at, ended_at, extended_to, presence_at, "
            "overtime_billed FROM booking_facts"
        ):
            self.facts[row[0]] = Facts(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))
        for bid, room, member, start, end in await store.fetchall(
            "SELECT id, room, member, start, end FROM room_bookings"
        ):
            self.adhoc[bid] = _adhoc_booking(bid, room, member, start, end, None)
            self.site.state.checked_in.add(bid)
        for holder, credits in await store.fetchall(
            "SELECT holder, SUM(credits) FROM credit_uses WHERE reflected = 0 GROUP BY holder"
        ):
            self.credits_spent[holder] = int(credits)
        for unit in self.hvac.values():
            await unit.start()
        self.index_changed()
        self._task = asyncio.create_task(self._clock(), name="rooms.clock")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sw in self.switches.values():
            sw.stop()
        for unit in self.hvac.values():
            await unit.stop()

    # --- the site -----------------------------------------------------------------------

    def index_changed(self) -> None:
        """The bookings or rooms changed (import, changes, a check-in): regroup, re-evaluate."""
        ix = self.site.index
        cfg = self.config
        by_room: dict[str, list[Booking]] = {}
        for b in ix.bookings.values():
            by_room.setdefault(b.room, []).append(b)
        for b in self.adhoc.values():
            if b.id not in ix.bookings:
                room = ix.rooms.get(b.room)
                door = room.door if room is not None else None
                by_room.setdefault(b.room, []).append(replace(b, door=door))
        self._by_room = by_room
        rooms: dict[str, RoomRuntime] = {}
        for rid, room in ix.rooms.items():
            old = self.rooms.get(rid)
            rt = RoomRuntime(
                room,
                cfg.rooms.get(rid, RoomConfig()),
                [s for s in self.switches.values() if s.room == rid],
                [u for u in self.hvac.values() if u.cfg.room == rid],
            )
            if old is not None:
                rt.now, rt.published, rt.switched_off = old.now, old.published, old.switched_off
            rooms[rid] = rt
        if ix.loaded:
            for rid in cfg.rooms:
                if rid not in ix.rooms and rid not in self.rooms:
                    log.warning(
                        "rooms: [rooms.%s] is configured but the site has no such room", rid
                    )
        changed = set(rooms) != set(self.rooms)
        self.rooms = rooms
        if changed and self.discovery is not None and self.link.connected:
            self.discovery.publish()
        self.by_door = {r.room.door: rid for rid, r in rooms.items() if r.room.door}
        self._overrides()
        self.refresh()

    def _overrides(self) -> None:
        """The bookings as changed on site, for the access policy."""
        st, ix = self.site.state, self.site.index
        overrides: dict[str, Booking] = {}
        for f in self.facts.values():
            b = ix.bookings.get(f.booking) or self.adhoc.get(f.booking)
            if b is None:
                continue
            changed = _changed(b, f, released=False)
            if changed is not b:
                overrides[b.id] = changed
        by_holder: dict[str, list[Booking]] = {}
        for b in self.adhoc.values():
            if b.id in ix.bookings:
                continue
            room = ix.rooms.get(b.room)
            eff = replace(overrides.pop(b.id, b), door=room.door if room else None)
            for h in b.holders:
                by_holder.setdefault(h, []).append(eff)
        st.booking_overrides = overrides
        st.adhoc_by_holder = {h: tuple(v) for h, v in by_holder.items()}

    def slots(self, room_id: str) -> list[Slot]:
        st = self.site.state
        out = []
        for b in self._by_room.get(room_id, ()):
            f = self.facts.get(b.id)
            eff = _changed(b, f, released=True) if f is not None else b
            out.append(
                Slot(
                    eff,
                    b.id in st.checked_in or b.status == "checked_in",
                    b.id in self.adhoc,
                    f is not None and f.ended_at is not None,
                    f.presence_at if f is not None else None,
                    f is not None and f.overtime_billed,
                )
            )
        out.sort(key=lambda s: (s.booking.start, s.id))
        return out

    # --- the clock ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-evaluate every room now (cheap: a few bookings per room)."""
        self._wake.set()

    async def _clock(self) -> None:
        while True:
            self._wake.clear()
            try:
                next_at = self._evaluate_all(time.time())
            except Exception:
                log.exception("rooms: evaluation failed; retrying in 5 s")
                next_at = time.time() + 5
            delay = LONGEST_SLEEP_S if next_at is None else max(0.0, next_at - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(delay, LONGEST_SLEEP_S) + 0.001)

    def _evaluate_all(self, now: float) -> float | None:
        events: list[dict[str, Any]] = []
        ops: list[SqlOp] = []
        wake: float | None = None
        for rid, rt in self.rooms.items():
            slots = self.slots(rid)
            for s in due_releases(slots, now):
                self._release(rt, s, now, events, ops)
            for s, minutes in due_overtime(slots, rt.rc, now):
                self._bill_overtime(rt, s, minutes, now, events, ops)
            if events:
                slots = self.slots(rid)
            current = evaluate(slots, rt.rc, now)
            self._enter(rt, current)
            if current.wake_at is not None and (wake is None or current.wake_at < wake):
                wake = current.wake_at
        if events or ops:
            self._overrides()
            self.recorder.record(events, ops)
        return wake

    def _release(
        self, rt: RoomRuntime, s: Slot, now: float, events: list[dict[str, Any]], ops: list[SqlOp]
    ) -> None:
        f = self._facts(s.id, rt.room.id)
        f.released_at = now
        b = s.booking
        log.info("rooms: %s: booking %s released: nobody checked in", rt.room.id, b.id)
        tz = self.site.index.tz
        events.append(
            self._event(
                rt,
                "booking.released",
                now,
                b.member,
                b.id,
                start=iso_instant(b.start, tz),
                release_at=iso_instant(b.release_at, tz),
            )
        )
        ops.append(_facts_op(f))

    def _bill_overtime(
        self,
        rt: RoomRuntime,
        s: Slot,
        minutes: int,
        now: float,
        events: list[dict[str, Any]],
        ops: list[SqlOp],
    ) -> None:
        f = self._facts(s.id, rt.room.id)
        f.overtime_billed = True
        b = s.booking
        tz = self.site.index.tz
        log.info("rooms: %s: booking %s ran %d min over", rt.room.id, b.id, minutes)
        events.append(
            self._event(
                rt,
                "usage.room_overtime",
                now,
                b.member,
                b.id,
                minutes=minutes,
                unit_min=rt.rc.overtime_unit_min,
                end=iso_instant(b.end, tz),
                last_presence=iso_instant(s.presence_at or b.end, tz),
            )
        )
        ops.append(_facts_op(f))

    def _event(
        self, rt: RoomRuntime, type_: str, at: float, holder: str, booking: str, **details: Any
    ) -> dict[str, Any]:
        """An event about a booking of this room, at its door, not yet recorded."""
        return self.recorder.event(
            type_,
            at,
            door=rt.room.door,
            holder=holder,
            details={"booking": booking, "room": rt.room.id, **details},
        )

    def _facts(self, booking: str, room: str) -> Facts:
        f = self.facts.get(booking)
        if f is None:
            f = self.facts[booking] = Facts(booking, room)
        return f

    def _enter(self, rt: RoomRuntime, now: RoomNow) -> None:
        """Apply a room's phase to its devices, and its state to the panel."""
        before = rt.now
        rt.now = now
        on = now.phase in ON_PHASES
        was_on = before.phase in ON_PHASES if before is not None else None
        if was_on != on:
            if before is not None:
                log.info(
                    "rooms: %s: %s -> %s%s",
                    rt.room.id,
                    before.phase,
                    now.phase,
                    f" (booking {now.slot.id})" if now.slot else "",
                )
            for sw in rt.switches:
                if not sw.cfg.follows_booking:
                    continue
                if on or not rt.rc.free_use or was_on:
                    sw.want(on)
        elif before is not None and before.phase != now.phase:
            log.info("rooms: %s: %s -> %s", rt.room.id, before.phase, now.phase)
        comfort = now.phase in COMFORT_PHASES
        for unit in rt.hvac:
            unit.want("comfort" if comfort else "standby")
        self._publish_room(rt)

    # --- presence and devices -----------------------------------------------------------

    def door_used(self, door: str, at: float) -> None:
        """A card or PIN at a room's door, granted or not: presence (overtime after the end)."""
        rid = self.by_door.get(door)
        if rid is not None:
            self._presence(rid, at, "door")

    def _presence(self, rid: str, at: float, what: str) -> None:
        rt = self.rooms.get(rid)
        if rt is None or rt.now is None:
            return
        current = evaluate(self.slots(rid), rt.rc, at)
        if current.phase not in ("ended", "overtime") or current.slot is None:
            return
        f = self._facts(current.slot.id, rid)
        f.presence_at = at
        if current.phase == "ended":
            log.info("rooms: %s: presence after the end (%s): overtime", rid, what)
        self.recorder.record([], [_facts_op(f)])
        self.refresh()

    def _switch_state(self, sw: MqttSwitch, on: bool, manual: bool) -> None:
        rt = self.rooms.get(sw.room)
        if rt is None or rt.now is None or not sw.cfg.follows_booking:
            return
        phase = rt.now.phase
        if phase in ON_PHASES:
            sw.accept(on)
            if on and manual and phase in ("ended", "overtime"):
                self._presence(sw.room, time.time(), f"{sw.name} switched on")
            return
        if on and not rt.rc.free_use:
            rt.switched_off += 1
            log.warning(
                "rooms: %s: %s switched on while the room is %s; switching it off",
                sw.room,
                sw.name,
                phase,
            )
            sw.want(False)
        elif rt.rc.free_use:
            sw.accept(on)

    def _device_changed(self, sw: MqttSwitch) -> None:
        body = _dumps({**sw.view(), "room": sw.room})
        if self._devices_published.get(sw.name) == body:
            return  # Tasmota confirms twice (RESULT and POWER): publish once
        self._devices_published[sw.name] = body
        self.link.publish(
            topic("device_state", site=self.site_id, device=sw.name), body, retain=True
        )
        rt = self.rooms.get(sw.room)
        if rt is not None:
            self._publish_room(rt)

    def _hvac_changed(self, unit: HvacUnit) -> None:
        body = _dumps({**unit.view(), "room": unit.cfg.room})
        if self._devices_published.get(unit.name) == body:
            return
        self._devices_published[unit.name] = body
        self.link.publish(
            topic("device_state", site=self.site_id, device=unit.name), body, retain=True
        )
        rt = self.rooms.get(unit.cfg.room)
        if rt is not None:
            self._publish_room(rt)

    def _connected(self) -> None:
        """The broker is (back): republish retained state, ask devices theirs."""
        self._devices_published.clear()
        for rt in self.rooms.values():
            rt.published = None
            self._publish_room(rt)
        for sw in self.switches.values():
            sw.connected()
            self._device_changed(sw)
        if self.discovery is not None:
            self.discovery.publish()

    # --- the panel ----------------------------------------------------------------------

    def room_state(self, rt: RoomRuntime) -> dict[str, Any]:
        tz = self.site.index.tz
        now = rt.now
        state: dict[str, Any] = {"room": rt.room.id, "name": rt.room.name}
        if now is None:
            return {**state, "state": "free", "status": "free"}
        t = time.time()
        state["state"] = now.phase
        state["status"] = STATUS[now.phase]
        if now.slot is not None:
            b = now.slot.booking
            state["booking"] = {
                "id": b.id,
                "start": iso_instant(b.start, tz),
                "end": iso_instant(b.end, tz),
                "checked_in": now.slot.checked_in,
                "adhoc": now.slot.adhoc,
            }
            if now.phase in ("in_use", "ending"):
                state["minutes_left"] = max(0, math.ceil((b.end - t) / 60))
            if now.phase == "awaiting_checkin":
                state["release_in_min"] = max(0, math.ceil((b.release_at - t) / 60))
        state["warning"] = now.phase == "ending"
        state["next"] = [
            {
                "id": s.id,
                "start": iso_instant(s.booking.start, tz),
                "end": iso_instant(s.booking.end, tz),
            }
            for s in now.upcoming
        ]
        state["devices"] = {
            **{sw.name: {"on": sw.on, "available": sw.available} for sw in rt.switches},
            **{u.name: {"confirmed": u.confirmed, "available": u.available} for u in rt.hvac},
        }
        if self.wifi is not None:
            state["wifi"] = self.wifi
        return state

    def _publish_room(self, rt: RoomRuntime) -> None:
        body = _dumps(self.room_state(rt))
        text = body.decode()
        if text == rt.published:
            return
        rt.published = text
        self.link.publish(
            topic("room_state", site=self.site_id, room=rt.room.id), body, retain=True
        )

    def set_wifi(self, wifi: dict[str, str] | None) -> None:
        self.wifi = wifi
        for rt in self.rooms.values():
            self._publish_room(rt)

    def _on_request(self, t: str, payload: bytes) -> None:
        parts = t.split("/")  # edge/<site>/rooms/<room>/request/<op>
        rid, op = parts[3], parts[5]
        tx: object = None
        try:
            if len(payload) > MAX_REQUEST_BYTES:
                raise PanelError("bad_request", f"request of {len(payload)} bytes is too large")
            try:
                body = json.loads(payload) if payload.strip() else {}
            except ValueError as exc:
                raise PanelError("bad_request", f"not JSON: {exc}") from None
            if not isinstance(body, dict):
                raise PanelError("bad_request", "the request must be a JSON object")
            tx = body.get("transaction")
            if tx is not None and not isinstance(tx, (str, int)):
                tx = None
                raise PanelError("bad_request", "transaction: must be a string or a number")
            if op not in PANEL_OPS:
                raise PanelError(
                    "bad_request",
                    f"unknown request {op!r} (expected one of: {', '.join(PANEL_OPS)})",
                )
            rt = self.rooms.get(rid)
            if rt is None:
                raise PanelError("unknown_room", f"no room {rid!r} on this site")
            result = self._handle(rt, op, body)
        except PanelError as exc:
            log.warning("rooms: %s: panel %s refused: %s: %s", rid, op, exc.code, exc)
            self._respond(rid, op, tx, error=exc)
            return
        if isinstance(result, asyncio.Future):
            fut: asyncio.Future[dict[str, Any]] = result

            async def when_durable() -> None:
                try:
                    data = await fut
                except PanelError as exc:
                    self._respond(rid, op, tx, error=exc)
                else:
                    self._respond(rid, op, tx, data=data)

            task = asyncio.create_task(when_durable(), name=f"rooms[{rid}].{op}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._respond(rid, op, tx, data=result)

    def _respond(
        self,
        rid: str,
        op: str,
        tx: object,
        data: dict[str, Any] | None = None,
        error: PanelError | None = None,
    ) -> None:
        body: dict[str, Any] = {"transaction": tx, "status": "ok" if error is None else "error"}
        body["data"] = data or {}
        if error is not None:
            body["error"] = error.code
            body["message"] = str(error)
        self.link.publish(topic("room_response", site=self.site_id, room=rid, op=op), _dumps(body))

    def _who(self, body: dict[str, Any], at: float) -> str:
        """The holder behind the card or PIN, decided by the gateway's own index."""
        ix = self.site.index
        cards: tuple[str, ...] = ()
        digest = None
        card, pin = body.get("card"), body.get("pin")
        if card is None and pin is None:
            raise PanelError("not_authorised", "show a card or type a PIN")
        if card is not None:
            if not isinstance(card, str):
                raise PanelError("bad_request", "card: must be a string like H10301:12:3456")
            try:
                cards = (parse_card_spec(card),)
            except CardSpecError as exc:
                raise PanelError("bad_request", f"card: {exc}") from None
        if pin is not None:
            if not isinstance(pin, str) or not pin.isdigit() or not pin.isascii() or len(pin) > 12:
                raise PanelError("bad_request", "pin: must be a string of up to 12 digits")
            if self.access.pin_key is None:
                raise PanelError("not_authorised", "PIN entry is not set up on this gateway")
            digest = pin_hmac(self.access.pin_key, pin)
        holder, denial = identify_at_panel(
            ix, self.site.state, Presentation("(panel)", at, cards, digest)
        )
        if holder is None or denial is not None:
            raise PanelError("not_authorised", f"not recognised or not allowed ({denial})")
        return holder.id

    def _handle(
        self, rt: RoomRuntime, op: str, body: dict[str, Any]
    ) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        now = time.time()
        if not self.site.index.loaded:
            raise PanelError("not_ready", "no site loaded yet")
        self._presence(rt.room.id, now, f"panel {op}")
        if op == "activity":
            return {"state": self.room_state(rt)}
        holder = self._who(body, now)
        current = evaluate(self.slots(rt.room.id), rt.rc, now)
        if op == "check_in":
            return self._check_in(rt, current, holder, now)
        if op == "end":
            return self._end(rt, current, holder, now)
        minutes = _minutes(body, rt.rc)
        if op == "book":
            if current.phase not in ("free", "upcoming"):
                raise PanelError("room_busy", f"the room is {current.phase.replace('_', ' ')}")
            return self._book(rt, holder, minutes, now)
        return self._extend(rt, current, holder, minutes, now)

    def _check_in(
        self, rt: RoomRuntime, current: RoomNow, holder: str, now: float
    ) -> dict[str, Any]:
        s = current.slot
        if current.phase != "awaiting_checkin" or s is None:
            if current.phase in ON_PHASES and s is not None and holder in s.booking.holders:
                return {"booking": s.id, "already": True}
            raise PanelError("no_booking", "no booking of this room is waiting for a check-in")
        if holder not in s.booking.holders:
            raise PanelError("not_authorised", "you are not on this booking")
        self.access.check_in(s.id, rt.room.id, holder, rt.room.door, now, via="panel")
        return {"booking": s.id}

    def _end(self, rt: RoomRuntime, current: RoomNow, holder: str, now: float) -> dict[str, Any]:
        s = current.slot
        if current.phase not in ("in_use", "ending") or s is None:
            raise PanelError("no_booking", "no booking of this room is in use")
        if holder not in s.booking.holders:
            raise PanelError("not_authorised", "you are not on this booking")
        f = self._facts(s.id, rt.room.id)
        f.ended_at = now
        tz = self.site.index.tz
        ev = self._event(
            rt,
            "booking.ended_early",
            now,
            holder,
            s.id,
            end=iso_instant(now, tz),
            planned_end=iso_instant(s.booking.end, tz),
        )
        self.recorder.record([ev], [_facts_op(f)])
        self._overrides()
        self.refresh()
        return {"booking": s.id, "end": iso_instant(now, tz)}

    def _free(self, rt: RoomRuntime, start: float, end: float, skip: str | None = None) -> None:
        for s in self.slots(rt.room.id):
            if not s.active or s.id == skip or (s.ended_early and s.booking.end <= start):
                continue
            b = s.booking
            if b.start < end and start < b.end:
                raise PanelError(
                    "room_busy",
                    f"booked from {iso_instant(b.start, self.site.index.tz)} "
                    f"to {iso_instant(b.end, self.site.index.tz)}",
                )

    def _pay(
        self, rt: RoomRuntime, holder: str, minutes: int, booking: str, reason: str, at: float
    ) -> tuple[list[dict[str, Any]], list[SqlOp], dict[str, Any]]:
        """Credits for `minutes` of this room, from the member's own, else the company's."""
        credits = credits_for(minutes, rt.room.credits_per_hour)
        if credits == 0:
            return [], [], {"credits": 0}
        ix = self.site.index
        h = ix.holders[holder]
        if h.kind == "guest":
            raise PanelError("not_authorised", "guests cannot book rooms")
        own = h.credits - self.credits_spent.get(holder, 0)
        source, company, key = "member", None, holder
        if own < credits:
            c = ix.companies.get(h.company) if h.company else None
            key = f"company:{c.id}" if c else ""
            if (
                c is None
                or not c.billing.allows(at)
                or c.credits - self.credits_spent.get(key, 0) < credits
            ):
                raise PanelError(
                    "no_credits", f"{credits} credit(s) needed, {max(own, 0)} available"
                )
            source, company = "company", c.id
        self.credits_spent[key] = self.credits_spent.get(key, 0) + credits
        extra = {} if company is None else {"company": company}
        ev = self._event(
            rt,
            "usage.credits",
            at,
            holder,
            booking,
            credits=credits,
            minutes=minutes,
            reason=reason,
            source=source,
            **extra,
        )
        op: SqlOp = (
            "INSERT INTO credit_uses (event_id, holder, company, credits, at) VALUES (?,?,?,?,?)",
            (ev["id"], key, company, credits, at),
        )
        return [ev], [op], {"credits": credits, "paid_by": source}

    def _book(
        self, rt: RoomRuntime, holder: str, minutes: int, now: float
    ) -> asyncio.Future[dict[str, Any]]:
        start = now
        end = now + 60 * minutes
        self._free(rt, start, end)
        bid = f"adhoc-{new_event_id()}"
        events, ops, paid = self._pay(rt, holder, minutes, bid, "book", now)
        tz = self.site.index.tz
        booking = _adhoc_booking(bid, rt.room.id, holder, start, end, rt.room.door)
        self.adhoc[bid] = booking
        self.site.state.checked_in.add(bid)
        created = self._event(
            rt,
            "booking.created",
            now,
            holder,
            bid,
            start=iso_instant(start, tz),
            end=iso_instant(end, tz),
            minutes=minutes,
            checked_in=True,
            **paid,
        )
        ops += [
            (
                "INSERT INTO room_bookings (id, room, member, start, end, created) "
                "VALUES (?,?,?,?,?,?)",
                (bid, rt.room.id, holder, start, end, now),
            ),
            (
                "INSERT OR IGNORE INTO booking_checkins (booking, holder, at) VALUES (?,?,?)",
                (bid, holder, now),
            ),
        ]
        done = self.recorder.record([created, *events], ops)
        log.info("rooms: %s: booked at the panel for %d min (%s)", rt.room.id, minutes, bid)
        self.index_changed()
        data = {
            "booking": bid,
            "start": iso_instant(start, tz),
            "end": iso_instant(end, tz),
            **paid,
        }
        return _after(done, data)

    def _extend(
        self, rt: RoomRuntime, current: RoomNow, holder: str, minutes: int, now: float
    ) -> asyncio.Future[dict[str, Any]]:
        s = current.slot
        if current.phase not in ON_PHASES or s is None:
            raise PanelError("no_booking", "no booking of this room is in use")
        if holder not in s.booking.holders:
            raise PanelError("not_authorised", "you are not on this booking")
        old_end = s.booking.end
        new_end = max(old_end, now) + 60 * minutes
        self._free(rt, old_end, new_end, skip=s.id)
        events, ops, paid = self._pay(rt, holder, minutes, s.id, "extend", now)
        f = self._facts(s.id, rt.room.id)
        f.extended_to = new_end
        if f.presence_at is not None and f.presence_at < new_end:
            f.presence_at = None  # the time after the old end is paid for now
        tz = self.site.index.tz
        if events:
            events[0]["details"]["end"] = iso_instant(new_end, tz)
        ops.append(_facts_op(f))
        done = self.recorder.record(events, ops)
        self._overrides()
        self.refresh()
        return _after(done, {"booking": s.id, "end": iso_instant(new_end, tz), **paid})

    # --- credits ------------------------------------------------------------------------

    async def reconcile_credits(
        self, fetched_at: float, holders: set[str] | None, companies: set[str] | None
    ) -> None:
        """Credits spent here stop being subtracted once the cloud's balance counts them:
        the event was accepted, and a document fetched after that has arrived."""
        if holders is not None and not holders and not companies:
            return
        rows = await self.site.store.fetchall(
            "SELECT u.event_id, u.holder, u.credits FROM credit_uses u "
            "LEFT JOIN outbox o ON o.id = u.event_id WHERE u.reflected = 0 "
            "AND (o.id IS NULL OR (o.state = 'delivered' AND o.delivered < ?))",
            (fetched_at,),
        )
        done = []
        for event_id, key, credits in rows:
            if holders is not None:
                company = key.removeprefix("company:") if key.startswith("company:") else None
                if not (key in holders or (company is not None and company in (companies or ()))):
                    continue
            done.append((event_id,))
            left = self.credits_spent.get(key, 0) - int(credits)
            if left > 0:
                self.credits_spent[key] = left
            else:
                self.credits_spent.pop(key, None)
        if done:
            await self.site.store.write(
                [("UPDATE credit_uses SET reflected = 1 WHERE event_id = ?", Many(done))]
            )

    # --- status -------------------------------------------------------------------------

    def view(self) -> list[dict[str, Any]]:
        out = []
        for rt in self.rooms.values():
            state = self.room_state(rt)
            state.pop("wifi", None)
            state["switched_off"] = rt.switched_off
            state["devices"] = {
                **{sw.name: sw.view() for sw in rt.switches},
                **{u.name: u.view() for u in rt.hvac},
            }
            out.append(state)
        return out


def _minutes(body: dict[str, Any], rc: RoomConfig) -> int:
    minutes = body.get("minutes", 30)
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        raise PanelError("bad_request", "minutes: must be a whole number")
    if not 5 <= minutes <= rc.max_panel_booking_min:
        raise PanelError(
            "bad_request", f"minutes: must be between 5 and {rc.max_panel_booking_min}"
        )
    return minutes


def _changed(b: Booking, f: Facts, released: bool) -> Booking:
    """The booking as the site changed it. `released`: with a release as its status
    (for the room); the access policy works a release out from the time itself, so
    a dry run at an instant before the release still sees the booking."""
    if released and f.released_at is not None and b.status == "confirmed":
        return replace(b, status="released")
    end = b.end
    if f.extended_to is not None:
        end = max(end, f.extended_to)
    if f.ended_at is not None:
        end = min(end, f.ended_at)
    return b if end == b.end else replace(b, end=end)


def _adhoc_booking(
    bid: str, room: str, member: str, start: float, end: float, door: str | None
) -> Booking:
    return Booking(
        id=bid,
        room=room,
        door=door,
        member=member,
        holders=frozenset({member}),
        start=start,
        end=end,
        opens=start,
        release_at=start,
        status="checked_in",
        invoiced=False,
    )


def _facts_op(f: Facts) -> SqlOp:
    return (
        "INSERT OR REPLACE INTO booking_facts (booking, room, released_at, ended_at, "
        "extended_to, presence_at, overtime_billed) VALUES (?,?,?,?,?,?,?)",
        (
            f.booking,
            f.room,
            f.released_at,
            f.ended_at,
            f.extended_to,
            f.presence_at,
            int(f.overtime_billed),
        ),
    )


def _after(done: asyncio.Future[int], data: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
    """The panel hears of a paid booking once its usage is durable."""
    out: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def finished(f: asyncio.Future[int]) -> None:
        if out.done():
            return
        exc = f.exception() if not f.cancelled() else None
        if f.cancelled() or exc is not None:
            out.set_exception(PanelError("failed", f"could not record the booking: {exc}"))
        else:
            out.set_result(data)

    done.add_done_callback(finished)
    return out


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
