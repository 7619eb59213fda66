"""The site state: the store, the current index, the runtime state, and how fresh they are.

One object owns them; every part of the gateway reads the index and the
runtime state from here and is told when they change (`subscribe`), instead
of holding the gateway. Swapping in a new index is one assignment on the
event loop; the old one is freed piece by piece in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from edge.config import Config
from edge.site.clock import SteadyClock
from edge.site.index import dismantle, load_index
from edge.site.model import SiteIndex
from edge.site.runtime import DayPassUse, RuntimeState, note_day_pass
from edge.site.schedule import Opening
from edge.site.sqlite import SqlOp, check_readable, set_aside
from edge.site.store import Store

log = logging.getLogger("edge.gateway")


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


@dataclass(frozen=True)
class SiteChange:
    """What changed, for those who follow the site (`SiteState.subscribe`).

    `index`: a new index replaced the old one (a snapshot, or changes that
    needed a rebuild); `bookings`: bookings changed in place; `entitlements`:
    holders, credentials or doors changed in place; `synced`: only the cache's
    age or the cloud's time moved.
    """

    index: bool = False
    bookings: bool = False
    entitlements: bool = False
    synced: bool = False


class SiteState:
    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.db_path = state_dir / "gateway.db"
        self.store = Store(self.db_path)
        self.index = SiteIndex.empty()
        self.state = RuntimeState()
        self.synced_at: float | None = None  # the cache's age runs from here
        self.cloud_time: float | None = None  # the latest time the cloud vouched for
        # The time doors decide at (the system clock, unless it was stepped).
        self.clock = SteadyClock()
        # Where an unreadable database found at start was moved (None: it was fine).
        self.set_aside: Path | None = None
        self._followers: list[Callable[[SiteChange], None]] = []

    def subscribe(self, follower: Callable[[SiteChange], None]) -> None:
        """Call `follower` on the loop after every change, in subscription order."""
        self._followers.append(follower)

    def changed(self, change: SiteChange) -> None:
        for follower in self._followers:
            follower(change)

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> int:
        """Open the store and load the current generation; returns it (0: none)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        problem = await asyncio.to_thread(check_readable, self.db_path)
        if problem is None:
            try:
                return await self._open()
            except sqlite3.DatabaseError as exc:
                await self.store.stop()
                self.index = SiteIndex.empty()
                problem = str(exc)
        # Kept for inspection; the gateway starts afresh and pulls a snapshot,
        # the doors running their offline policy meanwhile (database_unreadable).
        self.set_aside = await asyncio.to_thread(set_aside, self.db_path, time.time())
        log.error(
            "store: the database is unreadable (%s); set aside as %s, starting afresh",
            problem,
            self.set_aside,
        )
        return await self._open()

    async def _open(self) -> int:
        await self.store.start()
        gen = await self.store.generation()
        if gen:
            self.index = await asyncio.to_thread(load_index, self.db_path, gen)
        self.state = await self._load_runtime_state()
        meta = await self.store.meta()
        marks = [float(meta[k]) for k in ("synced_at", "imported_at") if meta.get(k)]
        self.synced_at = max(marks) if marks else None
        self.cloud_time = float(meta["cloud_time"]) if meta.get("cloud_time") else None
        return gen

    async def stop(self) -> None:
        await self.store.stop()

    async def _load_runtime_state(self) -> RuntimeState:
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
            note_day_pass(st, use, reflected=bool(reflected))
        for holder, day in await self.store.fetchall("SELECT holder, day FROM guest_entries"):
            st.guest_days.add((holder, date.fromisoformat(day)))
        for (booking,) in await self.store.fetchall("SELECT booking FROM booking_checkins"):
            st.checked_in.add(booking)
        return st

    # --- the index -----------------------------------------------------------

    async def swap_index(self, index: SiteIndex) -> None:
        """Make `index` current (one assignment on the loop), tell the followers at
        once, and free the old one piece by piece from a worker thread."""
        box = [self.index]
        self.index = index
        del index
        self.changed(SiteChange(index=True))
        await asyncio.to_thread(dismantle, box)

    # --- freshness -----------------------------------------------------------

    async def mark_synced(self, at: float) -> None:
        """A pull succeeded: the cache is current as of `at`."""
        self.synced_at = at
        ops = [meta_op("synced_at", repr(at))]
        if self.cloud_time is not None:
            ops.append(meta_op("cloud_time", repr(self.cloud_time)))
        await self.store.write(ops)
        self.changed(SiteChange(synced=True))

    def note_cloud_time(self, t: float) -> None:
        if self.cloud_time is None or t > self.cloud_time:
            self.cloud_time = t


def meta_op(key: str, value: str) -> SqlOp:
    return (
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
