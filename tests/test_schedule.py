"""Weekly schedules (`edge.site.schedule`), evaluated at site-local wall time.

The contract: `days` is a day name or range; a window is open from `from`
(inclusive) to `to` (exclusive); a window whose `to` is earlier than its `from`
runs past midnight into the next day, and belongs to the day it starts on;
`closed_on_holidays` closes the schedule on the site's holidays; everything is
evaluated in the site's time zone across daylight-saving changes.

Instants are turned into local time the way the decision path does it:
`datetime.fromtimestamp(ts, tz)`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge.site.schedule import Opening, Schedule, Window, parse_days
from edge.timeutil import parse_time_of_day

BERLIN = ZoneInfo("Europe/Berlin")
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
NO_HOLIDAYS: frozenset[date] = frozenset()

# A week in which 2026-11-16 is a Monday.
WEEK = {
    name: date(2026, 11, 16) + timedelta(days=i)
    for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
}


def schedule(*windows: tuple[str, str, str], closed_on_holidays: bool = False) -> Schedule:
    return Schedule(
        "s",
        tuple(
            Window(
                days=parse_days(days),
                start=parse_time_of_day(start, allow_24=False),
                end=parse_time_of_day(end, allow_24=True),
            )
            for days, start, end in windows
        ),
        closed_on_holidays,
    )


def local(day: date, hhmm: str) -> datetime:
    """A wall-clock time in Berlin, as the decision path builds it (from an instant)."""
    h, m = (int(x) for x in hhmm.split(":"))
    naive = datetime(day.year, day.month, day.day, h, m)
    return datetime.fromtimestamp(naive.replace(tzinfo=BERLIN).timestamp(), BERLIN)


def utc(text: str) -> datetime:
    """An instant given in UTC, seen at Berlin wall time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).astimezone(BERLIN)


# --- parse_days ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days"),
    [
        pytest.param("mon", {MON}, id="single-mon"),
        pytest.param("sat", {SAT}, id="single-sat"),
        pytest.param("sun", {SUN}, id="single-sun"),
        pytest.param("mon-fri", {MON, TUE, WED, THU, FRI}, id="mon-fri"),
        pytest.param("mon-sun", set(range(7)), id="whole-week"),
        pytest.param("sat-sun", {SAT, SUN}, id="weekend"),
        pytest.param("wed-thu", {WED, THU}, id="two-days"),
        pytest.param("fri-mon", {FRI, SAT, SUN, MON}, id="wrap-fri-mon"),
        pytest.param("sun-mon", {SUN, MON}, id="wrap-sun-mon"),
        pytest.param("sat-tue", {SAT, SUN, MON, TUE}, id="wrap-sat-tue"),
        pytest.param("tue-mon", set(range(7)), id="wrap-whole-week"),
    ],
)
def test_parse_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == frozenset(days)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("monday", id="long-name"),
        pytest.param("mo", id="short-name"),
        pytest.param("", id="empty"),
        pytest.param("mon-", id="open-end"),
        pytest.param("-fri", id="open-start"),
        pytest.param("mon-fri-sat", id="two-dashes"),
        pytest.param("mon,tue", id="list"),
        pytest.param("weekdays", id="word"),
        pytest.param("mon–fri", id="en-dash"),
    ],
)
def test_parse_days_refuses_bad_names(text: str) -> None:
    with pytest.raises(ValueError, match="unknown day"):
        parse_days(text)


@pytest.mark.parametrize("value", [None, 1, ["mon"]])
def test_parse_days_refuses_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="day"):
        parse_days(value)  # type: ignore[arg-type]


# --- normal windows -------------------------------------------------------------

STAFFED = schedule(("mon-fri", "08:00", "19:00"), ("sat", "10:00", "16:00"))


