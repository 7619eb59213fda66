"""The access decision (`edge.access.policy.decide`), rule by rule.

Every rule of the "Meaning (normative)" section of the `edge-sync/1` contract
has a table of cases below; each case names a door, an instant, a credential
and the runtime state, and asserts whether entry is granted and the exact
reason (which must be one of the reasons the policy declares).

The cases run against one purpose-made site (`SITE`), imported once through
the real import path, in which each holder exists for one rule. `DAY` is a
Monday (2026-11-16); `t(n, "HH:MM")` is local Europe/Berlin time `n` days
after it. The site's one holiday is Wednesday, `t(2, ...)`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.access.cards import parse_card_spec, pin_hmac
from edge.access.policy import (
    DENY_REASONS,
    GRANT_REASONS,
    DayPassUse,
    Decision,
    Effects,
    PendingCard,
    Presentation,
    RuntimeState,
    decide,
)
from edge.site.model import SiteIndex
from edge.site.schedule import Opening
from hwsim.sitegen import EXAMPLE_PIN_KEY
from tests.conftest import DAY, at, index_of

BERLIN = ZoneInfo("Europe/Berlin")
Doc = dict[str, Any]


# --- building sites -------------------------------------------------------------


def day(n: int) -> date:
    return DAY + timedelta(days=n)


def ds(n: int) -> str:
    """The contract's date, `n` days after DAY."""
    return day(n).isoformat()


def t(n: int, hhmm: str) -> float:
    """POSIX seconds of local `hhmm`, `n` days after DAY."""
    return at(day(n), hhmm)


def iso(n: int, hhmm: str) -> str:
    """The contract's instant (with the local offset), `n` days after DAY."""
    return datetime.fromtimestamp(t(n, hhmm), BERLIN).isoformat()


def pin(digits: str) -> str:
    return pin_hmac(EXAMPLE_PIN_KEY, digits)


def window(days: str, start: str, end: str) -> Doc:
    return {"days": days, "from": start, "to": end}


def schedule(sid: str, *windows: Doc, closed_on_holidays: bool = False) -> Doc:
    return {"id": sid, "windows": list(windows), "closed_on_holidays": closed_on_holidays}


def door(did: str, mode: str, unlock: str | None = None, first_person_in: bool = False) -> Doc:
    return {
        "id": did,
        "name": did,
        "mode": mode,
        "unlock_schedule": unlock,
        "first_person_in": first_person_in,
    }


def grant(
    group: str, sched: str, valid_from: str | None = None, valid_to: str | None = None
) -> Doc:
    return {"group": group, "schedule": sched, "valid_from": valid_from, "valid_to": valid_to}


def card_doc(cid: str, spec: str, status: str = "active") -> Doc:
    fmt, _, rest = spec.partition(":")
    if fmt == "raw":
        return {"id": cid, "type": "card", "format": "raw", "value": rest, "status": status}
    facility, number = rest.split(":")
    return {
        "id": cid,
        "type": "card",
        "format": fmt,
        "facility_code": int(facility),
        "card_number": int(number),
        "status": status,
    }


def pin_doc(cid: str, digits: str, status: str = "active") -> Doc:
    return {"id": cid, "type": "pin", "pin_hmac": pin(digits), "status": status}


OK = {"status": "ok", "grace_until": None}
SUSPENDED = {"status": "suspended", "grace_until": None}


def past_due(grace_until: str | None) -> Doc:
    return {"status": "past_due", "grace_until": grace_until}


def site_doc(
    *,
    schedules: Iterable[Doc],
    doors: Iterable[Doc],
    groups: dict[str, list[str]],
    members: Iterable[Doc] = (),
    plans: dict[str, list[Doc]] | None = None,
    companies: Iterable[Doc] = (),
    guests: Iterable[Doc] = (),
    rooms: Iterable[Doc] = (),
    bookings: Iterable[Doc] = (),
    holidays: Iterable[str] = (),
    day_pass_access: Iterable[Doc] = (),
) -> Doc:
    return {
        "schema": "edge-sync/1",
        "cursor": "c-1",
        "generated_at": iso(0, "07:00"),
        "site": {
            "id": "mitte",
            "name": "Mitte",
            "timezone": "Europe/Berlin",
            "day_pass_access": list(day_pass_access),
        },
        "schedules": list(schedules),
        "holidays": [{"date": h, "name": f"holiday {h}"} for h in holidays],
        "doors": list(doors),
        "access_groups": [{"id": g, "doors": d} for g, d in groups.items()],
        "plans": [{"id": p, "access": a} for p, a in (plans or {}).items()],
        "companies": list(companies),
        "members": list(members),
        "guests": list(guests),
        "rooms": list(rooms),
        "bookings": list(bookings),
    }


def company(
    cid: str, billing: Doc, access: list[Doc], day_passes: int = 0
) -> Doc:  # a company document
    return {
        "id": cid,
        "name": cid,
        "billing": billing,
        "access": access,
        "day_passes": day_passes,
        "credits": 0,
    }


# Each holder's card lookup key, filled while the site is built: cases say whose
# card is shown, by holder id.
CARD: dict[str, str] = {}


def member(
    mid: str,
    *,
    card: str | None = None,
    pin_digits: str | None = None,
    card_status: str = "active",
    pin_status: str = "active",
    kind: str = "member",
    plan: str | None = None,
    company: str | None = None,
    start: str | None = ds(-300),
    end: str | None = None,
    billing: Doc = OK,
    access: Iterable[Doc] = (),
    passes: Iterable[Doc] = (),
    balance: int = 0,
    extra_cards: Iterable[str] = (),
) -> Doc:
    creds = []
    if card is not None:
        creds.append(card_doc(f"{mid}-card", card, card_status))
        CARD[mid] = parse_card_spec(card)
    for i, spec in enumerate(extra_cards):
        creds.append(card_doc(f"{mid}-card{i + 2}", spec))
    if pin_digits is not None:
        creds.append(pin_doc(f"{mid}-pin", pin_digits, pin_status))
    return {
        "id": mid,
        "name": mid,
        "kind": kind,
        "company": company,
        "company_manager": False,
        "plan": plan,
        "contract": {"start": start, "end": end},
        "billing": billing,
        "access": list(access),
        "credentials": creds,
        "day_passes": list(passes),
        "day_pass_balance": balance,
        "credits": 0,
    }


def guest(
    gid: str,
    valid_from: str,
    valid_to: str,
    *,
    card: str | None = None,
    pin_digits: str | None = None,
    access: Iterable[Doc] = (),
    passes: Iterable[Doc] = (),
    host: str = "acme-emp",
) -> Doc:
    creds = []
    if card is not None:
        creds.append(card_doc(f"{gid}-card", card))
        CARD[gid] = parse_card_spec(card)
    if pin_digits is not None:
        creds.append(pin_doc(f"{gid}-pin", pin_digits))
    return {
        "id": gid,
        "name": gid,
        "host": host,
        "valid_from": valid_from,
        "valid_to": valid_to,
        "access": list(access),
        "credentials": creds,
        "day_passes": list(passes),
    }


def day_pass(pid: str, valid_from: str | None, valid_to: str | None = None) -> Doc:
    return {"id": pid, "valid_from": valid_from, "valid_to": valid_to}


def booking(
    bid: str,
    booker: str,
    start: str,
    end: str,
    *,
    attendees: Iterable[str] = (),
    status: str = "confirmed",
    invoiced: bool = False,
) -> Doc:
    return {
        "id": bid,
        "room": "ada",
        "member": booker,
        "attendees": list(attendees),
        "start": start,
        "end": end,
        "status": status,
        "invoiced": invoiced,
        "recurrence_id": None,
    }


