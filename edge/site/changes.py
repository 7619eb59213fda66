"""The cloud's changes (`edge-sync/1` delta), checked and applied to the current generation.

A batch is checked one change at a time, in order, against the site as it
stands after the changes before it. A change that breaks the contract is
refused with the path of its problem (`changes[3].data.contract.end: not a
date`) and skipped; the others apply. `plan_batch` collapses what applies to
the final state of each object touched, so the store takes a batch of any
size in a dozen statements, committed in one transaction with the cursor.

After the commit, `patch_index` brings the in-memory index up to date object
by object (members, guests, bookings, companies, plans, doors, holidays).
When a change touches what every holder's grants are resolved against (the
site, a schedule, an access group, a room), `Batch.reload` asks the caller to
rebuild the index from the store instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from edge.site.index import build_booking, build_company, build_door, build_grant
from edge.site.model import (
    Billing,
    Credential,
    DayPass,
    Grant,
    Holder,
    SiteIndex,
)
from edge.site.sqlite import Many, SqlOp
from edge.site.store import Rows
from edge.site.syncdoc import (
    KINDS,
    Access,
    BookingDoc,
    CompanyDoc,
    DocError,
    DoorDoc,
    GuestDoc,
    HolidayDoc,
    MemberDoc,
    PlanDoc,
    References,
    _Doc,
    object_id,
    validate_object,
)
from edge.timeutil import BoundConverter

# Kinds every holder's resolved grants depend on: a change to one rebuilds the index.
RELOAD_KINDS = frozenset({"site", "schedule", "access_group", "room"})
HOLDER_KINDS = frozenset({"member", "guest"})
# A holder's rows: its own, then those keyed by `holder`.
HOLDER_TABLES = ("holders", "credentials", "grants", "day_passes")


@dataclass(frozen=True)
class Refused:
    path: str
    error: str
    change: Any

    def __str__(self) -> str:
        return f"{self.path}: {self.error}"

    def identity(self) -> str:
        """The same change refused for the same reason, wherever it came from: the
        change's content, and the error with its path inside the change (a push's
        `push.changes[0].data.x` and a pull's `changes[7].data.x` are the same)."""
        inner = re.sub(r"^[^\[]*\[\d+\]", "", self.path)
        text = json.dumps([self.change, inner, self.error], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Batch:
    """The outcome of checking a batch: what to write, and what was refused."""

    received: int
    # The final state of every object the batch touches, in the order of its
    # last change: a document, or None for a deletion.
    final: dict[tuple[str, str], _Doc | None] = field(default_factory=dict)
    refused: list[Refused] = field(default_factory=list)
    # Cards that move to another holder: (old holder, credential id, key).
    moved_cards: list[tuple[str, str, str]] = field(default_factory=list)
    reload: bool = False

    @property
    def applied(self) -> int:
        return self.received - len(self.refused)

    def holders(self) -> set[str]:
        return {oid for (kind, oid) in self.final if kind in HOLDER_KINDS}


# --- checking ------------------------------------------------------------------------


def _exists(ix: SiteIndex, final: dict[tuple[str, str], _Doc | None], kind: str, oid: str) -> bool:
    if (kind, oid) in final:
        return final[(kind, oid)] is not None
    if kind in HOLDER_KINDS:
        h = ix.holders.get(oid)
        return h is not None and (h.kind == "guest") == (kind == "guest")
    if kind == "site":
        return oid == ix.site_id
    if kind == "holiday":
        return any(d.isoformat() == oid for d in ix.holidays)
    table: dict[str, Any] = {
        "schedule": ix.schedules,
        "door": ix.doors,
        "access_group": ix.groups,
        "plan": ix.plans,
        "company": ix.companies,
        "room": ix.rooms,
        "booking": ix.bookings,
    }
    return oid in table[kind]


def _index_references(ix: SiteIndex) -> Iterator[tuple[str, str, str, str]]:
    """(referrer kind, referrer id, kind referred to, id referred to) for the whole index."""

    def grants(kind: str, oid: str, gs: tuple[Grant, ...]) -> Iterator[tuple[str, str, str, str]]:
        for g in gs:
            yield kind, oid, "access_group", g.group
            yield kind, oid, "schedule", g.schedule.id

    yield from grants("site", ix.site_id, ix.day_pass_grants)
    for door in ix.doors.values():
        if door.unlock_schedule is not None:
            yield "door", door.id, "schedule", door.unlock_schedule.id
    for gid, doors in ix.groups.items():
        for d in doors:
            yield "access_group", gid, "door", d
    for pid, pgrants in ix.plans.items():
        yield from grants("plan", pid, pgrants)
    for company in ix.companies.values():
        yield from grants("company", company.id, company.grants)
    for room in ix.rooms.values():
        if room.door is not None:
            yield "room", room.id, "door", room.door
    for b in ix.bookings.values():
        yield "booking", b.id, "room", b.room
    for h in ix.holders.values():
        kind = "guest" if h.kind == "guest" else "member"
        if h.plan is not None:
            yield kind, h.id, "plan", h.plan
        if h.company is not None:
            yield kind, h.id, "company", h.company
        yield from grants(kind, h.id, h.grants)


def _still_referenced(
    ix: SiteIndex, final: dict[tuple[str, str], _Doc | None], kind: str, oid: str
) -> list[str]:
    """Who still refers to `kind` `oid`, as the batch so far leaves the site."""
    users: list[str] = []
    for rkind, rid, k, ref in _index_references(ix):
        if k == kind and ref == oid and (rkind, rid) not in final:
            users.append(f"{rkind} {rid}")
    for (rkind, rid), doc in final.items():
        if doc is None:
            continue
        if any(k == kind and ref == oid for _, k, ref in References.of(doc, "")):
            users.append(f"{rkind} {rid}")
    return users


def check_batch(ix: SiteIndex, changes: object, prefix: str = "changes") -> Batch:
    """Check each change against the site as the ones before it leave it."""
    if not isinstance(changes, list):
        raise DocError(prefix, "not an array")
    batch = Batch(received=len(changes))
    final = batch.final
    card_owner: dict[str, tuple[str, str]] = {}  # key -> (holder, credential id), this batch

    for i, change in enumerate(changes):
        path = f"{prefix}[{i}]"
        try:
            key, doc = _check_one(ix, final, change, path)
        except DocError as exc:
            batch.refused.append(Refused(exc.path, exc.message, change))
            continue
        kind, oid = key
        if isinstance(doc, MemberDoc | GuestDoc):
            for cred in doc.credentials:
                if cred.type != "card":
                    continue
                ck = cred.key()
                prev = card_owner.get(ck)
                if prev is not None and prev[0] != oid:
                    # Moved within the batch: the later holder keeps it.
                    _strip_card(final, prev[0], ck)
                elif prev is None:
                    owner = ix.cards.get(ck)
                    if owner is not None and owner.holder != oid:
                        batch.moved_cards.append((owner.holder, owner.id, ck))
                card_owner[ck] = (oid, cred.id)
        final.pop(key, None)  # re-inserted last: the order of the last change
        final[key] = doc
        if kind in RELOAD_KINDS:
            batch.reload = True
    return batch


def _strip_card(final: dict[tuple[str, str], _Doc | None], holder: str, card_key: str) -> None:
    for kind in HOLDER_KINDS:
        doc = final.get((kind, holder))
        if isinstance(doc, MemberDoc | GuestDoc):
            kept = [c for c in doc.credentials if c.type != "card" or c.key() != card_key]
            final[(kind, holder)] = doc.model_copy(update={"credentials": kept})


def _check_one(
    ix: SiteIndex, final: dict[tuple[str, str], _Doc | None], change: object, path: str
) -> tuple[tuple[str, str], _Doc | None]:
    if not isinstance(change, dict):
        raise DocError(path, "not an object")
    op, kind = change.get("op"), change.get("kind")
    if op not in ("upsert", "delete"):
        raise DocError(f"{path}.op", f"expected 'upsert' or 'delete', got {op!r}")
    if not isinstance(kind, str) or kind not in KINDS:  # a list or an object is unhashable
        raise DocError(f"{path}.kind", f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if op == "delete":
        oid = change.get("id")
        if not isinstance(oid, str) or not 0 < len(oid) <= 64:
            raise DocError(f"{path}.id", "required (an identifier)")
        if kind == "site":
            raise DocError(f"{path}.kind", "the site cannot be deleted")
        other = {"member": "guest", "guest": "member"}.get(kind)
        if other is not None and _exists(ix, final, other, oid):
            raise DocError(f"{path}.id", f"{oid!r} is a {other}, not a {kind}")
        if kind not in HOLDER_KINDS | {"booking", "holiday"}:
            users = _still_referenced(ix, final, kind, oid)
            if users:
                more = f" and {len(users) - 5} more" if len(users) > 5 else ""
                shown = ", ".join(users[:5]) + more
                raise DocError(f"{path}.id", f"{kind} {oid!r} is still used by {shown}")
        return (kind, oid), None

    data_path = f"{path}.data"
    doc = validate_object(kind, change.get("data"), data_path)
    oid = object_id(kind, doc)
    if kind == "site" and ix.site_id and oid != ix.site_id:
        raise DocError(f"{data_path}.id", f"this gateway serves site {ix.site_id!r}, not {oid!r}")
    other = {"member": "guest", "guest": "member"}.get(kind)
    if other is not None and _exists(ix, final, other, oid):
        raise DocError(f"{data_path}.id", f"{oid!r} is already the id of a {other}")
    refs = References()
    refs.wanted = References.of(doc, data_path)
    refs.check(lambda k, ref: _exists(ix, final, k, ref) or (k == kind and ref == oid))
    return (kind, oid), doc


# --- writing ----------------------------------------------------------------------------


def clear_ops(gen: int, holders: Iterable[str], objects: Iterable[tuple[str, str]]) -> list[SqlOp]:
    """The statements that delete these holders' and objects' rows in generation `gen`."""
    by_holder = [(gen, oid) for oid in holders]
    by_object = [(gen, kind, oid) for kind, oid in objects]
    ops: list[SqlOp] = []
    if by_holder:
        ops.append(("DELETE FROM holders WHERE gen = ? AND id = ?", Many(by_holder)))
        for table in HOLDER_TABLES[1:]:
            ops.append((f"DELETE FROM {table} WHERE gen = ? AND holder = ?", Many(by_holder)))  # noqa: S608
    if by_object:
        ops.append(("DELETE FROM objects WHERE gen = ? AND kind = ? AND id = ?", Many(by_object)))
    return ops


def batch_ops(batch: Batch, gen: int) -> list[SqlOp]:
    """The statements that bring generation `gen` to the batch's final state."""
    ops = clear_ops(
        gen,
        (oid for kind, oid in batch.final if kind in HOLDER_KINDS),
        (key for key in batch.final if key[0] not in HOLDER_KINDS),
    )
    if batch.moved_cards:
        ops.append(
            (
                "DELETE FROM credentials WHERE gen = ? AND holder = ? AND id = ?",
                Many((gen, holder, cid) for holder, cid, _ in batch.moved_cards),
            )
        )
    rows = Rows.new(gen)
    for (kind, _), doc in batch.final.items():
        if doc is not None:
            rows.add(kind, doc)
    ops.extend(rows.ops())
    return ops


def refused_ops(refused: list[Refused], at: float, source: str) -> list[SqlOp]:
    if not refused:
        return []
    return [
        (
            "INSERT INTO refused_changes (at, source, path, error, change) VALUES (?,?,?,?,?)",
            Many(
                (at, source, r.path, r.error, json.dumps(r.change, default=str)[:10_000])
                for r in refused
            ),
        )
    ]


# --- the in-memory index ------------------------------------------------------------------


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


class _Resolver:
    """Documents to index objects, against the index's schedules and groups."""

    def __init__(self, ix: SiteIndex) -> None:
        self.ix = ix
        self.bounds = BoundConverter(ix.tz)

    def grant(self, a: Access) -> Grant:
        return build_grant(a, self.ix.groups, self.ix.schedules, self.bounds)

    def holder(self, doc: MemberDoc | GuestDoc) -> tuple[Holder, list[Credential]]:
        b = self.bounds
        creds = [Credential(c.id, doc.id, c.key(), c.status == "active") for c in doc.credentials]
        pins = tuple(c.key[4:] for c in creds if c.is_pin and c.active)
        grants = tuple(self.grant(a) for a in doc.access)
        passes = tuple(
            DayPass(p.id, b.start(_iso(p.valid_from)), b.end(_iso(p.valid_to)))
            for p in doc.day_passes
        )
        if isinstance(doc, MemberDoc):
            h = Holder(
                id=doc.id,
                kind=doc.kind,
                billing=Billing(doc.billing.status, b.start(_iso(doc.billing.grace_until))),
                company=doc.company,
                plan=doc.plan,
                contract_start=b.start(_iso(doc.contract.start)),
                contract_end=b.end(_iso(doc.contract.end)),
                grants=grants,
                day_passes=passes,
                day_pass_balance=doc.day_pass_balance,
                credits=doc.credits,
                pins=pins,
            )
        else:
            h = Holder(
                id=doc.id,
                kind="guest",
                grants=grants,
                day_passes=passes,
                pins=pins,
                host=doc.host,
                valid_from=b.start(_iso(doc.valid_from)),
                valid_to=b.end(_iso(doc.valid_to)),
            )
        return h, creds


def patch_index(
    ix: SiteIndex,
    batch: Batch,
    old_credentials: dict[str, list[tuple[str, str]]],
) -> None:
    """Apply a committed batch to the index in place (on the loop, between decisions).

    `old_credentials` are the (id, key) pairs the store held for each holder
    the batch touches, before the batch.
    """
    r = _Resolver(ix)
    for holder, _cid, key in batch.moved_cards:
        cred = ix.cards.get(key)
        if cred is not None and cred.holder == holder:
            del ix.cards[key]
            ix.credential_count -= 1
    for (kind, oid), doc in batch.final.items():
        if kind in HOLDER_KINDS:
            _drop_credentials(ix, oid, old_credentials.get(oid, []))
            if doc is None:
                ix.holders.pop(oid, None)
                continue
            assert isinstance(doc, MemberDoc | GuestDoc)
            new_holder, creds = r.holder(doc)
            ix.holders[oid] = new_holder
            for c in creds:
                if c.is_pin:
                    ix.pins[c.key[4:]] = (*ix.pins.get(c.key[4:], ()), c)
                else:
                    ix.cards[c.key] = c
            ix.credential_count += len(creds)
        elif kind == "booking":
            _drop_booking(ix, oid)
            if isinstance(doc, BookingDoc):
                b = build_booking(doc, ix.rooms[doc.room])
                ix.bookings[oid] = b
                for h in b.holders:
                    ix.bookings_by_holder[h] = (*ix.bookings_by_holder.get(h, ()), b)
        elif kind == "company":
            if isinstance(doc, CompanyDoc):
                grants = tuple(r.grant(a) for a in doc.access)
                ix.companies[oid] = build_company(doc, grants, r.bounds)
            else:
                ix.companies.pop(oid, None)
        elif kind == "plan":
            if isinstance(doc, PlanDoc):
                ix.plans[oid] = tuple(r.grant(a) for a in doc.access)
            else:
                ix.plans.pop(oid, None)
        elif kind == "door":
            if isinstance(doc, DoorDoc):
                ix.doors[oid] = build_door(doc, ix.schedules)
            else:
                ix.doors.pop(oid, None)
        elif kind == "holiday":
            day = date.fromisoformat(oid)
            ix.holidays = (
                ix.holidays | {day} if isinstance(doc, HolidayDoc) else ix.holidays - {day}
            )
        else:  # a reload kind: the caller rebuilds the index instead
            raise ValueError(f"patch_index cannot apply a {kind} change; reload the index")


def _drop_credentials(ix: SiteIndex, holder: str, creds: list[tuple[str, str]]) -> None:
    for _cid, key in creds:
        if key.startswith("pin:"):
            digest = key[4:]
            kept = tuple(c for c in ix.pins.get(digest, ()) if c.holder != holder)
            if kept:
                ix.pins[digest] = kept
            else:
                ix.pins.pop(digest, None)
            ix.credential_count -= 1
        else:
            cred = ix.cards.get(key)
            if cred is not None and cred.holder == holder:
                del ix.cards[key]
                ix.credential_count -= 1


def _drop_booking(ix: SiteIndex, booking: str) -> None:
    old = ix.bookings.pop(booking, None)
    if old is None:
        return
    for h in old.holders:
        kept = tuple(b for b in ix.bookings_by_holder.get(h, ()) if b.id != booking)
        if kept:
            ix.bookings_by_holder[h] = kept
        else:
            ix.bookings_by_holder.pop(h, None)
