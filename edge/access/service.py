"""The access service: presentations to decisions, decisions to door commands
and records; schedules, lockdowns and the offline policy to the doors.

Decisions are taken on the event loop with no await between `decide` and
applying its effects, so two badges can never both consume the last pass.
Usage events (what the cloud bills) are awaited until durable before the
door opens; when the disk refuses them, the door still follows its decision
(taken from memory) and the records are NOT RECORDED. The service owns the
hardware (readers, buses) and the door controllers; it reads the site from
`SiteState` and records through the `Recorder`. Rooms hear of presence at
their doors through `RoomHooks`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from drivers.wiegand import Presented
from edge.access.cards import pin_hmac
from edge.access.doors import Doors
from edge.access.hardware import Hardware, ReaderPort
from edge.access.policy import Decision, Presentation, decide, door_unlocked
from edge.config import Config
from edge.secrets import SecretError, load_pin_key
from edge.site.clock import CLOCK_TOLERANCE_S
from edge.site.recorder import Recorder
from edge.site.runtime import DayPassUse, note_day_pass
from edge.site.schedule import Opening
from edge.site.sqlite import SqlOp, describe
from edge.site.state import Actor, GatewayError, SiteChange, SiteState
from edge.timeutil import iso_instant

log = logging.getLogger("edge.gateway")


@dataclass
class Records:
    """What `_apply` queued for one decision: the event ids, the future that
    resolves once they are durable (None when queued on the next turn), and
    whether the door waits for it (a billable use)."""

    ids: list[str] = field(default_factory=list)
    done: asyncio.Future[int] | None = None
    gate: bool = False


@dataclass(frozen=True)
class Recorded:
    """Whether a presentation's events are durable; `error` says why not."""

    ids: list[str]
    error: str | None = None


async def durable(done: asyncio.Future[int]) -> str | None:
    """Wait for a record; None once durable, else why it is NOT RECORDED. The
    store has logged a disk fault once already; the decision stands either way."""
    try:
        await asyncio.shield(done)
    except sqlite3.Error as exc:
        return describe(exc)
    return None


class RoomHooks(Protocol):
    """What the access service tells the rooms (the room controller is one)."""

    def door_used(self, door: str, at: float) -> None:
        """Someone presented at `door` (granted or not): presence, if it is a room's."""

    def refresh(self) -> None:
        """A booking was checked in: re-evaluate the rooms now."""


