"""Properties of the access decision (`edge.access.policy.decide`), checked with hypothesis.

The site is generated once per module from a fixed seed: a few dozen members,
nonmembers and guests with random plans, companies, contracts, billing states,
grants (with date and instant bounds), day passes, cards and PINs, over doors of
every mode, some held open by unlock schedules. Hypothesis then picks who shows
what, where, when, and what the gateway already knows (`RuntimeState`).

Schedules are re-evaluated here from the document itself, independently of
`edge.site.schedule`, so property (b) checks the policy against the contract's text.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edge.access.cards import pin_hmac
from edge.access.policy import (
    DENY_REASONS,
    GRANT_REASONS,
    DayPassUse,
    PendingCard,
    Presentation,
    RuntimeState,
    decide,
)
from edge.site.model import Credential, SiteIndex
from edge.site.schedule import Opening
from hwsim.sitegen import EXAMPLE_PIN_KEY
from tests.conftest import DAY, index_of

BERLIN = ZoneInfo("Europe/Berlin")
Doc = dict[str, Any]

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is never flaky
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no slow "explain" phase
)

# --- the generated site -------------------------------------------------------------

SCHEDULES: dict[str, tuple[list[tuple[str, str, str]], bool]] = {
    "always": ([("mon-sun", "00:00", "24:00")], False),
    "staffed": ([("mon-fri", "08:00", "19:00"), ("sat", "10:00", "16:00")], True),
    "lunch": ([("mon-fri", "12:00", "13:00")], False),
    "night": ([("mon-sun", "22:00", "06:00")], True),
    "weekend-nights": ([("fri-mon", "18:00", "02:00")], False),
    "eight": ([("mon-sun", "08:00", "20:00")], False),
    "early": ([("tue-thu", "06:30", "09:15"), ("sun", "23:00", "01:30")], True),
}
DOORS: dict[str, tuple[str, str | None, bool]] = {  # mode, unlock schedule, first person in
    "front": ("card_or_pin", "lunch", True),
    "office": ("card", None, False),
    "server": ("card_and_pin", None, False),
    "vault": ("card_and_pin", "lunch", False),
    "pinpad": ("pin", None, False),
    "lobby": ("card_or_pin", "early", False),
    "lounge": ("card_or_pin", None, False),
    "room-a": ("card", None, False),
}
GROUPS = {
    "members": ["front"],
    "office": ["front", "office"],
    "server": ["server", "vault"],
    "pinpad": ["pinpad"],
    "lobby": ["lobby", "front"],
    "lounge": ["lounge"],
    "room": ["room-a"],
}
HOLIDAYS = [DAY + timedelta(days=2), date(2027, 3, 29), date(2026, 10, 26)]
PLANS = {
    "hot-desk": [("members", "staffed")],
    "resident": [("members", "always"), ("lounge", "eight")],
    "night-owl": [("office", "night"), ("pinpad", "weekend-nights")],
}
COMPANY_BILLING = {
    "acme": {"status": "ok", "grace_until": None},
    "initech": {"status": "suspended", "grace_until": None},
    "globex": {"status": "past_due", "grace_until": "2026-11-17T12:00:00+01:00"},
}
COMPANY_ACCESS = {
    "acme": [("office", "always")],
    "initech": [("lobby", "staffed")],
    "globex": [("pinpad", "early"), ("server", "eight")],
}
DAY_PASS_ACCESS = [("members", "staffed"), ("lounge", "always")]

# Instants: around DAY, and around both daylight-saving changes.
CENTRES = (DAY, date(2027, 3, 28), date(2026, 10, 25))


def _local(d: date, minutes: int, seconds: int = 0) -> float:
    return datetime.combine(
        d, time(minutes // 60, minutes % 60, seconds), tzinfo=BERLIN
    ).timestamp()


def _bound(rng: random.Random) -> str | None:
    """A random date, instant or nothing near one of the centres."""
    roll = rng.random()
    if roll < 0.4:
        return None
    centre = rng.choice(CENTRES)
    d = centre + timedelta(days=rng.randrange(-4, 5))
    if roll < 0.7:
        return d.isoformat()
    ts = _local(d, rng.randrange(0, 24 * 60))
    return datetime.fromtimestamp(ts, BERLIN).isoformat()


def _ordered(rng: random.Random) -> tuple[str | None, str | None]:
    a, b = _bound(rng), _bound(rng)
    if a is not None and b is not None and _sort_key(a, False) > _sort_key(b, True):
        a, b = b, a
    if a is not None and b is not None and _sort_key(a, False) > _sort_key(b, True):
        b = None
    return a, b


def _sort_key(text: str, end: bool) -> float:
    return _start(text) if not end else _end(text)


def _start(text: str) -> float:
    if len(text) == 10:
        return _local(date.fromisoformat(text), 0)
    return datetime.fromisoformat(text).timestamp()


def _end(text: str) -> float:
    if len(text) == 10:
        return _local(date.fromisoformat(text) + timedelta(days=1), 0)
    return datetime.fromisoformat(text).timestamp()


def _grant(rng: random.Random) -> Doc:
    valid_from, valid_to = _ordered(rng) if rng.random() < 0.5 else (None, None)
    return {
        "group": rng.choice(sorted(GROUPS)),
        "schedule": rng.choice(sorted(SCHEDULES)),
        "valid_from": valid_from,
        "valid_to": valid_to,
    }


def _billing(rng: random.Random) -> Doc:
    roll = rng.random()
    if roll < 0.55:
        return {"status": "ok", "grace_until": None}
    if roll < 0.75:
        grace = _bound(rng)
        if grace is not None and len(grace) == 10:
            grace = datetime.fromtimestamp(_start(grace), BERLIN).isoformat()
        return {"status": "past_due", "grace_until": grace}
    return {"status": "suspended", "grace_until": None}


@dataclass
class Site:
    doc: Doc
    cards: dict[str, tuple[str, str, bool]]  # lookup key -> (holder, credential id, active)
    pins: dict[str, tuple[str, str, bool]]  # digits -> (holder, credential id, active)
    suspended_own_only: list[str]  # suspended holders with no company and no booking


def build_site(seed: int = 20261116) -> Site:
    rng = random.Random(seed)
    cards: dict[str, tuple[str, str, bool]] = {}
    pins: dict[str, tuple[str, str, bool]] = {}
    serial = iter(range(1, 10_000))

    def credentials(holder: str) -> list[Doc]:
        out: list[Doc] = []
        n = next(serial)
        active = rng.random() > 0.15
        out.append(
            {
                "id": f"{holder}-card",
                "type": "card",
                "format": "H10301",
                "facility_code": 7,
                "card_number": n,
                "status": "active" if active else "disabled",
            }
        )
        cards[f"H10301:7:{n}"] = (holder, f"{holder}-card", active)
        if rng.random() < 0.3:
            value = f"{n:04x}c0ffee"
            out.append(
                {
                    "id": f"{holder}-raw",
                    "type": "card",
                    "format": "raw",
                    "value": value.upper(),
                    "status": "active",
                }
            )
            cards[f"raw:{value}"] = (holder, f"{holder}-raw", True)
        if rng.random() < 0.6:
            digits = f"{4000 + n}"
            pin_active = rng.random() > 0.1
            out.append(
                {
                    "id": f"{holder}-pin",
                    "type": "pin",
                    "pin_hmac": pin_hmac(EXAMPLE_PIN_KEY, digits),
                    "status": "active" if pin_active else "disabled",
                }
            )
            pins[digits] = (holder, f"{holder}-pin", pin_active)
        return out

    def day_passes(holder: str) -> list[Doc]:
        out = []
        for i in range(rng.choice((0, 0, 1, 2))):
            valid_from, valid_to = _ordered(rng)
            if rng.random() < 0.5:
                valid_to = None
            out.append({"id": f"{holder}-dp{i}", "valid_from": valid_from, "valid_to": valid_to})
        return out

    members: list[Doc] = []
    for i in range(48):
        mid = f"m-{i:02d}"
        kind = "nonmember" if rng.random() < 0.25 else "member"
        start, end = _ordered(rng)
        company = rng.choice((None, None, "acme", "initech", "globex"))
        billing = _billing(rng)
        if i >= 36:  # a dozen suspended holders whose only access is their own
            company, billing = None, {"status": "suspended", "grace_until": None}
        members.append(
            {
                "id": mid,
                "name": mid,
                "kind": kind,
                "company": company,
                "plan": None if kind == "nonmember" else rng.choice((None, *sorted(PLANS))),
                "contract": {"start": start, "end": end},
                "billing": billing,
                "access": [_grant(rng) for _ in range(rng.choice((0, 1, 1, 2, 3)))],
                "credentials": credentials(mid),
                "day_passes": day_passes(mid),
                "day_pass_balance": rng.choice((0, 0, 1, 2)),
                "credits": 0,
            }
        )
    guests: list[Doc] = []
    for i in range(8):
        gid = f"g-{i}"
        centre = rng.choice(CENTRES)
        valid_from = _local(centre + timedelta(days=rng.randrange(-3, 3)), rng.randrange(0, 1440))
        valid_to = valid_from + rng.randrange(1, 72) * 3600
        guests.append(
            {
                "id": gid,
                "name": gid,
                "host": "m-00",
                "valid_from": datetime.fromtimestamp(valid_from, BERLIN).isoformat(),
                "valid_to": datetime.fromtimestamp(valid_to, BERLIN).isoformat(),
                "access": [_grant(rng) for _ in range(rng.choice((0, 1, 2)))],
                "credentials": credentials(gid),
                "day_passes": day_passes(gid),
            }
        )
    bookings: list[Doc] = []
    bookers = [m["id"] for m in members[:36]] + [g["id"] for g in guests]
    for i in range(10):
        centre = rng.choice(CENTRES)
        start = _local(centre + timedelta(days=rng.randrange(-2, 3)), rng.randrange(6, 20) * 60)
        end = start + rng.choice((30, 60, 120)) * 60
        bookings.append(
            {
                "id": f"b-{i}",
                "room": "a",
                "member": rng.choice([m["id"] for m in members[:36]]),
                "attendees": rng.sample(bookers, rng.randrange(0, 3)),
                "start": datetime.fromtimestamp(start, BERLIN).isoformat(),
                "end": datetime.fromtimestamp(end, BERLIN).isoformat(),
                "status": rng.choice(("confirmed", "confirmed", "checked_in", "cancelled")),
                "invoiced": rng.random() < 0.3,
                "recurrence_id": None,
            }
        )

    def access(items: list[tuple[str, str]]) -> list[Doc]:
        return [{"group": g, "schedule": s} for g, s in items]

    doc: Doc = {
        "schema": "edge-sync/1",
        "cursor": "c-1",
        "generated_at": "2026-11-16T07:00:00+01:00",
        "site": {
            "id": "mitte",
            "name": "Mitte",
            "timezone": "Europe/Berlin",
            "day_pass_access": access(DAY_PASS_ACCESS),
        },
        "schedules": [
            {
                "id": sid,
                "closed_on_holidays": closed,
                "windows": [{"days": d, "from": f, "to": t} for d, f, t in windows],
            }
            for sid, (windows, closed) in SCHEDULES.items()
        ],
        "holidays": [{"date": h.isoformat(), "name": "holiday"} for h in HOLIDAYS],
        "doors": [
            {
                "id": did,
                "name": did,
                "mode": mode,
                "unlock_schedule": unlock,
                "first_person_in": fpi,
            }
            for did, (mode, unlock, fpi) in DOORS.items()
        ],
        "access_groups": [{"id": g, "doors": d} for g, d in GROUPS.items()],
        "plans": [{"id": p, "access": access(a)} for p, a in PLANS.items()],
        "companies": [
            {
                "id": c,
                "name": c,
                "billing": COMPANY_BILLING[c],
                "access": access(COMPANY_ACCESS[c]),
                "day_passes": 2,
                "credits": 0,
            }
            for c in COMPANY_BILLING
        ],
        "members": members,
        "guests": guests,
        "rooms": [
            {
                "id": "a",
                "name": "Room A",
                "door": "room-a",
                "no_show_release_min": 15,
                "checkin_early_min": 10,
            }
        ],
        "bookings": bookings,
    }
    booked = {b["member"] for b in bookings} | {a for b in bookings for a in b["attendees"]}
    suspended = [
        m["id"]
        for m in members
        if m["billing"]["status"] == "suspended" and m["company"] is None and m["id"] not in booked
    ]
    return Site(doc, cards, pins, suspended)


SITE = build_site()


def with_extra_grants(doc: Doc, seed: int = 7) -> Doc:
    """The same site, every member with one more grant."""
    rng = random.Random(seed)
    more = copy.deepcopy(doc)
    for m in more["members"]:
        m["access"].append(_grant(rng))
    return more


MORE = with_extra_grants(SITE.doc)
HOLDER_DOCS = {h["id"]: h for h in SITE.doc["members"] + SITE.doc["guests"]}
PLAN_GRANTS = {p["id"]: p["access"] for p in SITE.doc["plans"]}
COMPANY_GRANTS = {c["id"]: c["access"] for c in SITE.doc["companies"]}


def doors_of(holder: str, doc: Doc = SITE.doc, day_passes: bool = True) -> list[str]:
    """Doors some plan, company, personal (or day-pass) grant of `holder` names."""
    h = next(x for x in doc["members"] + doc["guests"] if x["id"] == holder)
    grants = [*h["access"]]
    grants += PLAN_GRANTS.get(h.get("plan") or "", [])
    grants += COMPANY_GRANTS.get(h.get("company") or "", [])
    if day_passes:
        grants += [*doc["site"]["day_pass_access"], {"group": "room"}]
    return sorted({door for g in grants for door in GROUPS[g["group"]]} or DOORS)


_ANY_DOOR = st.sampled_from(sorted(DOORS))


def door_for(data: st.DataObject, holder: str, doc: Doc = SITE.doc) -> str:
    """Half the time a door the holder's grants name, else any door."""
    return data.draw(st.one_of(st.sampled_from(doors_of(holder, doc)), _ANY_DOOR), label="door")