@pytest.mark.parametrize(
    ("day", "hhmm", "opening"),
    [
        pytest.param("mon", "07:59", None, id="mon-before"),
        pytest.param("mon", "08:00", Opening(WEEK["mon"], 0), id="mon-from-is-inclusive"),
        pytest.param("wed", "12:30", Opening(WEEK["wed"], 0), id="wed-midday"),
        pytest.param("fri", "18:59", Opening(WEEK["fri"], 0), id="fri-last-minute"),
        pytest.param("fri", "19:00", None, id="fri-to-is-exclusive"),
        pytest.param("sat", "09:59", None, id="sat-before"),
        pytest.param("sat", "10:00", Opening(WEEK["sat"], 1), id="sat-second-window"),
        pytest.param("sat", "15:59", Opening(WEEK["sat"], 1), id="sat-last-minute"),
        pytest.param("sat", "16:00", None, id="sat-after"),
        pytest.param("sun", "12:00", None, id="sun-closed"),
    ],
)
def test_normal_windows(day: str, hhmm: str, opening: Opening | None) -> None:
    assert STAFFED.opening(local(WEEK[day], hhmm), NO_HOLIDAYS) == opening
    assert STAFFED.is_open(local(WEEK[day], hhmm), NO_HOLIDAYS) is (opening is not None)


def test_seconds_inside_the_last_minute_are_still_open() -> None:
    t = local(WEEK["fri"], "18:59") + timedelta(seconds=59, microseconds=999_999)
    assert STAFFED.is_open(t, NO_HOLIDAYS)
    assert not STAFFED.is_open(t + timedelta(microseconds=1), NO_HOLIDAYS)


def test_window_ending_at_24_00() -> None:
    evening = schedule(("mon", "20:00", "24:00"))
    assert evening.opening(local(WEEK["mon"], "23:59"), NO_HOLIDAYS) == Opening(WEEK["mon"], 0)
    assert not evening.is_open(local(WEEK["tue"], "00:00"), NO_HOLIDAYS)
    assert not evening.is_open(local(WEEK["mon"], "19:59"), NO_HOLIDAYS)
    assert not evening.is_open(local(WEEK["sun"], "23:59"), NO_HOLIDAYS)


def test_whole_day_window_covers_every_minute_of_its_days() -> None:
    always = schedule(("mon-sun", "00:00", "24:00"))
    for day in WEEK.values():
        for hhmm in ("00:00", "00:01", "11:59", "12:00", "23:59"):
            assert always.opening(local(day, hhmm), NO_HOLIDAYS) == Opening(day, 0)


# --- windows past midnight ---------------------------------------------------------

NIGHT = schedule(("fri", "22:00", "06:00"))


@pytest.mark.parametrize(
    ("day", "hhmm", "opening"),
    [
        pytest.param("fri", "21:59", None, id="fri-before"),
        pytest.param("fri", "22:00", Opening(WEEK["fri"], 0), id="fri-evening"),
        pytest.param("fri", "23:59", Opening(WEEK["fri"], 0), id="fri-before-midnight"),
        pytest.param("sat", "00:00", Opening(WEEK["fri"], 0), id="sat-midnight"),
        pytest.param("sat", "05:59", Opening(WEEK["fri"], 0), id="sat-morning-is-fridays"),
        pytest.param("sat", "06:00", None, id="sat-end-exclusive"),
        pytest.param("sat", "22:00", None, id="sat-evening-not-named"),
        pytest.param("fri", "05:00", None, id="fri-morning-belongs-to-thu"),
    ],
)
def test_window_past_midnight(day: str, hhmm: str, opening: Opening | None) -> None:
    assert NIGHT.opening(local(WEEK[day], hhmm), NO_HOLIDAYS) == opening


def test_window_past_midnight_wraps_from_sunday_to_monday() -> None:
    sunday_night = schedule(("sun", "23:00", "02:00"))
    next_monday = WEEK["sun"] + timedelta(days=1)
    assert sunday_night.opening(local(next_monday, "01:30"), NO_HOLIDAYS) == Opening(WEEK["sun"], 0)
    assert not sunday_night.is_open(local(WEEK["mon"], "23:30"), NO_HOLIDAYS)
    assert not sunday_night.is_open(local(next_monday, "02:00"), NO_HOLIDAYS)