def build_site() -> Doc:
    """One holder per rule; see the tables below for what each one shows."""
    always = window("mon-sun", "00:00", "24:00")
    schedules = [
        schedule("always", always),
        schedule(
            "staffed",
            window("mon-fri", "08:00", "19:00"),
            window("sat", "10:00", "16:00"),
            closed_on_holidays=True,
        ),
        schedule("lunch", window("mon-fri", "12:00", "13:00")),
        schedule("late", window("mon-sun", "22:00", "06:00")),
        schedule("night-hol", window("mon-sun", "22:00", "06:00"), closed_on_holidays=True),
        schedule("fri-night", window("fri", "22:00", "06:00")),
        schedule("long-weekend", window("fri-mon", "10:00", "16:00")),
    ]
    doors = [
        door("front", "card_or_pin"),
        door("office", "card_or_pin"),
        door("lounge", "card_or_pin"),
        door("sched", "card_or_pin"),
        door("server", "card_and_pin"),
        door("cardonly", "card"),
        door("pinpad", "pin"),
        door("room-ada", "card"),
        door("lobby", "card", unlock="lunch"),
        door("atrium", "card_or_pin", unlock="lunch", first_person_in=True),
        door("nightdoor", "card", unlock="late", first_person_in=True),
        door("vault", "card_and_pin", unlock="lunch"),
    ]
    groups = {
        "members": ["front"],
        "office": ["front", "office"],
        "lounge": ["lounge"],
        "sched": ["sched"],
        "server": ["server"],
        "modes": ["cardonly", "pinpad", "office"],
        "atrium": ["atrium"],
        "nightdoor": ["nightdoor"],
        "vault": ["vault"],
    }
    plans = {
        "hot-desk": [grant("members", "staffed")],
        "resident": [grant("members", "always")],
    }
    companies = [
        company("acme", OK, [grant("office", "always")], day_passes=10),
        company("initech", SUSPENDED, [grant("office", "always")], day_passes=5),
        company("globex", past_due(iso(0, "12:00")), [grant("office", "always")], day_passes=3),
        company("passco", OK, [], day_passes=2),
        company("brokeco", SUSPENDED, [], day_passes=2),
    ]
    res = "resident"
    members = [
        # Card formats: residents (front, any hour), one card each.
        member("fmt-h10301", card="H10301:12:3456", plan=res),
        member("fmt-h10306", card="H10306:1000:50001", plan=res),
        member("fmt-c1000", card="C1000:100:70001", plan=res),
        member("fmt-h10304", card="H10304:500:12345", plan=res),
        member(
            "fmt-max",
            card="H10301:255:65535",
            extra_cards=("H10306:65535:65535", "C1000:4095:1048575", "H10304:65535:524287"),
            plan=res,
        ),
        member("fmt-raw-upper", card="raw:04A1B2C3D4E5F6", plan=res),
        member("fmt-raw-lower", card="raw:0a0b0c0d", plan=res),
        # PINs.
        member("pin-resident", card="H10301:12:200", pin_digits="2468", plan=res),
        member("pin-disabled", pin_digits="7777", pin_status="disabled", plan=res),
        member("pin-dup-a", pin_digits="4242", plan=res),
        member("pin-dup-b", pin_digits="4242", plan=res),
        # Door modes.
        member("modes", card="H10301:12:300", pin_digits="1357", access=[grant("modes", "always")]),
        member("ops", card="H10301:12:400", pin_digits="9753", access=[grant("server", "always")]),
        member(
            "ops-other", card="H10301:12:401", pin_digits="8642", access=[grant("server", "always")]
        ),
        member("no-server", card="H10301:12:402", pin_digits="5555", plan=res),
        member("disabled-card", card="H10301:12:1000", card_status="disabled", plan=res),
        member(
            "vault-ops", card="H10301:12:403", pin_digits="3141", access=[grant("vault", "always")]
        ),
        # Member kinds.
        member("nonmember-bare", card="H10301:12:500", kind="nonmember"),
        member(
            "nonmember-grant",
            card="H10301:12:501",
            kind="nonmember",
            access=[grant("office", "always")],
        ),
        member("nonmember-acme", card="H10301:12:502", kind="nonmember", company="acme"),
        member("member-noplan", card="H10301:12:503"),
        # Contracts.
        member("contract-dates", card="H10301:12:600", plan=res, start=ds(1), end=ds(3)),
        member(
            "contract-instants",
            card="H10301:12:601",
            plan=res,
            start="2026-11-16T09:00:00Z",  # 10:00 in Berlin
            end=iso(0, "12:00"),
        ),
        member("contract-open", card="H10301:12:602", plan=res, start=None, end=ds(0)),
        member(
            "contract-dst", card="H10301:12:603", plan=res, start="2026-03-29", end="2026-10-25"
        ),
        member("contract-ended-acme", card="H10301:12:604", plan=res, company="acme", end=ds(-1)),
        member(
            "contract-ended-grant",
            card="H10301:12:605",
            plan=res,
            end=ds(-1),
            access=[grant("sched", "always")],
        ),
        # Billing.
        member("billing-grace", card="H10301:12:700", plan=res, billing=past_due(iso(1, "00:00"))),
        member(
            "billing-grace-instant",
            card="H10301:12:701",
            plan=res,
            billing=past_due("2026-11-16T11:00:00Z"),  # 12:00 in Berlin
        ),
        member("billing-nograce", card="H10301:12:702", plan=res, billing=past_due(None)),
        member(
            "billing-suspended",
            card="H10301:12:703",
            plan=res,
            billing=SUSPENDED,
            access=[grant("sched", "always")],
            passes=[day_pass("dp-suspended", ds(0))],
            balance=2,
        ),
        member("suspended-booker", card="H10301:12:704", billing=SUSPENDED),
        member("suspended-acme", card="H10301:12:705", billing=SUSPENDED, company="acme"),
        # Company billing.
        member("acme-emp", card="H10301:12:800", company="acme"),
        member("initech-emp", card="H10301:12:801", company="initech"),
        member("initech-plan", card="H10301:12:802", company="initech", plan="hot-desk"),
        member("globex-emp", card="H10301:12:803", company="globex"),
        member("passco-emp", card="H10301:12:804", company="passco"),
        member("brokeco-emp", card="H10301:12:805", company="brokeco"),
        # Grants.
        member(
            "grant-dates",
            card="H10301:12:900",
            access=[grant("sched", "always", valid_from=ds(1), valid_to=ds(2))],
        ),
        member(
            "grant-instants",
            card="H10301:12:901",
            access=[grant("sched", "always", valid_from=iso(0, "09:00"), valid_to=iso(0, "17:00"))],
        ),
        member("grant-staffed", card="H10301:12:902", access=[grant("sched", "staffed")]),
        member(
            "grant-union",
            card="H10301:12:903",
            access=[
                grant("sched", "staffed"),
                grant("sched", "always", valid_from=ds(5), valid_to=ds(6)),
            ],
        ),
        # Schedules.
        member("sched-fri-night", card="H10301:12:1100", access=[grant("sched", "fri-night")]),
        member("sched-night-hol", card="H10301:12:1101", access=[grant("sched", "night-hol")]),
        member(
            "sched-long-weekend", card="H10301:12:1102", access=[grant("sched", "long-weekend")]
        ),
        member("sched-always", card="H10301:12:1103", access=[grant("sched", "always")]),
        # Bookings.
        member("booker", card="H10301:12:1200", kind="nonmember"),
        member("attendee", card="H10301:12:1201", kind="nonmember"),
        # Day passes.
        member(
            "dp-open",
            card="H10301:12:1300",
            kind="nonmember",
            passes=[day_pass("dp-open-1", ds(0))],
        ),
        member(
            "dp-dated",
            card="H10301:12:1301",
            kind="nonmember",
            passes=[day_pass("dp-dated-1", ds(1), ds(1))],
        ),
        member("dp-balance", card="H10301:12:1302", kind="nonmember", balance=1),
        member(
            "dp-priority",
            card="H10301:12:1303",
            kind="nonmember",
            company="passco",
            passes=[day_pass("dp-priority-1", ds(0))],
            balance=1,
        ),
        member("dp-plan", card="H10301:12:1304", plan="hot-desk", balance=1),
        member("dp-ended", card="H10301:12:1305", plan="hot-desk", end=ds(-1), balance=1),
        # Unlock schedules and first person in.
        member("atrium-member", card="H10301:12:1400", access=[grant("atrium", "always")]),
        member("night-member", card="H10301:12:1401", access=[grant("nightdoor", "always")]),
    ]
    guests = [
        guest(
            "guest-day",
            iso(0, "09:00"),
            iso(0, "18:00"),
            pin_digits="1111",
            access=[grant("members", "staffed")],
        ),
        guest(
            "guest-overnight",
            iso(0, "20:00"),
            iso(1, "10:00"),
            card="H10301:12:1500",
            access=[grant("lounge", "always")],
        ),
        guest(
            "guest-early",
            iso(0, "05:00"),
            iso(1, "05:00"),
            card="H10301:12:1501",
            access=[grant("members", "staffed")],
        ),
        guest("guest-attendee", iso(0, "08:00"), iso(0, "20:00"), card="H10301:12:1502"),
        guest(
            "guest-dp",
            iso(0, "08:00"),
            iso(0, "20:00"),
            card="H10301:12:1503",
            passes=[day_pass("guest-dp-1", ds(0))],
        ),
    ]
    rooms = [
        {
            "id": "ada",
            "name": "Ada room",
            "door": "room-ada",
            "capacity": 6,
            "no_show_release_min": 15,
            "checkin_early_min": 10,
            "credits_per_hour": 2,
        }
    ]
    bookings = [
        booking(
            "b-1",
            "booker",
            iso(0, "10:00"),
            iso(0, "11:00"),
            attendees=["attendee", "guest-attendee", "suspended-booker"],
        ),
        booking("b-2", "booker", iso(0, "14:00"), iso(0, "15:00"), invoiced=True),
        booking("b-3", "booker", iso(0, "16:00"), iso(0, "17:00"), status="cancelled"),
        booking("b-4", "booker", iso(1, "10:00"), iso(1, "11:00"), status="checked_in"),
        booking("b-5", "booker", iso(1, "14:00"), iso(1, "15:00"), status="released"),
    ]
    return site_doc(
        schedules=schedules,
        doors=doors,
        groups=groups,
        members=members,
        plans=plans,
        companies=companies,
        guests=guests,
        rooms=rooms,
        bookings=bookings,
        holidays=[ds(2)],
        day_pass_access=[grant("members", "staffed"), grant("lounge", "always")],
    )