class QuietIndex(SiteIndex):
    """A SiteIndex whose repr fits in hypothesis's report of a failing example."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<SiteIndex {self.site_id} with {len(self.holders)} holders>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))


def quiet(ix: SiteIndex) -> QuietIndex:
    return QuietIndex(**{f.name: getattr(ix, f.name) for f in fields(SiteIndex)})


@pytest.fixture(scope="module")
def ix(tmp_path_factory: pytest.TempPathFactory) -> SiteIndex:
    return quiet(index_of(tmp_path_factory.mktemp("props"), SITE.doc))


@pytest.fixture(scope="module")
def ix_more(tmp_path_factory: pytest.TempPathFactory) -> SiteIndex:
    return quiet(index_of(tmp_path_factory.mktemp("props-more"), MORE))


def test_generated_site_has_what_the_properties_need(ix: SiteIndex) -> None:
    """Guard against a seed that leaves a property without subjects."""
    assert len(SUSPENDED) >= 5
    assert sum(not active for _, _, active in SITE.cards.values()) >= 3
    kinds = {h.kind for h in ix.holders.values()}
    assert kinds == {"member", "nonmember", "guest"}
    assert len(ix.cards) == len(SITE.cards)


# --- strategies -------------------------------------------------------------------------

BOUNDARY_MINUTES = sorted(
    {0, 1439}
    | {
        m + delta
        for windows, _ in SCHEDULES.values()
        for _, f, to in windows
        for m in (int(f[:2]) * 60 + int(f[3:]), int(to[:2]) * 60 + int(to[3:]))
        for delta in (-1, 0)
        if 0 <= m + delta < 1440
    }
)


def _local_at(centre: date, offset: int, minute: int, second: int) -> float:
    return _local(centre + timedelta(days=offset), minute, second)


def _document_instants(doc: Doc) -> list[float]:
    """Every bound the document names, as an instant: where off-by-one bugs live."""
    out: set[float] = set()

    def add(text: str | None, end: bool = False) -> None:
        if text is not None:
            out.add(_end(text) if end else _start(text))

    for h in doc["members"] + doc["guests"]:
        for g in [*h["access"], *h["day_passes"]]:
            add(g["valid_from"])
            add(g["valid_to"], end=True)
        if "contract" in h:
            add(h["contract"]["start"])
            add(h["contract"]["end"], end=True)
            add(h["billing"]["grace_until"])
        else:
            add(h["valid_from"])
            add(h["valid_to"])
    for c in doc["companies"]:
        add(c["billing"]["grace_until"])
    for b in doc["bookings"]:
        add(b["start"])
        add(b["end"])
        out.update((_start(b["start"]) - 600, _start(b["start"]) + 900))
    return sorted(out)


DOCUMENT_INSTANTS = _document_instants(SITE.doc)
_MINUTES = st.one_of(st.sampled_from(BOUNDARY_MINUTES), st.integers(0, 1439))
_SECONDS = st.sampled_from((0, 0, 30, 59))
# Local times near DAY and both DST changes, or on the days around a holiday,
# often on a window's edge.
INSTANTS = st.one_of(
    st.builds(_local_at, st.sampled_from(CENTRES), st.integers(-4, 4), _MINUTES, _SECONDS),
    st.builds(_local_at, st.sampled_from(HOLIDAYS), st.integers(-1, 1), _MINUTES, _SECONDS),
    st.builds(
        lambda ts, delta: ts + delta,
        st.sampled_from(DOCUMENT_INSTANTS),
        st.sampled_from((-60, -1, 0, 0, 1, 3600)),
    ),
)

# Several instants per example: hypothesis re-uses values a lot, and one draw
# of who shows what where is cheap to check at a dozen moments.
MOMENTS = st.lists(INSTANTS, min_size=1, max_size=12)


def _holder_probes(doc: Doc) -> dict[str, list[float]]:
    """For each holder: its own bounds (and the second before them), and the
    hours around each holiday that schedules and overnight windows disagree on."""
    companies = {c["id"]: c for c in doc["companies"]}
    around_holidays = [
        _local(h + timedelta(days=n), minute)
        for h in HOLIDAYS
        for n, minute in ((0, 30), (0, 359), (0, 480), (0, 720), (0, 1350), (0, 1439), (1, 30))
    ]
    probes = {}
    for h in doc["members"] + doc["guests"]:
        bounds: list[float] = []
        for g in h["access"]:
            bounds += [_start(g["valid_from"])] if g["valid_from"] else []
            bounds += [_end(g["valid_to"])] if g["valid_to"] else []
        if "contract" in h:
            bounds += [_start(h["contract"]["start"])] if h["contract"]["start"] else []
            bounds += [_end(h["contract"]["end"])] if h["contract"]["end"] else []
            grace = [h["billing"]["grace_until"]]
            if h["company"]:
                grace.append(companies[h["company"]]["billing"]["grace_until"])
            bounds += [_start(g) for g in grace if g]
        else:
            bounds += [_start(h["valid_from"]), _start(h["valid_to"])]
        probes[h["id"]] = [b + delta for b in bounds for delta in (-1, 0)] + around_holidays
    return probes


HOLDER_PROBES = _holder_probes(SITE.doc)


def moments_for(data: st.DataObject, holder: str) -> list[float]:
    """Instants drawn by hypothesis, then the holder's probes."""
    return [*data.draw(MOMENTS, label="at"), *HOLDER_PROBES[holder]]


