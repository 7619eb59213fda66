"""The `edge-sync/1` document: its objects, their validation and the snapshot reader.

Everything the cloud sends passes through here before it can touch the store.
Errors name the offending path the way the contract asks
(`members[12].contract.end: not a date`). Unknown fields are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import IO, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ijson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from edge.release import release_gradually
from edge.site.schedule import parse_days
from edge.timeutil import parse_date, parse_date_or_instant, parse_instant, parse_time_of_day

SCHEMA = "edge-sync/1"


class DocError(ValueError):
    """A document that breaks the contract; `path` names the first problem."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# --- field types -----------------------------------------------------------

_ID_RE = re.compile(r"[^\x00-\x1f]{1,64}\Z")
_HEX_RE = re.compile(r"[0-9a-fA-F]+\Z")
_HMAC_RE = re.compile(r"[0-9a-fA-F]{64}\Z")


def _identifier(value: object) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError("not an identifier (a non-empty string of at most 64 characters)")
    return value


def _timezone(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("not a time zone name")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # a directory, an overlong name
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name)") from None
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str) or not _HEX_RE.match(value):
        raise ValueError("not a hex string")
    return value.lower()


def _hmac(value: object) -> str:
    if not isinstance(value, str) or not _HMAC_RE.match(value):
        raise ValueError("not an HMAC-SHA256 (64 hex digits)")
    return value.lower()


def _days(value: object) -> str:
    parse_days(value)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


def _iso(value: date) -> str:
    return value.isoformat()