def test_window_ending_at_midnight_exactly() -> None:
    late = schedule(("fri", "22:00", "00:00"))
    assert late.is_open(local(WEEK["fri"], "23:59"), NO_HOLIDAYS)
    assert not late.is_open(local(WEEK["sat"], "00:00"), NO_HOLIDAYS)


def test_overnight_window_on_consecutive_days_names_the_start_day() -> None:
    nights = schedule(("mon-sun", "22:00", "06:00"))
    assert nights.opening(local(WEEK["wed"], "03:00"), NO_HOLIDAYS) == Opening(WEEK["tue"], 0)
    assert nights.opening(local(WEEK["wed"], "23:00"), NO_HOLIDAYS) == Opening(WEEK["wed"], 0)


# --- holidays ------------------------------------------------------------------------


def test_closed_on_holidays_closes_the_holiday_only() -> None:
    staffed = schedule(("mon-fri", "08:00", "19:00"), closed_on_holidays=True)
    holidays = frozenset({WEEK["wed"]})
    assert not staffed.is_open(local(WEEK["wed"], "10:00"), holidays)
    assert staffed.opening(local(WEEK["tue"], "10:00"), holidays) == Opening(WEEK["tue"], 0)
    assert staffed.opening(local(WEEK["thu"], "10:00"), holidays) == Opening(WEEK["thu"], 0)


def test_holidays_do_not_close_a_schedule_without_closed_on_holidays() -> None:
    always = schedule(("mon-sun", "00:00", "24:00"))
    holidays = frozenset({WEEK["wed"]})
    assert always.opening(local(WEEK["wed"], "10:00"), holidays) == Opening(WEEK["wed"], 0)


def test_holiday_on_the_start_day_closes_the_whole_overnight_window() -> None:
    night = schedule(("fri", "22:00", "06:00"), closed_on_holidays=True)
    holidays = frozenset({WEEK["fri"]})
    assert not night.is_open(local(WEEK["fri"], "23:00"), holidays)
    assert not night.is_open(local(WEEK["sat"], "03:00"), holidays)


def test_holiday_on_the_next_day_does_not_close_an_overnight_window() -> None:
    night = schedule(("fri", "22:00", "06:00"), closed_on_holidays=True)
    holidays = frozenset({WEEK["sat"]})
    assert night.opening(local(WEEK["fri"], "23:00"), holidays) == Opening(WEEK["fri"], 0)
    assert night.opening(local(WEEK["sat"], "03:00"), holidays) == Opening(WEEK["fri"], 0)


def test_holiday_between_two_nights_closes_only_the_night_starting_on_it() -> None:
    nights = schedule(("mon-sun", "22:00", "06:00"), closed_on_holidays=True)
    holidays = frozenset({WEEK["wed"]})
    # Tuesday's night runs into the holiday morning: open.
    assert nights.opening(local(WEEK["wed"], "05:00"), holidays) == Opening(WEEK["tue"], 0)
    # The holiday's own night, also after midnight: closed.
    assert not nights.is_open(local(WEEK["wed"], "23:00"), holidays)
    assert not nights.is_open(local(WEEK["thu"], "05:00"), holidays)
    # Thursday's night: open again.
    assert nights.opening(local(WEEK["thu"], "23:00"), holidays) == Opening(WEEK["thu"], 0)


def test_holiday_keeps_other_windows_of_other_days() -> None:
    staffed = schedule(
        ("mon-fri", "08:00", "19:00"), ("sat", "10:00", "16:00"), closed_on_holidays=True
    )
    holidays = frozenset({WEEK["fri"]})
    assert staffed.opening(local(WEEK["sat"], "11:00"), holidays) == Opening(WEEK["sat"], 1)