ALL_HOLDERS = [m["id"] for m in SITE.doc["members"]] + [g["id"] for g in SITE.doc["guests"]]
PASS_IDS = [dp["id"] for h in SITE.doc["members"] + SITE.doc["guests"] for dp in h["day_passes"]]
COMPANY_OF = {m["id"]: m["company"] for m in SITE.doc["members"]}

# What the gateway may already know on site. Strategies are built once: holder
# references are None for "the holder the test is about", day references are
# offsets from the local day of the presentation.
_HOLDER = st.one_of(st.none(), st.sampled_from(ALL_HOLDERS))
_DAY_OFFSET = st.sampled_from((-1, 0, 0, 1))
_DOOR = st.sampled_from(sorted(DOORS))
STATE_SPECS = st.fixed_dictionaries(
    {
        "lockdown_site": st.sampled_from((False,) * 15 + (True,)),
        "lockdown_doors": st.lists(_DOOR, max_size=1),
        "day_pass_uses": st.lists(
            st.tuples(_HOLDER, _DAY_OFFSET, st.sampled_from(("pass", "balance", "company"))),
            max_size=4,
        ),
        "pass_first_use": st.lists(
            st.tuples(st.one_of(st.none(), st.sampled_from(PASS_IDS)), _DAY_OFFSET), max_size=3
        ),
        "balance_used": st.lists(st.tuples(_HOLDER, st.integers(0, 3)), max_size=3),
        "company_used": st.dictionaries(
            st.sampled_from(sorted(COMPANY_BILLING)), st.integers(0, 3)
        ),
        "guest_days": st.lists(st.tuples(_HOLDER, _DAY_OFFSET), max_size=3),
        "checked_in": st.sets(st.sampled_from([f"b-{i}" for i in range(10)]), max_size=3),
        "first_in": st.lists(st.tuples(_DOOR, _DAY_OFFSET, st.sampled_from((0, 1))), max_size=2),
        "pending_cards": st.lists(
            st.tuples(_DOOR, st.sampled_from(sorted(SITE.cards)), st.floats(0, 15)), max_size=2
        ),
    }
)


