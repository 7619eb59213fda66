"""Building the in-memory `SiteIndex` from one generation of the store.

Runs in a worker thread with its own connection (WAL lets it read while the
writer writes). Members are read from typed columns, not parsed from JSON:
at 100,000 members a JSON parse per member alone would cost seconds here.
"""

from __future__ import annotations

import gc
import sqlite3
from collections import defaultdict
from datetime import date
from pathlib import Path

from edge.release import release_gradually
from edge.site.model import (
    Billing,
    Booking,
    Company,
    Credential,
    DayPass,
    Door,
    Grant,
    Holder,
    Room,
    SiteIndex,
)
from edge.site.schedule import Schedule, Window, parse_days
from edge.site.sqlite import connect_sync
from edge.site.syncdoc import (
    Access,
    AccessGroupDoc,
    BookingDoc,
    CompanyDoc,
    DoorDoc,
    HolidayDoc,
    PlanDoc,
    RoomDoc,
    ScheduleDoc,
    SiteDoc,
)
from edge.timeutil import BoundConverter, parse_time_of_day, zone


class CorruptStore(RuntimeError):
    """The store's current generation cannot be loaded (it was validated on import)."""


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def load_index(path: Path, gen: int) -> SiteIndex:
    # The cyclic GC would walk the half-built index again and again (a third of
    # the load time at 100,000 members); what is built here has no cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    conn = connect_sync(path)
    try:
        index = _load(conn, gen)
        # Out of the cyclic GC's sight for good: a full collection over 100,000
        # members takes ~150 ms here, a stall every decision would wait for.
        gc.freeze()
        return index
    finally:
        conn.close()
        if was_enabled:
            gc.enable()


def dismantle(box: list[SiteIndex]) -> None:
    """Free a replaced index piece by piece (from a worker thread).

    `box` holds the only reference, so nothing frees the index all at once.
    """
    index = box.pop()
    release_gradually(
        index.cards, index.holders, index.pins, index.bookings_by_holder, index.bookings
    )


def _schedule(doc: ScheduleDoc) -> Schedule:
    windows = tuple(
        Window(
            days=parse_days(w.days),
            start=parse_time_of_day(w.from_, allow_24=False),
            end=parse_time_of_day(w.to, allow_24=True),
        )
        for w in doc.windows
    )
    return Schedule(doc.id, windows, doc.closed_on_holidays)


# --- documents to index objects (shared with edge.site.changes) ---------------------------


def build_door(d: DoorDoc, schedules: dict[str, Schedule]) -> Door:
    return Door(
        id=d.id,
        name=d.name,
        mode=d.mode,
        unlock_schedule=schedules[d.unlock_schedule] if d.unlock_schedule else None,
        first_person_in=d.first_person_in,
    )


def build_grant(
    a: Access,
    groups: dict[str, frozenset[str]],
    schedules: dict[str, Schedule],
    bounds: BoundConverter,
) -> Grant:
    return Grant(
        group=a.group,
        doors=groups[a.group],
        schedule=schedules[a.schedule],
        valid_from=bounds.start(_iso(a.valid_from)),
        valid_to=bounds.end(_iso(a.valid_to)),
    )


def build_company(c: CompanyDoc, grants: tuple[Grant, ...], bounds: BoundConverter) -> Company:
    return Company(
        id=c.id,
        billing=Billing(c.billing.status, bounds.start(_iso(c.billing.grace_until))),
        grants=grants,
        day_passes=c.day_passes,
        credits=c.credits,
    )


def build_booking(b: BookingDoc, room: Room) -> Booking:
    start, end = b.start.timestamp(), b.end.timestamp()
    return Booking(
        id=b.id,
        room=b.room,
        door=room.door,
        member=b.member,
        holders=frozenset((b.member, *b.attendees)),
        start=start,
        end=end,
        opens=start - 60 * room.checkin_early_min,
        release_at=start + 60 * room.no_show_release_min,
        status=b.status,
        invoiced=b.invoiced,
    )