class AccessService:
    def __init__(self, site: SiteState, recorder: Recorder) -> None:
        config = site.config
        self.site = site
        self.recorder = recorder
        self.config: Config = config
        self.pin_key: bytes | None = None
        self.rooms: RoomHooks | None = None
        # Told (with the door's id) when one of a door's readers comes or goes.
        self.reader_observers: list[Callable[[str], None]] = []
        # Called after each real decision with how long `decide` took (s).
        self.observers: list[Callable[[Decision, float], None]] = []
        # A room panel waiting for a badge as identity: the next card or PIN at
        # the door's readers goes to it once (and is still decided as usual).
        self.taps: dict[str, Callable[[tuple[str, ...], str | None], None]] = {}
        self.hardware = (
            Hardware(config, site.state_dir, self) if config.buses or config.readers else None
        )
        self.doors = Doors(config, self.hardware, self._door_event)
        self._door_tasks: set[asyncio.Task[None]] = set()
        self._offline: tuple[str, frozenset[str]] | None = None
        self._step: float | None = None  # the clock step last told of
        site.subscribe(self._site_changed)

    async def start(self) -> None:
        try:
            self.pin_key = load_pin_key(self.site.state_dir)
        except SecretError as exc:
            log.error("gateway: %s; PIN entry is refused until it is fixed", exc)
        if self.pin_key is None:
            log.warning("gateway: no site PIN key provisioned; PIN entry is refused")
        if self.hardware is not None:
            await self.hardware.start()
        await self.doors.start(self.sync_doors)

    async def stop(self) -> None:
        await self.doors.stop()
        if self.hardware is not None:
            await self.hardware.stop()
        for task in list(self._door_tasks):
            task.cancel()
        await asyncio.gather(*self._door_tasks, return_exceptions=True)

    def _site_changed(self, change: SiteChange) -> None:
        if change.index or change.entitlements or change.bookings:
            self.sync_doors()
        elif change.synced:
            self._offline_state(self.site.clock.now())

    # --- decisions -------------------------------------------------------------

    def presentation(
        self,
        door: str,
        cards: tuple[str, ...] = (),
        pin: str | None = None,
        at: float | None = None,
    ) -> Presentation:
        digest = None
        if pin is not None:
            if self.pin_key is None:
                raise GatewayError("no_pin_key", "no site PIN key is provisioned on this gateway")
            digest = pin_hmac(self.pin_key, pin)
        return Presentation(
            door=door,
            at=self.site.clock.now() if at is None else at,
            cards=cards,
            pin_hmac=digest,
        )

    def dry_run(self, p: Presentation) -> Decision:
        """What would happen, with nothing unlocked, consumed or recorded."""
        return decide(self.site.index, self.site.state, p)

    async def present(self, p: Presentation, port: ReaderPort | None = None) -> Decision:
        """A real presentation: decide, apply, record, open the door once usage is durable."""
        return (await self.present_recorded(p, port))[0]

    async def present_recorded(
        self, p: Presentation, port: ReaderPort | None = None
    ) -> tuple[Decision, Recorded]:
        """`present`, and whether its events were recorded (the admin socket says so)."""
        t0 = time.perf_counter()
        decision = decide(self.site.index, self.site.state, p)
        took = time.perf_counter() - t0
        records = self._apply(decision, port)
        error = None
        if records.gate and records.done is not None:
            error = await durable(records.done)
        self._open(decision, port)
        self._observe(decision, took)
        if not records.gate and records.done is not None:
            error = await durable(records.done)
        return decision, Recorded(records.ids, error)

    def _observe(self, d: Decision, took: float) -> None:
        """Tell the observers (metrics) of a real decision and how long `decide` took."""
        for observer in self.observers:
            observer(d, took)

    def _open(self, d: Decision, port: ReaderPort | None) -> None:
        """After a decision: the strike, the reader's feedback, a first-person-in schedule."""
        if d.effects.first_in is not None:
            self.sync_doors(quiet=frozenset({d.door}))  # its event is already recorded
        if d.reason == "pin_required":
            return  # the reader waits for the PIN: no grant, no denial yet
        extended = d.holder is not None and d.holder in self.config.access.extended_unlock
        self.doors.decided(d.door, d.granted, extended, port, held_open=d.reason == "unlocked")

    # --- the hardware's side (HardwareEvents) -------------------------------------------

    def presented(self, port: ReaderPort, shown: Presented) -> None:
        """A card or PIN at a reader: decided now, on the loop, with no await first."""
        if port.door is None:
            log.warning("%s: presentation ignored: the reader serves no door", port.name)
            return
        tap = self.taps.pop(port.door, None)
        if tap is not None:  # after this decision, not before it
            asyncio.get_running_loop().call_soon(tap, shown.cards, shown.pin)
        try:
            p = self.presentation(port.door, shown.cards, shown.pin)
        except GatewayError as exc:
            log.error("%s: %s", port.name, exc)
            self.doors.decided(port.door, False, False, port)
            return
        t0 = time.perf_counter()
        decision = decide(self.site.index, self.site.state, p)
        took = time.perf_counter() - t0

        def open_first(usage: bool) -> None:
            # Effects are applied; nothing is queued to the writer yet, so the strike
            # task is woken before the writer's task (measured: ~1 ms sooner).
            if not usage:
                self._open(decision, port)

        records = self._apply(decision, port, open_first)
        self._observe(decision, took)
        if not records.gate or records.done is None:
            return

        async def when_durable(
            d: Decision = decision, done: asyncio.Future[int] = records.done
        ) -> None:
            # NOT RECORDED (a disk fault) does not change what the door was told.
            await durable(done)
            self._open(d, port)

        task = asyncio.create_task(when_durable(), name=f"door[{port.door}].after_usage")
        self._door_tasks.add(task)
        task.add_done_callback(self._door_tasks.discard)

    def reader_changed(self, port: ReaderPort, online: bool, first: bool) -> None:
        if port.door is not None:
            for observer in self.reader_observers:
                observer(port.door)
        if online and first:
            log.info("%s: online (%s)", port.name, port.detail or "ready")
            return
        details: dict[str, Any] = {"reader": port.name}
        if not online:
            details["fault"] = port.fault
        self.recorder.emit(
            "reader.online" if online else "reader.offline",
            time.time(),
            door=port.door,
            details=details,
        )

    def reader_status(self, port: ReaderPort, tamper: bool, power_failure: bool) -> None:
        self.recorder.emit(
            "reader.tamper",
            time.time(),
            door=port.door,
            details={"reader": port.name, "tamper": tamper, "power_failure": power_failure},
        )

    def _door_event(self, type_: str, door: str | None, details: dict[str, Any]) -> None:
        self.recorder.emit(type_, time.time(), door=door, details=details)

    # --- doors ------------------------------------------------------------------

    def sync_doors(self, quiet: frozenset[str] = frozenset()) -> None:
        """Schedules and lockdowns from the runtime state to the door controllers."""
        ix, st = self.site.index, self.site.state
        now = self.site.clock.now()
        self._offline_state(now)
        local = datetime.fromtimestamp(now, ix.tz)
        states = []
        for door_id in set(ix.doors) | set(self.doors.controllers):
            door = ix.doors.get(door_id)
            method = st.offline_methods.get(door_id)
            if method is not None:  # no schedule while the cache cannot be trusted
                scheduled = method == "unlocked"
            else:
                scheduled = door is not None and door_unlocked(ix, st, door, local) is not None
            states.append((door_id, scheduled, st.in_lockdown(door_id)))
        self.doors.apply_state(states, quiet)

    def _apply(
        self,
        d: Decision,
        port: ReaderPort | None = None,
        before_record: Callable[[bool], None] | None = None,
    ) -> Records:
        """Apply a decision's effects in memory at once and queue their records."""
        st, e, rec = self.site.state, d.effects, self.recorder
        ops: list[SqlOp] = []
        events: list[dict[str, Any]] = []
        if e.await_pin is not None:
            st.pending_cards[d.door] = e.await_pin
        elif e.clear_pending:
            st.pending_cards.pop(d.door, None)
        usage = e.day_pass is not None or (e.guest_entry is not None and d.holder is not None)
        opened = before_record is not None and not usage
        if before_record is not None and e.first_in is None:
            # Nothing the door needs is left to apply: let it go before the records are built.
            before_record(usage)
            before_record = None
        details = jsonable(d.details)
        if port is not None:
            details = {**details, "reader": port.name, "side": port.side}
        events.append(
            rec.event(
                "access.granted" if d.granted else "access.denied",
                d.at,
                door=d.door,
                holder=d.holder,
                credential=d.credential,
                reason=d.reason,
                details=details,
            )
        )
        if e.day_pass is not None:
            use = e.day_pass
            note_day_pass(st, use)
            fields = (
                ("source", use.source),
                ("pass", use.pass_id),
                ("company", use.company),
                ("date", use.day.isoformat()),
            )
            ev = rec.event(
                "usage.day_pass",
                d.at,
                door=d.door,
                holder=use.holder,
                details={k: v for k, v in fields if v is not None},
            )
            events.append(ev)
            ops.append(day_pass_use_op(use, ev["id"], d.at))
        if e.guest_entry is not None and d.holder is not None:
            self._guest_entry_records(d.holder, e.guest_entry, d.door, d.at, events, ops)
        if e.check_in is not None and d.holder is not None:
            self._check_in_records(e.check_in, d.holder, d.door, d.at, events, ops)
        if self.rooms is not None:
            self.rooms.door_used(d.door, d.at)  # someone at a room's door: presence
        if e.first_in is not None:
            st.first_in[d.door] = e.first_in
            events.append(
                rec.event(
                    "door.unlocked",
                    d.at,
                    door=d.door,
                    holder=d.holder,
                    details={"cause": "schedule", "first_person_in": True},
                )
            )
            ops.append(
                (
                    "INSERT INTO door_state (door, first_in_day, first_in_window) "
                    "VALUES (?,?,?) ON CONFLICT (door) DO UPDATE SET "
                    "first_in_day = excluded.first_in_day, "
                    "first_in_window = excluded.first_in_window",
                    (d.door, e.first_in.day.isoformat(), e.first_in.window),
                )
            )
        if before_record is not None:
            before_record(usage)
        records = Records([ev["id"] for ev in events], gate=usage)
        if opened:
            # The door is already on its way: the records follow on the next turn of
            # the loop, after the strike's task has sent its command.
            asyncio.get_running_loop().call_soon(rec.record, events, ops)
        else:
            records.done = rec.record(events, ops)
        return records

    # --- guests -------------------------------------------------------------------

    def _guest_entry_records(
        self,
        holder: str,
        day: date,
        door: str | None,
        at: float,
        events: list[dict[str, Any]],
        ops: list[SqlOp],
        via: str | None = None,
    ) -> None:
        """A guest's first entry of a site-local day: billed to the host, once."""
        self.site.state.guest_days.add((holder, day))
        host = self.site.index.holders[holder].host
        details: dict[str, Any] = {"host": host, "date": day.isoformat()}
        if via is not None:
            details["via"] = via
        ev = self.recorder.event("usage.guest_entry", at, door=door, holder=holder, details=details)
        events.append(ev)
        ops.append(
            (
                "INSERT OR REPLACE INTO guest_entries (holder, day, event_id, at) VALUES (?,?,?,?)",
                (holder, day.isoformat(), ev["id"], at),
            )
        )

    def guest_arrived(self, holder: str, at: float, via: str) -> asyncio.Future[int] | None:
        """A guest announced somewhere other than a door (the lobby's reception
        screen): the same rule as a door's grant, so the first arrival of a
        site-local day, here or at a door, is the one `usage.guest_entry` of that
        day. The future resolves once it is durable; None when the day is billed
        already. Whether the guest is expected now is the caller's to check."""
        ix = self.site.index
        h = ix.holders.get(holder)
        if h is None or h.kind != "guest":
            raise GatewayError("not_found", f"no guest {holder!r} on this site")
        day = datetime.fromtimestamp(at, ix.tz).date()
        if (holder, day) in self.site.state.guest_days:
            return None
        events: list[dict[str, Any]] = []
        ops: list[SqlOp] = []
        self._guest_entry_records(holder, day, None, at, events, ops, via=via)
        return self.recorder.record(events, ops)

    # --- check-ins ----------------------------------------------------------------

    def _check_in_records(
        self,
        booking_id: str,
        holder: str,
        door: str | None,
        at: float,
        events: list[dict[str, Any]],
        ops: list[SqlOp],
        via: str = "door",
    ) -> None:
        self.site.state.checked_in.add(booking_id)
        booking = self.site.index.bookings.get(booking_id)
        events.append(
            self.recorder.event(
                "booking.checked_in",
                at,
                door=door,
                holder=holder,
                details={
                    "booking": booking_id,
                    "room": booking.room if booking is not None else None,
                    "via": via,
                },
            )
        )
        ops.append(
            (
                "INSERT OR IGNORE INTO booking_checkins (booking, holder, at) VALUES (?,?,?)",
                (booking_id, holder, at),
            )
        )
        if self.rooms is not None:
            self.rooms.refresh()

    def check_in(
        self, booking_id: str, room: str, holder: str, door: str | None, at: float, via: str
    ) -> asyncio.Future[int]:
        """A booking checked in at its room's panel (or any other way but the door)."""
        events: list[dict[str, Any]] = []
        ops: list[SqlOp] = []
        self._check_in_records(booking_id, holder, door, at, events, ops, via=via)
        log.info("rooms: %s: booking %s checked in (%s) by %s", room, booking_id, via, holder)
        return self.recorder.record(events, ops)

    # --- the offline policy ---------------------------------------------------------

    def _offline_state(self, now: float) -> None:
        """Whether the cache can be trusted now; if not, the doors whose
        offline_policy applies (locked, facility_code, unlocked) and why."""
        site = self.site
        methods: dict[str, str] = {
            d: "locked" if hw.offline_policy == "deny_stale" else hw.offline_policy
            for d, hw in self.config.doors.items()
            if hw.offline_policy != "cache"
        }
        cloud = self.config.cloud
        reason, detail = offline_reason(
            now, site.cloud_time, site.synced_at, cloud.cache_stale_hours if cloud else None
        )
        if site.set_aside is not None and not site.index.loaded:
            reason = "database_unreadable"
            detail = (
                f"the database was unreadable at start and was set aside as {site.set_aside}; "
                "the doors run their offline policy until the cloud's snapshot is imported"
            )
        elif reason != "clock_untrusted" and not site.index.loaded and methods:
            reason = "no_site_data"
            detail = "no site data has been imported yet"
        doors = frozenset(methods)
        state = (reason, doors) if reason is not None else None
        st = site.state
        st.offline_reason = reason
        st.offline_methods = methods if reason is not None else {}
        st.offline_exempt = frozenset(self.config.access.offline_exempt)
        st.offline_facility_codes = frozenset(self.config.access.offline_facility_codes)
        step = site.clock.step
        if (step is None) != (self._step is None):
            if step is not None:
                self.recorder.alarm(
                    "clock_stepped",
                    f"the system clock is {step:+.0f} s from the time doors decide at; "
                    "it is not followed until the cloud vouches for a time",
                    step_s=round(step),
                )
            else:
                self.recorder.alarm("clock_stepped_cleared", "the system clock is followed again")
        self._step = step
        if state != self._offline:
            if reason is not None:
                log.error("gateway: %s: %s", reason, detail)
                self.recorder.alarm(
                    reason, detail, doors=sorted(doors), policies=dict(sorted(methods.items()))
                )
            elif self._offline is not None:
                log.warning("gateway: %s is over", self._offline[0])
                self.recorder.alarm(f"{self._offline[0]}_cleared", f"{self._offline[0]} is over")
            self._offline = state

    # --- admin actions -----------------------------------------------------------

    def _known_doors(self, doors: list[str]) -> None:
        known_ids = set(self.site.index.doors) | set(self.config.doors)
        unknown = [d for d in doors if d not in known_ids]
        if unknown:
            known = ", ".join(sorted(known_ids)) or "none imported"
            raise GatewayError(
                "not_found", f"unknown door(s) {', '.join(unknown)} (known: {known})"
            )

    async def set_lockdown(self, on: bool, doors: list[str], actor: Actor) -> dict[str, Any]:
        self._known_doors(doors)
        st = self.site.state
        targets = doors or ["*"]
        for door in targets:
            if door == "*":
                st.lockdown_site = on
                if not on:
                    st.lockdown_doors.clear()
            elif on:
                st.lockdown_doors.add(door)
            else:
                st.lockdown_doors.discard(door)
        ops: list[SqlOp] = [
            (
                "INSERT INTO door_state (door, lockdown) VALUES (?, ?) "
                "ON CONFLICT (door) DO UPDATE SET lockdown = excluded.lockdown",
                (door, int(on)),
            )
            for door in targets
        ]
        if targets == ["*"] and not on:
            ops.append(("UPDATE door_state SET lockdown = 0", ()))
        details = {
            "action": "lockdown",
            "on": on,
            "doors": doors or "all",
            "by": actor.name,
            "uid": actor.uid,
        }
        self.recorder.record(
            [self.recorder.event("admin.action", time.time(), details=details)], ops
        )
        self.sync_doors()  # a lockdown ends every unlock it covers, at once
        log.warning(
            "lockdown %s for %s by %s",
            "ON" if on else "off",
            ", ".join(doors) or "all doors",
            actor.name,
        )
        return {"lockdown": on, "doors": doors or "all"}

    async def unlock_door(self, door: str, seconds: int, actor: Actor) -> dict[str, Any]:
        self._known_doors([door])
        limit = self.config.access.max_unlock_seconds
        if not 1 <= seconds <= limit:
            raise GatewayError("bad_request", f"seconds must be between 1 and {limit}")
        if self.site.state.in_lockdown(door):
            raise GatewayError("refused", f"door {door} is in lockdown; lift it first")
        now = time.time()
        details = {"action": "unlock", "seconds": seconds, "by": actor.name, "uid": actor.uid}
        self.recorder.emit("admin.action", now, door=door, details=details)
        self.doors.admin_unlock(door, seconds, actor.name)
        return {"door": door, "unlocked_until": iso_instant(now + seconds, self.site.index.tz)}