def make_state(spec: dict[str, Any], ts: float, focus: str) -> RuntimeState:
    """The RuntimeState a spec from STATE_SPECS describes, for `focus` at `ts`."""
    today = datetime.fromtimestamp(ts, BERLIN).date()

    def day(offset: int) -> date:
        return today + timedelta(days=offset)

    def who(ref: str | None) -> str:
        return focus if ref is None else ref

    uses = {}
    for ref, offset, source in spec["day_pass_uses"]:
        h = who(ref)
        pass_id = f"{h}-dp0" if source == "pass" else None
        company = (COMPANY_OF.get(h) or "acme") if source == "company" else None
        uses[(h, day(offset))] = DayPassUse(h, day(offset), source, pass_id, company)
    pending = {}
    for door, key, ago in spec["pending_cards"]:
        h, cid, active = SITE.cards[key]
        pending[door] = PendingCard(Credential(cid, h, key, active), ts - ago)
    return RuntimeState(
        lockdown_site=spec["lockdown_site"],
        lockdown_doors=set(spec["lockdown_doors"]),
        day_pass_uses=uses,
        pass_first_use={
            (f"{focus}-dp0" if pid is None else pid): day(offset)
            for pid, offset in spec["pass_first_use"]
        },
        balance_used={who(ref): n for ref, n in spec["balance_used"]},
        company_used=dict(spec["company_used"]),
        guest_days={(who(ref), day(offset)) for ref, offset in spec["guest_days"]},
        checked_in=set(spec["checked_in"]),
        first_in={door: Opening(day(offset), w) for door, offset, w in spec["first_in"]},
        pending_cards=pending,
    )


