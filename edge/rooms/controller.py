"""The room controller: meeting rooms that follow their bookings.

`Rooms` applies the phases of `phases.py`: it releases no-shows
(`booking.released`), bills overtime in units once presence stops
(`usage.room_overtime`), drives the devices (on at check-in, off at the end, a
device switched on in a room not in use switched off again) and publishes
each room's state for its panel (retained); the panels' requests are
`panels.py`'s. It wakes at the next instant anything changes, never on a
polling tick. Everything it learns is written to the store in the same
transaction as its events, so a restart picks up where it left, and a usage
event is never sent twice nor lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from drivers.hvac import HvacUnit, ModbusHvacConfig
from drivers.mqtt_devices import MqttSwitch
from edge.config import RoomConfig
from edge.mqtt.hass import Discovery
from edge.mqtt.topics import topic
from edge.rooms.phases import (
    COMFORT_PHASES,
    ON_PHASES,
    STATUS,
    Facts,
    RoomNow,
    Slot,
    due_overtime,
    due_releases,
    evaluate,
)
from edge.site.model import Booking, Room
from edge.site.sqlite import SqlOp
from edge.timeutil import iso_instant

if TYPE_CHECKING:
    from edge.access.hardware import Hardware
    from edge.mqtt.link import MqttLink
    from edge.site.recorder import Recorder
    from edge.site.state import SiteState

log = logging.getLogger("edge.rooms")

LONGEST_SLEEP_S = 3600.0  # re-evaluated at least this often, in case the clock jumped


class DoorSide(Protocol):
    """What the rooms need from access (the access service is one): the site's
    PIN key for panel PINs, the hardware's Modbus buses for HVAC units, and
    check-ins made at a panel recorded like those made at the door."""

    pin_key: bytes | None
    hardware: Hardware | None

    def check_in(
        self, booking_id: str, room: str, holder: str, door: str | None, at: float, via: str
    ) -> asyncio.Future[int]: ...


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
        self.wifi: dict[str, str] | None = None
        self._devices_published: dict[str, bytes] = {}
        self._by_room: dict[str, list[Booking]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Told (room id, panel state) whenever a room's panel state changes: the web panels.
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []
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
            self.adhoc[bid] = adhoc_booking(bid, room, member, start, end, None)
            self.site.state.checked_in.add(bid)
        for unit in self.hvac.values():
            await unit.start()
        self.index_changed()
        self._task = asyncio.create_task(self._clock(), name="rooms.clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
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
        self.apply_overrides()
        self.refresh()

    def apply_overrides(self) -> None:
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
            self.apply_overrides()
            self.recorder.record(events, ops)
        return wake

    def _release(
        self, rt: RoomRuntime, s: Slot, now: float, events: list[dict[str, Any]], ops: list[SqlOp]
    ) -> None:
        f = self.facts_of(s.id, rt.room.id)
        f.released_at = now
        b = s.booking
        log.info("rooms: %s: booking %s released: nobody checked in", rt.room.id, b.id)
        tz = self.site.index.tz
        events.append(
            self.booking_event(
                rt,
                "booking.released",
                now,
                b.member,
                b.id,
                start=iso_instant(b.start, tz),
                release_at=iso_instant(b.release_at, tz),
            )
        )
        ops.append(facts_op(f))

    def _bill_overtime(
        self,
        rt: RoomRuntime,
        s: Slot,
        minutes: int,
        now: float,
        events: list[dict[str, Any]],
        ops: list[SqlOp],
    ) -> None:
        f = self.facts_of(s.id, rt.room.id)
        f.overtime_billed = True
        b = s.booking
        tz = self.site.index.tz
        log.info("rooms: %s: booking %s ran %d min over", rt.room.id, b.id, minutes)
        events.append(
            self.booking_event(
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
        ops.append(facts_op(f))

    def booking_event(
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

    def facts_of(self, booking: str, room: str) -> Facts:
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
            self.presence(rid, at, "door")

    def door_moved(self, door: str, what: str, at: float) -> None:
        """A room door's contact opened or its exit button was pressed: someone is still
        there, so an overtime goes on; but people leave through the door at the end too,
        so this alone never starts an overtime (nor does anything in a free room)."""
        rid = self.by_door.get(door)
        if rid is not None:
            self.presence(rid, at, what, starts_overtime=False)

    def presence(self, rid: str, at: float, what: str, starts_overtime: bool = True) -> None:
        rt = self.rooms.get(rid)
        if rt is None or rt.now is None:
            return
        current = evaluate(self.slots(rid), rt.rc, at)
        if current.phase not in ("ended", "overtime") or current.slot is None:
            return
        if current.phase == "ended" and not starts_overtime:
            log.debug("rooms: %s: %s after the end: leaving, not overtime", rid, what)
            return
        if current.phase == "overtime":
            log.debug("rooms: %s: presence in overtime (%s)", rid, what)
        f = self.facts_of(current.slot.id, rid)
        f.presence_at = at
        if current.phase == "ended":
            log.info("rooms: %s: presence after the end (%s): overtime", rid, what)
        self.recorder.record([], [facts_op(f)])
        self.refresh()

    def _switch_state(self, sw: MqttSwitch, on: bool, manual: bool) -> None:
        rt = self.rooms.get(sw.room)
        if rt is None or rt.now is None or not sw.cfg.follows_booking:
            return
        phase = rt.now.phase
        if phase in ON_PHASES:
            sw.accept(on)
            if on and manual and phase in ("ended", "overtime"):
                self.presence(sw.room, time.time(), f"{sw.name} switched on")
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
        body = dumps({**sw.view(), "room": sw.room})
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
        body = dumps({**unit.view(), "room": unit.cfg.room})
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
        state = self.room_state(rt)
        body = dumps(state)
        text = body.decode()
        if text == rt.published:
            return
        rt.published = text
        for observer in self.observers:
            observer(rt.room.id, state)
        self.link.publish(
            topic("room_state", site=self.site_id, room=rt.room.id), body, retain=True
        )

    def set_wifi(self, wifi: dict[str, str] | None) -> None:
        self.wifi = wifi
        for rt in self.rooms.values():
            self._publish_room(rt)

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


def adhoc_booking(
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


def facts_op(f: Facts) -> SqlOp:
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


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