def day_pass_use_op(use: DayPassUse, event_id: str, at: float) -> SqlOp:
    """The row of a day's pass use (also run by the power-cut campaign, faults/powercut)."""
    return (
        "INSERT OR REPLACE INTO day_pass_uses "
        "(holder, day, source, pass, company, event_id, at) "
        "VALUES (?,?,?,?,?,?,?)",
        (use.holder, use.day.isoformat(), use.source, use.pass_id, use.company, event_id, at),
    )


def offline_reason(
    now: float, cloud_time: float | None, synced_at: float | None, stale_hours: float | None
) -> tuple[str | None, str]:
    """Why the cache cannot vouch for a grant now (None: it can), and the cause in words.

    A pure function of the clock and the sync marks, so the offline policy is
    checked (tests/test_door_machine_states.py) without a loop or a store.
    `stale_hours` is None without a cloud: a cache nobody syncs never goes stale.
    """
    if cloud_time is not None and now < cloud_time - CLOCK_TOLERANCE_S:
        detail = (
            f"the clock reads {iso_instant(now)}, before {iso_instant(cloud_time)}, "
            "a time the cloud already vouched for"
        )
        return "clock_untrusted", detail
    if stale_hours is not None and synced_at is not None:
        limit = stale_hours * 3600
        if now - synced_at > limit:
            detail = (
                f"the last successful sync was {(now - synced_at) / 3600:.1f} h ago "
                f"(limit {stale_hours:g} h)"
            )
            return "cache_stale", detail
    return None, ""


def jsonable(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in details.items():
        if isinstance(v, date):
            out[k] = v.isoformat()
        elif isinstance(v, Opening):
            out[k] = {"day": v.day.isoformat(), "window": v.window}
        else:
            out[k] = v
    return out