def pin_of(holder: str) -> str | None:
    for digits, (h, _, _) in SITE.pins.items():
        if h == holder:
            return pin_hmac(EXAMPLE_PIN_KEY, digits)
    return None


_HOW = st.sampled_from(("card", "card+pin", "pin"))


def shown_by(
    data: st.DataObject, holder: str, keys: list[str]
) -> tuple[tuple[str, ...], str | None]:
    """A card of `keys` (the holder's), maybe with the holder's PIN, or the PIN alone."""
    digest = pin_of(holder)
    how = data.draw(_HOW, label="how") if digest else "card"
    if how == "pin" or not keys:
        return (), digest
    key = keys[data.draw(st.integers(0, len(keys) - 1), label="card")]
    return (key,), digest if how == "card+pin" else None


def _keys_of(holder: str, active_only: bool = False) -> list[str]:
    return [
        k for k, (h, _, active) in SITE.cards.items() if h == holder and (active or not active_only)
    ]


def _check_reason(d: Any) -> None:
    assert d.reason in (GRANT_REASONS if d.granted else DENY_REASONS), d


# --- (a) disabled credentials and suspended holders ------------------------------------------


DISABLED_CARDS = sorted(k for k, (_, _, active) in SITE.cards.items() if not active)
DISABLED_PINS = sorted(d for d, (_, _, active) in SITE.pins.items() if not active)
SUSPENDED = [h for h in SITE.suspended_own_only if _keys_of(h, active_only=True)]


