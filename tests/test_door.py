"""The door state machine, driven with explicit instants."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.access.door import DoorMachine, DoorTiming, Output

T = DoorTiming(unlock_s=5, extended_unlock_s=15, exit_unlock_s=4, held_open_s=30, prealarm_s=10)


def events(outputs: list[Output]) -> list[str]:
    return [o.value for o in outputs if o.kind == "event"]


def strikes(outputs: list[Output]) -> list[bool]:
    return [o.value for o in outputs if o.kind == "strike"]


def closed_door(**kw: Any) -> DoorMachine:
    d = DoorMachine("front", T, **kw)
    d.contact(0, False)
    return d


def test_grant_unlocks_for_the_unlock_time_then_relocks() -> None:
    d = closed_door()
    assert strikes(d.grant(100)) == [True]
    assert d.deadline() == 105
    assert d.tick(104.9) == []
    assert strikes(d.tick(105)) == [False]
    assert d.deadline() is None
    assert d.state(106) == "locked, closed"


def test_extended_unlock_for_holders_who_need_it() -> None:
    d = closed_door()
    d.grant(100, extended=True)
    assert d.deadline() == 115


def test_a_later_grant_extends_never_shortens() -> None:
    d = closed_door()
    d.grant(100, extended=True)
    assert strikes(d.grant(101)) == []
    assert d.deadline() == 115


def test_open_after_grant_then_close_relocks_at_once() -> None:
    d = closed_door()
    d.grant(100)
    out = d.contact(101, True)
    assert events(out) == []
    assert d.state(101) == "unlocked (grant), open"
    out = d.contact(102, False)
    assert strikes(out) == [False]
    assert d.state(102) == "locked, closed"


def test_without_relock_on_close_the_unlock_time_runs_out() -> None:
    d = DoorMachine("front", DoorTiming(unlock_s=5, relock_on_close=False))
    d.contact(0, False)
    d.grant(100)
    d.contact(101, True)
    assert strikes(d.contact(102, False)) == []
    assert strikes(d.tick(105)) == [False]


def test_forced_open() -> None:
    d = closed_door()
    assert events(d.contact(50, True)) == ["door.forced"]
    assert d.state(50) == "locked, FORCED OPEN"
    # A forced door is not also reported as held open.
    assert d.deadline() is None
    assert events(d.tick(200)) == []


def test_exit_request_is_not_forced() -> None:
    d = closed_door()
    out = d.exit_request(10)
    assert strikes(out) == [True]
    assert events(d.contact(11, True)) == []
    assert events(d.contact(12, False)) == []


def test_opening_after_the_unlock_time_is_forced() -> None:
    d = closed_door()
    d.grant(100)
    d.tick(105)
    assert events(d.contact(106, True)) == ["door.forced"]


def test_held_open_prealarm_then_alarm_then_clears_on_close() -> None:
    d = closed_door()
    d.grant(100)
    d.contact(101, True)
    d.tick(105)  # strike relocks while the door stands open
    assert d.deadline() == 101 + 20
    out = d.tick(121)
    assert [o.value for o in out if o.kind == "feedback"] == ["prealarm"]
    assert events(out) == []
    assert d.deadline() == 131
    assert events(d.tick(131)) == ["door.held_open"]
    assert d.state(131) == "locked, HELD OPEN"
    assert events(d.tick(500)) == []  # once
    out = d.contact(600, False)
    assert next(o.value for o in out if o.kind == "note") == "closed after being held open"
    assert d.state(600) == "locked, closed"


def test_schedule_unlock_holds_the_strike_and_suspends_held_open() -> None:
    d = closed_door()
    out = d.set_schedule(8 * 3600, True)
    assert events(out) == ["door.unlocked"]
    assert strikes(out) == [True]
    assert events(d.contact(8 * 3600 + 5, True)) == []
    assert d.deadline() is None  # propped open during opening hours: no alarm
    out = d.set_schedule(19 * 3600, False)
    assert events(out) == ["door.locked"]
    assert strikes(out) == [False]
    # Still open after the schedule closed: now it is watched as held open.
    assert d.deadline() == 8 * 3600 + 5 + 20


def test_lockdown_locks_at_once_and_ignores_grants_and_unlocks() -> None:
    d = closed_door()
    d.grant(100)
    out = d.set_lockdown(101, True)
    assert strikes(out) == [False]
    assert d.grant(102) == []
    assert d.admin_unlock(103, 60, "uid 0") == []
    assert d.set_schedule(104, True)
    assert not d.strike_unlocked
    assert d.state(104) == "lockdown, closed"
    out = d.set_lockdown(105, False)
    assert strikes(out) == [True]  # the schedule still holds it open


def test_admin_unlock_and_relock_events() -> None:
    d = closed_door()
    out = d.admin_unlock(10, 60, "uid 1000")
    assert events(out) == ["door.unlocked"]
    assert out[-1].details == {"cause": "admin", "seconds": 60, "by": "uid 1000"}
    out = d.tick(70)
    assert events(out) == ["door.locked"]
    assert strikes(out) == [False]


def test_door_without_contact_never_alarms() -> None:
    d = DoorMachine("gate", T, has_contact=False)
    assert d.contact(5, True) == []
    assert d.state(5) == "locked"


def test_found_open_at_start_is_not_forced() -> None:
    d = DoorMachine("front", T)
    assert events(d.contact(0, True)) == []
    assert events(d.tick(30)) == ["door.held_open"]


STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "grant",
                "exit",
                "admin",
                "open",
                "close",
                "schedule_on",
                "schedule_off",
                "lockdown_on",
                "lockdown_off",
                "tick",
            ]
        ),
        st.floats(0, 40),
    ),
    max_size=40,
)


def _apply(d: DoorMachine, action: str, now: float) -> list[Output]:
    if action == "grant":
        return d.grant(now)
    if action == "exit":
        return d.exit_request(now)
    if action == "admin":
        return d.admin_unlock(now, 10, "t")
    if action in ("open", "close"):
        return d.contact(now, action == "open")
    if action.startswith("schedule"):
        return d.set_schedule(now, action == "schedule_on")
    if action.startswith("lockdown"):
        return d.set_lockdown(now, action == "lockdown_on")
    return d.tick(now)


@given(STEPS)
@settings(max_examples=500, deadline=None)
def test_invariants(steps: list[tuple[str, float]]) -> None:
    d = closed_door()
    now = 1000.0
    for action, dt in steps:
        now += dt
        before_open = d.contact_open
        before_unlocked = d.strike_unlocked
        out = _apply(d, action, now)
        # The strike is never unlocked in lockdown.
        assert not (d.lockdown and d.strike_unlocked)
        # A strike command is only ever a change.
        for value in strikes(out):
            assert value != before_unlocked
            before_unlocked = value
        # Forced only when a closed door opens while it is locked.
        if "door.forced" in events(out):
            assert action == "open"
            assert before_open is False
            assert not before_unlocked
        # The deadline is never in the past after a tick.
        if action == "tick":
            deadline = d.deadline()
            assert deadline is None or deadline > now or d.unlocked_until is None
