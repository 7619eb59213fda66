"""What every report is made of: its period in the site's time zone, its table
and chart series, and the table as CSV.

Dates are site-local (`SiteIndex.tz`), never UTC: a period's bounds are the
instants its first and last local days begin and end, and an hour is one real
hour after local midnight, so a day has 23 or 25 of them across a DST change.
An hour is exported as its start with its UTC offset (`2026-10-25T02:00:00+01:00`),
which tells the two 02:00 hours of an autumn night apart.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge.timeutil import local_midnight

MAX_DAYS = 366  # a year at most: bounds the work of one request on a Pi


class ReportError(ValueError):
    """A request for a report that cannot be made, with a message for the operator."""


@dataclass(frozen=True, slots=True)
class Period:
    """Site-local days `start`..`end`, both included."""

    start: date
    end: date
    tz: ZoneInfo

    @classmethod
    def of(cls, start: date | None, end: date | None, tz: ZoneInfo, now: float) -> Period:
        """The period asked for; the last full week (Monday to Sunday) when a bound is missing."""
        if start is None or end is None:
            week_start, week_end = last_full_week(now, tz)
            start = week_start if start is None else start
            end = week_end if end is None else end
        if end < start:
            raise ReportError(f"the period ends ({end}) before it starts ({start})")
        if (end - start).days >= MAX_DAYS:
            raise ReportError(f"a report covers at most {MAX_DAYS} days ({start} to {end} is more)")
        return cls(start, end, tz)

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    @property
    def begins(self) -> float:
        return local_midnight(self.start, self.tz)

    @property
    def ends(self) -> float:
        return local_midnight(self.end + timedelta(days=1), self.tz)

    def hours(self, day: date) -> list[float]:
        """The instants the real hours of a local day start at (23, 24 or 25 of them)."""
        first = local_midnight(day, self.tz)
        last = local_midnight(day + timedelta(days=1), self.tz)
        return [first + 3600 * i for i in range(math.ceil((last - first) / 3600))]

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.tz)


def last_full_week(now: float, tz: ZoneInfo) -> tuple[date, date]:
    """Monday to Sunday of the last week that has ended, in the site's time zone."""
    today = datetime.fromtimestamp(now, tz).date()
    monday = today - timedelta(days=today.weekday())
    return monday - timedelta(days=7), monday - timedelta(days=1)


def iso_local(ts: float, tz: ZoneInfo) -> str:
    """An instant as local time with its offset, to the second: `2026-03-29T03:00:00+02:00`."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Series:
    """One line or bar group of a chart: (x, y) points, x a local date, an hour's
    start with its offset, a room or a company."""

    name: str
    points: tuple[tuple[str, float | None], ...]


@dataclass(frozen=True, slots=True)
class Report:
    kind: str
    start: date
    end: date
    timezone: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    series: list[Series] = field(default_factory=list)
    # Headline figures (peaks, totals) for the console and the weekly event.
    summary: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """The rows as column -> value (dates as ISO text)."""
        return [{c: _plain(v) for c, v in zip(self.columns, row, strict=True)} for row in self.rows]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (dates as ISO text)."""
        return {
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "timezone": self.timezone,
            "columns": list(self.columns),
            "rows": [[_plain(v) for v in row] for row in self.rows],
            "series": [
                {"name": s.name, "points": [[x, y] for x, y in s.points]} for s in self.series
            ],
            "summary": self.summary,
        }


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


# A spreadsheet runs a cell that starts with one of these as a formula; names come
# from the cloud's data, so such a cell is written with a leading apostrophe
# (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(report: Report) -> str:
    """The report's table as CSV (RFC 4180: CRLF, fields quoted where needed),
    with a header row; dates are site-local ISO 8601, times carry their offset."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    writer.writerows([_cell(v) for v in row] for row in report.rows)
    return out.getvalue()
