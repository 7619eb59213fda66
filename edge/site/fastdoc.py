"""The snapshot's fast path: members and guests decoded by msgspec and checked in one pass.

The detailed reader (`edge.site.syncdoc.read_snapshot`) is the authority on what
`edge-sync/1` accepts and on how a refusal is worded, and it is slow where a
site is big: it walks the whole document's ijson events in Python, builds a
dict and a pydantic model per member and dumps each back to JSON (about 4 s
of the child's CPU at 100,000 members). This reader decodes the members and
guests straight into msgspec structs, checks in plain Python what the models'
validators and `_check_object` check, and writes the rows the detailed reader
would write, byte for byte.

It accepts only documents the detailed reader accepts, and everything else it
declines: any problem at all (a contract violation, a duplicate key, a JSON
quirk whose meaning differs between the two parsers) raises `Declined`, and
the caller throws away what this reader wrote and runs the detailed reader,
which either accepts the document after all or refuses it with the path of
its problem. So a refusal always reads exactly as it did; a bad document only
costs one fast pass more. The small sections (site, schedules, doors, plans,
companies, rooms, bookings...) are a few hundred objects even on a big site;
they go through the detailed reader's own models and checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from edge.site.store import Rows
from edge.site.syncdoc import (
    CARD_FIELD_BITS,
    SCHEMA,
    SECTION_KIND,
    DocError,
    References,
    SiteDoc,
    SnapshotHeader,
    _bound,
    _Doc,
    validate_object,
)
from edge.timeutil import parse_date_or_instant, parse_instant


class Declined(Exception):
    """The fast path cannot vouch for this document; the detailed reader decides."""


# --- the holder documents, as msgspec structs -------------------------------------
#
# Field for field the pydantic models of `edge.site.syncdoc` (MemberDoc, GuestDoc
# and what they hold); those that are written back into `data` also in the same
# order, so that they encode to the JSON the model dumps (tests/test_syncdoc.py
# keeps them in step). Types, lengths, hex and enumerations are checked by
# msgspec's decoder; dates and instants are kept as text and parsed, once per
# distinct text, by the same functions the models use. Optional sub-objects and
# lists default to UNSET rather than None, so that an explicit null is refused
# as the models refuse it.

# syncdoc's _ID_RE is `[^\x00-\x1f]{1,64}`: here only the length, checked in C
# (a regular expression per identifier would cost a fifth of the pass). A
# control character can only come from an escape in the JSON text, so an object
# whose text has none (`_CONTROL_ESCAPE`) has none in its identifiers; one that
# has is checked by syncdoc's model as well. _HEX_RE and _HMAC_RE as they are.
Id = Annotated[str, Meta(min_length=1, max_length=64)]
Hex = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]+\Z")]
PinHmac = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}\Z")]
Count = Annotated[int, Meta(ge=0)]


class AccessF(Struct, gc=False):
    group: Id
    schedule: Id
    valid_from: str | None = None
    valid_to: str | None = None


class ContractF(Struct, gc=False):
    start: str | None = None
    end: str | None = None


class BillingF(Struct, gc=False):
    status: Literal["ok", "past_due", "suspended"]
    grace_until: str | None = None


class CredentialF(Struct, gc=False):
    id: Id
    type: Literal["card", "pin"]
    status: Literal["active", "disabled"]
    format: Literal["H10301", "H10306", "C1000", "H10304", "raw"] | None = None
    facility_code: int | None = None
    card_number: int | None = None
    value: Hex | None = None
    pin_hmac: PinHmac | None = None


class DayPassF(Struct, gc=False):
    id: Id
    valid_from: str | None = None
    valid_to: str | None = None


class MemberF(Struct, gc=False):
    id: Id
    kind: Literal["member", "nonmember"]
    billing: BillingF
    name: str = ""
    company: Id | None = None
    company_manager: bool = False
    plan: Id | None = None
    contract: ContractF | UnsetType = UNSET
    access: list[AccessF] | UnsetType = UNSET
    credentials: list[CredentialF] | UnsetType = UNSET
    day_passes: list[DayPassF] | UnsetType = UNSET
    day_pass_balance: Count = 0
    credits: Count = 0


class GuestF(Struct, gc=False):
    id: Id
    host: Id
    valid_from: str
    valid_to: str
    name: str = ""
    access: list[AccessF] | UnsetType = UNSET
    credentials: list[CredentialF] | UnsetType = UNSET
    day_passes: list[DayPassF] | UnsetType = UNSET


# What the holders table's `data` column holds: the model's JSON without its
# credentials, fields in the model's order (`model_dump_json(by_alias=True,
# exclude={"credentials"})`), dates and instants as the model writes them.


class MemberData(Struct, gc=False):
    id: str
    name: str
    kind: str
    company: str | None
    company_manager: bool
    plan: str | None
    contract: ContractF
    billing: BillingF
    access: list[AccessF]
    day_passes: list[DayPassF]
    day_pass_balance: int
    credits: int


class GuestData(Struct, gc=False):
    id: str
    name: str
    host: str
    valid_from: str
    valid_to: str
    access: list[AccessF]
    day_passes: list[DayPassF]


# An escape that makes a control character (or a backslash followed by one of
# those letters: a false alarm only costs a check).
_CONTROL_ESCAPE = re.compile(rb"\\(?:[bfnrt]|u00[01][0-9a-fA-F])")

_NO_CONTRACT = ContractF()
_NONE: list[Any] = []  # shared and never appended to: an absent list in `data`

# A date or instant as the rows need it: (ISO text as the model writes it,
# bound as a start, bound as an end) for syncdoc's empty-range check.
_When = tuple[str, tuple[int, int, float], tuple[int, int, float]]


def _when(value: date) -> _When:
    return (value.isoformat(), _bound(value, False), _bound(value, True))


# --- the reader ------------------------------------------------------------------------

_WS = re.compile(rb"[ \t\n\r]*")


def _distinct_top_level_keys(data: bytes, top: dict[str, Raw]) -> bool:
    """True if the top-level object names every key once.

    `top` (a dict) keeps the last of a repeated key; the detailed reader would
    see both (two `members` arrays are read one after the other). Walks the
    top level and checks that each value in the document is the one `top`
    holds for its key, so a repeated key can hide nowhere.
    """
    at = _WS.match(data).end()  # type: ignore[union-attr]
    if data[at : at + 1] != b"{":
        return False
    at = _WS.match(data, at + 1).end()  # type: ignore[union-attr]
    seen: set[str] = set()
    if data[at : at + 1] == b"}":
        return not top
    while True:
        if data[at : at + 1] != b'"':
            return False
        end = at + 1
        while True:  # the closing quote: one not escaped by an odd run of backslashes
            end = data.find(b'"', end)
            if end < 0:
                return False
            back = end - 1
            while data[back] == 0x5C:
                back -= 1
            if (end - 1 - back) % 2 == 0:
                break
            end += 1
        key = msgspec.json.decode(data[at : end + 1])
        if not isinstance(key, str) or key in seen or key not in top:
            return False
        seen.add(key)
        at = _WS.match(data, end + 1).end()  # type: ignore[union-attr]
        if data[at : at + 1] != b":":
            return False
        at = _WS.match(data, at + 1).end()  # type: ignore[union-attr]
        value = memoryview(top[key])
        if not data.startswith(value, at):
            return False
        at = _WS.match(data, at + value.nbytes).end()  # type: ignore[union-attr]
        sep = data[at : at + 1]
        at = _WS.match(data, at + 1).end()  # type: ignore[union-attr]
        if sep == b"}":
            return len(seen) == len(top)
        if sep != b",":
            return False


@dataclass
class FastSnapshot:
    header: SnapshotHeader
    members: int
    guests: int
    credentials: int


class _Reader:
    """One document's pass: ids, references and rows, all kept for the checks at the end.

    Written for speed, as the one loop of the import that runs 100,000 times:
    the common case (no grants, no day passes, dates already in the model's
    spelling) takes no detour.
    """

    def __init__(self, gen: int, on_rows: Callable[[Rows], None], batch_rows: int) -> None:
        self.gen = gen
        self.on_rows = on_rows
        self.batch_rows = batch_rows
        self.rows = Rows.new(gen)
        self.pending = 0  # rows in self.rows
        self.refs = References()
        self.members = self.refs.ids["member"]
        self.guests = self.refs.ids["guest"]
        # References made by members and guests, checked as sets at the end.
        self.want: dict[str, set[str]] = {
            "plan": set(),
            "company": set(),
            "access_group": set(),
            "schedule": set(),
            "member": set(),
        }
        self.credentials = 0
        self._dates: dict[str, _When] = {}
        self._instants: dict[str, tuple[str, datetime]] = {}
        self._encode = msgspec.json.Encoder().encode

    # --- dates -------------------------------------------------------------

    def _date_or_instant(self, text: str) -> _When:
        try:
            when = _when(parse_date_or_instant(text))
        except ValueError:
            raise Declined("a date or instant") from None
        self._dates[text] = when
        return when

    def _instant(self, text: str) -> tuple[str, datetime]:
        when = self._instants.get(text)
        if when is None:
            try:
                value = parse_instant(text)
            except ValueError:
                raise Declined("an instant") from None
            when = self._instants[text] = (value.isoformat(), value)
        return when

    # --- what members and guests hold ---------------------------------------

    def _grants(self, holder: str, grants: list[AccessF]) -> list[AccessF]:
        dates = self._dates
        groups, schedules = self.want["access_group"], self.want["schedule"]
        rows = self.rows.grants
        out = grants
        for seq, g in enumerate(grants):
            groups.add(g.group)
            schedules.add(g.schedule)
            vf, vt = g.valid_from, g.valid_to
            f = t = None
            if vf is not None:
                f = dates.get(vf) or self._date_or_instant(vf)
            if vt is not None:
                t = dates.get(vt) or self._date_or_instant(vt)
                if f is not None and f[1] >= t[2]:
                    raise Declined("an empty grant")
            fi = None if f is None else f[0]
            ti = None if t is None else t[0]
            rows.append((self.gen, holder, seq, g.group, g.schedule, fi, ti))
            if fi != vf or ti != vt:
                if out is grants:
                    out = list(grants)
                out[seq] = AccessF(g.group, g.schedule, fi, ti)
        self.pending += len(grants)
        return out

    def _day_passes(
        self, holder: str, passes: list[DayPassF], check_ranges: bool
    ) -> list[DayPassF]:
        """Day-pass rows; only a member's passes are checked for an empty range
        (syncdoc's `_check_object` leaves a guest's alone)."""
        dates = self._dates
        rows = self.rows.day_passes
        out = passes
        for i, p in enumerate(passes):
            vf, vt = p.valid_from, p.valid_to
            f = t = None
            if vf is not None:
                f = dates.get(vf) or self._date_or_instant(vf)
            if vt is not None:
                t = dates.get(vt) or self._date_or_instant(vt)
                if check_ranges and f is not None and f[1] >= t[2]:
                    raise Declined("an empty day pass")
            fi = None if f is None else f[0]
            ti = None if t is None else t[0]
            rows.append((self.gen, holder, p.id, fi, ti))
            if fi != vf or ti != vt:
                if out is passes:
                    out = list(passes)
                out[i] = DayPassF(p.id, fi, ti)
        self.pending += len(passes)
        return out

    def _credentials(self, holder: str, creds: list[CredentialF]) -> None:
        if len(creds) > 1 and len({c.id for c in creds}) != len(creds):
            raise Declined("a duplicate credential id")
        rows = self.rows.credentials
        owners = self.refs.card_owner
        gen = self.gen
        for c in creds:
            if c.type == "pin":
                if c.pin_hmac is None:
                    raise Declined("a PIN without its HMAC")
                key = "pin:" + c.pin_hmac.lower()
            else:
                fmt = c.format
                if fmt == "raw":
                    if c.value is None:
                        raise Declined("a raw card without its value")
                    key = "raw:" + c.value.lower()
                elif fmt is None:
                    raise Declined("a card without its format")
                else:
                    fc, number = c.facility_code, c.card_number
                    fc_bits, number_bits = CARD_FIELD_BITS[fmt]
                    if (
                        fc is None
                        or number is None
                        or not 0 <= fc < (1 << fc_bits)
                        or not 0 <= number < (1 << number_bits)
                    ):
                        raise Declined("a card's fields")
                    key = f"{fmt}:{fc}:{number}"
                # One card belongs to at most one holder (PINs may repeat).
                if owners.setdefault(key, holder) != holder:
                    raise Declined("a card of two holders")
            rows.append((gen, holder, c.id, key, 1 if c.status == "active" else 0))
        self.credentials += len(creds)
        self.pending += len(creds)

    def _holder_id(self, oid: str, ids: set[str]) -> None:
        """Members and guests share one namespace: both hold credentials."""
        if oid in self.members or oid in self.guests:
            raise Declined("a duplicate holder id")
        ids.add(oid)

    # --- members and guests --------------------------------------------------

    def member(self, m: MemberF) -> None:
        oid = m.id
        self._holder_id(oid, self.members)
        plan = m.plan
        if plan is not None:
            if m.kind == "nonmember":
                raise Declined("a nonmember with a plan")
            self.want["plan"].add(plan)
        if m.company is not None:
            self.want["company"].add(m.company)
        contract = m.contract
        start = end = None
        if contract is UNSET:
            contract = _NO_CONTRACT
        else:
            dates = self._dates
            s, e = contract.start, contract.end
            if s is not None:
                when = dates.get(s) or self._date_or_instant(s)
                start = when[0]
                if e is not None:
                    until = dates.get(e) or self._date_or_instant(e)
                    end = until[0]
                    if when[1] >= until[2]:
                        raise Declined("an empty contract")
            elif e is not None:
                end = (dates.get(e) or self._date_or_instant(e))[0]
            if start != s or end != e:
                contract = ContractF(start, end)
        billing = m.billing
        grace = billing.grace_until
        if grace is not None:
            grace = self._instant(grace)[0]
            if grace != billing.grace_until:
                billing = BillingF(billing.status, grace)
        access = m.access
        access = self._grants(oid, access) if access else _NONE  # UNSET is false
        if m.credentials:
            self._credentials(oid, m.credentials)
        passes = m.day_passes
        passes = self._day_passes(oid, passes, check_ranges=True) if passes else _NONE
        balance, credits = m.day_pass_balance, m.credits
        data = self._encode(
            MemberData(
                oid,
                m.name,
                m.kind,
                m.company,
                m.company_manager,
                plan,
                contract,
                billing,
                access,
                passes,
                balance,
                credits,
            )
        ).decode()
        self.rows.holders.append(
            (
                self.gen,
                oid,
                m.kind,
                m.name,
                m.company,
                plan,
                start,
                end,
                billing.status,
                grace,
                None,
                None,
                None,
                balance,
                credits,
                data,
            )
        )
        self.pending += 1
        if self.pending >= self.batch_rows:
            self.flush()

    def guest(self, g: GuestF) -> None:
        oid = g.id
        self._holder_id(oid, self.guests)
        self.want["member"].add(g.host)
        valid_from, start = self._instant(g.valid_from)
        valid_to, end = self._instant(g.valid_to)
        if end <= start:
            raise Declined("a guest who leaves before arriving")
        access = g.access
        access = self._grants(oid, access) if access else _NONE
        if g.credentials:
            self._credentials(oid, g.credentials)
        passes = g.day_passes
        passes = self._day_passes(oid, passes, check_ranges=False) if passes else _NONE
        data = self._encode(
            GuestData(oid, g.name, g.host, valid_from, valid_to, access, passes)
        ).decode()
        self.rows.holders.append(
            (
                self.gen,
                oid,
                "guest",
                g.name,
                None,
                None,
                None,
                None,
                "ok",
                None,
                g.host,
                valid_from,
                valid_to,
                0,
                0,
                data,
            )
        )
        self.pending += 1
        if self.pending >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, Rows.new(self.gen)
        if self.pending:
            self.pending = 0
            self.on_rows(rows)

    # --- references --------------------------------------------------------

    def check_references(self) -> None:
        ids = self.refs.ids
        for kind, wanted in self.want.items():
            if not wanted <= ids[kind]:
                raise Declined(f"an unknown {kind}")
        try:
            self.refs.check()
        except DocError:
            raise Declined("an unknown reference") from None


def read_snapshot_fast(
    data: bytes,
    gen: int,
    on_object: Callable[[str, _Doc, str], None],
    on_rows: Callable[[Rows], None],
    batch_rows: int,
) -> FastSnapshot:
    """Read a whole snapshot; raise `Declined` unless the detailed reader would accept it.

    Objects of the small sections go to `on_object` as the detailed reader
    hands them over (the site first); members' and guests' rows go to
    `on_rows` in batches of about `batch_rows`. After `Declined`, whatever
    they received is to be discarded.
    """
    try:
        return _read(data, gen, on_object, on_rows, batch_rows)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Declined(str(exc)) from None
    except DocError as exc:
        raise Declined(str(exc)) from None


def _read(
    data: bytes,
    gen: int,
    on_object: Callable[[str, _Doc, str], None],
    on_rows: Callable[[Rows], None],
    batch_rows: int,
) -> FastSnapshot:
    # msgspec checks the UTF-8 of what it decodes, not of what it skips (an unknown
    # field, a Raw value); the detailed reader refuses invalid UTF-8 anywhere.
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError as exc:
            raise Declined(f"not UTF-8 text: {exc}") from None
    top = msgspec.json.decode(data, type=dict[str, Raw])
    # ijson's prefix for the items of `members` is "members.item": the detailed
    # reader would read the value of a top-level key of that name as a member.
    if "members.item" in top or not _distinct_top_level_keys(data, top):
        raise Declined("the top level")
    if "site" not in top:
        raise Declined("no site")
    site = validate_object("site", msgspec.json.decode(top["site"]), "site")
    header = _header(top, site)  # type: ignore[arg-type]
    on_object("site", site, "site")  # first: the importer refuses another site's document
    reader = _Reader(gen, on_rows, batch_rows)
    refs = reader.refs
    refs.add("site", site, "site")
    # Only a document with such an escape somewhere needs the objects' texts searched.
    escapes = _CONTROL_ESCAPE.search(data) is not None
    members = guests = 0
    for key, raw in top.items():
        kind = SECTION_KIND.get(key)
        if kind is None or kind == "site":
            continue
        items = msgspec.json.decode(raw, type=list[Raw])
        if kind == "member":
            decode_member = msgspec.json.Decoder(MemberF).decode
            for i, item in enumerate(items):
                member = decode_member(item)
                if escapes and _CONTROL_ESCAPE.search(item):
                    _check_in_detail(kind, item, f"{key}[{i}]")
                reader.member(member)
            members += len(items)
        elif kind == "guest":
            decode_guest = msgspec.json.Decoder(GuestF).decode
            for i, item in enumerate(items):
                guest = decode_guest(item)
                if escapes and _CONTROL_ESCAPE.search(item):
                    _check_in_detail(kind, item, f"{key}[{i}]")
                reader.guest(guest)
            guests += len(items)
        else:
            for i, item in enumerate(items):
                path = f"{key}[{i}]"
                obj = validate_object(kind, msgspec.json.decode(item), path)
                refs.add(kind, obj, path)
                on_object(kind, obj, path)
    reader.flush()
    reader.check_references()
    return FastSnapshot(header, members, guests, reader.credentials)


def _check_in_detail(kind: str, item: Raw, path: str) -> None:
    """The model's own checks, for an object whose text may hide a control character."""
    validate_object(kind, msgspec.json.decode(item), path)


def _header(top: dict[str, Raw], site: SiteDoc) -> SnapshotHeader:
    """The checks of syncdoc's `_read_small_sections` on the top-level values."""
    scalars = {
        key: msgspec.json.decode(top[key])
        for key in ("schema", "cursor", "generated_at")
        if key in top
    }
    if scalars.get("schema") != SCHEMA:
        raise Declined("the schema")
    cursor = scalars.get("cursor")
    if not isinstance(cursor, str) or not cursor:
        raise Declined("the cursor")
    generated_at = None
    if scalars.get("generated_at") is not None:
        try:
            generated_at = parse_instant(scalars["generated_at"])
        except ValueError:
            raise Declined("generated_at") from None
    return SnapshotHeader(cursor=cursor, generated_at=generated_at, site=site)