# Dates and instants are written back exactly as the contract spells them.
_AS_ISO = PlainSerializer(_iso, return_type=str)
Id = Annotated[str, PlainValidator(_identifier)]
Date = Annotated[date, PlainValidator(parse_date), _AS_ISO]
Instant = Annotated[datetime, PlainValidator(parse_instant), _AS_ISO]
DateOrInstant = Annotated[date | datetime, PlainValidator(parse_date_or_instant), _AS_ISO]
Hex = Annotated[str, PlainValidator(_hex)]
PinHmac = Annotated[str, PlainValidator(_hmac)]
TimeZoneName = Annotated[str, PlainValidator(_timezone)]
Days = Annotated[str, PlainValidator(_days)]
Count = Annotated[StrictInt, Field(ge=0)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


# --- objects ---------------------------------------------------------------


class Access(_Doc):
    """A grant: the doors of `group` while `schedule` is open, optionally bounded."""

    group: Id
    schedule: Id
    valid_from: DateOrInstant | None = None
    valid_to: DateOrInstant | None = None


class WindowDoc(_Doc):
    days: Days
    from_: StrictStr = Field(alias="from")
    to: StrictStr


class ScheduleDoc(_Doc):
    id: Id
    windows: list[WindowDoc]
    closed_on_holidays: StrictBool = False


class HolidayDoc(_Doc):
    date: Date
    name: StrictStr = ""


class DoorDoc(_Doc):
    id: Id
    name: StrictStr = ""
    unlock_schedule: Id | None = None
    first_person_in: StrictBool = False
    mode: Literal["card", "pin", "card_or_pin", "card_and_pin"] = "card"


class AccessGroupDoc(_Doc):
    id: Id
    doors: list[Id]


class PlanDoc(_Doc):
    id: Id
    name: StrictStr = ""
    access: list[Access] = Field(default_factory=list)


class Billing(_Doc):
    status: Literal["ok", "past_due", "suspended"]
    grace_until: Instant | None = None


class CompanyDoc(_Doc):
    id: Id
    name: StrictStr = ""
    billing: Billing
    access: list[Access] = Field(default_factory=list)
    day_passes: Count = 0
    credits: Count = 0


class Contract(_Doc):
    start: DateOrInstant | None = None
    end: DateOrInstant | None = None


CardFormat = Literal["H10301", "H10306", "C1000", "H10304", "raw"]

# Field widths of each card format: (facility or company code bits, card number bits).
CARD_FIELD_BITS: dict[str, tuple[int, int]] = {
    "H10301": (8, 16),
    "H10306": (16, 16),
    "C1000": (12, 20),
    "H10304": (16, 19),
}


class CredentialDoc(_Doc):
    id: Id
    type: Literal["card", "pin"]
    status: Literal["active", "disabled"]
    format: CardFormat | None = None
    facility_code: StrictInt | None = None
    card_number: StrictInt | None = None
    value: Hex | None = None
    pin_hmac: PinHmac | None = None

    def key(self) -> str:
        """The lookup key: `H10301:12:3456`, `raw:04a1b2`, or `pin:<hmac>`."""
        if self.type == "pin":
            return f"pin:{self.pin_hmac}"
        if self.format == "raw":
            return f"raw:{self.value}"
        return f"{self.format}:{self.facility_code}:{self.card_number}"


class DayPassDoc(_Doc):
    id: Id
    valid_from: DateOrInstant | None = None
    valid_to: DateOrInstant | None = None


class MemberDoc(_Doc):
    id: Id
    name: StrictStr = ""
    kind: Literal["member", "nonmember"]
    company: Id | None = None
    company_manager: StrictBool = False
    plan: Id | None = None
    contract: Contract = Contract()
    billing: Billing
    access: list[Access] = Field(default_factory=list)
    credentials: list[CredentialDoc] = Field(default_factory=list)
    day_passes: list[DayPassDoc] = Field(default_factory=list)
    day_pass_balance: Count = 0
    credits: Count = 0


class GuestDoc(_Doc):
    id: Id
    name: StrictStr = ""
    host: Id
    valid_from: Instant
    valid_to: Instant
    access: list[Access] = Field(default_factory=list)
    credentials: list[CredentialDoc] = Field(default_factory=list)
    day_passes: list[DayPassDoc] = Field(default_factory=list)


class RoomDoc(_Doc):
    id: Id
    name: StrictStr = ""
    door: Id | None = None
    capacity: Count | None = None
    no_show_release_min: Count = 15
    checkin_early_min: Count = 0
    credits_per_hour: Count = 0


class BookingDoc(_Doc):
    id: Id
    room: Id
    member: Id
    attendees: list[Id] = Field(default_factory=list)
    start: Instant
    end: Instant
    status: Literal["confirmed", "checked_in", "cancelled", "released"]
    invoiced: StrictBool = False
    recurrence_id: Id | None = None


class SiteDoc(_Doc):
    id: Id
    name: StrictStr = ""
    timezone: TimeZoneName
    day_pass_access: list[Access] = Field(default_factory=list)


# Every kind the contract names, in the order a snapshot is applied, with the
# top-level key of its array in a snapshot.
KINDS: dict[str, tuple[str, type[_Doc]]] = {
    "site": ("site", SiteDoc),
    "schedule": ("schedules", ScheduleDoc),
    "holiday": ("holidays", HolidayDoc),
    "door": ("doors", DoorDoc),
    "access_group": ("access_groups", AccessGroupDoc),
    "plan": ("plans", PlanDoc),
    "company": ("companies", CompanyDoc),
    "member": ("members", MemberDoc),
    "guest": ("guests", GuestDoc),
    "room": ("rooms", RoomDoc),
    "booking": ("bookings", BookingDoc),
}
SECTION_KIND = {section: kind for kind, (section, _) in KINDS.items()}


def object_id(kind: str, obj: _Doc) -> str:
    if isinstance(obj, HolidayDoc):
        return obj.date.isoformat()
    return obj.id  # type: ignore[attr-defined, no-any-return]


# --- validation of one object ----------------------------------------------


def _format_loc(path: str, loc: tuple[int | str, ...]) -> str:
    out = path
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{'from' if part == 'from_' else part}"
    return out


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "missing":
        return "required"
    return msg[:1].lower() + msg[1:]


def validate_object(kind: str, data: object, path: str) -> _Doc:
    """One object of a kind, checked completely but for references to others."""
    model = KINDS[kind][1]
    if not isinstance(data, dict):
        raise DocError(path, "not an object")
    try:
        obj = model.model_validate(data, by_alias=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        # For a union with None, pydantic reports each member; the path is the field.
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p))
        raise DocError(_format_loc(path, loc), _message(first)) from None
    _check_object(obj, path)
    return obj


