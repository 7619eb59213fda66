"""A room's phase as a pure function of its bookings, what happened on site and
the clock (`evaluate`):

    free -> upcoming (HVAC to comfort `preconditioning_min` before the start)
         -> awaiting_checkin (from the booking's early check-in window)
         -> in_use (checked in: devices on) -> ending (`ending_warning_min` left)
         -> ended (devices on for `grace_min`) or overtime (presence after the end)
         -> free (devices off, HVAC to standby)
    awaiting_checkin -> released (no check-in within `no_show_release_min`,
                        unless the booking is invoiced) -> free

Also which no-shows are due for release, which overtime is due for billing,
and what minutes cost in credits. No I/O, no clock of its own: the room
controller (`controller.py`) applies all of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from edge.site.model import Booking

Phase = Literal["free", "upcoming", "awaiting_checkin", "in_use", "ending", "ended", "overtime"]
NEXT_WINDOW_S = 4 * 3600  # the panel shows the bookings of the next four hours
RELEASE_LOOKBACK_S = 24 * 3600  # a no-show older than this is the cloud's business
ON_PHASES: frozenset[str] = frozenset({"in_use", "ending", "ended", "overtime"})
COMFORT_PHASES: frozenset[str] = ON_PHASES | {"upcoming", "awaiting_checkin"}
STATUS = {
    "free": "free",
    "upcoming": "free",
    "awaiting_checkin": "awaiting_checkin",
    "in_use": "busy",
    "ending": "busy",
    "ended": "busy",
    "overtime": "busy",
}


class RoomTimes(Protocol):
    """The room's timings the phases follow (`[rooms.<id>]`; `RoomConfig` is one)."""

    @property
    def preconditioning_min(self) -> float: ...

    @property
    def ending_warning_min(self) -> float: ...

    @property
    def grace_min(self) -> float: ...

    @property
    def overtime_unit_min(self) -> int: ...


@dataclass
class Facts:
    """What happened on site to one booking (the `booking_facts` table)."""

    booking: str
    room: str
    released_at: float | None = None
    ended_at: float | None = None  # ended early at the panel
    extended_to: float | None = None
    presence_at: float | None = None  # the last sign of presence after the end
    overtime_billed: bool = False


@dataclass(frozen=True, slots=True)
class Slot:
    """A booking as its room sees it: its effective times and what happened to it."""

    booking: Booking  # with the site's changes applied (end, status)
    checked_in: bool
    adhoc: bool
    ended_early: bool
    presence_at: float | None
    overtime_billed: bool

    @property
    def id(self) -> str:
        return self.booking.id

    @property
    def active(self) -> bool:
        return self.booking.status not in ("cancelled", "released")


@dataclass(frozen=True, slots=True)
class RoomNow:
    phase: Phase
    slot: Slot | None  # the booking the phase is about
    until: float | None  # when this phase ends, as far as is known now
    upcoming: tuple[Slot, ...]  # active bookings starting within the next hour
    wake_at: float | None  # the next instant the phase or the panel may change


def _hold_until(s: Slot, rc: RoomTimes, cap: float | None) -> float:
    """How long a checked-in booking keeps its room after its end: the grace
    period, extended by presence, never into the next booking."""
    end = s.booking.end
    if s.ended_early:
        return end
    last = max(end, s.presence_at or end)
    hold = last + 60 * rc.grace_min
    return hold if cap is None else min(hold, cap)


def overtime_minutes(s: Slot, rc: RoomTimes, cap: float | None) -> int:
    """Minutes billed for presence after the end, in whole units (0: none)."""
    if s.ended_early or s.presence_at is None or s.presence_at <= s.booking.end:
        return 0
    last = s.presence_at if cap is None else min(s.presence_at, cap)
    if last <= s.booking.end:
        return 0
    unit = 60 * rc.overtime_unit_min
    return math.ceil((last - s.booking.end) / unit) * rc.overtime_unit_min


def _cap(slots: list[Slot], i: int) -> float | None:
    """The start of the next active booking after slot i (overtime stops there)."""
    start = slots[i].booking.start
    # By index, not over a slice: a copy of the rest per slot made each evaluation
    # quadratic in the room's bookings.
    for j in range(i + 1, len(slots)):
        later = slots[j]
        if later.active and later.booking.start >= start:
            return later.booking.opens
    return None


def evaluate(slots: list[Slot], rc: RoomTimes, now: float) -> RoomNow:
    """The room's phase at `now`. `slots`: its bookings, sorted by start."""
    active = [s for s in slots if s.active]
    phase: Phase = "free"
    current: Slot | None = None
    until: float | None = None
    wakes: list[float] = []

    def wake(t: float) -> None:
        if t > now:
            wakes.append(t)

    for i, s in enumerate(active):
        b = s.booking
        cap = _cap(active, i)
        hold = _hold_until(s, rc, cap) if s.checked_in else b.end
        for t in (b.start - 60 * rc.preconditioning_min, b.opens, b.release_at, b.end, hold):
            wake(t)
        wake(b.end - 60 * rc.ending_warning_min)
        if s.checked_in and now < b.end and (b.opens <= now or s.adhoc):
            warn = now >= b.end - 60 * rc.ending_warning_min
            phase, current, until = ("ending" if warn else "in_use"), s, b.end
            break
        if not s.checked_in and b.opens <= now < b.end and not b.released_at(now, False):
            if phase not in ("in_use", "ending"):
                phase, current, until = "awaiting_checkin", s, b.release_at
            continue
        if s.checked_in and not s.ended_early and b.end <= now < hold:
            if phase == "free" or phase == "upcoming":
                over = s.presence_at is not None and s.presence_at > b.end
                phase, current, until = ("overtime" if over else "ended"), s, hold
            continue
        if b.start - 60 * rc.preconditioning_min <= now < b.opens and phase == "free":
            phase, current, until = "upcoming", s, b.opens
    upcoming = tuple(
        s for s in active if now <= s.booking.start <= now + NEXT_WINDOW_S and s is not current
    )
    if phase in ("in_use", "ending", "awaiting_checkin", "upcoming"):
        wake(math.floor(now / 60) * 60 + 60)  # minutes left on the panel
    for s in active:
        wake(s.booking.start - NEXT_WINDOW_S)  # comes into the panel's next hours
    return RoomNow(phase, current, until, upcoming, min(wakes) if wakes else None)


def due_releases(slots: Iterable[Slot], now: float) -> list[Slot]:
    """Confirmed, not invoiced bookings nobody checked into in time."""
    return [
        s
        for s in slots
        if s.active
        and not s.checked_in
        and s.booking.released_at(now, False)
        and now - s.booking.release_at < RELEASE_LOOKBACK_S
    ]


def due_overtime(slots: list[Slot], rc: RoomTimes, now: float) -> list[tuple[Slot, int]]:
    """Overtime whose presence has stopped (the hold is over), not yet billed."""
    out = []
    active = [s for s in slots if s.active]
    for i, s in enumerate(active):
        if not s.checked_in or s.overtime_billed or s.presence_at is None:
            continue
        cap = _cap(active, i)
        if now >= _hold_until(s, rc, cap):
            minutes = overtime_minutes(s, rc, cap)
            if minutes:
                out.append((s, minutes))
    return out


def credits_for(minutes: int, per_hour: int) -> int:
    return math.ceil(minutes * per_hour / 60)


# --- the controller ------------------------------------------------------------------
