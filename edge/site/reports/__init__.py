"""The site console's reports: data for its charts and its CSV files.

`build(store, index, kind, start, end)` makes one report for the site-local
days `start` to `end` (both included; the last full week, Monday to Sunday,
by default); `to_csv(report)` is its table as CSV; `weekly_report` is the last
week's summary as an event for the outbox and MQTT. Kinds:

- `occupancy`: distinct people per area and real local hour. A person counts
  in an area from the hour of their first entry at one of its doors that day
  to the hour of their last grant anywhere that day (`occupancy.py`). An area
  is a door, as in the live occupancy (`edge.site.presence`), unless the
  caller groups doors (`areas`, door -> area): the site model has no areas.
- `visitors`: distinct people granted per local day: members, day pass,
  guests, other (`visitors.py`).
- `rooms`: booked, used, no-show and overtime minutes per room, and their
  share of the room's open hours (`rooms.py`).
- `companies`: members who came, their visits, day passes and guest entries
  per company (`companies.py`).

What is counted and why:

- A person is a holder id and counts once per local day, whatever the number
  of entries, doors or plans. Company and plan are those the holder had at
  their first grant that day, as the store recorded them then
  (`journal.py`), not today's: a team whose members changed plan or company
  mid-month is neither counted twice nor split or dropped.
- Dates and hours are local to `SiteIndex.tz`: an entry at 00:30 on the 1st is
  on the 1st, whatever the UTC offset; a DST day has 23 or 25 hours, exported
  with their offsets (`report.py`).
- Only grants that name a holder are visits (not admin or schedule openings,
  not denials).

The reports read tables that are never pruned (`visits`, `presence`,
`report_*`, `day_pass_uses`, `guest_entries`, `booking_*`, `room_bookings`),
not the outbox (delivered events go after `events.retention_days`). Each `build` first brings
those tables up to date (`catch_up`), then runs its SQL in a worker thread on a
connection of its own: WAL lets it read while the writer commits, and neither
the event loop nor the store's connection waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal, get_args

from edge.site.events import make_event
from edge.site.model import SiteIndex
from edge.site.reports.companies import companies_report
from edge.site.reports.journal import catch_up, journal_ops
from edge.site.reports.occupancy import occupancy_report
from edge.site.reports.report import (
    Period,
    Report,
    ReportError,
    Series,
    last_full_week,
    to_csv,
)
from edge.site.reports.rooms import rooms_report
from edge.site.reports.visitors import visitors_report
from edge.site.schedule import Schedule
from edge.site.sqlite import connect_sync
from edge.site.store import Store

__all__ = [
    "KINDS",
    "WEEKLY_EVENT",
    "Report",
    "ReportError",
    "ReportKind",
    "Series",
    "build",
    "catch_up",
    "journal_ops",
    "last_full_week",
    "to_csv",
    "weekly_report",
]

ReportKind = Literal["occupancy", "visitors", "rooms", "companies"]
KINDS: tuple[str, ...] = get_args(ReportKind)

# Not a type of the contract (`edge-sync/1` lists none for reports). The
# uploader sends every outbox row whatever its type; a cloud that refuses it
# marks that one event rejected (kept, never retried, counted in `edgectl sync
# status`) and the others go through.
WEEKLY_EVENT = "site.report.weekly"


def _compute(
    store: Store,
    ix: SiteIndex,
    kind: str,
    period: Period,
    areas: Mapping[str, str] | None,
    room_hours: Mapping[str, Schedule] | None,
) -> Report:
    """In a worker thread, on a read-only connection of its own."""
    conn = connect_sync(store.path)
    try:
        conn.execute("PRAGMA query_only = ON")
        if kind == "occupancy":
            return occupancy_report(conn, ix, period, areas)
        if kind == "visitors":
            return visitors_report(conn, period)
        if kind == "rooms":
            return rooms_report(conn, ix, period, room_hours)
        return companies_report(conn, ix, period)
    finally:
        conn.close()


async def build(
    store: Store,
    index: SiteIndex,
    kind: str,
    start_date: date | None = None,
    end_date: date | None = None,
    *,
    now: float | None = None,
    areas: Mapping[str, str] | None = None,
    room_hours: Mapping[str, Schedule] | None = None,
) -> Report:
    """One report over site-local days `start_date`..`end_date` (the last full
    week when a bound is None). `areas` groups doors (door id -> area);
    `room_hours` gives rooms their open hours (room id -> schedule).

    Raises `ReportError` for an unknown kind or a bad period.
    """
    if kind not in KINDS:
        raise ReportError(f"unknown report {kind!r} (expected one of: {', '.join(KINDS)})")
    now = time.time() if now is None else now
    period = Period.of(start_date, end_date, index.tz, now)
    await catch_up(store, index, now)
    return await asyncio.to_thread(_compute, store, index, kind, period, areas, room_hours)


async def weekly_report(
    store: Store,
    index: SiteIndex,
    now: float,
    *,
    gateway: str,
    areas: Mapping[str, str] | None = None,
    room_hours: Mapping[str, Schedule] | None = None,
) -> dict[str, Any]:
    """The last full week's summary as a `site.report.weekly` event, not yet recorded
    (`Recorder.record` queues it to the outbox; the caller may publish it too)."""
    start, end = last_full_week(now, index.tz)
    period = Period(start, end, index.tz)
    await catch_up(store, index, now)
    made = {
        kind: await asyncio.to_thread(_compute, store, index, kind, period, areas, room_hours)
        for kind in KINDS
    }
    details: dict[str, Any] = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "timezone": index.tz.key,
        # Per day, per room, per company; occupancy only as its peaks (its rows
        # are an hour each: the console has them).
        "visitors": {**made["visitors"].summary, "days": made["visitors"].records()},
        "occupancy": made["occupancy"].summary,
        "rooms": {**made["rooms"].summary, "rooms": made["rooms"].records()},
        "companies": {**made["companies"].summary, "companies": made["companies"].records()},
    }
    return make_event(WEEKLY_EVENT, now, index.tz, index.site_id, gateway, details=details)