def _check_range(path: str, start: date | None, end: date | None) -> None:
    if start is None or end is None:
        return
    if _bound(start, False) >= _bound(end, True):
        raise DocError(path, "ends before it starts (the range is empty)")


def _bound(value: date, end: bool) -> tuple[int, int, float]:
    """Comparable (ordinal, kind, seconds) ignoring zones for a sanity check."""
    if isinstance(value, datetime):
        return (value.date().toordinal(), 1, value.timestamp())
    return (value.toordinal() + (1 if end else 0), 0, 0.0)


def _check_grants(grants: list[Access], path: str) -> None:
    for i, g in enumerate(grants):
        _check_range(f"{path}[{i}].valid_to", g.valid_from, g.valid_to)


def _check_credentials(creds: list[CredentialDoc], path: str) -> None:
    seen: set[str] = set()
    for i, c in enumerate(creds):
        p = f"{path}[{i}]"
        if c.id in seen:
            raise DocError(f"{p}.id", f"duplicate credential id {c.id!r}")
        seen.add(c.id)
        if c.type == "pin":
            if c.pin_hmac is None:
                raise DocError(f"{p}.pin_hmac", "required for a PIN")
            continue
        if c.format is None:
            raise DocError(f"{p}.format", "required for a card")
        if c.format == "raw":
            if c.value is None:
                raise DocError(f"{p}.value", "required for a raw card")
            continue
        fc_bits, num_bits = CARD_FIELD_BITS[c.format]
        for name, value, bits in (
            ("facility_code", c.facility_code, fc_bits),
            ("card_number", c.card_number, num_bits),
        ):
            if value is None:
                raise DocError(f"{p}.{name}", f"required for format {c.format}")
            if not 0 <= value < (1 << bits):
                raise DocError(f"{p}.{name}", f"{value} does not fit {c.format} ({bits} bits)")


def _check_object(obj: _Doc, path: str) -> None:
    if isinstance(obj, ScheduleDoc):
        for i, w in enumerate(obj.windows):
            wp = f"{path}.windows[{i}]"
            try:
                start = parse_time_of_day(w.from_, allow_24=False)
            except ValueError as exc:
                raise DocError(f"{wp}.from", str(exc)) from None
            try:
                end = parse_time_of_day(w.to, allow_24=True)
            except ValueError as exc:
                raise DocError(f"{wp}.to", str(exc)) from None
            if start == end:
                raise DocError(f"{wp}.to", "a window must not be empty (from equals to)")
    elif isinstance(obj, PlanDoc | CompanyDoc | SiteDoc):
        field_name = "day_pass_access" if isinstance(obj, SiteDoc) else "access"
        _check_grants(getattr(obj, field_name), f"{path}.{field_name}")
    elif isinstance(obj, MemberDoc):
        if obj.kind == "nonmember" and obj.plan is not None:
            raise DocError(f"{path}.plan", "a nonmember has no plan")
        _check_range(f"{path}.contract.end", obj.contract.start, obj.contract.end)
        _check_grants(obj.access, f"{path}.access")
        _check_credentials(obj.credentials, f"{path}.credentials")
        for i, dp in enumerate(obj.day_passes):
            _check_range(f"{path}.day_passes[{i}].valid_to", dp.valid_from, dp.valid_to)
    elif isinstance(obj, GuestDoc):
        if obj.valid_to <= obj.valid_from:
            raise DocError(f"{path}.valid_to", "ends before it starts")
        _check_grants(obj.access, f"{path}.access")
        _check_credentials(obj.credentials, f"{path}.credentials")
    elif isinstance(obj, BookingDoc) and obj.end <= obj.start:
        raise DocError(f"{path}.end", "ends before it starts")