SITE = build_site()


@pytest.fixture(scope="module")
def ix(tmp_path_factory: pytest.TempPathFactory) -> SiteIndex:
    return index_of(tmp_path_factory.mktemp("policy"), SITE)


# --- cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    door: str
    when: float
    granted: bool
    reason: str
    cards: tuple[str, ...] = ()
    pin: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    effects: Effects | None = None  # the whole Effects, when given
    holder: str | None = None
    credential: str | None = None


def case(
    case_id: str,
    door_id: str,
    when: float,
    granted: bool,
    reason: str,
    *,
    who: str | None = None,
    cards: tuple[str, ...] = (),
    **kw: Any,
) -> Any:
    """One row: `who` shows that holder's card; `pin` types those digits."""
    if who is not None:
        cards = (CARD[who],)
        kw.setdefault("holder", who)
    return pytest.param(Case(door_id, when, granted, reason, cards=cards, **kw), id=case_id)


def check(ix: SiteIndex, c: Case) -> Decision:
    st = RuntimeState(**copy.deepcopy(c.state))
    p = Presentation(
        door=c.door,
        at=c.when,
        cards=c.cards,
        pin_hmac=pin(c.pin) if c.pin is not None else None,
    )
    d = decide(ix, st, p)
    assert (d.granted, d.reason) == (c.granted, c.reason), d
    assert d.reason in (GRANT_REASONS if d.granted else DENY_REASONS)
    if c.effects is not None:
        assert d.effects == c.effects, d
    if c.holder is not None:
        assert d.holder == c.holder, d
    if c.credential is not None:
        assert d.credential == c.credential, d
    return d


NOON = t(0, "12:00")
NINE = t(0, "09:00")


def use(holder: str, n: int, source: str, ticket: str | None = None, **kw: Any) -> DayPassUse:
    """The DayPassUse of `holder` on day `n`; `ticket` is the explicit pass's id."""
    return DayPassUse(holder, day(n), source, pass_id=ticket, **kw)


# --- credentials: card formats ----------------------------------------------------

CARD_CASES = [
    case("H10301", "front", NINE, True, "plan", cards=("H10301:12:3456",), holder="fmt-h10301"),
    case("H10306", "front", NINE, True, "plan", cards=("H10306:1000:50001",), holder="fmt-h10306"),
    case("C1000", "front", NINE, True, "plan", cards=("C1000:100:70001",), holder="fmt-c1000"),
    case("H10304", "front", NINE, True, "plan", cards=("H10304:500:12345",), holder="fmt-h10304"),
    case(
        "H10301-widest-fields",
        "front",
        NINE,
        True,
        "plan",
        cards=(parse_card_spec("H10301:255:65535"),),
        credential="fmt-max-card",
    ),
    case(
        "H10306-widest-fields",
        "front",
        NINE,
        True,
        "plan",
        cards=(parse_card_spec("H10306:65535:65535"),),
        credential="fmt-max-card2",
    ),
    case(
        "C1000-widest-fields",
        "front",
        NINE,
        True,
        "plan",
        cards=(parse_card_spec("C1000:4095:1048575"),),
        credential="fmt-max-card3",
    ),
    case(
        "H10304-widest-fields",
        "front",
        NINE,
        True,
        "plan",
        cards=(parse_card_spec("H10304:65535:524287"),),
        credential="fmt-max-card4",
    ),
    case(
        "same-fields-other-format-is-another-card",
        "front",
        NINE,
        False,
        "unknown_credential",
        cards=("H10306:12:3456",),
    ),
    case(
        "other-card-number-unknown",
        "front",
        NINE,
        False,
        "unknown_credential",
        cards=("H10301:12:3457",),
    ),
    case(
        "other-facility-unknown",
        "front",
        NINE,
        False,
        "unknown_credential",
        cards=("H10301:13:3456",),
    ),
    case(
        "raw-uppercase-in-doc-read-lowercase",
        "front",
        NINE,
        True,
        "plan",
        cards=(parse_card_spec("raw:04a1b2c3d4e5f6"),),
        holder="fmt-raw-upper",
    ),
    case(
        "raw-uppercase-in-doc-read-uppercase",
        "front",
        NINE,
        True,
        "plan",
        cards=(parse_card_spec("RAW:04A1B2C3D4E5F6"),),
        holder="fmt-raw-upper",
    ),
    case(
        "raw-lowercase-in-doc-read-mixed-case",
        "front",
        NINE,
        True,
        "plan",
        cards=(parse_card_spec("raw:0A0b0C0d"),),
        holder="fmt-raw-lower",
    ),
    case(
        "raw-prefix-of-a-known-value-unknown",
        "front",
        NINE,
        False,
        "unknown_credential",
        cards=(parse_card_spec("raw:04a1b2"),),
    ),
    case(
        "decoded-unknown-falls-back-to-raw",
        "front",
        NINE,
        True,
        "plan",
        cards=("H10301:99:9999", "raw:0a0b0c0d"),
        holder="fmt-raw-lower",
        credential="fmt-raw-lower-card",
    ),
    case(
        "decoded-match-comes-first",
        "front",
        NINE,
        True,
        "plan",
        cards=("H10301:12:3456", "raw:0a0b0c0d"),
        holder="fmt-h10301",
        credential="fmt-h10301-card",
    ),
    case("no-card-no-pin", "front", NINE, False, "unknown_credential"),
    case(
        "disabled-card",
        "front",
        NINE,
        False,
        "credential_disabled",
        who="disabled-card",
        credential="disabled-card-card",
    ),
]


