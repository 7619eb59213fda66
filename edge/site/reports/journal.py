"""What the reports keep beyond the outbox and the index (migration 5 of
`edge.site.store`).

The outbox forgets a delivered event after `events.retention_days` (one day at
the least), the index forgets a booking a day after its end (the platform
bridge sends no older ones), and neither knows which company a member belonged
to last month. So the reports keep, compactly:

- `visits`: one row per site-local day and holder (never the UTC day), with
  their first and last grant anywhere and their membership (kind, company,
  plan; for a guest, the host's company) as of the first grant that day;
- `presence`: one row per day, holder and door, with the first and last grant
  there at an entry reader (as `edge.site.presence` has it, a grant at an exit
  reader enters no area; it only counts as being seen);
- `report_bookings`: each booking of the cloud as last seen once it started.
- `report_overtime`: the overtime billed, by event.

Two ways fill them, and either may see an event twice (the upserts keep the
earliest first grant with its membership, the latest last grant, one overtime
row per event id):

- `journal_ops(index, events)`, meant for `Recorder.record`, in the same
  transaction as the events, with the membership of the index that decided;
- `catch_up(store, index)`, which reads the outbox from where it last stopped
  and takes the bookings from the index. Memberships come from the index of
  the moment it runs, so it must run often (hourly, and at least once per
  retention period, before `Recorder.prune`): every report runs it first.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.site.model import SiteIndex
from edge.site.sqlite import Many, SqlOp, connect_sync
from edge.site.store import Store

GRANTED = "access.granted"
OVERTIME = "usage.room_overtime"
SEQ_MARK = "report_outbox_seq"  # meta: the last outbox row read
BOOKINGS_MARK = "report_bookings_at"  # meta: when the bookings were last taken
CHUNK = 1000  # outbox rows per read and per write
BOOKING_LINGER_S = 86400  # a booking stays in the index about this long after its end

VISIT_SQL = (
    "INSERT INTO visits (day, holder, first_at, last_at, kind, company, plan) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (day, holder) DO UPDATE SET "
    "kind = CASE WHEN excluded.first_at < visits.first_at "
    "THEN excluded.kind ELSE visits.kind END, "
    "company = CASE WHEN excluded.first_at < visits.first_at "
    "THEN excluded.company ELSE visits.company END, "
    "plan = CASE WHEN excluded.first_at < visits.first_at "
    "THEN excluded.plan ELSE visits.plan END, "
    "first_at = min(visits.first_at, excluded.first_at), "
    "last_at = max(visits.last_at, excluded.last_at)"
)
PRESENCE_SQL = (
    "INSERT INTO presence (day, holder, door, first_at, last_at) VALUES (?,?,?,?,?) "
    "ON CONFLICT (day, holder, door) DO UPDATE SET "
    "first_at = min(presence.first_at, excluded.first_at), "
    "last_at = max(presence.last_at, excluded.last_at)"
)
OVERTIME_SQL = (
    "INSERT OR IGNORE INTO report_overtime (event_id, booking, room, minutes, at) "
    "VALUES (?,?,?,?,?)"
)
BOOKING_SQL = (
    "INSERT OR REPLACE INTO report_bookings (booking, room, member, start_at, end_at, status) "
    "VALUES (?,?,?,?,?,?)"
)
MARK_SQL = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
    "value = excluded.value WHERE CAST(excluded.value AS REAL) > CAST(meta.value AS REAL)"
)

Membership = tuple[str, str | None, str | None]  # kind, company, plan


def membership(ix: SiteIndex, holder: str) -> Membership:
    """Who a holder is now: a guest belongs to the company of their host."""
    h = ix.holders.get(holder)
    if h is None:
        return ("unknown", None, None)
    if h.kind == "guest":
        host = ix.holders.get(h.host) if h.host is not None else None
        return ("guest", host.company if host is not None else None, None)
    return (h.kind, h.company, h.plan)


def _instant(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass
class JournalRows:
    visits: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    presence: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    overtime: list[tuple[Any, ...]] = field(default_factory=list)

    def ops(self) -> list[SqlOp]:
        ops: list[SqlOp] = []
        if self.visits:
            ops.append((VISIT_SQL, Many(self.visits.values())))
        if self.presence:
            ops.append((PRESENCE_SQL, Many(self.presence.values())))
        if self.overtime:
            ops.append((OVERTIME_SQL, Many(self.overtime)))
        return ops


def journal_rows(ix: SiteIndex, events: Iterable[dict[str, Any]]) -> JournalRows:
    """The report rows of some events, merged per day and holder (and door)."""
    tz = ix.tz
    out = JournalRows()
    for ev in events:
        kind = ev.get("type")
        if kind == GRANTED:
            holder, door = ev.get("holder"), ev.get("door")
            ts = _instant(ev.get("at"))
            if not isinstance(holder, str) or not isinstance(door, str) or ts is None:
                continue  # an admin or schedule opening: nobody known came in
            day = datetime.fromtimestamp(ts, tz).date().isoformat()
            visit = out.visits.get((day, holder))
            if visit is None:
                out.visits[(day, holder)] = [day, holder, ts, ts, *membership(ix, holder)]
            elif ts < visit[2]:
                visit[2] = ts
                visit[4:7] = membership(ix, holder)  # the membership of the first grant
            elif ts > visit[3]:
                visit[3] = ts
            details = ev.get("details")
            if isinstance(details, dict) and details.get("side") == "out":
                continue  # leaving (an exit reader): seen, but into no area
            seen = out.presence.get((day, holder, door))
            if seen is None:
                out.presence[(day, holder, door)] = [day, holder, door, ts, ts]
            else:
                seen[3], seen[4] = min(seen[3], ts), max(seen[4], ts)
        elif kind == OVERTIME:
            details = ev.get("details") or {}
            booking, room, minutes = (details.get(k) for k in ("booking", "room", "minutes"))
            ts = _instant(ev.get("at"))
            if (
                isinstance(booking, str)
                and isinstance(room, str)
                and isinstance(minutes, int)
                and ts is not None
            ):
                out.overtime.append((ev.get("id"), booking, room, minutes, ts))
    return out


def journal_ops(ix: SiteIndex, events: Iterable[dict[str, Any]]) -> list[SqlOp]:
    """The report rows of events about to be recorded, for the same transaction
    (`Recorder.record`), with the membership of the index that decided."""
    return journal_rows(ix, events).ops()


def booking_ops(ix: SiteIndex, now: float, since: float | None) -> list[SqlOp]:
    """The bookings that started, and may have changed since the last look."""
    oldest = None if since is None else since - BOOKING_LINGER_S
    rows = [
        (b.id, b.room, b.member, b.start, b.end, b.status)
        for b in list(ix.bookings.values())
        if b.start <= now and (oldest is None or b.end >= oldest)
    ]
    return [(BOOKING_SQL, Many(rows))] if rows else []


def mark_op(key: str, value: float) -> SqlOp:
    """Move a mark forward (never back: two catch-ups may overlap)."""
    return (MARK_SQL, (key, repr(value)))


def _read_outbox(path: Path, ix: SiteIndex, after: int) -> tuple[int, int, list[SqlOp]]:
    """In a worker thread: the next outbox rows the reports use, as report rows."""
    conn = connect_sync(path)
    try:
        rows = conn.execute(
            "SELECT seq, body FROM outbox WHERE seq > ? AND type IN (?, ?) ORDER BY seq LIMIT ?",
            (after, GRANTED, OVERTIME, CHUNK),
        ).fetchall()
    finally:
        conn.close()
    events = []
    for _, body in rows:
        try:
            events.append(json.loads(body))
        except ValueError:
            continue
    last = rows[-1][0] if rows else after
    return last, len(rows), journal_ops(ix, events)


async def catch_up(store: Store, ix: SiteIndex, now: float | None = None) -> int:
    """Bring the report tables up to date with the outbox and the index; returns
    the number of outbox rows read. Safe to run twice at once."""
    now = time.time() if now is None else now
    await store.write([])  # what was recorded before the call is committed, so read here
    marks = await store.meta()
    after = int(float(marks.get(SEQ_MARK, "0")))
    since = float(marks[BOOKINGS_MARK]) if BOOKINGS_MARK in marks else None
    ops = [*booking_ops(ix, now, since), mark_op(BOOKINGS_MARK, now)]
    read = 0
    while True:
        last, count, rows = await asyncio.to_thread(_read_outbox, store.path, ix, after)
        read += count
        if count:
            ops += [*rows, mark_op(SEQ_MARK, last)]
            after = last
        await store.write(ops)
        ops = []
        if count < CHUNK:
            return read