@PROPERTY
@given(data=st.data())
def test_disabled_credential_is_only_let_through_an_unlocked_door(
    ix: SiteIndex, data: st.DataObject
) -> None:
    if DISABLED_PINS and data.draw(st.booleans(), label="pin instead of card"):
        digits = data.draw(st.sampled_from(DISABLED_PINS), label="pin")
        cards: tuple[str, ...] = ()
        digest: str | None = pin_hmac(EXAMPLE_PIN_KEY, digits)
        holder = SITE.pins[digits][0]
    else:
        key = data.draw(st.sampled_from(DISABLED_CARDS), label="card")
        holder = SITE.cards[key][0]
        cards, digest = (key,), data.draw(st.sampled_from((None, pin_of(holder))), label="pin")
    door = door_for(data, holder)
    spec = data.draw(STATE_SPECS, label="state")
    for ts in moments_for(data, holder):
        state = make_state(spec, ts, holder)
        d = decide(ix, state, Presentation(door, ts, cards=cards, pin_hmac=digest))
        _check_reason(d)
        assert not d.granted or d.reason == "unlocked", d


@PROPERTY
@given(data=st.data())
def test_suspended_holder_is_only_let_through_an_unlocked_door(
    ix: SiteIndex, data: st.DataObject
) -> None:
    holder = data.draw(st.sampled_from(SUSPENDED), label="holder")
    door = door_for(data, holder)
    cards, digest = shown_by(data, holder, _keys_of(holder, active_only=True))
    spec = data.draw(STATE_SPECS, label="state")
    for ts in moments_for(data, holder):
        state = make_state(spec, ts, holder)
        d = decide(ix, state, Presentation(door, ts, cards=cards, pin_hmac=digest))
        _check_reason(d)
        assert not d.granted or d.reason == "unlocked", d