def _load(conn: sqlite3.Connection, gen: int) -> SiteIndex:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    objects: dict[str, list[str]] = defaultdict(list)
    for kind, data in conn.execute("SELECT kind, data FROM objects WHERE gen = ?", (gen,)):
        objects[kind].append(data)
    if not objects["site"]:
        raise CorruptStore(f"generation {gen} has no site")
    site = SiteDoc.model_validate_json(objects["site"][0])
    tz = zone(site.timezone)
    bounds = BoundConverter(tz)

    schedules = {
        s.id: _schedule(s)
        for s in (ScheduleDoc.model_validate_json(d) for d in objects["schedule"])
    }
    holidays = frozenset(HolidayDoc.model_validate_json(d).date for d in objects["holiday"])
    door_docs = [DoorDoc.model_validate_json(d) for d in objects["door"]]
    doors = {d.id: build_door(d, schedules) for d in door_docs}
    groups = {
        g.id: frozenset(g.doors)
        for g in (AccessGroupDoc.model_validate_json(d) for d in objects["access_group"])
    }

    def grant(a: Access) -> Grant:
        return build_grant(a, groups, schedules, bounds)

    plans = {
        p.id: tuple(grant(a) for a in p.access)
        for p in (PlanDoc.model_validate_json(d) for d in objects["plan"])
    }
    companies: dict[str, Company] = {}
    for c in (CompanyDoc.model_validate_json(d) for d in objects["company"]):
        companies[c.id] = build_company(c, tuple(grant(a) for a in c.access), bounds)

    # Members and guests: personal grants, passes and PINs first, keyed by holder.
    grants_of: dict[str, list[Grant]] = defaultdict(list)
    grant_cache: dict[tuple[str, str, str | None, str | None], Grant] = {}
    for holder, grp, sched, vfrom, vto in conn.execute(
        "SELECT holder, grp, schedule, valid_from, valid_to FROM grants "
        "WHERE gen = ? ORDER BY holder, seq",
        (gen,),
    ):
        key = (grp, sched, vfrom, vto)
        g = grant_cache.get(key)
        if g is None:
            g = grant_cache[key] = Grant(
                group=grp,
                doors=groups[grp],
                schedule=schedules[sched],
                valid_from=bounds.start(vfrom),
                valid_to=bounds.end(vto),
            )
        grants_of[holder].append(g)
    passes_of: dict[str, list[DayPass]] = defaultdict(list)
    for holder, pid, vfrom, vto in conn.execute(
        "SELECT holder, id, valid_from, valid_to FROM day_passes WHERE gen = ?", (gen,)
    ):
        passes_of[holder].append(DayPass(pid, bounds.start(vfrom), bounds.end(vto)))

    # The two loops below run once per credential and per holder (300,000 times
    # at 100,000 members): positional arguments and no calls that can be spared.
    cards: dict[str, Credential] = {}
    pins: dict[str, list[Credential]] = defaultdict(list)
    pins_of: dict[str, list[str]] = defaultdict(list)
    count = 0
    for holder, cid, key, active in conn.execute(
        "SELECT holder, id, key, active FROM credentials WHERE gen = ?", (gen,)
    ):
        cred = Credential(cid, holder, key, active != 0)
        count += 1
        if key[:4] == "pin:":
            digest = key[4:]
            pins[digest].append(cred)
            if active:
                pins_of[holder].append(digest)
        else:
            cards[key] = cred

    billing_cache: dict[tuple[str, str | None], Billing] = {}
    holders: dict[str, Holder] = {}
    empty: tuple[()] = ()
    start, end = bounds.start, bounds.end
    for (
        hid,
        kind,
        company,
        plan,
        cstart,
        cend,
        bstatus,
        grace,
        host,
        vfrom,
        vto,
        balance,
        credits,
    ) in conn.execute(
        "SELECT id, kind, company, plan, contract_start, contract_end, billing, "
        "grace_until, host, valid_from, valid_to, day_pass_balance, credits "
        "FROM holders WHERE gen = ?",
        (gen,),
    ):
        bkey = (bstatus, grace)
        billing = billing_cache.get(bkey)
        if billing is None:
            billing = billing_cache[bkey] = Billing(bstatus, bounds.start(grace))
        hg = grants_of.get(hid)
        hp = passes_of.get(hid)
        hpins = pins_of.get(hid)
        holders[hid] = Holder(  # in the order of Holder's fields
            hid,
            kind,
            billing,
            company,
            plan,
            None if cstart is None else start(cstart),
            None if cend is None else end(cend),
            tuple(hg) if hg else empty,
            tuple(hp) if hp else empty,
            balance,
            credits,
            tuple(hpins) if hpins else empty,
            host,
            None if vfrom is None else start(vfrom),
            None if vto is None else end(vto),
        )

    rooms = {
        r.id: Room(
            r.id, r.name, r.door, r.no_show_release_min, r.checkin_early_min, r.credits_per_hour
        )
        for r in (RoomDoc.model_validate_json(d) for d in objects["room"])
    }
    bookings: dict[str, Booking] = {}
    by_holder: dict[str, list[Booking]] = defaultdict(list)
    for b in (BookingDoc.model_validate_json(d) for d in objects["booking"]):
        booking = build_booking(b, rooms[b.room])
        bookings[b.id] = booking
        for h in booking.holders:
            by_holder[h].append(booking)

    generated_at = meta.get("generated_at")
    return SiteIndex(
        site_id=site.id,
        site_name=site.name,
        tz=tz,
        cursor=meta.get("cursor"),
        generated_at=bounds.start(generated_at) if generated_at else None,
        generation=gen,
        holidays=holidays,
        schedules=schedules,
        doors=doors,
        groups=groups,
        plans=plans,
        companies=companies,
        day_pass_grants=tuple(grant(a) for a in site.day_pass_access),
        holders=holders,
        cards=cards,
        pins={k: tuple(v) for k, v in pins.items()},
        rooms=rooms,
        bookings=bookings,
        bookings_by_holder={k: tuple(v) for k, v in by_holder.items()},
        credential_count=count,
    )