@pytest.mark.parametrize("c", CARD_CASES)
def test_card_formats(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- credentials: PINs --------------------------------------------------------------

PIN_CASES = [
    case(
        "pin-of-a-resident",
        "front",
        NINE,
        True,
        "plan",
        pin="2468",
        holder="pin-resident",
        credential="pin-resident-pin",
    ),
    case("pin-at-night-resident-always", "front", t(0, "03:00"), True, "plan", pin="2468"),
    case("unknown-pin", "front", NINE, False, "wrong_pin", pin="0000"),
    case(
        "disabled-pin",
        "front",
        NINE,
        False,
        "credential_disabled",
        pin="7777",
        holder="pin-disabled",
    ),
    case("pin-shared-by-two-holders", "front", NINE, False, "ambiguous_pin", pin="4242"),
    case(
        "card-of-a-pin-holder-still-works",
        "front",
        NINE,
        True,
        "plan",
        who="pin-resident",
        credential="pin-resident-card",
    ),
]


@pytest.mark.parametrize("c", PIN_CASES)
def test_pins(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- doors: modes -------------------------------------------------------------------

MODE_CASES = [
    case("card-door-card", "cardonly", NINE, True, "grant", who="modes"),
    case("card-door-pin-alone", "cardonly", NINE, False, "card_required", pin="1357"),
    case("card-door-card-and-pin", "cardonly", NINE, True, "grant", who="modes", pin="1357"),
    case("pin-door-pin", "pinpad", NINE, True, "grant", pin="1357", holder="modes"),
    case("pin-door-card", "pinpad", NINE, False, "pin_required", who="modes"),
    case("pin-door-unknown-pin", "pinpad", NINE, False, "wrong_pin", pin="0001"),
    case("card-or-pin-door-card", "office", NINE, True, "grant", who="modes"),
    case("card-or-pin-door-pin", "office", NINE, True, "grant", pin="1357", holder="modes"),
    # card_and_pin, in one presentation or without a pending card.
    case(
        "card-and-pin-together",
        "server",
        NINE,
        True,
        "grant",
        who="ops",
        pin="9753",
        effects=Effects(clear_pending=True),
    ),
    case(
        "card-with-another-holders-pin",
        "server",
        NINE,
        False,
        "wrong_pin",
        who="ops",
        pin="8642",
    ),
    case("pin-without-a-card-first", "server", NINE, False, "card_required", pin="9753"),
    case(
        "card-then-pin-card-pending-at-another-door",
        "server",
        NINE,
        False,
        "card_required",
        pin="9753",
        state={"pending_cards": {"front": "ops"}},  # resolved in the test
    ),
    case(
        "card-of-holder-without-access-asks-no-pin",
        "server",
        NINE,
        False,
        "no_access",
        who="no-server",
        effects=Effects(),
    ),
    case(
        "disabled-card-asks-no-pin",
        "server",
        NINE,
        False,
        "credential_disabled",
        who="disabled-card",
    ),
]


def _resolve_pending(ix: SiteIndex, c: Case, when: float) -> Case:
    """`pending_cards` names holders in the table; make them PendingCards."""
    pending = c.state.get("pending_cards")
    if not pending:
        return c
    resolved = {d: PendingCard(ix.cards[CARD[holder]], when - 2) for d, holder in pending.items()}
    return replace(c, state={**c.state, "pending_cards": resolved})


@pytest.mark.parametrize("c", MODE_CASES)
def test_door_modes(ix: SiteIndex, c: Case) -> None:
    check(ix, _resolve_pending(ix, c, c.when))


@pytest.mark.parametrize(
    ("pin_digits", "delay", "granted", "reason"),
    [
        pytest.param("9753", 0.5, True, "grant", id="own-pin-after-half-a-second"),
        pytest.param("9753", 9.5, True, "grant", id="own-pin-after-9.5s"),
        pytest.param("9753", 10.5, False, "card_required", id="own-pin-after-10.5s"),
        pytest.param("9753", 60, False, "card_required", id="own-pin-after-a-minute"),
        pytest.param("9753", -1, False, "card_required", id="own-pin-before-the-card"),
        pytest.param("8642", 3, False, "wrong_pin", id="another-holders-pin"),
        pytest.param("0000", 3, False, "wrong_pin", id="unknown-pin"),
    ],
)
def test_card_then_pin(
    ix: SiteIndex, pin_digits: str, delay: float, granted: bool, reason: str
) -> None:
    card_at = t(0, "10:00")
    first = decide(ix, RuntimeState(), Presentation("server", card_at, cards=(CARD["ops"],)))
    assert (first.granted, first.reason) == (False, "pin_required")
    pending = PendingCard(ix.cards[CARD["ops"]], card_at)
    assert first.effects == Effects(await_pin=pending)

    st = RuntimeState(pending_cards={"server": pending})
    second = decide(ix, st, Presentation("server", card_at + delay, pin_hmac=pin(pin_digits)))
    assert (second.granted, second.reason) == (granted, reason), second
    assert second.reason in (GRANT_REASONS if granted else DENY_REASONS)
    if granted:
        assert second.holder == "ops"
        assert second.effects.clear_pending


def test_card_and_pin_door_held_open_by_its_schedule_lets_an_entitled_card_through(
    ix: SiteIndex,
) -> None:
    """`unlock_schedule` keeps the door unlocked while open: anyone passes.

    A stranger's card is let through as `unlocked`; the card of a holder who
    has access to the door must be let through the same way, not turned away
    with `pin_required` (no PIN was checked, so the reason is not `grant`).
    """
    stranger = decide(ix, RuntimeState(), Presentation("vault", NOON, cards=("H10301:1:1",)))
    assert (stranger.granted, stranger.reason) == (True, "unlocked")
    holder = decide(ix, RuntimeState(), Presentation("vault", NOON, cards=(CARD["vault-ops"],)))
    assert (holder.granted, holder.reason) == (True, "unlocked"), holder
    # Outside the unlock window the card-then-PIN rule applies as usual.
    p = Presentation("vault", t(0, "14:00"), cards=(CARD["vault-ops"],))
    later = decide(ix, RuntimeState(), p)
    assert (later.granted, later.reason) == (False, "pin_required")


# --- member kinds -------------------------------------------------------------------

KIND_CASES = [
    case("nonmember-nothing-at-office", "office", NINE, False, "no_access", who="nonmember-bare"),
    case(
        "nonmember-nothing-at-day-pass-door",
        "front",
        NINE,
        False,
        "no_day_pass",
        who="nonmember-bare",
    ),
    case("nonmember-explicit-grant", "office", NINE, True, "grant", who="nonmember-grant"),
    case(
        "nonmember-gets-no-company-access",
        "office",
        NINE,
        False,
        "no_access",
        who="nonmember-acme",
    ),
    case(
        "nonmember-company-day-pass",
        "front",
        NINE,
        True,
        "day_pass",
        who="nonmember-acme",
        effects=Effects(day_pass=use("nonmember-acme", 0, "company", company="acme")),
    ),
    case("nonmember-booking", "room-ada", t(0, "10:05"), True, "booking", who="booker"),
    case("member-without-plan-office", "office", NINE, False, "no_access", who="member-noplan"),
    case(
        "member-without-plan-day-pass-door",
        "front",
        NINE,
        False,
        "no_day_pass",
        who="member-noplan",
    ),
]


@pytest.mark.parametrize("c", KIND_CASES)
def test_member_kinds(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- contracts ----------------------------------------------------------------------

CONTRACT_CASES = [
    case(
        "date-start-day-before",
        "front",
        t(0, "23:59"),
        False,
        "contract_not_started",
        who="contract-dates",
    ),
    case("date-start-00:00", "front", t(1, "00:00"), True, "plan", who="contract-dates"),
    case("date-end-day-23:59", "front", t(3, "23:59"), True, "plan", who="contract-dates"),
    case(
        "date-end-next-day-00:00",
        "front",
        t(4, "00:00"),
        False,
        "contract_ended",
        who="contract-dates",
    ),
    case(
        "instant-start-minus-1s",
        "front",
        t(0, "10:00") - 1,
        False,
        "contract_not_started",
        who="contract-instants",
    ),
    case("instant-start-utc-offset", "front", t(0, "10:00"), True, "plan", who="contract-instants"),
    case("instant-end-minus-1s", "front", NOON - 1, True, "plan", who="contract-instants"),
    case("instant-end", "front", NOON, False, "contract_ended", who="contract-instants"),
    case("open-start", "front", t(-400, "09:00"), True, "plan", who="contract-open"),
    case("open-start-ended", "front", t(1, "00:00"), False, "contract_ended", who="contract-open"),
    case(
        "dst-start-day-before",
        "front",
        at(date(2026, 3, 28), "23:59"),
        False,
        "contract_not_started",
        who="contract-dst",
    ),
    case(
        "dst-start-day-00:00",
        "front",
        at(date(2026, 3, 29), "00:00"),
        True,
        "plan",
        who="contract-dst",
    ),
    case(
        "dst-end-day-23:59",
        "front",
        at(date(2026, 10, 25), "23:59"),
        True,
        "plan",
        who="contract-dst",
    ),
    case(
        "dst-end-next-day-00:00",
        "front",
        at(date(2026, 10, 26), "00:00"),
        False,
        "contract_ended",
        who="contract-dst",
    ),
    case(
        "company-access-outlives-the-contract",
        "office",
        NINE,
        True,
        "company",
        who="contract-ended-acme",
    ),
    case(
        "grant-outlives-the-contract",
        "sched",
        NINE,
        True,
        "grant",
        who="contract-ended-grant",
    ),
    case(
        "plan-ends-with-the-contract",
        "front",
        NINE,
        False,
        "contract_ended",
        who="contract-ended-grant",
    ),
]


@pytest.mark.parametrize("c", CONTRACT_CASES)
def test_contracts(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- billing --------------------------------------------------------------------------

BILLING_CASES = [
    case("past-due-in-grace", "front", t(0, "23:59"), True, "plan", who="billing-grace"),
    case(
        "past-due-at-grace-until",
        "front",
        t(1, "00:00"),
        False,
        "billing_suspended",
        who="billing-grace",
    ),
    case(
        "past-due-1s-before-grace-until",
        "front",
        NOON - 1,
        True,
        "plan",
        who="billing-grace-instant",
    ),
    case(
        "past-due-at-grace-until-utc",
        "front",
        NOON,
        False,
        "billing_suspended",
        who="billing-grace-instant",
    ),
    case(
        "past-due-without-grace",
        "front",
        NINE,
        False,
        "billing_suspended",
        who="billing-nograce",
    ),
    case("suspended-plan", "front", NINE, False, "billing_suspended", who="billing-suspended"),
    case("suspended-grant", "sched", NINE, False, "billing_suspended", who="billing-suspended"),
    case(
        "suspended-own-day-pass",
        "lounge",
        NINE,
        False,
        "billing_suspended",
        who="billing-suspended",
    ),
    case(
        "suspended-day-pass-reentry",
        "lounge",
        NOON,
        False,
        "billing_suspended",
        who="billing-suspended",
        state={
            "day_pass_uses": {
                ("billing-suspended", DAY): use(
                    "billing-suspended", 0, "pass", ticket="dp-suspended"
                )
            },
            "pass_first_use": {"dp-suspended": DAY},
        },
    ),
    case(
        "suspended-keeps-bookings",
        "room-ada",
        t(0, "10:05"),
        True,
        "booking",
        who="suspended-booker",
    ),
    case(
        "suspended-keeps-company-access",
        "office",
        NINE,
        True,
        "company",
        who="suspended-acme",
    ),
    # A company's billing gates what the company gives.
    case("company-ok", "office", t(0, "03:00"), True, "company", who="acme-emp"),
    case("company-ok-front", "front", NINE, True, "company", who="acme-emp"),
    case("company-suspended", "office", NINE, False, "billing_suspended", who="initech-emp"),
    case(
        "company-suspended-day-pass",
        "lounge",
        NINE,
        False,
        "billing_suspended",
        who="initech-emp",
    ),
    case(
        "company-suspended-own-plan-unaffected",
        "front",
        NINE,
        True,
        "plan",
        who="initech-plan",
    ),
    case(
        "company-suspended-company-door",
        "office",
        NINE,
        False,
        "billing_suspended",
        who="initech-plan",
    ),
    case("company-past-due-in-grace", "office", NOON - 60, True, "company", who="globex-emp"),
    case(
        "company-past-due-at-grace-until",
        "office",
        NOON,
        False,
        "billing_suspended",
        who="globex-emp",
    ),
    case(
        "company-past-due-day-pass-in-grace",
        "lounge",
        t(0, "11:00"),
        True,
        "day_pass",
        who="globex-emp",
        effects=Effects(day_pass=use("globex-emp", 0, "company", company="globex")),
    ),
    case(
        "company-past-due-day-pass-after-grace",
        "lounge",
        t(0, "12:30"),
        False,
        "billing_suspended",
        who="globex-emp",
    ),
    case(
        "company-suspended-no-day-pass",
        "front",
        NINE,
        False,
        "billing_suspended",
        who="brokeco-emp",
    ),
]


@pytest.mark.parametrize("c", BILLING_CASES)
def test_billing(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- grants -----------------------------------------------------------------------------

GRANT_CASES = [
    case("date-from-day-before", "sched", t(0, "23:59"), False, "no_access", who="grant-dates"),
    case("date-from-00:00", "sched", t(1, "00:00"), True, "grant", who="grant-dates"),
    case("date-to-day-23:59", "sched", t(2, "23:59"), True, "grant", who="grant-dates"),
    case("date-to-next-00:00", "sched", t(3, "00:00"), False, "no_access", who="grant-dates"),
    case("instant-from-minus-1s", "sched", NINE - 1, False, "no_access", who="grant-instants"),
    case("instant-from", "sched", NINE, True, "grant", who="grant-instants"),
    case("instant-to-minus-1s", "sched", t(0, "17:00") - 1, True, "grant", who="grant-instants"),
    case("instant-to", "sched", t(0, "17:00"), False, "no_access", who="grant-instants"),
    case("other-door", "office", NINE, False, "no_access", who="grant-staffed"),
    case(
        "union-staffed-closed-other-grant-open",
        "sched",
        t(6, "03:00"),
        True,
        "grant",
        who="grant-union",
    ),
    case(
        "union-both-closed",
        "sched",
        t(7, "03:00"),
        False,
        "outside_schedule",
        who="grant-union",
    ),
]


@pytest.mark.parametrize("c", GRANT_CASES)
def test_grants(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- schedules ------------------------------------------------------------------------
# DAY-3 is a Friday, DAY+2 (Wednesday) the site's holiday.

SCHEDULE_CASES = [
    case("staffed-07:59", "sched", t(0, "07:59"), False, "outside_schedule", who="grant-staffed"),
    case("staffed-08:00", "sched", t(0, "08:00"), True, "grant", who="grant-staffed"),
    case("staffed-18:59", "sched", t(0, "18:59"), True, "grant", who="grant-staffed"),
    case("staffed-19:00", "sched", t(0, "19:00"), False, "outside_schedule", who="grant-staffed"),
    case("staffed-saturday-10:00", "sched", t(5, "10:00"), True, "grant", who="grant-staffed"),
    case(
        "staffed-saturday-16:00",
        "sched",
        t(5, "16:00"),
        False,
        "outside_schedule",
        who="grant-staffed",
    ),
    case("staffed-sunday", "sched", t(6, "12:00"), False, "outside_schedule", who="grant-staffed"),
    case(
        "staffed-closed-on-holiday",
        "sched",
        t(2, "12:00"),
        False,
        "outside_schedule",
        who="grant-staffed",
    ),
    case("always-open-on-holiday", "sched", t(2, "12:00"), True, "grant", who="sched-always"),
    case(
        "fri-night-friday-21:59",
        "sched",
        t(-3, "21:59"),
        False,
        "outside_schedule",
        who="sched-fri-night",
    ),
    case("fri-night-friday-22:00", "sched", t(-3, "22:00"), True, "grant", who="sched-fri-night"),
    case("fri-night-saturday-05:59", "sched", t(-2, "05:59"), True, "grant", who="sched-fri-night"),
    case(
        "fri-night-saturday-06:00",
        "sched",
        t(-2, "06:00"),
        False,
        "outside_schedule",
        who="sched-fri-night",
    ),
    case(
        "fri-night-friday-05:00-is-thursdays",
        "sched",
        t(-3, "05:00"),
        False,
        "outside_schedule",
        who="sched-fri-night",
    ),
    case(
        "fri-night-saturday-22:00",
        "sched",
        t(-2, "22:00"),
        False,
        "outside_schedule",
        who="sched-fri-night",
    ),
    case(
        "fri-night-thursday-23:00",
        "sched",
        t(-4, "23:00"),
        False,
        "outside_schedule",
        who="sched-fri-night",
    ),
    case(
        "night-hol-eve-of-holiday-23:00",
        "sched",
        t(1, "23:00"),
        True,
        "grant",
        who="sched-night-hol",
    ),
    case(
        "night-hol-holiday-01:00-is-the-eves",
        "sched",
        t(2, "01:00"),
        True,
        "grant",
        who="sched-night-hol",
    ),
    case(
        "night-hol-holiday-23:00",
        "sched",
        t(2, "23:00"),
        False,
        "outside_schedule",
        who="sched-night-hol",
    ),
    case(
        "night-hol-after-holiday-01:00-is-the-holidays",
        "sched",
        t(3, "01:00"),
        False,
        "outside_schedule",
        who="sched-night-hol",
    ),
    case(
        "night-hol-after-holiday-23:00",
        "sched",
        t(3, "23:00"),
        True,
        "grant",
        who="sched-night-hol",
    ),
    case("fri-mon-range-friday", "sched", t(-3, "12:00"), True, "grant", who="sched-long-weekend"),
    case("fri-mon-range-sunday", "sched", t(-1, "12:00"), True, "grant", who="sched-long-weekend"),
    case("fri-mon-range-monday", "sched", t(0, "12:00"), True, "grant", who="sched-long-weekend"),
    case(
        "fri-mon-range-tuesday",
        "sched",
        t(1, "12:00"),
        False,
        "outside_schedule",
        who="sched-long-weekend",
    ),
    case(
        "fri-mon-range-thursday",
        "sched",
        t(-4, "12:00"),
        False,
        "outside_schedule",
        who="sched-long-weekend",
    ),
    case(
        "fri-mon-range-16:00",
        "sched",
        t(0, "16:00"),
        False,
        "outside_schedule",
        who="sched-long-weekend",
    ),
]


@pytest.mark.parametrize("c", SCHEDULE_CASES)
def test_schedules(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- daylight saving ----------------------------------------------------------------
# A purpose-made site: a door open 08:00-20:00 every day, another 22:00-06:00.
# 2027-03-28 (last Sunday of March: 02:00 CET -> 03:00 CEST) and 2026-10-25
# (last Sunday of October: 03:00 CEST -> 02:00 CET). Instants are given in UTC
# so that nothing here depends on the conversion under test.


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def dst_ix(tmp_path_factory: pytest.TempPathFactory) -> SiteIndex:
    doc = site_doc(
        schedules=[
            schedule("eight", window("mon-sun", "08:00", "20:00")),
            schedule("night", window("mon-sun", "22:00", "06:00")),
        ],
        doors=[door("day-door", "card"), door("night-door", "card")],
        groups={"day": ["day-door"], "night": ["night-door"]},
        members=[
            member(
                "dst-member",
                card="H10301:1:1",
                start=None,
                access=[grant("day", "eight"), grant("night", "night")],
            )
        ],
    )
    return index_of(tmp_path_factory.mktemp("dst"), doc)


@pytest.mark.parametrize(
    ("door_id", "instant", "granted", "reason"),
    [
        # Spring forward: CEST is UTC+2, so 08:00 local is 06:00Z.
        pytest.param("day-door", "2027-03-28T05:59", False, "outside_schedule", id="mar-07:59"),
        pytest.param("day-door", "2027-03-28T06:00", True, "grant", id="mar-08:00"),
        pytest.param("day-door", "2027-03-28T17:59", True, "grant", id="mar-19:59"),
        pytest.param("day-door", "2027-03-28T18:00", False, "outside_schedule", id="mar-20:00"),
        pytest.param("night-door", "2027-03-28T01:30", True, "grant", id="mar-03:30-after-jump"),
        pytest.param("night-door", "2027-03-28T03:59", True, "grant", id="mar-05:59"),
        pytest.param("night-door", "2027-03-28T04:00", False, "outside_schedule", id="mar-06:00"),
        pytest.param("night-door", "2027-03-28T19:59", False, "outside_schedule", id="mar-21:59"),
        pytest.param("night-door", "2027-03-28T20:00", True, "grant", id="mar-22:00"),
        # Fall back: CET is UTC+1, so 08:00 local is 07:00Z.
        pytest.param("day-door", "2026-10-25T06:59", False, "outside_schedule", id="oct-07:59"),
        pytest.param("day-door", "2026-10-25T07:00", True, "grant", id="oct-08:00"),
        pytest.param("day-door", "2026-10-25T18:59", True, "grant", id="oct-19:59"),
        pytest.param("day-door", "2026-10-25T19:00", False, "outside_schedule", id="oct-20:00"),
        pytest.param("night-door", "2026-10-25T00:30", True, "grant", id="oct-02:30-first"),
        pytest.param("night-door", "2026-10-25T01:30", True, "grant", id="oct-02:30-second"),
        pytest.param("night-door", "2026-10-25T04:59", True, "grant", id="oct-05:59"),
        pytest.param("night-door", "2026-10-25T05:00", False, "outside_schedule", id="oct-06:00"),
        pytest.param("night-door", "2026-10-25T20:59", False, "outside_schedule", id="oct-21:59"),
        pytest.param("night-door", "2026-10-25T21:00", True, "grant", id="oct-22:00"),
    ],
)
def test_schedules_across_daylight_saving(
    dst_ix: SiteIndex, door_id: str, instant: str, granted: bool, reason: str
) -> None:
    p = Presentation(door_id, utc(instant), cards=("H10301:1:1",))
    d = decide(dst_ix, RuntimeState(), p)
    assert (d.granted, d.reason) == (granted, reason), d
    assert d.reason in (GRANT_REASONS if granted else DENY_REASONS)


def test_dst_helper_agrees_with_the_utc_instants() -> None:
    """`at()` (local wall time) and the UTC instants above name the same moments."""
    assert at(date(2027, 3, 28), "08:00") == utc("2027-03-28T06:00")
    assert at(date(2026, 10, 25), "08:00") == utc("2026-10-25T07:00")


# --- bookings --------------------------------------------------------------------------
# b-1: booker + attendees, DAY 10:00-11:00, confirmed; the room opens 10 min
# early and releases a booking nobody checked into 15 min after its start.

BOOKING_CASES = [
    case("before-early-window", "room-ada", t(0, "09:50") - 1, False, "no_access", who="booker"),
    case(
        "early-window-opens",
        "room-ada",
        t(0, "09:50"),
        True,
        "booking",
        who="booker",
        effects=Effects(check_in="b-1"),
    ),
    case(
        "at-start",
        "room-ada",
        t(0, "10:00"),
        True,
        "booking",
        who="booker",
        effects=Effects(check_in="b-1"),
    ),
    case("inside-no-show-window", "room-ada", t(0, "10:14"), True, "booking", who="booker"),
    case("released-no-show", "room-ada", t(0, "10:16"), False, "no_access", who="booker"),
    case(
        "checked-in-not-released",
        "room-ada",
        t(0, "10:16"),
        True,
        "booking",
        who="booker",
        state={"checked_in": {"b-1"}},
        effects=Effects(),
    ),
    case(
        "checked-in-until-end",
        "room-ada",
        t(0, "11:00") - 1,
        True,
        "booking",
        who="booker",
        state={"checked_in": {"b-1"}},
    ),
    case(
        "checked-in-ends-at-end",
        "room-ada",
        t(0, "11:00"),
        False,
        "no_access",
        who="booker",
        state={"checked_in": {"b-1"}},
    ),
    case(
        "attendee",
        "room-ada",
        t(0, "10:05"),
        True,
        "booking",
        who="attendee",
        effects=Effects(check_in="b-1"),
    ),
    case(
        "attendee-released-too",
        "room-ada",
        t(0, "10:20"),
        False,
        "no_access",
        who="attendee",
    ),
    case(
        "guest-attendee-first-entry",
        "room-ada",
        t(0, "10:05"),
        True,
        "booking",
        who="guest-attendee",
        effects=Effects(guest_entry=DAY, check_in="b-1"),
    ),
    case("booking-grants-only-its-room", "office", t(0, "10:05"), False, "no_access", who="booker"),
    case(
        "invoiced-not-released",
        "room-ada",
        t(0, "14:30"),
        True,
        "booking",
        who="booker",
        effects=Effects(check_in="b-2"),
    ),
    case("invoiced-ends-at-end", "room-ada", t(0, "15:00"), False, "no_access", who="booker"),
    case("cancelled", "room-ada", t(0, "16:05"), False, "no_access", who="booker"),
    case(
        "cancelled-inside-early-window", "room-ada", t(0, "15:55"), False, "no_access", who="booker"
    ),
    case(
        "status-checked-in-not-released",
        "room-ada",
        t(1, "10:30"),
        True,
        "booking",
        who="booker",
        effects=Effects(),
    ),
    case("status-released", "room-ada", t(1, "14:05"), False, "no_access", who="booker"),
    case("between-bookings", "room-ada", t(0, "12:00"), False, "no_access", who="booker"),
]


@pytest.mark.parametrize("c", BOOKING_CASES)
def test_bookings(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- day passes ------------------------------------------------------------------------
# site.day_pass_access: `front` while staffed, `lounge` always.

DP_OPEN_USE = use("dp-open", 0, "pass", ticket="dp-open-1")
DP_OPEN_USED_TODAY = {
    "day_pass_uses": {("dp-open", DAY): DP_OPEN_USE},
    "pass_first_use": {"dp-open-1": DAY},
}
DAY_PASS_CASES = [
    case(
        "open-pass-first-use-consumes",
        "front",
        NINE,
        True,
        "day_pass",
        who="dp-open",
        effects=Effects(day_pass=DP_OPEN_USE),
    ),
    case(
        "open-pass-second-entry-same-day",
        "front",
        t(0, "15:00"),
        True,
        "day_pass",
        who="dp-open",
        state=DP_OPEN_USED_TODAY,
        effects=Effects(),
    ),
    case(
        "open-pass-same-day-23:59",
        "lounge",
        t(0, "23:59"),
        True,
        "day_pass",
        who="dp-open",
        state=DP_OPEN_USED_TODAY,
        effects=Effects(),
    ),
    case(
        "open-pass-over-at-local-midnight",
        "lounge",
        t(1, "00:30"),
        False,
        "no_day_pass",
        who="dp-open",
        state=DP_OPEN_USED_TODAY,
    ),
    case(
        "open-pass-over-next-day",
        "front",
        t(1, "09:00"),
        False,
        "no_day_pass",
        who="dp-open",
        state=DP_OPEN_USED_TODAY,
    ),
    case(
        "open-pass-before-valid-from",
        "front",
        t(-3, "09:00"),
        False,
        "no_day_pass",
        who="dp-open",
    ),
    case(
        "open-pass-first-used-later-still-unused-today",
        "front",
        t(1, "09:00"),
        True,
        "day_pass",
        who="dp-open",
        effects=Effects(day_pass=use("dp-open", 1, "pass", ticket="dp-open-1")),
    ),
    case(
        "outside-day-pass-schedule",
        "front",
        t(0, "19:00"),
        False,
        "outside_schedule",
        who="dp-open",
    ),
    case("not-a-day-pass-door", "office", NINE, False, "no_access", who="dp-open"),
    case(
        "dated-pass-on-its-day",
        "front",
        t(1, "09:00"),
        True,
        "day_pass",
        who="dp-dated",
        effects=Effects(day_pass=use("dp-dated", 1, "pass", ticket="dp-dated-1")),
    ),
    case(
        "dated-pass-its-day-23:59",
        "lounge",
        t(1, "23:59"),
        True,
        "day_pass",
        who="dp-dated",
        effects=Effects(day_pass=use("dp-dated", 1, "pass", ticket="dp-dated-1")),
    ),
    case(
        "dated-pass-day-before",
        "front",
        NINE,
        False,
        "no_day_pass",
        who="dp-dated",
    ),
    case(
        "dated-pass-day-after",
        "lounge",
        t(2, "00:00"),
        False,
        "no_day_pass",
        who="dp-dated",
    ),
    case(
        "balance-consumes",
        "front",
        NINE,
        True,
        "day_pass",
        who="dp-balance",
        effects=Effects(day_pass=use("dp-balance", 0, "balance")),
    ),
    case(
        "balance-exhausted-on-site",
        "front",
        NINE,
        False,
        "no_day_pass",
        who="dp-balance",
        state={"balance_used": {"dp-balance": 1}},
    ),
    case(
        "balance-second-entry-same-day-not-consumed",
        "front",
        t(0, "16:00"),
        True,
        "day_pass",
        who="dp-balance",
        state={
            "day_pass_uses": {("dp-balance", DAY): use("dp-balance", 0, "balance")},
            "balance_used": {"dp-balance": 1},
        },
        effects=Effects(),
    ),
    case(
        "balance-used-on-another-day-consumes-again",
        "front",
        NINE,
        True,
        "day_pass",
        who="dp-balance",
        state={"day_pass_uses": {("dp-balance", day(-3)): use("dp-balance", -3, "balance")}},
        effects=Effects(day_pass=use("dp-balance", 0, "balance")),
    ),
    case(
        "balance-local-day-not-utc-day",
        "lounge",
        t(1, "00:30"),  # 23:30 UTC of DAY
        True,
        "day_pass",
        who="dp-balance",
        state={"day_pass_uses": {("dp-balance", DAY): use("dp-balance", 0, "balance")}},
        effects=Effects(day_pass=use("dp-balance", 1, "balance")),
    ),
    case(
        "explicit-pass-before-balance-and-company",
        "front",
        NINE,
        True,
        "day_pass",
        who="dp-priority",
        effects=Effects(day_pass=use("dp-priority", 0, "pass", ticket="dp-priority-1")),
    ),
    case(
        "balance-before-company",
        "front",
        NINE,
        True,
        "day_pass",
        who="dp-priority",
        state={"pass_first_use": {"dp-priority-1": day(-3)}},
        effects=Effects(day_pass=use("dp-priority", 0, "balance")),
    ),
    case(
        "company-last",
        "front",
        NINE,
        True,
        "day_pass",
        who="dp-priority",
        state={"pass_first_use": {"dp-priority-1": day(-3)}, "balance_used": {"dp-priority": 1}},
        effects=Effects(day_pass=use("dp-priority", 0, "company", company="passco")),
    ),
    case(
        "company-day-pass",
        "front",
        NINE,
        True,
        "day_pass",
        who="passco-emp",
        effects=Effects(day_pass=use("passco-emp", 0, "company", company="passco")),
    ),
    case(
        "company-day-passes-exhausted",
        "front",
        NINE,
        False,
        "no_day_pass",
        who="passco-emp",
        state={"company_used": {"passco": 2}},
    ),
    case(
        "company-day-pass-second-entry",
        "front",
        t(0, "17:00"),
        True,
        "day_pass",
        who="passco-emp",
        state={
            "day_pass_uses": {
                ("passco-emp", DAY): use("passco-emp", 0, "company", company="passco")
            },
            "company_used": {"passco": 2},
        },
        effects=Effects(),
    ),
    case("company-day-pass-not-for-office", "office", NINE, False, "no_access", who="passco-emp"),
    case(
        "not-used-when-plan-allows",
        "front",
        NINE,
        True,
        "plan",
        who="dp-plan",
        effects=Effects(),
    ),
    case(
        "used-where-plan-does-not-reach",
        "lounge",
        NINE,
        True,
        "day_pass",
        who="dp-plan",
        effects=Effects(day_pass=use("dp-plan", 0, "balance")),
    ),
    case(
        "used-when-contract-ended",
        "front",
        NINE,
        True,
        "day_pass",
        who="dp-ended",
        effects=Effects(day_pass=use("dp-ended", 0, "balance")),
    ),
]


@pytest.mark.parametrize("c", DAY_PASS_CASES)
def test_day_passes(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- guests -------------------------------------------------------------------------------
# guest-day: DAY 09:00-18:00, `front` while staffed, PIN 1111.

GUEST_CASES = [
    case(
        "before-valid-from",
        "front",
        t(0, "08:59"),
        False,
        "guest_not_started",
        pin="1111",
        holder="guest-day",
    ),
    case(
        "first-entry-of-the-day",
        "front",
        NINE,
        True,
        "guest",
        pin="1111",
        holder="guest-day",
        effects=Effects(guest_entry=DAY),
    ),
    case(
        "second-entry-of-the-day",
        "front",
        NOON,
        True,
        "guest",
        pin="1111",
        state={"guest_days": {("guest-day", DAY)}},
        effects=Effects(),
    ),
    case("until-valid-to", "front", t(0, "18:00") - 1, True, "guest", pin="1111"),
    case("at-valid-to", "front", t(0, "18:00"), False, "guest_expired", pin="1111"),
    case("next-day", "front", t(1, "09:00"), False, "guest_expired", pin="1111"),
    case("door-not-granted", "office", NOON, False, "no_access", pin="1111"),
    case(
        "valid-but-outside-schedule",
        "front",
        t(0, "07:00"),
        False,
        "outside_schedule",
        who="guest-early",
    ),
    case(
        "same-day-second-entry-overnight",
        "lounge",
        t(0, "23:30"),
        True,
        "guest",
        who="guest-overnight",
        state={"guest_days": {("guest-overnight", DAY)}},
        effects=Effects(),
    ),
    case(
        "new-local-day-is-a-first-entry",
        "lounge",
        t(1, "00:30"),  # 23:30 UTC of DAY
        True,
        "guest",
        who="guest-overnight",
        state={"guest_days": {("guest-overnight", DAY)}},
        effects=Effects(guest_entry=day(1)),
    ),
    case(
        "first-entry-with-a-day-pass",
        "front",
        NINE,
        True,
        "day_pass",
        who="guest-dp",
        effects=Effects(day_pass=use("guest-dp", 0, "pass", ticket="guest-dp-1"), guest_entry=DAY),
    ),
]


@pytest.mark.parametrize("c", GUEST_CASES)
def test_guests(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- lockdown --------------------------------------------------------------------------------

LOCKDOWN_CASES = [
    case("site-lockdown", "front", NINE, False, "lockdown", who="fmt-h10301",
         state={"lockdown_site": True}),
    case("door-lockdown", "front", NINE, False, "lockdown", who="fmt-h10301",
         state={"lockdown_doors": {"front"}}),
    case("other-door-locked-down", "front", NINE, True, "plan", who="fmt-h10301",
         state={"lockdown_doors": {"office"}}),
    case("lockdown-beats-unlock-schedule", "lobby", t(0, "12:30"), False, "lockdown",
         cards=("H10301:1:1",), state={"lockdown_doors": {"lobby"}}),
    case("site-lockdown-beats-first-person-in", "atrium", t(0, "12:30"), False, "lockdown",
         who="atrium-member",
         state={"lockdown_site": True, "first_in": {"atrium": Opening(DAY, 0)}}),
    case("lockdown-beats-pin", "front", NINE, False, "lockdown", pin="2468",
         state={"lockdown_site": True}),
]  # fmt: skip


@pytest.mark.parametrize("c", LOCKDOWN_CASES)
def test_lockdown(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


# --- unlock schedules ---------------------------------------------------------------------
# lobby: card door unlocked by `lunch` (mon-fri 12:00-13:00).
# atrium: the same, with first_person_in.
# nightdoor: unlocked by `late` (22:00-06:00), with first_person_in.

STRANGER = ("H10301:1:1",)
ATRIUM_OPEN = {"first_in": {"atrium": Opening(DAY, 0)}}

UNLOCK_CASES = [
    case("unknown-card-inside-window", "lobby", t(0, "12:30"), True, "unlocked", cards=STRANGER),
    case("window-start", "lobby", NOON, True, "unlocked", cards=STRANGER),
    case("window-end", "lobby", t(0, "13:00"), False, "unknown_credential", cards=STRANGER),
    case("before-window", "lobby", NOON - 1, False, "unknown_credential", cards=STRANGER),
    case("no-window-on-saturday", "lobby", t(5, "12:30"), False, "unknown_credential",
         cards=STRANGER),
    case("disabled-card-inside-window", "lobby", t(0, "12:30"), True, "unlocked",
         who="disabled-card"),
    case("holder-without-access-inside-window", "lobby", t(0, "12:30"), True, "unlocked",
         who="nonmember-bare"),
    case("pin-at-card-door-inside-window", "lobby", t(0, "12:30"), True, "unlocked", pin="2468"),
    case("first-person-in-not-yet", "atrium", t(0, "12:30"), False, "unknown_credential",
         cards=STRANGER),
    case("first-person-in-done", "atrium", t(0, "12:30"), True, "unlocked", cards=STRANGER,
         state=ATRIUM_OPEN),
    case("first-person-in-done-window-over", "atrium", t(0, "13:00"), False,
         "unknown_credential", cards=STRANGER, state=ATRIUM_OPEN),
    case("first-person-in-last-friday-does-not-count", "atrium", t(0, "12:30"), False,
         "unknown_credential", cards=STRANGER,
         state={"first_in": {"atrium": Opening(day(-3), 0)}}),
    case("first-person-in-yesterdays-does-not-count-tomorrow", "atrium", t(1, "12:30"), False,
         "unknown_credential", cards=STRANGER, state=ATRIUM_OPEN),
    case("first-person-opens-the-window", "atrium", t(0, "12:05"), True, "grant",
         who="atrium-member", effects=Effects(first_in=Opening(DAY, 0))),
    case("second-person-does-not-reopen", "atrium", t(0, "12:30"), True, "grant",
         who="atrium-member", state=ATRIUM_OPEN, effects=Effects()),
    case("grant-outside-window-opens-nothing", "atrium", t(0, "14:00"), True, "grant",
         who="atrium-member", effects=Effects()),
    case("denied-person-opens-nothing", "atrium", t(0, "12:30"), False, "no_access",
         who="nonmember-bare", effects=Effects()),
    case("overnight-first-person-in", "nightdoor", t(0, "23:00"), True, "grant",
         who="night-member", effects=Effects(first_in=Opening(DAY, 0))),
    case("overnight-window-belongs-to-its-start-day", "nightdoor", t(1, "01:00"), True,
         "unlocked", cards=STRANGER, state={"first_in": {"nightdoor": Opening(DAY, 0)}}),
    case("overnight-next-occurrence-not-yet-opened", "nightdoor", t(1, "01:00"), False,
         "unknown_credential", cards=STRANGER,
         state={"first_in": {"nightdoor": Opening(day(1), 0)}}),
    case("overnight-after-midnight-opens-the-eves-window", "nightdoor", t(1, "01:00"), True,
         "grant", who="night-member", effects=Effects(first_in=Opening(DAY, 0))),
]  # fmt: skip


@pytest.mark.parametrize("c", UNLOCK_CASES)
def test_unlock_schedules(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


def test_first_person_in_sequence(ix: SiteIndex) -> None:
    """Stranger refused, member admitted (opening the door), stranger let through."""
    st = RuntimeState()
    stranger = Presentation("atrium", t(0, "12:01"), cards=STRANGER)
    assert decide(ix, st, stranger).reason == "unknown_credential"

    first = decide(ix, st, Presentation("atrium", t(0, "12:02"), cards=(CARD["atrium-member"],)))
    assert (first.granted, first.reason) == (True, "grant")
    assert first.effects.first_in is not None
    st.first_in["atrium"] = first.effects.first_in

    after = decide(ix, st, Presentation("atrium", t(0, "12:03"), cards=STRANGER))
    assert (after.granted, after.reason) == (True, "unlocked")
    closed = decide(ix, st, Presentation("atrium", t(0, "13:01"), cards=STRANGER))
    assert (closed.granted, closed.reason) == (False, "unknown_credential")
    next_day = decide(ix, st, Presentation("atrium", t(1, "12:03"), cards=STRANGER))
    assert (next_day.granted, next_day.reason) == (False, "unknown_credential")


# --- unknown door and credential ------------------------------------------------------------

UNKNOWN_CASES = [
    case("unknown-door", "nope", NINE, False, "unknown_door", cards=(CARD["fmt-h10301"],)),
    case("unknown-door-case-differs", "FRONT", NINE, False, "unknown_door",
         cards=(CARD["fmt-h10301"],)),
    case("unknown-door-empty-id", "", NINE, False, "unknown_door", cards=(CARD["fmt-h10301"],)),
    case("unknown-door-pin", "nope", NINE, False, "unknown_door", pin="2468"),
    case("unknown-card", "front", NINE, False, "unknown_credential", cards=STRANGER),
    case("unknown-card-any-hour", "front", t(0, "03:00"), False, "unknown_credential",
         cards=STRANGER),
    case("unknown-card-every-key", "front", NINE, False, "unknown_credential",
         cards=("H10301:1:2", "raw:ffee")),
]  # fmt: skip


@pytest.mark.parametrize("c", UNKNOWN_CASES)
def test_unknown(ix: SiteIndex, c: Case) -> None:
    check(ix, c)


def test_unloaded_index_denies_everything() -> None:
    d = decide(SiteIndex.empty(), RuntimeState(), Presentation("front", NINE, cards=STRANGER))
    assert (d.granted, d.reason) == (False, "no_site")
    assert d.reason in DENY_REASONS


def test_tables_reach_every_reason_decide_gives() -> None:
    """The tables above assert every reason `decide` can give for a loaded site."""
    tables = (
        CARD_CASES
        + PIN_CASES
        + MODE_CASES
        + KIND_CASES
        + CONTRACT_CASES
        + BILLING_CASES
        + GRANT_CASES
        + SCHEDULE_CASES
        + BOOKING_CASES
        + DAY_PASS_CASES
        + GUEST_CASES
        + LOCKDOWN_CASES
        + UNLOCK_CASES
        + UNKNOWN_CASES
    )
    reasons = {p.values[0].reason for p in tables}
    not_from_decide = {"admin", "antipassback", "cache_stale", "clock_untrusted", "no_site"}
    # The offline policies' reasons: tests/test_degraded.py.
    not_from_decide |= {"facility_code", "database_unreadable", "no_site_data"}
    assert set(GRANT_REASONS + DENY_REASONS) - not_from_decide <= reasons