# --- (b) schedules bound plan, company and personal access -----------------------------------

_DAY_INDEX = {name: i for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}


def _days(text: str) -> set[int]:
    first, _, last = text.partition("-")
    a = _DAY_INDEX[first]
    b = _DAY_INDEX[last] if last else a
    return {(a + i) % 7 for i in range(((b - a) % 7) + 1)}


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:])


def reference_open(schedule_id: str, ts: float) -> bool:
    """The contract's schedule rule, straight from the document's text."""
    windows, closed_on_holidays = SCHEDULES[schedule_id]
    local = datetime.fromtimestamp(ts, BERLIN)
    now = local.hour * 60 + local.minute
    today = local.date()
    for days_text, f, to in windows:
        days, start, end = _days(days_text), _minutes(f), _minutes(to)
        if start < end:
            starts = [today] if start <= now < end else []
        else:  # runs past midnight; belongs to the day it starts
            starts = [today] if now >= start else []
            if now < end:
                starts.append(today - timedelta(days=1))
        for started in starts:
            if started.weekday() in days and not (closed_on_holidays and started in HOLIDAYS):
                return True
    return False


def _in_validity(g: Doc, ts: float) -> bool:
    vf, vt = g.get("valid_from"), g.get("valid_to")
    return (vf is None or _start(vf) <= ts) and (vt is None or ts < _end(vt))


def source_grants(holder: str, reason: str) -> list[Doc]:
    h = HOLDER_DOCS[holder]
    if reason == "plan":
        return PLAN_GRANTS.get(h.get("plan") or "", [])
    if reason == "company":
        return COMPANY_GRANTS.get(h.get("company") or "", [])
    return list(h["access"])  # "grant" and "guest"


# Holders with an active card, but for the suspended ones (a) is about.
ACTIVE_HOLDERS = [
    h for h in ALL_HOLDERS if _keys_of(h, active_only=True) and h not in SITE.suspended_own_only
]


@PROPERTY
@given(data=st.data())
def test_plan_company_and_grants_admit_only_while_a_covering_schedule_is_open(
    ix: SiteIndex, data: st.DataObject
) -> None:
    holder = data.draw(st.sampled_from(ACTIVE_HOLDERS), label="holder")
    # Only doors its plan, company or own grants name can be opened by them.
    door = data.draw(st.sampled_from(doors_of(holder, day_passes=False)), label="door")
    cards, digest = shown_by(data, holder, _keys_of(holder, active_only=True))
    spec = data.draw(STATE_SPECS, label="state")
    for ts in moments_for(data, holder):
        d = decide(ix, make_state(spec, ts, holder), Presentation(door, ts, cards, digest))
        _check_reason(d)
        if d.granted and d.reason in ("plan", "company", "grant", "guest"):
            check_covered(d, door, ts)


def check_covered(d: Any, door: str, ts: float) -> None:
    """A grant of the source the decision names covers the door and is open now."""
    assert d.holder is not None
    covering = [
        g
        for g in source_grants(d.holder, d.reason)
        if door in GROUPS[g["group"]] and _in_validity(g, ts)
    ]
    assert covering, (d, "no grant of this source covers the door now")
    assert any(reference_open(g["schedule"], ts) for g in covering), (
        d,
        datetime.fromtimestamp(ts, BERLIN),
        covering,
    )