# --- daylight saving time in Europe/Berlin ---------------------------------------------
#
# 2026-03-29 (a Sunday): 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:00-02:59 never
# happens. 2026-10-25 (a Sunday): 03:00 CEST falls back to 02:00 CET (01:00 UTC);
# 02:00-02:59 happens twice. Every check starts from an instant.

SPRING = date(2026, 3, 29)
FALL = date(2026, 10, 25)
DAYTIME = schedule(("mon-sun", "08:00", "19:00"))


def test_the_dst_dates_are_what_the_tests_assume() -> None:
    assert utc("2026-03-29T00:59:00").utcoffset() == timedelta(hours=1)
    assert utc("2026-03-29T01:00:00").utcoffset() == timedelta(hours=2)
    assert utc("2026-10-25T00:59:00").utcoffset() == timedelta(hours=2)
    assert utc("2026-10-25T01:00:00").utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("instant", "is_open"),
    [
        # The Saturday before the spring change: CET, UTC+1.
        pytest.param("2026-03-28T06:59:00", False, id="spring-before-0759-cet"),
        pytest.param("2026-03-28T07:00:00", True, id="spring-before-0800-cet"),
        pytest.param("2026-03-28T17:59:00", True, id="spring-before-1859-cet"),
        pytest.param("2026-03-28T18:00:00", False, id="spring-before-1900-cet"),
        # The change day: 08:00 local is already CEST, UTC+2.
        pytest.param("2026-03-29T05:59:00", False, id="spring-day-0759-cest"),
        pytest.param("2026-03-29T06:00:00", True, id="spring-day-0800-cest"),
        pytest.param("2026-03-29T16:59:00", True, id="spring-day-1859-cest"),
        pytest.param("2026-03-29T17:00:00", False, id="spring-day-1900-cest"),
        # The change day in the fall: 08:00 local is already CET, UTC+1.
        pytest.param("2026-10-24T05:59:00", False, id="fall-before-0759-cest"),
        pytest.param("2026-10-24T06:00:00", True, id="fall-before-0800-cest"),
        pytest.param("2026-10-25T06:59:00", False, id="fall-day-0759-cet"),
        pytest.param("2026-10-25T07:00:00", True, id="fall-day-0800-cet"),
        pytest.param("2026-10-25T17:59:00", True, id="fall-day-1859-cet"),
        pytest.param("2026-10-25T18:00:00", False, id="fall-day-1900-cet"),
    ],
)
def test_daytime_window_opens_at_local_0800_on_both_sides_of_dst(
    instant: str, is_open: bool
) -> None:
    assert DAYTIME.is_open(utc(instant), NO_HOLIDAYS) is is_open


def test_daytime_window_lasts_11_hours_on_both_dst_days() -> None:
    for day in (SPRING, FALL):
        opened = [
            t
            for t in (
                datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=m)
                for m in range(-120, 24 * 60)
            )
            if DAYTIME.is_open(t.astimezone(BERLIN), NO_HOLIDAYS)
        ]
        assert opened[-1] - opened[0] == timedelta(hours=11, minutes=-1)
        assert len(opened) == 11 * 60


# A window across the changes' small hours. Asserted behaviour, minute by minute
# from UTC instants:
# - spring: open from 01:00 CET (00:00 UTC) to 04:00 CEST (02:00 UTC): the wall
#   clock runs 01:00-01:59 then 03:00-03:59, so the window is open 2 real hours;
#   the missing 02:xx simply never happens.
# - fall: open from 01:00 CEST (23:00 UTC the day before) to 04:00 CET (03:00
#   UTC): 02:00-02:59 happens twice and is open both times, so the window is open
#   4 real hours.
# The Opening names the local day the window started on in both cases.
SMALL_HOURS = schedule(("mon-sun", "01:00", "04:00"))


def _open_minutes(start_utc: str, minutes: int, sched: Schedule) -> list[datetime]:
    first = datetime.fromisoformat(start_utc).replace(tzinfo=UTC)
    return [
        t
        for t in (first + timedelta(minutes=m) for m in range(minutes))
        if sched.is_open(t.astimezone(BERLIN), NO_HOLIDAYS)
    ]


