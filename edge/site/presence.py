"""Who is on site now, as far as the doors can tell: the occupancy estimate.

The gateway keeps no presence of its own, so occupancy is defined from the
grants it records. Someone counts as on site from a grant at a door (at an
entry reader, or through `edgectl present`) until the first of:

- a grant at one of a door's exit readers (`out_readers`),
- `window_s` after their latest entry (`[homeassistant] occupancy_hours`),
- the end of the site's local day (midnight in the site's time zone).

Each person is counted once, in the "area" of the door they last entered
through. Doors do not see anyone leave through an exit button or behind
someone else, so on a site without exit readers the count errs high until
the window closes. Pure: it is fed events and asked with the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Stay:
    door: str  # the door of the latest entry: the area the person is in
    since: float
    until: float


def day_end(at: float, tz: ZoneInfo) -> float:
    """The next local midnight after `at`, in the site's zone."""
    day = datetime.fromtimestamp(at, tz).date() + timedelta(days=1)
    return datetime.combine(day, time(0), tzinfo=tz).timestamp()


@dataclass
class Presence:
    window_s: float
    stays: dict[str, Stay] = field(default_factory=dict)  # by holder
    # The local day of the latest entry, (zone, start, end): a day's grants share it.
    _day: tuple[ZoneInfo | None, float, float] = field(
        default=(None, 0.0, 0.0), compare=False, repr=False
    )

    def _day_end(self, at: float, tz: ZoneInfo) -> float:
        zone, start, end = self._day
        if zone is not tz or not start <= at < end:
            day = datetime.fromtimestamp(at, tz).date()
            start = datetime.combine(day, time(0), tzinfo=tz).timestamp()
            end = day_end(at, tz)
            self._day = (tz, start, end)
        return end

    def entered(self, holder: str, door: str, at: float, tz: ZoneInfo) -> bool:
        """An entry grant; False when it changes nothing (an older or repeated event)."""
        old = self.stays.get(holder)
        if old is not None and old.since >= at:
            return False
        self.stays[holder] = Stay(door, at, min(at + self.window_s, self._day_end(at, tz)))
        return True

    def left(self, holder: str, at: float) -> bool:
        """An exit grant; an exit older than the latest entry changes nothing."""
        old = self.stays.get(holder)
        if old is None or old.since > at:
            return False
        del self.stays[holder]
        return True

    def apply(self, event: dict[str, Any], tz: ZoneInfo) -> bool:
        """One recorded event (`Recorder` form); True when the occupancy changed."""
        if event.get("type") != "access.granted":
            return False
        details = event.get("details")
        side = details.get("side") if isinstance(details, dict) else None
        return self.granted(event.get("holder"), event.get("door"), event.get("at"), side, tz)

    def granted(self, holder: Any, door: Any, at: Any, side: Any, tz: ZoneInfo) -> bool:
        """One `access.granted` by its fields; anything not well formed changes nothing."""
        if not isinstance(holder, str) or not isinstance(door, str) or not isinstance(at, str):
            return False
        try:
            ts = datetime.fromisoformat(at).timestamp()
        except ValueError:
            return False
        if side == "out":
            return self.left(holder, ts)
        return self.entered(holder, door, ts, tz)

    def expire(self, now: float) -> bool:
        gone = [h for h, s in self.stays.items() if s.until <= now]
        for holder in gone:
            del self.stays[holder]
        return bool(gone)

    def next_expiry(self) -> float | None:
        return min((s.until for s in self.stays.values()), default=None)

    def summary(self, now: float) -> dict[str, Any]:
        """`{"count": N, "by_area": {door: n}}` for the people on site at `now`."""
        by_area: dict[str, int] = {}
        for s in self.stays.values():
            if s.since <= now < s.until:
                by_area[s.door] = by_area.get(s.door, 0) + 1
        return {"count": sum(by_area.values()), "by_area": dict(sorted(by_area.items()))}