# --- (c) more grants never take access away ---------------------------------------------------


MEMBER_IDS = [m["id"] for m in SITE.doc["members"] if _keys_of(m["id"], active_only=True)]
EXTRA_DOORS = {m["id"]: sorted(GROUPS[m["access"][-1]["group"]]) for m in MORE["members"]}


@PROPERTY
@given(data=st.data())
def test_adding_a_grant_never_removes_access(
    ix: SiteIndex, ix_more: SiteIndex, data: st.DataObject
) -> None:
    holder = data.draw(st.sampled_from(MEMBER_IDS), label="holder")
    # Every door the added grant names (where a difference can be), and any one.
    doors = sorted({*EXTRA_DOORS[holder], data.draw(_ANY_DOOR, label="door")})
    cards, digest = shown_by(data, holder, _keys_of(holder, active_only=True))
    spec = data.draw(STATE_SPECS, label="state")
    for ts in moments_for(data, holder):
        for door in doors:
            p = Presentation(door, ts, cards=cards, pin_hmac=digest)
            before = decide(ix, make_state(spec, ts, holder), p)
            after = decide(ix_more, make_state(spec, ts, holder), p)
            _check_reason(before)
            _check_reason(after)
            if before.granted:
                assert after.granted, (before, after)


def test_extra_grants_make_a_difference(ix: SiteIndex, ix_more: SiteIndex) -> None:
    """The second site really grants more: (c) compares two different sites."""
    more = 0
    for holder in MEMBER_IDS:
        keys = _keys_of(holder, active_only=True)
        for door in DOORS:
            for ts in (_local(DAY, 10 * 60), _local(DAY, 23 * 60), _local(DAY + timedelta(5), 0)):
                p = Presentation(door, ts, cards=(keys[0],))
                a, b = decide(ix, RuntimeState(), p), decide(ix_more, RuntimeState(), p)
                more += b.granted and not a.granted
    assert more > 0


# --- (d) total: never raises, always a known reason -------------------------------------------

KNOWN_HMACS = [pin_hmac(EXAMPLE_PIN_KEY, digits) for digits in SITE.pins]


@PROPERTY
@given(
    door=st.tuples(st.integers(0, 3), _ANY_DOOR, st.text(max_size=70)).map(
        lambda x: x[2] if x[0] == 0 else x[1]  # a quarter of them are made up
    ),
    cards=st.lists(
        st.one_of(
            st.sampled_from(sorted(SITE.cards)),
            st.text(max_size=40),
            st.from_regex(r"(H10301|H10306|C1000|H10304|raw):[0-9a-fA-F:]{0,12}", fullmatch=True),
        ),
        max_size=3,
    ).map(tuple),
    digest=st.one_of(
        st.none(),
        st.sampled_from(KNOWN_HMACS),
        st.text(max_size=70),
        st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    ),
    ts=st.one_of(
        INSTANTS,
        st.floats(min_value=-(2.0**31), max_value=2.0**34, allow_nan=False, allow_infinity=False),
    ),
    data=st.data(),
)
def test_decide_is_total(
    ix: SiteIndex,
    door: str,
    cards: tuple[str, ...],
    digest: str | None,
    ts: float,
    data: st.DataObject,
) -> None:
    focus = data.draw(st.sampled_from(ALL_HOLDERS), label="state about")
    state = make_state(data.draw(STATE_SPECS, label="state"), ts, focus)
    d = decide(ix, state, Presentation(door, ts, cards=cards, pin_hmac=digest))
    _check_reason(d)
    assert d.door == door
    assert d.at == ts


# --- (e) the state is read, never written -----------------------------------------------------


@PROPERTY
@given(data=st.data())
def test_decide_does_not_mutate_the_state(ix: SiteIndex, data: st.DataObject) -> None:
    holder = data.draw(st.sampled_from(ALL_HOLDERS), label="holder")
    door = door_for(data, holder)
    cards, digest = shown_by(data, holder, _keys_of(holder))
    spec = data.draw(STATE_SPECS, label="state")
    for ts in moments_for(data, holder):
        state = make_state(spec, ts, holder)
        before = copy.deepcopy(state)
        d = decide(ix, state, Presentation(door, ts, cards=cards, pin_hmac=digest))
        _check_reason(d)
        assert state == before, d