def test_small_hours_window_in_the_spring_gap() -> None:
    opened = _open_minutes("2026-03-28T22:00:00", 8 * 60, SMALL_HOURS)
    assert opened[0] == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    assert opened[-1] == datetime(2026, 3, 29, 1, 59, tzinfo=UTC)  # 03:59 CEST
    assert len(opened) == 120  # contiguous: 01:00-01:59 CET, 03:00-03:59 CEST
    assert SMALL_HOURS.opening(utc("2026-03-29T01:00:00"), NO_HOLIDAYS) == Opening(SPRING, 0)
    assert not SMALL_HOURS.is_open(utc("2026-03-29T02:00:00"), NO_HOLIDAYS)  # 04:00 CEST


def test_small_hours_window_in_the_fall_overlap() -> None:
    opened = _open_minutes("2026-10-24T20:00:00", 10 * 60, SMALL_HOURS)
    assert opened[0] == datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # 01:00 CEST
    assert opened[-1] == datetime(2026, 10, 25, 2, 59, tzinfo=UTC)  # 03:59 CET
    assert len(opened) == 240  # contiguous, the repeated 02:xx open both times
    first_0230 = utc("2026-10-25T00:30:00")
    second_0230 = utc("2026-10-25T01:30:00")
    assert (first_0230.hour, first_0230.fold, second_0230.hour, second_0230.fold) == (2, 0, 2, 1)
    assert SMALL_HOURS.opening(first_0230, NO_HOLIDAYS) == Opening(FALL, 0)
    assert SMALL_HOURS.opening(second_0230, NO_HOLIDAYS) == Opening(FALL, 0)
    assert not SMALL_HOURS.is_open(utc("2026-10-25T03:00:00"), NO_HOLIDAYS)  # 04:00 CET


def test_window_starting_inside_the_spring_gap_opens_at_the_jump() -> None:
    # 02:30-05:00 on the spring day: 02:30 never happens, so the window opens at
    # 03:00 CEST, the first wall time after its start, and closes at 05:00 CEST.
    late = schedule(("sun", "02:30", "05:00"))
    assert not late.is_open(utc("2026-03-29T00:59:00"), NO_HOLIDAYS)  # 01:59 CET
    assert late.opening(utc("2026-03-29T01:00:00"), NO_HOLIDAYS) == Opening(SPRING, 0)
    assert late.is_open(utc("2026-03-29T02:59:00"), NO_HOLIDAYS)  # 04:59 CEST
    assert not late.is_open(utc("2026-03-29T03:00:00"), NO_HOLIDAYS)  # 05:00 CEST


def test_overnight_window_across_the_fall_change_names_saturday() -> None:
    # Saturday 22:00 CEST to Sunday 06:00 CET: 9 real hours, all Saturday's window.
    night = schedule(("sat", "22:00", "06:00"))
    opened = _open_minutes("2026-10-24T18:00:00", 14 * 60, night)
    assert opened[0] == datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    assert opened[-1] == datetime(2026, 10, 25, 4, 59, tzinfo=UTC)
    assert len(opened) == 9 * 60
    saturday = FALL - timedelta(days=1)
    assert {night.opening(t.astimezone(BERLIN), NO_HOLIDAYS) for t in opened} == {
        Opening(saturday, 0)
    }


def test_holiday_on_the_dst_day_closes_its_window() -> None:
    staffed = schedule(("mon-sun", "08:00", "19:00"), closed_on_holidays=True)
    holidays = frozenset({SPRING, FALL})
    for instant in ("2026-03-29T06:00:00", "2026-10-25T07:00:00", "2026-10-25T12:00:00"):
        assert not staffed.is_open(utc(instant), holidays)
    assert staffed.is_open(utc("2026-03-30T06:00:00"), holidays)
