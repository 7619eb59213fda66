"""The room state machine as a pure function of bookings, site facts and the clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.config import RoomConfig
from edge.rooms.phases import (
    Slot,
    credits_for,
    due_overtime,
    due_releases,
    evaluate,
    overtime_minutes,
)
from edge.site.model import Booking

T0 = 1_800_000_000.0  # a booking's start
RC = RoomConfig(preconditioning_min=15, ending_warning_min=5, grace_min=5, overtime_unit_min=15)


def booking(
    bid: str = "b-1",
    start: float = T0,
    minutes: float = 60,
    early_min: float = 10,
    release_min: float = 15,
    status: str = "confirmed",
    invoiced: bool = False,
) -> Booking:
    return Booking(
        id=bid,
        room="ada",
        door="room-ada",
        member="m-1",
        holders=frozenset({"m-1"}),
        start=start,
        end=start + 60 * minutes,
        opens=start - 60 * early_min,
        release_at=start + 60 * release_min,
        status=status,
        invoiced=invoiced,
    )


def slot(b: Booking, checked_in: bool = False, presence: float | None = None, **kw: bool) -> Slot:
    return Slot(
        b,
        checked_in,
        kw.get("adhoc", False),
        kw.get("ended_early", False),
        presence,
        kw.get("billed", False),
    )


@pytest.mark.parametrize(
    ("offset_min", "checked_in", "phase"),
    [
        (-30, False, "free"),
        (-15, False, "upcoming"),  # HVAC to comfort from here
        (-11, False, "upcoming"),
        (-10, False, "awaiting_checkin"),  # the early check-in window opens
        (14, False, "awaiting_checkin"),
        (-5, True, "in_use"),
        (30, True, "in_use"),
        (55, True, "ending"),  # the panel warns
        (60, True, "ended"),  # devices on for the grace period
        (64.9, True, "ended"),
        (65, True, "free"),
        (61, False, "free"),
    ],
)
def test_a_bookings_phases(offset_min: float, checked_in: bool, phase: str) -> None:
    now = evaluate([slot(booking(), checked_in)], RC, T0 + 60 * offset_min)
    assert now.phase == phase


def test_the_next_wake_is_the_next_boundary() -> None:
    s = slot(booking())
    # Entering the panel's next hours is a boundary too.
    assert evaluate([s], RC, T0 - 4 * 3600 - 100).wake_at == T0 - 4 * 3600
    assert evaluate([s], RC, T0 - 16 * 60).wake_at == T0 - 15 * 60
    # Awaiting check-in: the panel's minute, then the release.
    assert evaluate([s], RC, T0 + 14 * 60 + 30).wake_at == T0 + 15 * 60
    assert evaluate([slot(booking(), True)], RC, T0 + 65 * 60).wake_at is None


def test_no_show_released_at_the_minute_unless_invoiced() -> None:
    s = slot(booking())
    assert due_releases([s], T0 + 15 * 60 - 0.001) == []
    assert due_releases([s], T0 + 15 * 60) == [s]
    assert due_releases([slot(booking(invoiced=True))], T0 + 15 * 60) == []
    assert due_releases([slot(booking(), checked_in=True)], T0 + 15 * 60) == []
    assert due_releases([slot(booking(status="cancelled"))], T0 + 15 * 60) == []
    # An invoiced booking nobody came to keeps the room until its end.
    inv = slot(booking(invoiced=True))
    assert evaluate([inv], RC, T0 + 30 * 60).phase == "awaiting_checkin"
    released = slot(replace(booking(), status="released"))
    assert evaluate([released], RC, T0 + 16 * 60).phase == "free"


def test_overtime_is_billed_in_units_once_presence_stops() -> None:
    b = booking()
    s = slot(b, True, presence=b.end + 60)  # the door used a minute after the end
    assert evaluate([s], RC, b.end + 90).phase == "overtime"
    assert due_overtime([s], RC, b.end + 5 * 60) == []  # still held: presence + grace
    assert due_overtime([s], RC, b.end + 6 * 60) == [(s, 15)]
    s2 = slot(b, True, presence=b.end + 16 * 60)
    assert overtime_minutes(s2, RC, None) == 30
    assert due_overtime([slot(b, True, presence=b.end + 60, billed=True)], RC, b.end + 7200) == []
    assert overtime_minutes(slot(b, True, presence=b.end - 60), RC, None) == 0


def test_overtime_stops_where_the_next_booking_opens() -> None:
    a = booking("a", minutes=60)
    b = booking("b", start=a.end + 20 * 60, early_min=10)  # opens 10 min after a's end
    sa = slot(a, True, presence=a.end + 30 * 60)  # someone still there half an hour on
    assert overtime_minutes(sa, RC, b.opens) == 15
    now = evaluate([sa, slot(b)], RC, b.opens)
    assert now.phase == "awaiting_checkin"
    assert now.slot is not None
    assert now.slot.id == "b"


def test_back_to_back_the_next_booking_wins_over_the_grace() -> None:
    a = booking("a", minutes=60)
    b = booking("b", start=a.end, early_min=10)
    now = evaluate([slot(a, True), slot(b)], RC, a.end + 60)
    assert now.phase == "awaiting_checkin"
    assert now.slot is not None
    assert now.slot.id == "b"
    now = evaluate([slot(a, True), slot(b)], RC, a.end - 120)
    assert now.phase == "ending"
    assert now.slot is not None
    assert now.slot.id == "a"


def test_an_early_end_frees_the_room_at_once() -> None:
    b = replace(booking(), end=T0 + 600)
    now = evaluate([slot(b, True, ended_early=True)], RC, T0 + 601)
    assert now.phase == "free"


def test_next_bookings_are_those_of_the_next_four_hours() -> None:
    later = booking("later", start=T0 + 3000)
    far = booking("far", start=T0 + 4 * 3600 + 60)
    now = evaluate([slot(later), slot(far)], RC, T0)
    assert [s.id for s in now.upcoming] == ["later"]


def test_credits_are_rounded_up() -> None:
    assert credits_for(30, 2) == 1
    assert credits_for(31, 2) == 2
    assert credits_for(60, 0) == 0


@given(
    st.lists(
        st.tuples(st.integers(-600, 600), st.integers(5, 180), st.booleans(), st.booleans()),
        max_size=4,
    ),
    st.integers(-900, 900),
)
def test_any_bookings_give_one_phase_and_a_future_wake(
    specs: list[tuple[int, int, bool, bool]], offset_min: int
) -> None:
    slots = sorted(
        (
            slot(booking(f"b{i}", start=T0 + 60 * s, minutes=m, invoiced=inv), checked)
            for i, (s, m, checked, inv) in enumerate(specs)
        ),
        key=lambda s: s.booking.start,
    )
    now = T0 + 60 * offset_min
    result = evaluate(slots, RC, now)
    assert result.wake_at is None or result.wake_at > now
    if result.phase in ("in_use", "ending"):
        assert result.slot is not None
        assert result.slot.checked_in
    if result.phase == "free":
        assert result.slot is None