# --- references between objects ---------------------------------------------


@dataclass
class References:
    """Ids seen per kind, and the references that must resolve to them.

    Kept apart from the objects so that a snapshot of 100,000 members can be
    checked while its members stream past, and changes can be checked against
    the ids already in the store.
    """

    ids: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    wanted: list[tuple[str, str, str]] = field(default_factory=list)  # (path, kind, id)
    card_owner: dict[str, str] = field(default_factory=dict)

    def want(self, path: str, kind: str, ref: str | None) -> None:
        if ref is not None:
            self.wanted.append((path, kind, ref))

    def add(self, kind: str, obj: _Doc, path: str) -> None:
        oid = object_id(kind, obj)
        seen = self.ids[kind]
        if oid in seen:
            key = "date" if kind == "holiday" else "id"
            raise DocError(f"{path}.{key}", f"duplicate {kind} {key} {oid!r}")
        # Members and guests share one namespace: both are holders of credentials.
        other = {"member": "guest", "guest": "member"}.get(kind)
        if other is not None and oid in self.ids[other]:
            raise DocError(f"{path}.id", f"{oid!r} is already the id of a {other}")
        seen.add(oid)
        if isinstance(obj, MemberDoc | GuestDoc):
            self._cards(oid, obj.credentials, f"{path}.credentials")
        self._collect(obj, path)

    def _cards(self, holder: str, creds: list[CredentialDoc], path: str) -> None:
        """One card belongs to at most one holder (PINs may repeat across holders)."""
        for i, c in enumerate(creds):
            if c.type != "card":
                continue
            key = c.key()
            owner = self.card_owner.setdefault(key, holder)
            if owner != holder:
                raise DocError(f"{path}[{i}]", f"card {key} also belongs to {owner!r}")

    def _grants(self, grants: list[Access], path: str) -> None:
        for i, g in enumerate(grants):
            self.want(f"{path}[{i}].group", "access_group", g.group)
            self.want(f"{path}[{i}].schedule", "schedule", g.schedule)

    @classmethod
    def of(cls, obj: _Doc, path: str) -> list[tuple[str, str, str]]:
        """The references one object makes: (path, kind, id)."""
        refs = cls()
        refs._collect(obj, path)
        return refs.wanted

    def _collect(self, obj: _Doc, path: str) -> None:
        if isinstance(obj, SiteDoc):
            self._grants(obj.day_pass_access, f"{path}.day_pass_access")
        elif isinstance(obj, DoorDoc):
            self.want(f"{path}.unlock_schedule", "schedule", obj.unlock_schedule)
        elif isinstance(obj, AccessGroupDoc):
            for i, door in enumerate(obj.doors):
                self.want(f"{path}.doors[{i}]", "door", door)
        elif isinstance(obj, PlanDoc | CompanyDoc):
            self._grants(obj.access, f"{path}.access")
        elif isinstance(obj, MemberDoc):
            self.want(f"{path}.plan", "plan", obj.plan)
            self.want(f"{path}.company", "company", obj.company)
            self._grants(obj.access, f"{path}.access")
        elif isinstance(obj, GuestDoc):
            self.want(f"{path}.host", "member", obj.host)
            self._grants(obj.access, f"{path}.access")
        elif isinstance(obj, RoomDoc):
            self.want(f"{path}.door", "door", obj.door)
        elif isinstance(obj, BookingDoc):
            self.want(f"{path}.room", "room", obj.room)
            self.want(f"{path}.member", "member", obj.member)
            for i, a in enumerate(obj.attendees):
                self.want(f"{path}.attendees[{i}]", "holder", a)

    def check(self, known: Callable[[str, str], bool] | None = None) -> None:
        """Raise for the first reference that points nowhere.

        `known(kind, id)` answers for ids that are not in this document (the
        store's, when checking changes).
        """
        for path, kind, ref in self.wanted:
            if kind == "holder":
                found = ref in self.ids["member"] or ref in self.ids["guest"]
                if not found and known is not None:
                    found = known("member", ref) or known("guest", ref)
                label = "member or guest"
            else:
                found = ref in self.ids[kind] or (known is not None and known(kind, ref))
                label = kind.replace("_", " ")
            if not found:
                raise DocError(path, f"unknown {label} {ref!r}")


