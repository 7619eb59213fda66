"""Unique visitors per site-local day: distinct people granted at any door.

Each person counts once a day, in one column: `guests` (guest credentials),
else `day_pass` (used a day pass that day, from any source), else `members`,
else `other` (nonmembers let in by a booking or a grant, and holders the site
no longer knows).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from edge.site.reports.report import Period, Report, Series

COLUMNS = ("date", "members", "day_pass", "guests", "other", "total")
CATEGORIES = COLUMNS[1:5]

_SQL = """
SELECT v.day,
    sum(v.kind = 'member' AND u.holder IS NULL),
    sum(v.kind != 'guest' AND u.holder IS NOT NULL),
    sum(v.kind = 'guest'),
    sum(v.kind NOT IN ('member', 'guest') AND u.holder IS NULL),
    count(*)
FROM visits v LEFT JOIN day_pass_uses u ON u.holder = v.holder AND u.day = v.day
WHERE v.day BETWEEN ? AND ?
GROUP BY v.day
"""


def visitors_report(conn: sqlite3.Connection, period: Period) -> Report:
    first, last = period.start.isoformat(), period.end.isoformat()
    by_day = {row[0]: row[1:] for row in conn.execute(_SQL, (first, last))}
    distinct = conn.execute(
        "SELECT count(DISTINCT holder) FROM visits WHERE day BETWEEN ? AND ?", (first, last)
    ).fetchone()[0]
    rows: list[tuple[Any, ...]] = []
    for day in period.days:
        counts = by_day.get(day.isoformat(), (0, 0, 0, 0, 0))
        rows.append((day, *counts))
    series = [
        Series(name, tuple((day.isoformat(), row[i]) for day, *row in rows))
        for i, name in enumerate(CATEGORIES)
    ]
    busiest = max(rows, key=lambda r: r[-1]) if rows else None
    return Report(
        kind="visitors",
        start=period.start,
        end=period.end,
        timezone=period.tz.key,
        columns=COLUMNS,
        rows=rows,
        series=series,
        summary={
            "people": distinct,  # distinct over the period
            "person_days": sum(r[-1] for r in rows),
            "busiest_day": busiest[0].isoformat() if busiest and busiest[-1] else None,
            **{name: sum(r[i + 1] for r in rows) for i, name in enumerate(CATEGORIES)},
        },
    )
