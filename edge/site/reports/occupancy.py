"""Occupancy: distinct people per area and real local hour.

A person counts in an area from the hour of their first entry grant at one of
its doors that day to the hour they were last granted anywhere on the site
that day, exit readers included (both hours included). Exits are not read
everywhere, so the last grant of the day is the best sign of presence the
gateway has; someone seen once counts in that hour only. An area is a door, as
for the live occupancy (`edge.site.presence`), unless the caller groups doors.

SQL groups the spans (a week of 2,000 members is some 28,000 of them) and
Python adds up the few thousand groups per hour.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from edge.site.model import SiteIndex
from edge.site.reports.report import Period, Report, Series, iso_local

COLUMNS = ("area", "area_name", "date", "hour", "start", "end", "people")

# Spans of a person in an area on a day, in hours after local midnight, counted
# by span: a few thousand rows for a week, which Python adds up per hour. The
# CROSS JOINs keep SQLite's planner from trying every day against every span.
_SQL = """
WITH days(day, midnight, hours) AS ({days}),
{entered}
SELECT e.area, e.day,
    max(0, CAST((e.first_at - d.midnight) / 3600 AS INTEGER)) AS h0,
    min(d.hours - 1, CAST((v.last_at - d.midnight) / 3600 AS INTEGER)) AS h1,
    count(*)
FROM entered e
CROSS JOIN visits v ON v.day = e.day AND v.holder = e.holder
CROSS JOIN days d ON d.day = e.day
GROUP BY e.area, e.day, h0, h1
"""
# Each door its own area: the presence rows are the spans' starts.
_BY_DOOR = """
entered AS (
    SELECT day, holder, door AS area, first_at FROM presence WHERE day BETWEEN ? AND ?)"""
# Doors grouped into areas: a person's first grant at any door of the area.
_BY_AREA = """
areas(door, area) AS ({areas}),
entered AS (
    SELECT p.day, p.holder, coalesce(a.area, p.door) AS area, min(p.first_at) AS first_at
    FROM presence p LEFT JOIN areas a ON a.door = p.door
    WHERE p.day BETWEEN ? AND ? GROUP BY p.day, p.holder, coalesce(a.area, p.door))"""


def values(rows: Sequence[tuple[Any, ...]], width: int) -> tuple[str, list[Any]]:
    """A table of literal rows for a CTE, with its parameters."""
    if not rows:
        return "SELECT " + ", ".join(["NULL"] * width) + " WHERE 0", []
    one = "(" + ",".join("?" * width) + ")"
    return "VALUES " + ",".join([one] * len(rows)), [v for row in rows for v in row]


def occupancy_report(
    conn: sqlite3.Connection, ix: SiteIndex, period: Period, areas: Mapping[str, str] | None
) -> Report:
    mapped = dict(areas or {})
    hours = {day: period.hours(day) for day in period.days}
    day_sql, day_params = values([(d.isoformat(), h[0], len(h)) for d, h in hours.items()], 3)
    params = [*day_params]
    if mapped:
        area_sql, area_params = values(sorted(mapped.items()), 2)
        entered = _BY_AREA.format(areas=area_sql)
        params += area_params
    else:
        entered = _BY_DOOR
    params += [period.start.isoformat(), period.end.isoformat()]
    counts: dict[tuple[str, str, int], int] = {}
    for area, day, h0, h1, people in conn.execute(
        _SQL.format(days=day_sql, entered=entered), params
    ):
        for h in range(h0, h1 + 1):
            counts[(area, day, h)] = counts.get((area, day, h), 0) + people

    def name_of(area: str) -> str:
        if area in mapped.values():
            return area
        door = ix.doors.get(area)
        return door.name if door is not None and door.name else area

    # Every area with a door of the site, and any where someone was (a door since removed).
    names = {mapped.get(d, d) for d in ix.doors} | {a for a, _, _ in counts}
    rows: list[tuple[Any, ...]] = []
    series: list[Series] = []
    peaks: list[dict[str, Any]] = []
    tz = period.tz
    # Each hour once: (date, its key, index in the day, HH:MM, start, end).
    slots = [
        (
            day,
            day.isoformat(),
            i,
            f"{period.local(t):%H:%M}",
            iso_local(t, tz),
            iso_local(t + 3600, tz),
        )
        for day, starts in hours.items()
        for i, t in enumerate(starts)
    ]
    for area in sorted(names):
        label = name_of(area)
        points: list[tuple[str, float | None]] = []
        peak: tuple[int, str] | None = None
        for day, key, i, hhmm, begins, ends in slots:
            people = counts.get((area, key, i), 0)
            rows.append((area, label, day, hhmm, begins, ends, people))
            points.append((begins, people))
            if people and (peak is None or people > peak[0]):
                peak = (people, begins)
        series.append(Series(area, tuple(points)))
        if peak is not None:
            peaks.append({"area": area, "name": label, "people": peak[0], "start": peak[1]})
    return Report(
        kind="occupancy",
        start=period.start,
        end=period.end,
        timezone=tz.key,
        columns=COLUMNS,
        rows=rows,
        series=series,
        summary={"peaks": peaks},
    )
