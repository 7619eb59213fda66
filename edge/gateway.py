"""The gateway: the site index, the runtime state, and every change to them.

Decisions are taken on the event loop with no await between `decide` and
applying its effects, so two badges can never both consume the last pass.
Everything that changes is written through the store's single writer; usage
events (what the cloud bills) are awaited until durable before the caller
hears the decision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.wiegand import Presented
from edge.access.cards import pin_hmac
from edge.access.doors import Doors
from edge.access.hardware import Hardware, ReaderPort
from edge.access.policy import (
    DayPassUse,
    Decision,
    Presentation,
    RuntimeState,
    decide,
    door_unlocked,
    entitlement,
)
from edge.config import Config
from edge.secrets import SecretError, load_pin_key
from edge.site.changes import batch_ops, check_batch, patch_index, refused_ops
from edge.site.events import log_line, make_event
from edge.site.importer import ImportRefused, commit_ops, stage_snapshot
from edge.site.index import dismantle, load_index
from edge.site.model import SiteIndex
from edge.site.schedule import Opening
from edge.site.sqlite import Many, SqlOp
from edge.site.store import Store

if TYPE_CHECKING:
    from edge.mqtt.broker import EmbeddedBroker
    from edge.mqtt.link import MqttLink
    from edge.rooms.controller import Rooms
    from edge.rooms.wifi import GuestWifi
    from edge.sync.service import Sync
from edge.site.syncdoc import DocError
from edge.timeutil import iso_instant

log = logging.getLogger("edge.gateway")
events_log = logging.getLogger("edge.events")

# The gateway's availability on the site broker (retained; OFFLINE is its last will).
ONLINE, OFFLINE = b'{"state":"online"}', b'{"state":"offline"}'

# A clock this far behind what the cloud last said is not trusted.
CLOCK_TOLERANCE_S = 300.0


class GatewayError(Exception):
    """A request the gateway refuses, with a message for the operator."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Actor:
    """Who asked for a change: the admin socket's peer credentials, or a subsystem."""

    name: str
    uid: int | None = None
    pid: int | None = None


SYSTEM = Actor("gateway")