# --- snapshot reader ----------------------------------------------------------


@dataclass
class SnapshotHeader:
    cursor: str
    generated_at: datetime | None
    site: SiteDoc


# Read by ijson's C item parser in a pass of their own; the rest of the document
# is walked once at the event level, and `_ITEMIZED` arrays item by item there.
_BIG_SECTIONS = ("members",)
_ITEMIZED = ("guests", "bookings")


def _ijson_error(exc: Exception) -> DocError:
    # yajl lets some invalid UTF-8 through (encoded surrogates, overlong forms)
    # that Python's decoder then refuses with UnicodeDecodeError.
    if isinstance(exc, UnicodeDecodeError):
        return DocError("(document)", f"not UTF-8 text: {exc}")
    return DocError("(document)", f"malformed JSON: {exc}")


def read_snapshot(
    open_source: Callable[[], _Yielding],
    on_object: Callable[[str, _Doc, str], None],
) -> SnapshotHeader:
    """Validate a snapshot while it streams, handing each object to `on_object`.

    `open_source` is called once per pass over the document. Two passes: the
    members (the one array that is large on every big site) by ijson's C item
    parser, and everything else in one walk over ijson's events, guests and
    bookings item by item. Memory stays bounded and no call holds the
    interpreter for long. Raises `DocError` for the first problem;
    `on_object` has then seen some objects, which the caller discards.
    """
    refs = References()
    header = _read_small_sections(open_source, on_object, refs)
    for section in _BIG_SECTIONS:
        kind = SECTION_KIND[section]
        with open_source() as src:
            try:
                items = ijson.items(
                    src, f"{section}.item", use_float=True, buf_size=_Yielding.CHUNK
                )
                for i, item in enumerate(items):
                    path = f"{section}[{i}]"
                    obj = validate_object(kind, item, path)
                    refs.add(kind, obj, path)
                    on_object(kind, obj, path)
            except (ijson.JSONError, UnicodeDecodeError) as exc:
                raise _ijson_error(exc) from None
    refs.check()
    release_gradually(refs.card_owner, refs.wanted, *refs.ids.values())
    return header


def _read_small_sections(
    open_source: Callable[[], _Yielding],
    on_object: Callable[[str, _Doc, str], None],
    refs: References,
) -> SnapshotHeader:
    scalars: dict[str, Any] = {}
    first_problem: DocError | None = None
    with open_source() as src:
        try:
            for key, index, value in _top_level_values(src, _BIG_SECTIONS, _ITEMIZED):
                if key in ("schema", "cursor", "generated_at"):
                    scalars[key] = value
                elif first_problem is not None:
                    continue  # only looking for the schema now
                try:
                    if index is None:
                        _small_section(key, value, on_object, refs, scalars)
                    else:
                        kind, path = SECTION_KIND[key], f"{key}[{index}]"
                        obj = validate_object(kind, value, path)
                        refs.add(kind, obj, path)
                        on_object(kind, obj, path)
                except DocError as exc:
                    first_problem = exc
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            raise _ijson_error(exc) from None
    # A document of another schema is reported as such, whatever else is wrong with it.
    if scalars.get("schema") != SCHEMA:
        raise DocError("schema", f"expected {SCHEMA!r}, got {scalars.get('schema')!r}")
    if first_problem is not None:
        raise first_problem
    cursor = scalars.get("cursor")
    if not isinstance(cursor, str) or not cursor:
        raise DocError("cursor", "required (a non-empty string)")
    generated_at = None
    if scalars.get("generated_at") is not None:
        try:
            generated_at = parse_instant(scalars["generated_at"])
        except ValueError as exc:
            raise DocError("generated_at", str(exc)) from None
    site = scalars.get("site")
    if not isinstance(site, SiteDoc):
        raise DocError("site", "required")
    on_object("site", site, "site")
    return SnapshotHeader(cursor=cursor, generated_at=generated_at, site=site)


