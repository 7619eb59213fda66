"""Room utilisation: booked, used, released and overtime minutes per room.

A booking belongs to the period its start falls in, with all its minutes.
Booked: start to end, with any extension at the panel. Used: the checked-in
part of the booked time, from the check-in (or the start, if earlier) to the
end, or to when it was ended early; a booking the cloud marks checked in
without a check-in here counts from its start. No-show: a booking released
here or by the cloud, with its booked minutes. Overtime: the minutes billed
(`usage.room_overtime`). Cancelled bookings do not count. Percentages are of
the room's open hours in the period, when known: `room_hours` given by the
caller, else the unlock schedule of the room's door; else they are empty.
Minutes outside those hours count too, so a room used at night can pass 100 %.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from edge.site.model import SiteIndex
from edge.site.reports.report import Period, Report, Series
from edge.site.schedule import MINUTES_PER_DAY, Schedule

COLUMNS = (
    "room",
    "room_name",
    "bookings",
    "booked_min",
    "used_min",
    "no_shows",
    "no_show_min",
    "overtime_min",
    "open_min",
    "booked_pct",
    "used_pct",
)

_BOOKINGS = """
SELECT b.booking, b.room, b.start_at, b.end_at, b.status,
    f.released_at, f.ended_at, f.extended_to, c.at, o.minutes
FROM (
    SELECT booking, room, start_at, end_at, status FROM report_bookings
    UNION ALL
    SELECT id, room, start, end, 'checked_in' FROM room_bookings
    WHERE id NOT IN (SELECT booking FROM report_bookings)
) AS b
LEFT JOIN booking_facts f ON f.booking = b.booking
LEFT JOIN booking_checkins c ON c.booking = b.booking
LEFT JOIN (SELECT booking, sum(minutes) AS minutes FROM report_overtime GROUP BY booking) o
    ON o.booking = b.booking
WHERE b.start_at >= ? AND b.start_at < ? AND b.status != 'cancelled'
"""

# Overtime of a booking the gateway never saw start (it came and went between
# two catch-ups): counted by when it was billed.
_STRAY_OVERTIME = """
SELECT room, sum(minutes) FROM report_overtime
WHERE at >= ? AND at < ?
    AND booking NOT IN (SELECT booking FROM report_bookings)
    AND booking NOT IN (SELECT id FROM room_bookings)
GROUP BY room
"""


def _wall(day: date, minute: int, period: Period) -> float:
    if minute >= MINUTES_PER_DAY:
        day, minute = day + timedelta(days=1), minute - MINUTES_PER_DAY
    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=period.tz).timestamp()


def open_seconds(schedule: Schedule, holidays: frozenset[date], period: Period) -> float:
    """Real seconds a schedule is open within the period (overlapping windows once)."""
    spans: list[tuple[float, float]] = []
    begins, ends = period.begins, period.ends
    # From the day before: a window past midnight reaches into the first day.
    for day in [period.start - timedelta(days=1), *period.days]:
        if schedule.closed_on_holidays and day in holidays:
            continue
        for w in schedule.windows:
            if day.weekday() not in w.days:
                continue
            end = w.end + MINUTES_PER_DAY if w.overnight else w.end
            lo, hi = max(begins, _wall(day, w.start, period)), min(ends, _wall(day, end, period))
            if hi > lo:
                spans.append((lo, hi))
    total, reach = 0.0, begins
    for lo, hi in sorted(spans):
        lo = max(lo, reach)
        if hi > lo:
            total += hi - lo
            reach = hi
    return total


def _pct(part: float, whole: float | None) -> float | None:
    return round(100 * part / whole, 1) if whole else None


@dataclass
class RoomTotals:
    bookings: int = 0
    booked_s: float = 0.0
    used_s: float = 0.0
    no_shows: int = 0
    no_show_s: float = 0.0
    overtime_min: int = 0


def rooms_report(
    conn: sqlite3.Connection,
    ix: SiteIndex,
    period: Period,
    room_hours: Mapping[str, Schedule] | None,
) -> Report:
    totals = {rid: RoomTotals() for rid in ix.rooms}
    for (
        _bid,
        room,
        start,
        end,
        status,
        released_at,
        ended_at,
        extended_to,
        checked_in_at,
        overtime,
    ) in conn.execute(_BOOKINGS, (period.begins, period.ends)):
        t = totals.setdefault(room, RoomTotals())
        booked_end = max(end, extended_to) if extended_to is not None else end
        booked = max(0.0, booked_end - start)
        t.bookings += 1
        t.booked_s += booked
        if released_at is not None or status == "released":
            t.no_shows += 1
            t.no_show_s += booked
        elif checked_in_at is not None or status == "checked_in":
            used_from = max(start, checked_in_at) if checked_in_at is not None else start
            used_to = min(booked_end, ended_at) if ended_at is not None else booked_end
            t.used_s += max(0.0, used_to - used_from)
        t.overtime_min += overtime or 0
    for room, minutes in conn.execute(_STRAY_OVERTIME, (period.begins, period.ends)):
        totals.setdefault(room, RoomTotals()).overtime_min += minutes

    hours = dict(room_hours or {})
    rows: list[tuple[Any, ...]] = []
    for rid in sorted(totals):
        t = totals[rid]
        room = ix.rooms.get(rid)
        schedule = hours.get(rid)
        if schedule is None and room is not None and room.door is not None:
            door = ix.doors.get(room.door)
            schedule = door.unlock_schedule if door is not None else None
        open_min = None
        if schedule is not None:
            open_min = round(open_seconds(schedule, ix.holidays, period) / 60)
        booked_min, used_min = round(t.booked_s / 60), round(t.used_s / 60)
        rows.append(
            (
                rid,
                room.name if room is not None and room.name else rid,
                t.bookings,
                booked_min,
                used_min,
                t.no_shows,
                round(t.no_show_s / 60),
                t.overtime_min,
                open_min,
                _pct(t.booked_s / 60, open_min),
                _pct(t.used_s / 60, open_min),
            )
        )
    series = [
        Series(name, tuple((row[0], row[i]) for row in rows))
        for name, i in (("booked_min", 3), ("used_min", 4), ("no_show_min", 6), ("overtime_min", 7))
    ]
    return Report(
        kind="rooms",
        start=period.start,
        end=period.end,
        timezone=period.tz.key,
        columns=COLUMNS,
        rows=rows,
        series=series,
        summary={
            name: sum(row[i] for row in rows)
            for name, i in (
                ("bookings", 2),
                ("booked_min", 3),
                ("used_min", 4),
                ("no_shows", 5),
                ("no_show_min", 6),
                ("overtime_min", 7),
            )
        },
    )