class Gateway:
    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.db_path = state_dir / "gateway.db"
        self.store = Store(self.db_path)
        self.index = SiteIndex.empty()
        self.state = RuntimeState()
        self.pin_key: bytes | None = None
        self.ready = False
        self.started_at = time.time()
        self.hardware = (
            Hardware(config, state_dir, self) if config.buses or config.readers else None
        )
        self.doors = Doors(config, self.hardware, self._door_event)
        self._door_tasks: set[asyncio.Task[None]] = set()
        self._followers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._import_lock = asyncio.Lock()
        self._cleanup: set[asyncio.Task[None]] = set()
        self._synced_at: float | None = None  # the cache's age runs from here
        self._cloud_time: float | None = None  # the latest time the cloud vouched for
        self._offline: tuple[str, frozenset[str]] | None = None
        self.sync: Sync | None = None
        if config.cloud is not None:
            from edge.sync.service import Sync

            self.sync = Sync(self, config.cloud)
        # The site broker: pushes, rooms, devices, panels, guest Wi-Fi. One connection.
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttLink | None = None
        self.rooms: Rooms | None = None
        self.wifi: GuestWifi | None = None
        if config.uses_mqtt:
            self._build_mqtt()

    def _build_mqtt(self) -> None:
        from edge.mqtt.link import MqttLink, Will
        from edge.mqtt.topics import topic
        from edge.rooms.controller import Rooms

        cfg = self.config
        if cfg.mqtt.embedded:
            from edge.mqtt.broker import EmbeddedBroker

            self.broker = EmbeddedBroker(cfg.mqtt.host, cfg.mqtt.port)
        client_id = cfg.mqtt.client_id or f"edge-{cfg.site.id}-{cfg.gateway.id}"
        self.mqtt = MqttLink(cfg.mqtt, client_id, self.state_dir)
        self._availability = topic("gateway_state", site=cfg.site.id, gateway=cfg.gateway.id)
        self.mqtt.will = Will(self._availability, OFFLINE)
        self.mqtt.on_connect(self._announce_online)
        self.rooms = Rooms(self, self.mqtt)
        if cfg.wifi is not None:
            from edge.rooms.wifi import GuestWifi

            self.wifi = GuestWifi(self, cfg.wifi, self.mqtt, self.rooms.set_wifi)

    def _announce_online(self) -> None:
        if self.mqtt is not None:
            self.mqtt.publish(self._availability, ONLINE, retain=True)

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.pin_key = load_pin_key(self.state_dir)
        except SecretError as exc:
            log.error("gateway: %s; PIN entry is refused until it is fixed", exc)
        if self.pin_key is None:
            log.warning("gateway: no site PIN key provisioned; PIN entry is refused")
        await self.store.start()
        gen = await self.store.generation()
        if gen:
            self.index = await asyncio.to_thread(load_index, self.db_path, gen)
        await self._load_runtime_state()
        meta = await self.store.meta()
        marks = [float(meta[k]) for k in ("synced_at", "imported_at") if meta.get(k)]
        self._synced_at = max(marks) if marks else None
        self._cloud_time = float(meta["cloud_time"]) if meta.get("cloud_time") else None
        if self.hardware is not None:
            await self.hardware.start()
        await self.doors.start(self._sync_doors)
        self.ready = True
        log.info(
            "gateway: ready, site %s generation %d: %d holders, %d credentials",
            self.index.site_id or "(none imported)",
            self.index.generation,
            len(self.index.holders),
            self.index.credential_count,
        )
        self._emit("gateway.started", time.time(), details={"generation": gen})
        if self.mqtt is not None:
            if self.broker is not None:
                await self.broker.start()
            if self.rooms is not None:
                self.rooms.build()
            if self.sync is not None:
                self.sync.attach(self.mqtt)
            await self.mqtt.start()
            if self.rooms is not None:
                await self.rooms.start()
            if self.wifi is not None:
                await self.wifi.start()
        if self.sync is not None:
            await self.sync.start()

    async def stop(self) -> None:
        self.ready = False
        if self.wifi is not None:
            await self.wifi.stop()
        if self.rooms is not None:
            await self.rooms.stop()
        if self.sync is not None:
            await self.sync.stop()
        if self.mqtt is not None:
            await self.mqtt.stop(farewell=(self._availability, OFFLINE))
        if self.broker is not None:
            await self.broker.stop()
        await self.doors.stop()
        if self.hardware is not None:
            await self.hardware.stop()
        for task in list(self._door_tasks):
            task.cancel()
        await asyncio.gather(*self._door_tasks, return_exceptions=True)
        for task in list(self._cleanup):
            task.cancel()
        await asyncio.gather(*self._cleanup, return_exceptions=True)
        for q in list(self._followers):
            q.put_nowait({})  # wakes followers; an empty event means "stream ends"
        await self.store.stop()

    async def _load_runtime_state(self) -> None:
        st = RuntimeState()
        for door, lockdown, fday, fwin in await self.store.fetchall(
            "SELECT door, lockdown, first_in_day, first_in_window FROM door_state"
        ):
            if lockdown:
                if door == "*":
                    st.lockdown_site = True
                else:
                    st.lockdown_doors.add(door)
            if fday is not None and fwin is not None:
                st.first_in[door] = Opening(date.fromisoformat(fday), int(fwin))
        for holder, day, source, pass_id, company, reflected in await self.store.fetchall(
            "SELECT holder, day, source, pass, company, reflected FROM day_pass_uses"
        ):
            use = DayPassUse(holder, date.fromisoformat(day), source, pass_id, company)
            self._note_day_pass(st, use, reflected=bool(reflected))
        for holder, day in await self.store.fetchall("SELECT holder, day FROM guest_entries"):
            st.guest_days.add((holder, date.fromisoformat(day)))
        for (booking,) in await self.store.fetchall("SELECT booking FROM booking_checkins"):
            st.checked_in.add(booking)
        self.state = st

    @staticmethod
    def _note_day_pass(st: RuntimeState, use: DayPassUse, reflected: bool = False) -> None:
        st.day_pass_uses[(use.holder, use.day)] = use
        if use.source == "pass" and use.pass_id is not None:
            first = st.pass_first_use.get(use.pass_id)
            if first is None or use.day < first:
                st.pass_first_use[use.pass_id] = use.day
        elif not reflected and use.source == "balance":
            st.balance_used[use.holder] = st.balance_used.get(use.holder, 0) + 1
        elif not reflected and use.source == "company" and use.company is not None:
            st.company_used[use.company] = st.company_used.get(use.company, 0) + 1

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
            door=door, at=time.time() if at is None else at, cards=cards, pin_hmac=digest
        )

    def dry_run(self, p: Presentation) -> Decision:
        """What would happen, with nothing unlocked, consumed or recorded."""
        return decide(self.index, self.state, p)

    async def present(self, p: Presentation, port: ReaderPort | None = None) -> Decision:
        """A real presentation: decide, apply, record, open the door once usage is durable."""
        decision = decide(self.index, self.state, p)
        durable = self._apply(decision, port)
        if durable is not None:
            await asyncio.shield(durable)
        self._open(decision, port)
        return decision

    def _open(self, d: Decision, port: ReaderPort | None) -> None:
        """After a decision: the strike, the reader's feedback, a first-person-in schedule."""
        if d.effects.first_in is not None:
            self._sync_doors(quiet=frozenset({d.door}))  # its event is already recorded
        if d.reason == "pin_required":
            return  # the reader waits for the PIN: no grant, no denial yet
        extended = d.holder is not None and d.holder in self.config.access.extended_unlock
        self.doors.decided(d.door, d.granted, extended, port)

    # --- the hardware's side (HardwareEvents) -------------------------------------------

    def presented(self, port: ReaderPort, shown: Presented) -> None:
        """A card or PIN at a reader: decided now, on the loop, with no await first."""
        if port.door is None:
            log.warning("%s: presentation ignored: the reader serves no door", port.name)
            return
        try:
            p = self.presentation(port.door, shown.cards, shown.pin)
        except GatewayError as exc:
            log.error("%s: %s", port.name, exc)
            self.doors.decided(port.door, False, False, port)
            return
        decision = decide(self.index, self.state, p)

        def open_first(usage: bool) -> None:
            # Effects are applied; nothing is queued to the writer yet, so the strike
            # task is woken before the writer's task (measured: ~1 ms sooner).
            if not usage:
                self._open(decision, port)

        durable = self._apply(decision, port, open_first)
        if durable is None:
            return

        async def when_durable(d: Decision = decision, done: asyncio.Future[int] = durable) -> None:
            await done
            self._open(d, port)

        task = asyncio.create_task(when_durable(), name=f"door[{port.door}].after_usage")
        self._door_tasks.add(task)
        task.add_done_callback(self._door_tasks.discard)

    def reader_changed(self, port: ReaderPort, online: bool, first: bool) -> None:
        if online and first:
            log.info("%s: online (%s)", port.name, port.detail or "ready")
            return
        details: dict[str, Any] = {"reader": port.name}
        if not online:
            details["fault"] = port.fault
        self._emit(
            "reader.online" if online else "reader.offline",
            time.time(),
            door=port.door,
            details=details,
        )

    def reader_status(self, port: ReaderPort, tamper: bool, power_failure: bool) -> None:
        self._emit(
            "reader.tamper",
            time.time(),
            door=port.door,
            details={"reader": port.name, "tamper": tamper, "power_failure": power_failure},
        )

    def _door_event(self, type_: str, door: str | None, details: dict[str, Any]) -> None:
        self._emit(type_, time.time(), door=door, details=details)

    def _sync_doors(self, quiet: frozenset[str] = frozenset()) -> None:
        """Schedules and lockdowns from the runtime state to the door controllers."""
        ix, st = self.index, self.state
        now = time.time()
        self._offline_state(now)
        local = datetime.fromtimestamp(now, ix.tz)
        states = []
        for door_id in set(ix.doors) | set(self.doors.controllers):
            door = ix.doors.get(door_id)
            scheduled = door is not None and door_unlocked(ix, st, door, local) is not None
            states.append((door_id, scheduled, st.in_lockdown(door_id)))
        self.doors.apply_state(states, quiet)

    def _apply(
        self,
        d: Decision,
        port: ReaderPort | None = None,
        before_record: Callable[[bool], None] | None = None,
    ) -> asyncio.Future[int] | None:
        """Apply a decision's effects in memory at once and queue their records."""
        st, e = self.state, d.effects
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
        events.append(
            self._event(
                "access.granted" if d.granted else "access.denied",
                d.at,
                door=d.door,
                holder=d.holder,
                credential=d.credential,
                reason=d.reason,
                details=_jsonable(d.details)
                if port is None
                else {**_jsonable(d.details), "reader": port.name, "side": port.side},
            )
        )
        if e.day_pass is not None:
            use = e.day_pass
            self._note_day_pass(st, use)
            ev = self._event(
                "usage.day_pass",
                d.at,
                door=d.door,
                holder=use.holder,
                details={
                    k: v
                    for k, v in (
                        ("source", use.source),
                        ("pass", use.pass_id),
                        ("company", use.company),
                        ("date", use.day.isoformat()),
                    )
                    if v is not None
                },
            )
            events.append(ev)
            ops.append(
                (
                    "INSERT OR REPLACE INTO day_pass_uses "
                    "(holder, day, source, pass, company, event_id, at) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (
                        use.holder,
                        use.day.isoformat(),
                        use.source,
                        use.pass_id,
                        use.company,
                        ev["id"],
                        d.at,
                    ),
                )
            )
        if e.guest_entry is not None and d.holder is not None:
            st.guest_days.add((d.holder, e.guest_entry))
            host = self.index.holders[d.holder].host
            ev = self._event(
                "usage.guest_entry",
                d.at,
                door=d.door,
                holder=d.holder,
                details={"host": host, "date": e.guest_entry.isoformat()},
            )
            events.append(ev)
            ops.append(
                (
                    "INSERT OR REPLACE INTO guest_entries (holder, day, event_id, at) "
                    "VALUES (?,?,?,?)",
                    (d.holder, e.guest_entry.isoformat(), ev["id"], d.at),
                )
            )
        if e.check_in is not None and d.holder is not None:
            self._check_in_records(e.check_in, d.holder, d.door, d.at, events, ops)
        if self.rooms is not None and self.rooms.by_door:
            self.rooms.door_used(d.door, d.at)  # someone at a room's door: presence
        if e.first_in is not None:
            st.first_in[d.door] = e.first_in
            events.append(
                self._event(
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
        if usage:
            return self._record(events, ops)
        if opened:
            # The door is already on its way: the records follow on the next turn of
            # the loop, after the strike's task has sent its command.
            asyncio.get_running_loop().call_soon(self._record, events, ops)
        else:
            self._record(events, ops)
        return None

    # --- events ------------------------------------------------------------------

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
        st = self.state
        st.checked_in.add(booking_id)
        booking = self.index.bookings.get(booking_id)
        events.append(
            self._event(
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
        return self._record(events, ops)

    def event(self, type_: str, at: float, **fields: Any) -> dict[str, Any]:
        """An event of this gateway, not yet recorded (see `record`)."""
        return self._event(type_, at, **fields)

    def record(self, events: list[dict[str, Any]], ops: list[SqlOp]) -> asyncio.Future[int]:
        """Queue events and state changes for one transaction; the future resolves
        once both are durable."""
        return self._record(events, ops)

    def _event(self, type_: str, at: float, **fields: Any) -> dict[str, Any]:
        return make_event(
            type_,
            at,
            self.index.tz,
            self.index.site_id or self.config.site.id,
            self.config.gateway.id,
            **fields,
        )

    def _emit(self, type_: str, at: float, **fields: Any) -> asyncio.Future[int]:
        return self._record([self._event(type_, at, **fields)], [])

    def _record(self, events: list[dict[str, Any]], ops: list[SqlOp]) -> asyncio.Future[int]:
        now = time.time()
        for ev in events:
            ops.append(
                (
                    "INSERT INTO outbox (id, type, at, body, created) VALUES (?,?,?,?,?)",
                    (ev["id"], ev["type"], ev["at"], json.dumps(ev), now),
                )
            )
            events_log.info("%s", log_line(ev))
            for q in self._followers:
                if q.qsize() < 10_000:
                    q.put_nowait(ev)
        done = self.store.submit(ops)
        if self.sync is not None and events:
            done.add_done_callback(self._recorded)
        return done

    def _recorded(self, _done: asyncio.Future[int]) -> None:
        if self.sync is not None:
            self.sync.wake_upload()

    def alarm(self, alarm: str, message: str, **details: Any) -> None:
        """A `gateway.alarm` event: something an operator must look at."""
        details = {"alarm": alarm, "message": message, **details}
        self._emit("gateway.alarm", time.time(), details=details)

    def follow(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._followers.add(q)
        return q

    def unfollow(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._followers.discard(q)

    async def recent_events(self, limit: int, type_prefix: str | None = None) -> list[Any]:
        if type_prefix:
            rows = await self.store.fetchall(
                "SELECT body FROM outbox WHERE type LIKE ? ORDER BY seq DESC LIMIT ?",
                (type_prefix.replace("%", "") + "%", limit),
            )
        else:
            rows = await self.store.fetchall(
                "SELECT body FROM outbox ORDER BY seq DESC LIMIT ?", (limit,)
            )
        return [json.loads(r[0]) for r in reversed(rows)]

    async def audit(self, actor: Actor, method: str, params: dict[str, Any], outcome: str) -> None:
        await self.store.write(
            [
                (
                    "INSERT INTO audit (at, uid, pid, method, params, outcome) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        iso_instant(time.time()),
                        actor.uid,
                        actor.pid,
                        method,
                        json.dumps(params, sort_keys=True),
                        outcome,
                    ),
                )
            ]
        )

    async def prune(self, now: float | None = None) -> int:
        """Forget delivered events older than the retention; undelivered ones stay."""
        cutoff = (time.time() if now is None else now) - 86400 * self.config.events.retention_days
        row = await self.store.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND delivered < ?", (cutoff,)
        )
        pruned = int(row[0]) if row else 0
        if pruned:
            await self.store.write(
                [("DELETE FROM outbox WHERE state = 'delivered' AND delivered < ?", (cutoff,))]
            )
            log.info(
                "gateway: pruned %d delivered events older than %d days",
                pruned,
                self.config.events.retention_days,
            )
        return pruned

    # --- import -----------------------------------------------------------------

    async def import_snapshot(
        self, path: Path, source: str = "admin", fetched_at: float | None = None
    ) -> dict[str, Any]:
        async with self._import_lock:
            old = self.index.generation
            try:
                staged = await stage_snapshot(self.store, path, self.config.site.id)
            except ImportRefused as exc:
                log.error("import: refused, nothing changed: %s", exc)
                raise GatewayError("refused", str(exc)) from None
            log.debug("import: staged in %.2f s; loading the index", staged.seconds)
            index = await asyncio.to_thread(load_index, self.db_path, staged.gen)
            # The index was built before meta moved: give it the new snapshot's marks.
            index.cursor = staged.cursor
            index.generated_at = staged.generated_at.timestamp() if staged.generated_at else None
            await self.store.write(commit_ops(staged))
            self._synced_at = time.time()
            if staged.generated_at is not None:
                self.note_cloud_time(staged.generated_at.timestamp())
            await self._swap_index(index)
            del index
            if fetched_at is not None:
                await self._reconcile_day_passes(fetched_at)
                if self.rooms is not None:
                    await self.rooms.reconcile_credits(fetched_at, None, None)
            log.info(
                "import (%s): generation %d is current (cursor %s): %d members, %d guests, "
                "%d credentials in %.1f s",
                source,
                staged.gen,
                staged.cursor,
                staged.members,
                staged.guests,
                staged.credentials,
                staged.seconds,
            )
            if old:
                task = asyncio.create_task(
                    self.store.drop_generation(old), name=f"store.drop_generation[{old}]"
                )
                self._cleanup.add(task)
                task.add_done_callback(self._cleanup.discard)
            return {
                "generation": staged.gen,
                "cursor": staged.cursor,
                "members": staged.members,
                "guests": staged.guests,
                "credentials": staged.credentials,
                "seconds": round(staged.seconds, 3),
            }

    async def _swap_index(self, index: SiteIndex) -> None:
        """Make `index` current (one assignment on the loop), sync the doors to it at
        once, and free the old one piece by piece from a worker thread."""
        box = [self.index]
        self.index = index
        del index
        self._sync_doors()
        if self.rooms is not None:
            self.rooms.index_changed()
        if self.wifi is not None:
            self.wifi.site_changed()
        await asyncio.to_thread(dismantle, box)

    # --- changes from the cloud -----------------------------------------------------

    async def apply_changes(
        self,
        changes: object,
        cursor: str | None,
        source: str,
        prefix: str = "changes",
        fetched_at: float | None = None,
    ) -> dict[str, Any]:
        """Check a batch of changes, commit what passes (with `cursor`), update the index.

        Refused changes are logged, recorded and raised as alarms; they do not
        stop the others. Serialised with imports: a change never lands in a
        generation that is about to be replaced.
        """
        async with self._import_lock:
            ix = self.index
            if not ix.loaded:
                raise GatewayError("no_site", "no snapshot imported yet: changes cannot apply")
            started = time.monotonic()
            try:
                batch = check_batch(ix, changes, prefix)
            except DocError as exc:
                raise GatewayError("refused", str(exc)) from None
            now = time.time()
            for i, r in enumerate(batch.refused):
                log.error("sync: change refused (%s): %s", source, r)
                if i < 20:
                    self.alarm("change_refused", str(r), source=source, path=r.path)
            holders = sorted(batch.holders())
            old = await self._credentials_of(holders) if not batch.reload else {}
            ops = batch_ops(batch, ix.generation) + refused_ops(batch, now, source)
            if cursor is not None:
                ops.append(_meta_op("cursor", cursor))
            await self.store.write(ops)
            if batch.reload:
                await self._swap_index(
                    await asyncio.to_thread(load_index, self.db_path, ix.generation)
                )
            else:
                patch_index(ix, batch, old)
                if cursor is not None:
                    ix.cursor = cursor
                self._sync_doors()
                if self.rooms is not None and any(k == "booking" for k, _ in batch.final):
                    self.rooms.index_changed()
            if fetched_at is not None:
                companies = {oid for (kind, oid) in batch.final if kind == "company"}
                await self._reconcile_day_passes(fetched_at, set(holders), companies)
                if self.rooms is not None:
                    await self.rooms.reconcile_credits(fetched_at, set(holders), companies)
            seconds = time.monotonic() - started
            if batch.final or batch.refused:
                log.info(
                    "sync: %d change(s) from %s applied, %d refused, in %.3f s%s",
                    batch.applied,
                    source,
                    len(batch.refused),
                    seconds,
                    " (index rebuilt)" if batch.reload else "",
                )
            return {
                "applied": batch.applied,
                "refused": [str(r) for r in batch.refused],
                "cursor": self.index.cursor,
                "reloaded": batch.reload,
                "seconds": round(seconds, 4),
            }

    async def _reconcile_day_passes(
        self,
        fetched_at: float,
        holders: set[str] | None = None,
        companies: set[str] | None = None,
    ) -> None:
        """Day passes used here from a balance, once the cloud's counts include them.

        A use from a member's or a company's balance is subtracted locally until
        its `usage.day_pass` event was accepted by the cloud *and* a document
        fetched after that arrived: that document's balance already counts it.
        `holders`/`companies`: the documents that arrived (None: a whole snapshot).
        """
        if holders is not None and not holders and not companies:
            return
        rows = await self.store.fetchall(
            "SELECT u.holder, u.day, u.source, u.company FROM day_pass_uses u "
            "LEFT JOIN outbox o ON o.id = u.event_id "
            "WHERE u.reflected = 0 AND u.source IN ('balance', 'company') "
            "AND (o.id IS NULL OR (o.state = 'delivered' AND o.delivered < ?))",
            (fetched_at,),
        )
        st = self.state
        done: list[tuple[str, str]] = []
        for holder, day, source, company in rows:
            if holders is not None and not (
                (source == "balance" and holder in holders)
                or (source == "company" and company in (companies or ()))
            ):
                continue
            done.append((holder, day))
            if source == "balance":
                left = st.balance_used.get(holder, 0) - 1
                if left > 0:
                    st.balance_used[holder] = left
                else:
                    st.balance_used.pop(holder, None)
            elif company is not None:
                left = st.company_used.get(company, 0) - 1
                if left > 0:
                    st.company_used[company] = left
                else:
                    st.company_used.pop(company, None)
        if done:
            await self.store.write(
                [
                    (
                        "UPDATE day_pass_uses SET reflected = 1 WHERE holder = ? AND day = ?",
                        Many(done),
                    )
                ]
            )
            log.info("sync: %d day pass use(s) now counted in the cloud's balances", len(done))

    async def _credentials_of(self, holders: list[str]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        gen = self.index.generation
        for i in range(0, len(holders), 500):
            chunk = holders[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for holder, cid, key in await self.store.fetchall(
                f"SELECT holder, id, key FROM credentials WHERE gen = ? AND holder IN ({marks})",  # noqa: S608
                (gen, *chunk),
            ):
                out.setdefault(holder, []).append((cid, key))
        return out

    async def mark_synced(self, at: float) -> None:
        """A pull succeeded: the cache is current as of `at`."""
        self._synced_at = at
        ops = [_meta_op("synced_at", repr(at))]
        if self._cloud_time is not None:
            ops.append(_meta_op("cloud_time", repr(self._cloud_time)))
        await self.store.write(ops)
        self._offline_state(time.time())

    def note_cloud_time(self, t: float) -> None:
        if self._cloud_time is None or t > self._cloud_time:
            self._cloud_time = t

    def synced_at(self) -> float | None:
        return self._synced_at

    def _offline_state(self, now: float) -> None:
        """Which doors deny on a stale cache or an untrusted clock (offline_policy)."""
        reason: str | None = None
        detail = ""
        if self._cloud_time is not None and now < self._cloud_time - CLOCK_TOLERANCE_S:
            reason = "clock_untrusted"
            detail = (
                f"the clock reads {iso_instant(now)}, before {iso_instant(self._cloud_time)}, "
                "a time the cloud already vouched for"
            )
        elif self.config.cloud is not None and self._synced_at is not None:
            limit = self.config.cloud.cache_stale_hours * 3600
            if now - self._synced_at > limit:
                reason = "cache_stale"
                detail = (
                    f"the last successful sync was {(now - self._synced_at) / 3600:.1f} h ago "
                    f"(limit {self.config.cloud.cache_stale_hours:g} h)"
                )
        doors = frozenset(
            d for d, hw in self.config.doors.items() if hw.offline_policy == "deny_stale"
        )
        state = (reason, doors) if reason is not None else None
        st = self.state
        st.offline_reason = reason
        st.offline_doors = doors if reason is not None else frozenset()
        st.offline_exempt = frozenset(self.config.access.offline_exempt)
        if state != self._offline:
            if reason is not None:
                log.error("gateway: %s: %s", reason, detail)
                self.alarm(reason, detail, doors=sorted(doors))
            elif self._offline is not None:
                log.warning("gateway: %s is over", self._offline[0])
                self.alarm(f"{self._offline[0]}_cleared", f"{self._offline[0]} is over")
            self._offline = state

    # --- admin actions -----------------------------------------------------------

    def _known_doors(self, doors: list[str]) -> None:
        known_ids = set(self.index.doors) | set(self.config.doors)
        unknown = [d for d in doors if d not in known_ids]
        if unknown:
            known = ", ".join(sorted(known_ids)) or "none imported"
            raise GatewayError(
                "not_found", f"unknown door(s) {', '.join(unknown)} (known: {known})"
            )

    async def set_lockdown(self, on: bool, doors: list[str], actor: Actor) -> dict[str, Any]:
        self._known_doors(doors)
        targets = doors or ["*"]
        for door in targets:
            if door == "*":
                self.state.lockdown_site = on
                if not on:
                    self.state.lockdown_doors.clear()
            elif on:
                self.state.lockdown_doors.add(door)
            else:
                self.state.lockdown_doors.discard(door)
        ops: list[SqlOp] = []
        for door in targets:
            ops.append(
                (
                    "INSERT INTO door_state (door, lockdown) VALUES (?, ?) "
                    "ON CONFLICT (door) DO UPDATE SET lockdown = excluded.lockdown",
                    (door, int(on)),
                )
            )
        if targets == ["*"] and not on:
            ops.append(("UPDATE door_state SET lockdown = 0", ()))
        now = time.time()
        self._record(
            [
                self._event(
                    "admin.action",
                    now,
                    details={
                        "action": "lockdown",
                        "on": on,
                        "doors": doors or "all",
                        "by": actor.name,
                        "uid": actor.uid,
                    },
                )
            ],
            ops,
        )
        self._sync_doors()  # a lockdown ends every unlock it covers, at once
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
        if self.state.in_lockdown(door):
            raise GatewayError("refused", f"door {door} is in lockdown; lift it first")
        now = time.time()
        details = {"action": "unlock", "seconds": seconds, "by": actor.name, "uid": actor.uid}
        self._emit("admin.action", now, door=door, details=details)
        self.doors.admin_unlock(door, seconds, actor.name)
        return {"door": door, "unlocked_until": iso_instant(now + seconds, self.index.tz)}

    # --- views --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        ix, now = self.index, time.time()
        doors = []
        for door_id in sorted(set(ix.doors) | set(self.doors.controllers)):
            door = ix.doors.get(door_id)
            view = self.doors.view(door_id)
            until = view.pop("unlocked_for_s")
            doors.append(
                {
                    "id": door_id,
                    "name": door.name if door else None,
                    "mode": door.mode if door else None,
                    **view,
                    "unlocked_until": iso_instant(now + until, ix.tz) if until else None,
                }
            )
        members = sum(1 for h in ix.holders.values() if h.kind != "guest")
        hw = self.hardware
        return {
            "ready": self.ready,
            "site": ix.site_id or None,
            "gateway": self.config.gateway.id,
            "generation": ix.generation,
            "cursor": ix.cursor,
            "snapshot_generated_at": iso_instant(ix.generated_at, ix.tz)
            if ix.generated_at
            else None,
            "members": members,
            "guests": len(ix.holders) - members,
            "credentials": ix.credential_count,
            "doors": doors,
            "readers": [] if hw is None else [p.view() for p in hw.readers.values()],
            "buses": [] if hw is None else hw.buses_view(),
            "lockdown": self.state.lockdown_site,
            "synced_at": iso_instant(self._synced_at, ix.tz) if self._synced_at else None,
            "cache_age_s": round(now - self._synced_at, 1) if self._synced_at else None,
            "offline": {
                "reason": self.state.offline_reason,
                "doors": sorted(self.state.offline_doors),
            }
            if self.state.offline_reason
            else None,
            "cloud": None
            if self.sync is None
            else {
                "url": self.sync.cfg.url,
                "stopped": self.sync.auth_failed,
                "last_error": self.sync.pull.last_error if self.sync.pull.failures else None,
                "push": self.sync.link.view() if self.sync.link is not None else None,
            },
            "mqtt": None if self.mqtt is None else self.mqtt.view(),
            "rooms": None
            if self.rooms is None
            else [
                {
                    "id": r["room"],
                    "state": r["state"],
                    "booking": (r.get("booking") or {}).get("id"),
                }
                for r in self.rooms.view()
            ],
            "pin_key": self.pin_key is not None,
            "uptime_s": round(now - self.started_at, 1),
        }

    async def member_show(self, holder_id: str, at: float | None = None) -> dict[str, Any]:
        ix = self.index
        h = ix.holders.get(holder_id)
        if h is None:
            raise GatewayError("not_found", f"no member or guest {holder_id!r} on this site")
        at = time.time() if at is None else at
        local = datetime.fromtimestamp(at, ix.tz)
        row = await self.store.fetchone(
            "SELECT data FROM holders WHERE gen = ? AND id = ?", (ix.generation, holder_id)
        )
        data = json.loads(row[0]) if row else {}
        creds = await self.store.fetchall(
            "SELECT id, key, active FROM credentials WHERE gen = ? AND holder = ? ORDER BY id",
            (ix.generation, holder_id),
        )
        doors = []
        for door in ix.doors.values():
            granted, reason, details, _ = entitlement(ix, self.state, h, door, at, local)
            doors.append(
                {
                    "door": door.id,
                    "granted": granted,
                    "reason": reason,
                    "details": _jsonable(details),
                }
            )
        today = local.date()
        used = self.state.day_pass_uses.get((h.id, today))
        return {
            "id": h.id,
            "kind": h.kind,
            "name": data.get("name", ""),
            "at": iso_instant(at, ix.tz),
            "plan": h.plan,
            "company": h.company,
            "contract": data.get("contract"),
            "billing": data.get("billing"),
            "billing_allows_access": h.billing.allows(at),
            "credentials": [
                {
                    "id": cid,
                    "type": "pin" if key.startswith("pin:") else "card",
                    "card": None if key.startswith("pin:") else key,
                    "active": bool(active),
                }
                for cid, key, active in creds
            ],
            "grants": data.get("access", []),
            "day_passes": data.get("day_passes", []),
            "day_pass_balance": h.day_pass_balance,
            "day_pass_balance_used_here": self.state.balance_used.get(h.id, 0),
            "day_pass_used_today": used.source if used else None,
            "bookings": [
                {
                    "id": b.id,
                    "room": b.room,
                    "start": iso_instant(b.start, ix.tz),
                    "end": iso_instant(b.end, ix.tz),
                    "status": b.status,
                    "checked_in": b.id in self.state.checked_in,
                }
                for b in ix.bookings_by_holder.get(h.id, ())
            ],
            "host": h.host,
            "doors": doors,
        }


def _meta_op(key: str, value: str) -> SqlOp:
    return (
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in details.items():
        if isinstance(v, date):
            out[k] = v.isoformat()
        elif isinstance(v, Opening):
            out[k] = {"day": v.day.isoformat(), "window": v.window}
        else:
            out[k] = v
    return out