def _small_section(
    key: str,
    value: Any,
    on_object: Callable[[str, _Doc, str], None],
    refs: References,
    scalars: dict[str, Any],
) -> None:
    if key == "site":
        site_doc = validate_object("site", value, "site")
        refs.add("site", site_doc, "site")
        scalars["site"] = site_doc
    elif key in SECTION_KIND:
        kind = SECTION_KIND[key]
        if not isinstance(value, list):
            raise DocError(key, "not an array")
        for i, item in enumerate(value):
            path = f"{key}[{i}]"
            obj = validate_object(kind, item, path)
            refs.add(kind, obj, path)
            on_object(kind, obj, path)


_OPEN = ("start_map", "start_array")
_CLOSE = ("end_map", "end_array")


def _top_level_values(
    src: _Yielding, skip: tuple[str, ...], itemize: tuple[str, ...]
) -> Iterator[tuple[str, int | None, Any]]:
    """(key, None, value) of the document's top-level object, but for the skipped
    keys; the arrays of `itemize` as (key, index, item), one item at a time.

    Walks ijson's basic event stream (no prefixes to build): the skipped
    arrays cost a comparison or two per event, values are built with ijson's
    own ObjectBuilder.
    """
    events = ijson.basic_parse(src, use_float=True, buf_size=_Yielding.CHUNK)
    first = next(events, None)
    if first is None or first[0] != "start_map":
        raise DocError("(document)", "not a JSON object")
    for event, key in events:
        if event == "end_map":
            return
        if event != "map_key":
            raise DocError("(document)", "malformed top level")
        event, value = next(events)
        if key in skip:
            if event != "start_array":
                raise DocError(key, "not an array")
            depth = 1
            for ev, _ in events:
                if ev in _OPEN:
                    depth += 1
                elif ev in _CLOSE:
                    depth -= 1
                    if depth == 0:
                        break
        elif key in itemize:
            if event != "start_array":
                raise DocError(key, "not an array")
            for index, (ev, val) in enumerate(events):
                if ev == "end_array":
                    break
                yield key, index, _build(ev, val, events)
        else:
            yield key, None, _build(event, value, events)


def _build(event: str, value: Any, events: Iterator[tuple[str, Any]]) -> Any:
    """The value that starts with (event, value), read to its end."""
    if event not in _OPEN:
        return value
    builder = ijson.ObjectBuilder()
    builder.event(event, value)
    depth = 1
    for ev, val in events:
        builder.event(ev, val)
        if ev in _OPEN:
            depth += 1
        elif ev in _CLOSE:
            depth -= 1
            if depth == 0:
                break
    return builder.value


class _Yielding:
    """A file whose reads run Python bytecode, so its reader can be preempted.

    ijson's C backend parses a whole pass without returning to Python when no
    item matches (the guests pass over 100,000 members, say). It releases the
    interpreter around the OS read, but such a voluntary release is not the
    forced switch CPython grants a waiting thread at a bytecode boundary, so
    the event loop could wait tens of milliseconds. A Python-level `read`
    every 16 KB is such a boundary.
    """

    CHUNK = 16 * 1024

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def read(self, n: int = -1) -> bytes:
        return self._f.read(self.CHUNK if n < 0 else min(n, self.CHUNK))

    def __enter__(self) -> _Yielding:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def read_snapshot_file(path: str, on_object: Callable[[str, _Doc, str], None]) -> SnapshotHeader:
    return read_snapshot(lambda: _Yielding(open(path, "rb")), on_object)
