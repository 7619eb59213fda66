"""The site console's reports (edge.site.reports), on a small site whose days are
made by hand: badges decided and recorded by the real gateway (policy, store,
recorder), room facts recorded as the room controller records them. Every
expected number is worked out in the test from the list of entries above it.

Among them, the two bugs of a platform's occupancy report that these must not
have: (a) a team whose memberships changed within a month counted twice, or its
visits split or dropped; (b) dates exported shifted by the UTC offset.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from edge.gateway import Gateway
from edge.rooms.controller import facts_op
from edge.rooms.phases import Facts
from edge.site import reports
from edge.site.reports import Report, ReportError, journal_ops, to_csv
from edge.site.schedule import Schedule, Window, parse_days
from edge.site.sqlite import SqlOp
from tests.conftest import run_async, started_gateway

T = TypeVar("T")
TZ = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=TZ).timestamp()  # after every day used here


def t(day: str, hhmm: str, fold: int = 0) -> float:
    """A site-local wall time; `fold=1` is the second 02:30 of an autumn night."""
    h, m = (int(x) for x in hhmm.split(":"))
    y, mo, d = (int(x) for x in day.split("-"))
    return datetime(y, mo, d, h, m, fold=fold, tzinfo=TZ).timestamp()


def iso(day: str, hhmm: str) -> str:
    return datetime.fromtimestamp(t(day, hhmm), TZ).isoformat()


CARDS = {
    "m-ada": "A1",
    "m-bob": "B1",
    "m-cy": "C1",
    "n-dan": "D1",
    "n-eve": "E1",
    "g-fay": "F1",
}


def _member(mid: str, company: str | None, plan: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "id": mid,
        "name": mid,
        "kind": "member" if plan else "nonmember",
        "company": company,
        "plan": plan,
        "contract": {"start": "2026-01-01", "end": None},
        "billing": {"status": "ok"},
        "credentials": [
            {
                "id": f"cr-{mid}",
                "type": "card",
                "format": "raw",
                "value": CARDS[mid],
                "status": "active",
            },
        ],
        **fields,
    }


def booking(bid: str, member: str, day: str, start: str, end: str, status: str) -> dict[str, Any]:
    return {
        "id": bid,
        "room": "ada",
        "member": member,
        "start": iso(day, start),
        "end": iso(day, end),
        "status": status,
    }


def site_doc(bookings: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """Front door for everyone, an office for residents, a meeting room.

    ada and bob: ACME, hot desk (front). cy: Beta, resident (front, office).
    dan: nonmember of ACME, enters on ACME's day passes. eve: nonmember of no
    company, with two passes of her own. fay: cy's guest.
    """
    always = [{"group": "members", "schedule": "always"}]
    return {
        "schema": "edge-sync/1",
        "cursor": "c-1",
        "generated_at": "2026-10-01T00:00:00Z",
        "site": {
            "id": "mitte",
            "name": "Mitte",
            "timezone": "Europe/Berlin",
            "day_pass_access": always,
        },
        "schedules": [
            {"id": "always", "windows": [{"days": "mon-sun", "from": "00:00", "to": "24:00"}]}
        ],
        "holidays": [],
        "doors": [
            {"id": "front", "name": "Front entrance"},
            {"id": "office", "name": "Office"},
            {"id": "room-ada", "name": "Ada room"},
        ],
        "access_groups": [
            {"id": "members", "doors": ["front"]},
            {"id": "office", "doors": ["front", "office"]},
        ],
        "plans": [
            {"id": "hot-desk", "access": always},
            {"id": "resident", "access": [{"group": "office", "schedule": "always"}]},
        ],
        "companies": [
            {"id": "acme", "name": "ACME GmbH", "billing": {"status": "ok"}, "day_passes": 5},
            {"id": "beta", "name": "Beta Ltd", "billing": {"status": "ok"}},
        ],
        "members": [
            _member("m-ada", "acme", "hot-desk"),
            _member("m-bob", "acme", "hot-desk"),
            _member("m-cy", "beta", "resident"),
            _member("n-dan", "acme", None),
            _member("n-eve", None, None, day_pass_balance=2),
        ],
        "guests": [
            {
                "id": "g-fay",
                "name": "Fay",
                "host": "m-cy",
                "valid_from": "2026-10-01T00:00:00+02:00",
                "valid_to": "2026-12-31T00:00:00+01:00",
                "access": always,
                "credentials": [
                    {
                        "id": "cr-g-fay",
                        "type": "card",
                        "format": "raw",
                        "value": CARDS["g-fay"],
                        "status": "active",
                    }
                ],
            }
        ],
        "rooms": [
            {"id": "ada", "name": "Ada room", "door": "room-ada", "checkin_early_min": 10},
            {"id": "lovelace", "name": "Lovelace room"},
        ],
        "bookings": list(bookings),
    }


def with_gateway(tmp_path: Path, doc: dict[str, Any], body: Callable[[Gateway], Awaitable[T]]) -> T:
    async def go() -> T:
        gw = await started_gateway(tmp_path / "state", doc)
        try:
            return await body(gw)
        finally:
            await gw.stop()

    return run_async(go())


async def enter(gw: Gateway, holder: str, door: str, day: str, hhmm: str, fold: int = 0) -> None:
    """A badge at a door, decided and recorded by the gateway; it must be granted."""
    p = gw.access.presentation(door, cards=(f"raw:{CARDS[holder].lower()}",), at=t(day, hhmm, fold))
    d = await gw.access.present(p)
    assert d.granted, (holder, door, day, hhmm, d.reason)


async def build(gw: Gateway, kind: str, start: str, end: str, **options: Any) -> Report:
    return await reports.build(
        gw.site.store,
        gw.site.index,
        kind,
        date.fromisoformat(start),
        date.fromisoformat(end),
        now=NOW,
        **options,
    )


def nonzero(report: Report) -> list[tuple[Any, ...]]:
    """Occupancy rows with someone in them: (area, date, HH:MM, start, people)."""
    return [(r[0], r[2].isoformat(), r[3], r[4], r[6]) for r in report.rows if r[6]]


def by_first(report: Report) -> dict[Any, tuple[Any, ...]]:
    return {row[0]: row[1:] for row in report.rows}


# --- a week at the front door and the office ------------------------------------------------


async def a_week(gw: Gateway) -> None:
    """Week of Monday 2026-11-02 (CET, +01:00)."""
    mon, tue, wed, thu = "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"
    await enter(gw, "m-ada", "front", mon, "09:00")
    await enter(gw, "m-cy", "front", mon, "08:00")
    await enter(gw, "m-cy", "office", mon, "08:05")
    await enter(gw, "m-bob", "front", mon, "10:15")
    await enter(gw, "n-dan", "front", mon, "11:00")  # one of ACME's day passes
    await enter(gw, "m-bob", "front", mon, "12:40")
    await enter(gw, "g-fay", "front", mon, "14:00")  # cy's guest: billed to Beta
    await enter(gw, "m-ada", "front", mon, "17:30")
    await enter(gw, "m-cy", "front", mon, "18:10")
    await enter(gw, "m-ada", "front", tue, "08:50")
    await enter(gw, "m-cy", "office", tue, "23:30")
    await enter(gw, "m-ada", "front", wed, "00:30")
    await enter(gw, "n-eve", "front", thu, "10:00")  # one of her own passes
    await enter(gw, "n-eve", "front", thu, "10:30")  # the same pass: once a day


def test_occupancy_counts_each_person_once_per_area_and_hour(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> tuple[Report, Report]:
        await a_week(gw)
        by_door = await build(gw, "occupancy", "2026-11-02", "2026-11-08")
        grouped = await build(
            gw,
            "occupancy",
            "2026-11-02",
            "2026-11-08",
            areas={"front": "building", "office": "building"},
        )
        return by_door, grouped

    by_door, grouped = with_gateway(tmp_path, site_doc(), body)
    mon = "2026-11-02"
    # Monday at the front: ada 09:00-17:30, cy 08:00 to his last badge at 18:10,
    # bob 10:15-12:40, dan at 11:00, fay at 14:00 (seen once: that hour only).
    front_monday = {8: 1, 9: 2, 10: 3, 11: 4, 12: 3, 13: 2, 14: 3, 15: 2, 16: 2, 17: 2, 18: 1}
    expected = [
        ("front", mon, f"{h:02}:00", iso(mon, f"{h:02}:00"), n) for h, n in front_monday.items()
    ]
    # cy went into the office at 08:05; he is last seen at 18:10 (at the front).
    expected += [("office", mon, f"{h:02}:00", iso(mon, f"{h:02}:00"), 1) for h in range(8, 19)]
    expected += [
        ("front", "2026-11-03", "08:00", iso("2026-11-03", "08:00"), 1),  # ada
        ("office", "2026-11-03", "23:00", iso("2026-11-03", "23:00"), 1),  # cy
        ("front", "2026-11-04", "00:00", iso("2026-11-04", "00:00"), 1),  # ada after midnight
        ("front", "2026-11-05", "10:00", iso("2026-11-05", "10:00"), 1),  # eve twice
    ]
    assert sorted(nonzero(by_door)) == sorted(expected)
    # Every door is an area with an hour grid, empty or not: 3 areas x 7 days x 24 hours.
    assert len(by_door.rows) == 3 * 7 * 24
    assert {s.name for s in by_door.series} == {"front", "office", "room-ada"}
    assert by_door.columns == ("area", "area_name", "date", "hour", "start", "end", "people")
    assert by_door.rows[0][:2] == ("front", "Front entrance")
    peaks = {p["area"]: (p["people"], p["start"]) for p in by_door.summary["peaks"]}
    assert peaks == {"front": (4, iso(mon, "11:00")), "office": (1, iso(mon, "08:00"))}

    # Front and office as one area: cy, at both doors, counts once an hour.
    building = [r for r in nonzero(grouped) if r[0] == "building"]
    assert [(r[1], r[2], r[4]) for r in building] == [
        *((mon, f"{h:02}:00", n) for h, n in front_monday.items()),
        ("2026-11-03", "08:00", 1),
        ("2026-11-03", "23:00", 1),
        ("2026-11-04", "00:00", 1),
        ("2026-11-05", "10:00", 1),
    ]


def test_an_exit_reader_ends_a_stay_and_enters_no_area(tmp_path: Path) -> None:
    async def out(gw: Gateway, holder: str, door: str, hhmm: str) -> None:
        """A grant at a door's exit reader, as the access service records it."""
        details = {"reader": f"{door}-out", "side": "out"}
        at = t("2026-11-02", hhmm)
        ev = gw.recorder.event(
            "access.granted", at, door=door, holder=holder, reason="plan", details=details
        )
        await gw.recorder.record([ev], [])

    async def body(gw: Gateway) -> tuple[Report, Report]:
        await enter(gw, "m-ada", "front", "2026-11-02", "09:00")
        await out(gw, "m-ada", "front", "12:20")
        await out(gw, "m-cy", "office", "15:00")  # came in behind someone
        day = ("2026-11-02", "2026-11-02")
        return await build(gw, "occupancy", *day), await build(gw, "visitors", *day)

    occupancy, visitors = with_gateway(tmp_path, site_doc(), body)
    assert [(r[0], r[2], r[4]) for r in nonzero(occupancy)] == [
        ("front", f"{h:02}:00", 1) for h in (9, 10, 11, 12)
    ]
    assert visitors.rows == [(date(2026, 11, 2), 2, 0, 0, 0, 2)]  # ada and cy came


