"""Parsing and conversion of the contract's dates, instants and times of day.

Instants are carried as POSIX seconds (float) on the decision path: comparing
floats is the cheapest thing Python does, and a date bound becomes the instant
at which that local day starts in the site's time zone.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_INSTANT_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
_TIME_RE = re.compile(r"([01]\d|2[0-4]):([0-5]\d)\Z")


def parse_date(value: object) -> date:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise ValueError("not a date (expected YYYY-MM-DD)")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError("not a date (no such day)") from None


def parse_instant(value: object) -> datetime:
    if not isinstance(value, str) or not _INSTANT_RE.match(value):
        raise ValueError("not an instant (expected RFC 3339 with an offset)")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an instant (no such time)") from None


def parse_date_or_instant(value: object) -> date | datetime:
    if isinstance(value, str) and len(value) == 10:
        return parse_date(value)
    try:
        return parse_instant(value)
    except ValueError:
        raise ValueError("not a date or an instant") from None


def parse_time_of_day(value: object, *, allow_24: bool) -> int:
    """`HH:MM` to minutes after midnight; `24:00` only where allowed (an end)."""
    m = _TIME_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError("not a time of day (expected HH:MM)")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > 24 * 60 or (minutes == 24 * 60 and not allow_24):
        raise ValueError("not a time of day (24:00 is only allowed as an end)")
    return minutes


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_midnight(day: date, tz: ZoneInfo) -> float:
    """The instant a site-local day starts (DST-safe: zoneinfo resolves gaps)."""
    return datetime.combine(day, time(0), tzinfo=tz).timestamp()


class BoundConverter:
    """Turns date-or-instant text into POSIX seconds for one time zone.

    Start bounds of a date begin at local 00:00; end bounds of a date are
    inclusive, so they end at the next local midnight. Results are memoised:
    a site has a few thousand distinct dates, and 100,000 members share them.
    """

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._start: dict[str, float] = {}
        self._end: dict[str, float] = {}

    def start(self, text: str | None) -> float | None:
        if text is None:
            return None
        cached = self._start.get(text)
        if cached is None:
            if len(text) == 10:
                cached = local_midnight(date.fromisoformat(text), self.tz)
            else:
                cached = datetime.fromisoformat(text).timestamp()
            self._start[text] = cached
        return cached

    def end(self, text: str | None) -> float | None:
        if text is None:
            return None
        cached = self._end.get(text)
        if cached is None:
            if len(text) == 10:
                day = date.fromisoformat(text) + timedelta(days=1)
                cached = local_midnight(day, self.tz)
            else:
                cached = datetime.fromisoformat(text).timestamp()
            self._end[text] = cached
        return cached


def iso_instant(ts: float, tz: ZoneInfo | None = None) -> str:
    """RFC 3339 with milliseconds, in the site's zone when given."""
    dt = datetime.fromtimestamp(ts, tz or UTC)
    return dt.isoformat(timespec="milliseconds")


def in_zone(text: str, tz: ZoneInfo) -> str:
    """An RFC 3339 instant stored in UTC (the audit log's), shown in the site's zone like
    every other time the gateway shows; text that is not an instant is left as it is."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return text
    if ts.tzinfo is None:
        return text
    return ts.astimezone(tz).isoformat(timespec="milliseconds")
