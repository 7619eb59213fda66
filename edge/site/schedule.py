"""Weekly schedules evaluated in the site's time zone.

A window `{"days": "mon-fri", "from": "22:00", "to": "06:00"}` whose end is
before its start runs past midnight: it belongs to the day it starts on, which
is also the day whose holiday status closes it. Evaluation works on local wall
time, so daylight-saving changes need no special case: 07:59 local is closed
and 08:00 local is open on both sides of a DST change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60


def parse_days(text: str) -> frozenset[int]:
    """`mon-fri`, `sat`, `fri-mon` (wraps over the weekend) to weekday numbers."""
    if not isinstance(text, str):
        raise ValueError("not a day or day range")
    first, sep, last = text.strip().lower().partition("-")
    try:
        start = DAY_NAMES.index(first)
        end = DAY_NAMES.index(last) if sep else start
    except ValueError:
        raise ValueError(
            f"unknown day {text!r} (expected a day like 'mon' or a range like 'mon-fri')"
        ) from None
    days = {start}
    day = start
    while day != end:
        day = (day + 1) % 7
        days.add(day)
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]
    start: int  # minutes after local midnight, inclusive
    end: int  # minutes after local midnight, exclusive; <= start runs past midnight

    @property
    def overnight(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True, slots=True)
class Opening:
    """One occurrence of a window: the local day it started on and its index."""

    day: date
    window: int


class Schedule:
    __slots__ = ("_by_weekday", "closed_on_holidays", "id", "windows")

    def __init__(
        self, id: str, windows: tuple[Window, ...], closed_on_holidays: bool = False
    ) -> None:
        self.id = id
        self.windows = windows
        self.closed_on_holidays = closed_on_holidays
        # For each weekday: (start, end, index, starts_previous_day) segments, so
        # a lookup walks only the few segments that can contain that day's times.
        by_weekday: list[list[tuple[int, int, int, bool]]] = [[] for _ in range(7)]
        for index, w in enumerate(windows):
            for day in w.days:
                if w.overnight:
                    by_weekday[day].append((w.start, MINUTES_PER_DAY, index, False))
                    by_weekday[(day + 1) % 7].append((0, w.end, index, True))
                else:
                    by_weekday[day].append((w.start, w.end, index, False))
        self._by_weekday = tuple(tuple(s) for s in by_weekday)

    def _key(self) -> tuple[str, tuple[Window, ...], bool]:
        return (self.id, self.windows, self.closed_on_holidays)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def opening(self, local: datetime, holidays: frozenset[date]) -> Opening | None:
        """The window occurrence open at this local wall time, if any."""
        minute = local.hour * 60 + local.minute
        for start, end, index, from_previous_day in self._by_weekday[local.weekday()]:
            if start <= minute < end:
                day = local.date() - timedelta(days=1) if from_previous_day else local.date()
                if self.closed_on_holidays and day in holidays:
                    continue
                return Opening(day, index)
        return None

    def is_open(self, local: datetime, holidays: frozenset[date]) -> bool:
        return self.opening(local, holidays) is not None

    def __repr__(self) -> str:
        return f"Schedule({self.id!r})"