def test_visitors_per_day_split_members_day_passes_guests(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> Report:
        await a_week(gw)
        return await build(gw, "visitors", "2026-11-02", "2026-11-08")

    report = with_gateway(tmp_path, site_doc(), body)
    assert report.columns == ("date", "members", "day_pass", "guests", "other", "total")
    assert by_first(report) == {
        # ada (twice), cy (three times, two doors), bob (twice); dan's pass; fay.
        date(2026, 11, 2): (3, 1, 1, 0, 5),
        date(2026, 11, 3): (2, 0, 0, 0, 2),  # ada, cy
        date(2026, 11, 4): (1, 0, 0, 0, 1),  # ada at 00:30
        date(2026, 11, 5): (0, 1, 0, 0, 1),  # eve, two entries on one pass
        date(2026, 11, 6): (0, 0, 0, 0, 0),
        date(2026, 11, 7): (0, 0, 0, 0, 0),
        date(2026, 11, 8): (0, 0, 0, 0, 0),
    }
    assert report.summary == {
        "people": 6,  # ada, bob, cy, dan, eve, fay
        "person_days": 9,
        "busiest_day": "2026-11-02",
        "members": 6,
        "day_pass": 2,
        "guests": 1,
        "other": 0,
    }
    members = next(s for s in report.series if s.name == "members")
    assert members.points[:3] == (("2026-11-02", 3), ("2026-11-03", 2), ("2026-11-04", 1))


def test_companies_day_passes_and_guest_entries(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> Report:
        await a_week(gw)
        return await build(gw, "companies", "2026-11-02", "2026-11-08")

    report = with_gateway(tmp_path, site_doc(), body)
    assert report.rows == [
        # ada Mon, Tue, Wed; bob Mon; dan Mon on one of ACME's passes.
        ("acme", "ACME GmbH", 3, 5, 1, 0),
        # cy Mon, Tue; his guest fay is billed to his company.
        ("beta", "Beta Ltd", 1, 2, 0, 1),
        # eve belongs to no company and used a pass of her own.
        ("", "", 1, 1, 1, 0),
    ]
    assert report.summary == {
        "companies": 2,
        "member_days": 8,
        "day_passes": 2,
        "guest_entries": 1,
    }


# --- rooms ---------------------------------------------------------------------------------


ROOM_BOOKINGS = (
    booking("b-1", "m-ada", "2026-11-02", "10:00", "11:00", "confirmed"),
    booking("b-2", "m-bob", "2026-11-03", "14:00", "15:00", "confirmed"),
    booking("b-3", "m-cy", "2026-11-04", "09:00", "10:30", "confirmed"),
    booking("b-4", "m-ada", "2026-11-05", "09:00", "10:00", "cancelled"),
    booking("b-6", "m-bob", "2026-11-06", "15:00", "16:00", "checked_in"),
    booking("b-7", "m-ada", "2026-11-09", "09:00", "10:00", "confirmed"),  # the week after
)
WEEKDAYS_8_TO_18 = Schedule("office-hours", (Window(parse_days("mon-fri"), 8 * 60, 18 * 60),))


async def facts(gw: Gateway, f: Facts, event: str, at: float, **details: Any) -> None:
    """A room fact and its event, as the room controller records them."""
    ev = gw.recorder.event(
        event,
        at,
        door="room-ada",
        holder="m-ada",
        details={"booking": f.booking, "room": "ada", **details},
    )
    await gw.recorder.record([ev], [facts_op(f)])


async def a_week_of_rooms(gw: Gateway) -> None:
    await enter(gw, "m-ada", "room-ada", "2026-11-02", "10:05")  # checks b-1 in
    await facts(
        gw,
        Facts("b-1", "ada", ended_at=t("2026-11-02", "10:45")),
        "booking.ended_early",
        t("2026-11-02", "10:45"),
    )
    # Nobody came to b-2.
    await facts(
        gw,
        Facts("b-2", "ada", released_at=t("2026-11-03", "14:15")),
        "booking.released",
        t("2026-11-03", "14:15"),
    )
    await enter(gw, "m-cy", "room-ada", "2026-11-04", "08:55")  # early: the window opens 08:50
    # Extended at the panel to 11:00, then someone stayed: 15 minutes billed.
    b3 = Facts("b-3", "ada", extended_to=t("2026-11-04", "11:00"))
    await facts(gw, b3, "usage.credits", t("2026-11-04", "10:20"), credits=1)
    b3.presence_at, b3.overtime_billed = t("2026-11-04", "11:12"), True
    await facts(gw, b3, "usage.room_overtime", t("2026-11-04", "11:30"), minutes=15, unit_min=15)
    # Booked at the panel: checked in as it is made.
    start, end = t("2026-11-05", "16:00"), t("2026-11-05", "16:30")
    ops: list[SqlOp] = [
        (
            "INSERT INTO room_bookings (id, room, member, start, end, created) "
            "VALUES (?,?,?,?,?,?)",
            ("adhoc-1", "ada", "m-ada", start, end, start),
        ),
        (
            "INSERT INTO booking_checkins (booking, holder, at) VALUES (?,?,?)",
            ("adhoc-1", "m-ada", start),
        ),
    ]
    ev = gw.recorder.event(
        "booking.created",
        start,
        door="room-ada",
        holder="m-ada",
        details={"booking": "adhoc-1", "room": "ada"},
    )
    await gw.recorder.record([ev], ops)


def test_rooms_booked_used_released_overtime(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> tuple[Report, Report]:
        await a_week_of_rooms(gw)
        report = await build(
            gw, "rooms", "2026-11-02", "2026-11-08", room_hours={"ada": WEEKDAYS_8_TO_18}
        )
        # A day after their end the cloud drops bookings, and the outbox forgets
        # delivered events: the report stays the same.
        await gw.updates.apply_changes(
            [{"op": "delete", "kind": "booking", "id": b["id"]} for b in ROOM_BOOKINGS],
            "c-2",
            "test",
        )
        assert not gw.site.index.bookings
        await gw.site.store.write([("UPDATE outbox SET state = 'delivered', delivered = 0", ())])
        assert await gw.recorder.prune(now=NOW) > 0
        assert await gw.site.store.fetchall("SELECT * FROM outbox WHERE state = 'delivered'") == []
        later = await build(
            gw, "rooms", "2026-11-02", "2026-11-08", room_hours={"ada": WEEKDAYS_8_TO_18}
        )
        return report, later

    report, later = with_gateway(tmp_path, site_doc(ROOM_BOOKINGS), body)
    assert report.columns[:9] == (
        "room",
        "room_name",
        "bookings",
        "booked_min",
        "used_min",
        "no_shows",
        "no_show_min",
        "overtime_min",
        "open_min",
    )
    # Booked: b-1 60, b-2 60, b-3 90 + 30 extended, b-6 60, ad hoc 30 = 330 (b-4 was
    # cancelled, b-7 is next week). Used: b-1 10:05-10:45 (ended early) 40, b-3 from
    # its start (checked in early) to 11:00 120, b-6 checked in by the cloud 60, ad
    # hoc 30 = 250. Open: five days of 10 hours = 3000 minutes.
    assert by_first(report) == {
        "ada": ("Ada room", 5, 330, 250, 1, 60, 15, 3000, 11.0, 8.3),
        "lovelace": ("Lovelace room", 0, 0, 0, 0, 0, 0, None, None, None),
    }
    assert report.summary["booked_min"] == 330
    assert later.rows == report.rows


def test_room_open_hours_come_from_its_door_and_follow_dst(tmp_path: Path) -> None:
    doc = site_doc()
    doc["doors"][2]["unlock_schedule"] = "always"

    async def body(gw: Gateway) -> list[Any]:
        weeks = [
            ("2026-03-23", "2026-03-29"),
            ("2026-10-19", "2026-10-25"),
            ("2026-11-02", "2026-11-08"),
        ]
        return [by_first(await build(gw, "rooms", a, b))["ada"][7] for a, b in weeks]

    # A week of 7 x 24 h has an hour less in spring and one more in autumn.
    assert with_gateway(tmp_path, doc, body) == [10080 - 60, 10080 + 60, 10080]


# --- (a) memberships that change within the month --------------------------------------------


@pytest.mark.parametrize("journal", ["recorded_with_the_events", "caught_up_hourly"])
def test_a_team_whose_memberships_changed_mid_month(tmp_path: Path, journal: str) -> None:
    """ada changes plan and contract on the 16th, bob moves from ACME to Beta on
    the 16th. Each person counts once a day, for the company of that day."""
    doc = site_doc()

    async def body(gw: Gateway) -> tuple[Report, Report, Report]:
        if journal == "recorded_with_the_events":
            # What `Recorder.record` does with the report rows (journal_ops).
            record = gw.recorder.record

            def with_journal(events: list[dict[str, Any]], ops: list[SqlOp]) -> Any:
                return record(events, [*ops, *journal_ops(gw.site.index, events)])

            gw.recorder.record = with_journal  # type: ignore[method-assign]
        await enter(gw, "m-ada", "front", "2026-11-10", "09:00")
        await enter(gw, "m-ada", "front", "2026-11-10", "13:00")
        await enter(gw, "m-bob", "front", "2026-11-12", "10:00")
        if journal == "caught_up_hourly":
            await reports.catch_up(gw.site.store, gw.site.index, t("2026-11-12", "11:00"))
        ada = copy.deepcopy(doc["members"][0])
        ada["plan"] = "resident"
        ada["contract"] = {"start": "2026-11-16", "end": None}
        bob = copy.deepcopy(doc["members"][1])
        bob["company"] = "beta"
        changes = [{"op": "upsert", "kind": "member", "data": m} for m in (ada, bob)]
        await gw.updates.apply_changes(changes, "c-2", "test")
        await enter(gw, "m-bob", "front", "2026-11-18", "10:00")
        await enter(gw, "m-ada", "front", "2026-11-20", "09:00")
        await enter(gw, "m-ada", "office", "2026-11-20", "09:10")  # the new plan's door
        await enter(gw, "m-ada", "front", "2026-11-20", "18:00")
        await enter(gw, "m-ada", "front", "2026-11-21", "10:00")
        month = [await build(gw, k, "2026-11-01", "2026-11-30") for k in ("companies", "visitors")]
        return month[0], month[1], await build(gw, "occupancy", "2026-11-20", "2026-11-20")

    companies, visitors, occupancy = with_gateway(tmp_path, doc, body)
    assert companies.rows == [
        # ada: 10th, 20th, 21st, under both plans; bob on the 12th, before he left.
        ("acme", "ACME GmbH", 2, 4, 0, 0),
        # bob on the 18th.
        ("beta", "Beta Ltd", 1, 1, 0, 0),
    ]
    days = {d.isoformat(): row for d, *row in visitors.rows if row[-1]}
    assert days == {
        "2026-11-10": [1, 0, 0, 0, 1],  # ada, twice
        "2026-11-12": [1, 0, 0, 0, 1],
        "2026-11-18": [1, 0, 0, 0, 1],
        "2026-11-20": [1, 0, 0, 0, 1],  # ada, three times at two doors
        "2026-11-21": [1, 0, 0, 0, 1],
    }
    assert visitors.summary["people"] == 2
    # ada alone, 09:00 to 18:00, at the front and (from 09:10) in the office.
    hours = [(f"{h:02}:00", 1) for h in range(9, 19)]
    assert [(r[3], r[6]) for r in occupancy.rows if r[0] == "front" and r[6]] == hours
    assert [(r[3], r[6]) for r in occupancy.rows if r[0] == "office" and r[6]] == hours


# --- (b) dates in the site's time zone ------------------------------------------------------


def test_b_dates_are_local_not_shifted_by_the_utc_offset(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> tuple[Report, ...]:
        await enter(gw, "m-ada", "front", "2026-10-31", "23:30")  # 22:30 UTC
        await enter(gw, "m-bob", "front", "2026-11-01", "00:30")  # 23:30 UTC on the 31st
        return (
            await build(gw, "visitors", "2026-11-01", "2026-11-01"),
            await build(gw, "visitors", "2026-10-31", "2026-10-31"),
            await build(gw, "occupancy", "2026-11-01", "2026-11-01"),
            # The default period: the week that ended at Sunday midnight, local.
            await reports.build(
                gw.site.store, gw.site.index, "visitors", now=t("2026-11-02", "00:30")
            ),
        )

    first, last_of_october, occupancy, default = with_gateway(tmp_path, site_doc(), body)
    assert first.rows == [(date(2026, 11, 1), 1, 0, 0, 0, 1)]  # bob only
    assert last_of_october.rows == [(date(2026, 10, 31), 1, 0, 0, 0, 1)]  # ada only
    assert to_csv(first) == "date,members,day_pass,guests,other,total\r\n2026-11-01,1,0,0,0,1\r\n"
    lines = to_csv(occupancy).splitlines()
    assert lines[0] == "area,area_name,date,hour,start,end,people"
    assert (
        "front,Front entrance,2026-11-01,00:00,"
        "2026-11-01T00:00:00+01:00,2026-11-01T01:00:00+01:00,1" in lines
    )
    assert sum(1 for line in lines if line.endswith(",1")) == 1
    assert (default.start, default.end) == (date(2026, 10, 26), date(2026, 11, 1))
    assert default.as_dict()["start"] == "2026-10-26"
    assert by_first(default)[date(2026, 10, 31)][-1] == 1
    assert by_first(default)[date(2026, 11, 1)][-1] == 1


def test_b_a_spring_dst_day_has_23_hours(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> tuple[Report, Report]:
        await enter(gw, "m-ada", "front", "2026-03-29", "01:30")  # +01:00
        await enter(gw, "m-ada", "front", "2026-03-29", "03:30")  # +02:00, an hour later
        await enter(gw, "m-bob", "front", "2026-03-28", "23:59")  # Saturday, +01:00
        week = ("2026-03-23", "2026-03-29")
        return await build(gw, "occupancy", *week), await build(gw, "visitors", *week)

    occupancy, visitors = with_gateway(tmp_path, site_doc(), body)
    sunday = [r for r in occupancy.rows if r[0] == "front" and r[2] == date(2026, 3, 29)]
    assert len(sunday) == 23
    assert [r[3] for r in sunday[:4]] == ["00:00", "01:00", "03:00", "04:00"]
    assert [(r[4], r[5], r[6]) for r in sunday if r[6]] == [
        ("2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", 1),
        ("2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00", 1),
    ]
    assert nonzero(occupancy)[0] == ("front", "2026-03-28", "23:00", "2026-03-28T23:00:00+01:00", 1)
    assert by_first(visitors)[date(2026, 3, 28)][-1] == 1
    assert by_first(visitors)[date(2026, 3, 29)][-1] == 1
    assert len(occupancy.rows) == 3 * (6 * 24 + 23)


def test_b_an_autumn_dst_day_has_two_2am_hours(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> tuple[Report, Report]:
        await enter(gw, "m-ada", "front", "2026-10-25", "02:30", fold=0)  # +02:00
        await enter(gw, "m-bob", "front", "2026-10-25", "02:30", fold=1)  # +01:00, an hour later
        week = ("2026-10-19", "2026-10-25")
        return await build(gw, "occupancy", *week), await build(gw, "visitors", *week)

    occupancy, visitors = with_gateway(tmp_path, site_doc(), body)
    sunday = [r for r in occupancy.rows if r[0] == "front" and r[2] == date(2026, 10, 25)]
    assert len(sunday) == 25
    assert [(r[3], r[4], r[6]) for r in sunday[1:5]] == [
        ("01:00", "2026-10-25T01:00:00+02:00", 0),
        ("02:00", "2026-10-25T02:00:00+02:00", 1),  # ada
        ("02:00", "2026-10-25T02:00:00+01:00", 1),  # bob
        ("03:00", "2026-10-25T03:00:00+01:00", 0),
    ]
    assert by_first(visitors)[date(2026, 10, 25)] == (2, 0, 0, 0, 2)


# --- the journal ----------------------------------------------------------------------------


def test_catching_up_twice_counts_nothing_twice(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> tuple[list[Report], int, int]:
        await a_week(gw)
        store, ix = gw.site.store, gw.site.index
        read = await reports.catch_up(store, ix, NOW)
        again = await reports.catch_up(store, ix, NOW)
        # The same rows, as if the outbox were read from the start once more.
        await store.write([("UPDATE meta SET value = '0' WHERE key = 'report_outbox_seq'", ())])
        first = [await build(gw, k, "2026-11-02", "2026-11-08") for k in reports.KINDS]
        second = [await build(gw, k, "2026-11-02", "2026-11-08") for k in reports.KINDS]
        assert [r.rows for r in first] == [r.rows for r in second]
        return first, read, again

    made, read, again = with_gateway(tmp_path, site_doc(), body)
    assert (read, again) == (14, 0)  # the week's 14 grants, then nothing new
    assert made[1].summary["person_days"] == 9


# --- CSV, the weekly event, bad requests -----------------------------------------------------


def test_csv_is_rfc_4180_with_local_iso_dates() -> None:
    report = Report(
        kind="companies",
        start=date(2026, 11, 2),
        end=date(2026, 11, 8),
        timezone="Europe/Berlin",
        columns=("company", "company_name", "day", "members"),
        rows=[
            ("acme", 'ACME, "Berlin"\nGmbH', date(2026, 11, 1), 3),
            ("evil", '=HYPERLINK("http://x")', date(2026, 11, 2), None),
        ],
    )
    text = to_csv(report)
    assert text == (
        "company,company_name,day,members\r\n"
        'acme,"ACME, ""Berlin""\nGmbH",2026-11-01,3\r\n'
        'evil,"\'=HYPERLINK(""http://x"")",2026-11-02,\r\n'
    )
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[1] == ["acme", 'ACME, "Berlin"\nGmbH', "2026-11-01", "3"]


def test_weekly_report_is_an_event_for_the_outbox(tmp_path: Path) -> None:
    async def body(gw: Gateway) -> tuple[dict[str, Any], list[Any]]:
        await a_week(gw)
        now = t("2026-11-10", "06:00")  # a Tuesday: the last full week is 2-8 November
        event = await reports.weekly_report(gw.site.store, gw.site.index, now, gateway="gw-1")
        await gw.recorder.record([event], [])
        rows = await gw.site.store.fetchall(
            "SELECT type, at, state, body FROM outbox WHERE id = ?", (event["id"],)
        )
        return event, rows

    event, rows = with_gateway(tmp_path, site_doc(), body)
    assert event["type"] == reports.WEEKLY_EVENT == "site.report.weekly"
    assert (event["site"], event["gateway"], event["at"]) == (
        "mitte",
        "gw-1",
        "2026-11-10T06:00:00.000+01:00",
    )
    details = event["details"]
    assert (details["start"], details["end"], details["timezone"]) == (
        "2026-11-02",
        "2026-11-08",
        "Europe/Berlin",
    )
    assert details["visitors"]["days"][0] == {
        "date": "2026-11-02",
        "members": 3,
        "day_pass": 1,
        "guests": 1,
        "other": 0,
        "total": 5,
    }
    assert details["visitors"]["person_days"] == 9
    assert details["occupancy"]["peaks"][0] == {
        "area": "front",
        "name": "Front entrance",
        "people": 4,
        "start": "2026-11-02T11:00:00+01:00",
    }
    assert details["companies"]["companies"][0] == {
        "company": "acme",
        "company_name": "ACME GmbH",
        "members": 3,
        "member_days": 5,
        "day_passes": 1,
        "guest_entries": 0,
    }
    assert details["rooms"]["bookings"] == 0
    assert rows[0][:3] == ("site.report.weekly", event["at"], "pending")
    assert json.loads(rows[0][3]) == event


@pytest.mark.parametrize(
    ("kind", "start", "end", "message"),
    [
        ("heatmap", "2026-11-02", "2026-11-08", "unknown report 'heatmap'"),
        ("visitors", "2026-11-08", "2026-11-02", "ends (2026-11-02) before it starts (2026-11-08)"),
        ("visitors", "2025-01-01", "2026-01-02", "a report covers at most 366 days"),
    ],
)
def test_bad_requests_are_refused(
    tmp_path: Path, kind: str, start: str, end: str, message: str
) -> None:
    async def body(gw: Gateway) -> None:
        await build(gw, kind, start, end)

    with pytest.raises(ReportError, match=re.escape(message)):
        with_gateway(tmp_path, site_doc(), body)
