"""Usage per company: who came, day passes and guest entries.

Everything is attributed by the membership a person had at their first grant
of each site-local day (`visits`), never by today's: a member whose plan or
company changed mid-month counts once a day, for the company of that day.

- `members`: distinct members and nonmembers of the company who came in the
  period; `member_days`: their visits, one per person and day.
- `day_passes` (`usage.day_pass`): billed to the company whose passes paid
  for it, else to the holder's company that day.
- `guest_entries` (`usage.guest_entry`): billed to the host's company that day.

A use with no visit row (recorded before the reports existed and already
pruned from the outbox) falls back to today's membership.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from edge.site.model import SiteIndex
from edge.site.reports.journal import membership
from edge.site.reports.report import Period, Report, Series

COLUMNS = ("company", "company_name", "members", "member_days", "day_passes", "guest_entries")
NO_COMPANY = ""

_VISITS = """
SELECT company, count(DISTINCT holder), count(*) FROM visits
WHERE day BETWEEN ? AND ? AND kind != 'guest' GROUP BY company
"""

_DAY_PASSES = """
SELECT u.holder, u.company, v.holder IS NOT NULL, v.company
FROM day_pass_uses u LEFT JOIN visits v ON v.holder = u.holder AND v.day = u.day
WHERE u.day BETWEEN ? AND ?
"""

_GUEST_ENTRIES = """
SELECT g.holder, v.holder IS NOT NULL, v.company
FROM guest_entries g LEFT JOIN visits v ON v.holder = g.holder AND v.day = g.day
WHERE g.day BETWEEN ? AND ?
"""


def company_names(conn: sqlite3.Connection) -> dict[str, str]:
    """Names of the companies of the current generation (the index keeps none)."""
    names: dict[str, str] = {}
    for cid, data in conn.execute(
        "SELECT id, data FROM objects WHERE kind = 'company' "
        "AND gen = (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'gen')"
    ):
        try:
            name = json.loads(data).get("name")
        except ValueError:
            continue
        if isinstance(name, str) and name:
            names[cid] = name
    return names


def companies_report(conn: sqlite3.Connection, ix: SiteIndex, period: Period) -> Report:
    first, last = period.start.isoformat(), period.end.isoformat()
    # company -> [members, member_days, day_passes, guest_entries]
    totals: dict[str, list[int]] = {}

    def of(company: str | None) -> list[int]:
        return totals.setdefault(company or NO_COMPANY, [0, 0, 0, 0])

    for company, people, days in conn.execute(_VISITS, (first, last)):
        t = of(company)
        t[0] += people
        t[1] += days
    for holder, paid_by, known, company in conn.execute(_DAY_PASSES, (first, last)):
        if paid_by is None:
            paid_by = company if known else membership(ix, holder)[1]
        of(paid_by)[2] += 1
    for holder, known, company in conn.execute(_GUEST_ENTRIES, (first, last)):
        of(company if known else membership(ix, holder)[1])[3] += 1

    names = company_names(conn)
    # Companies by id; uses with no company last.
    order = sorted(totals, key=lambda c: (c == NO_COMPANY, c))
    rows: list[tuple[Any, ...]] = [(c, names.get(c, ""), *totals[c]) for c in order]
    series = [
        Series(name, tuple((row[0], row[i]) for row in rows))
        for name, i in (("member_days", 3), ("day_passes", 4), ("guest_entries", 5))
    ]
    return Report(
        kind="companies",
        start=period.start,
        end=period.end,
        timezone=period.tz.key,
        columns=COLUMNS,
        rows=rows,
        series=series,
        summary={
            "companies": sum(1 for c in totals if c != NO_COMPANY),
            "member_days": sum(t[1] for t in totals.values()),
            "day_passes": sum(t[2] for t in totals.values()),
            "guest_entries": sum(t[3] for t in totals.values()),
        },
    )
