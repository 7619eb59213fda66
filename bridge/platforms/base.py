"""What a platform module gives the bridge, and the mapping rules they share.

A platform module (`nexudus`, `officernd`) has a `Platform` subclass that:
- names the entities it reads (`Entity`) and the fields to index;
- reads pages of records (all, or updated since an instant) and single records;
- says when a record is malformed (`RecordError`, naming the field);
- turns webhooks into hints (`Hint`: re-read this record), verifying signatures;
- builds a `Mapper` per site: the pure function from records to edge-sync/1
  objects, one object at a time, and which objects a record change touches;
- writes check-ins and charges, and finds one whose outcome was unknown.

The shared rules (card numbers, PIN digests, billing status with grace,
instants in the site's zone) live here, so every platform maps them the same.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from bridge.config import CARD_FORMATS, RoomSection, SiteSection
from bridge.http import PlatformHttp
from bridge.store import BridgeStore
from bridge.world import Record, World
from edge.site.syncdoc import CARD_FIELD_BITS

Key = tuple[str, str]


@dataclass(frozen=True)
class Entity:
    name: str  # the platform's collection, as in its URLs ("coworkers", "memberships")
    label: str  # the platform's own name for one record ("Coworker", "membership")
    access: bool = True  # read on every poll (it changes who may enter) or on the slow one
    incremental: bool = True  # the platform filters it by modification time


class RecordError(ValueError):
    """A platform record the bridge cannot use; `field` is the platform's field name."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ReadError(Exception):
    """A read that did not complete; nothing it would have deleted is deleted."""


class WebhookRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Hint:
    """Re-read this record now (a webhook said it changed or went away)."""

    entity: str
    id: str


@dataclass(frozen=True)
class Built:
    """One mapped object (None: not in the site), with what the mapper left out
    of it (`problems`: (path, reason)), the record it came from, and the instant
    it should be built again because time alone changes it (an invoice falls due)."""

    obj: dict[str, Any] | None
    source: str = ""
    problems: tuple[tuple[str, str], ...] = ()
    recheck_at: float | None = None


class Mapper(ABC):
    """The pure mapping of one site: platform records -> edge-sync/1 objects."""

    @abstractmethod
    def keys(self) -> set[Key]:
        """Every object the records map to (before site membership is decided)."""

    @abstractmethod
    def affected(self, entity: str, old: Record | None, new: Record | None) -> set[Key]:
        """The objects a record's change (old -> new) may change."""

    @abstractmethod
    def build(self, key: Key, now: float) -> Built:
        """One object from the records as they are now."""


class SiteMapper(Mapper):
    """What both platforms' mappers share: the site, the zone, the locations, the
    dispatch by kind, and rooms and bookings once the platform has found them."""

    label = "platform"  # in refusals: "no <label> resource ..."
    resource_id = "id"  # the resource record's id and name fields
    resource_name = "name"

    def __init__(self, world: World, site: SiteSection, pin_key: bytes | None, cfg: Any) -> None:
        self.w = world
        self.site = site
        self.pin_key = pin_key
        self.cfg = cfg
        self.tz = ZoneInfo(site.timezone)
        self.locations = {str(x) for x in site.locations}

    def build(self, key: Key, now: float) -> Built:
        kind, oid = key
        if kind == "member":
            return self._member(oid.removeprefix("m-"), now)
        if kind == "company":
            return self._company(oid.removeprefix("co-"), now)
        if kind == "guest":
            return self._guest(oid.removeprefix("g-"), now)
        if kind == "booking":
            return self._booking(oid.removeprefix("b-"), now)
        if kind == "room":
            return self._room(oid)
        return Built(None)

    @abstractmethod
    def _member(self, rid: str, now: float) -> Built: ...

    @abstractmethod
    def _company(self, rid: str, now: float) -> Built: ...

    @abstractmethod
    def _guest(self, rid: str, now: float) -> Built: ...

    @abstractmethod
    def _booking(self, rid: str, now: float) -> Built: ...

    @abstractmethod
    def _resource_here(self, resource: Record) -> bool:
        """Whether a resource is at one of the site's locations."""

    def _is_room(self, room: RoomSection, r: Record) -> bool:
        """The room's resource: by id or name, at one of the site's locations."""
        named = str(r.get(self.resource_id)) == room.resource
        return (named or r.get(self.resource_name) == room.resource) and self._resource_here(r)

    def _room_of(self, resource_id: object) -> str | None:
        resource = self.w.get("resources", str(resource_id))
        if resource is None:
            return None
        for rid, room in self.site.rooms.items():
            if self._is_room(room, resource):
                return rid
        return None

    def _room(self, room_id: str) -> Built:
        room = self.site.rooms.get(room_id)
        if room is None:
            return Built(None)
        resource = next((r for r in self.w.all("resources") if self._is_room(room, r)), None)
        problems: tuple[tuple[str, str], ...] = ()
        if resource is None:
            problems = ((f"rooms[{room_id}]", f"no {self.label} resource {room.resource!r}"),)
        obj = {
            "id": room_id,
            "name": room.name or (resource or {}).get(self.resource_name) or room_id,
            "door": room.door,
            "capacity": room.capacity,
            "no_show_release_min": room.no_show_release_min,
            "checkin_early_min": room.checkin_early_min,
            "credits_per_hour": room.credits_per_hour,
        }
        source = f"resources {resource[self.resource_id]}" if resource else ""
        return Built(obj, source, problems)

    def _booking_object(
        self, bid: str, room: str, member: str, start: datetime, end: datetime, invoiced: bool
    ) -> dict[str, Any]:
        """A booking as the contract has it. Platform attendees are left out: one who
        is not the site's would make the gateway refuse the whole booking."""
        return {
            "id": f"b-{bid}",
            "room": room,
            "member": f"m-{member}",
            "attendees": [],
            "start": iso(start.timestamp(), self.tz),
            "end": iso(end.timestamp(), self.tz),
            "status": "confirmed",
            "invoiced": invoiced,
            "recurrence_id": None,
        }


@dataclass(frozen=True)
class Write:
    """A billable event to write on the platform."""

    kind: Literal["checkin", "charge"]
    event_id: str
    site: str
    person: str  # the edge holder id of the person it is for
    company: str | None  # the edge company id that pays, when it is the company
    at: datetime  # aware, the event's instant
    day: date  # site-local
    description: str
    amount: float = 0.0
    pass_use: bool = False  # a day pass is used by this check-in


class Platform(ABC):
    entities: tuple[Entity, ...] = ()
    indexes: ClassVar[dict[str, tuple[str, ...]]] = {}
    throttle_statuses: tuple[int, ...] = (429, 503)

    def __init__(
        self, name: str, cfg: Any, http: PlatformHttp, store: BridgeStore, state_dir: Path
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.http = http
        self.store = store
        self.state_dir = state_dir

    def entity(self, name: str) -> Entity:
        for e in self.entities:
            if e.name == name:
                return e
        raise KeyError(name)

    async def start(self) -> None:  # noqa: B027 - most platforms need nothing here
        """Anything to do before the first request (load a stored token)."""

    @abstractmethod
    def read(
        self, entity: Entity, since: datetime | None, world: World
    ) -> AsyncIterator[list[Record]]:
        """Pages of records: all of them (since None), or those modified since.
        Raises `ReadError` (or an `http.PlatformError`) when a page cannot be had."""

    @abstractmethod
    async def read_one(self, entity: str, rid: str) -> Record | None:
        """One record as it is now; None when the platform says it is gone (404)."""

    @abstractmethod
    def record_id(self, entity: str, record: Record) -> str: ...

    @abstractmethod
    def modified_at(self, entity: str, record: Record) -> datetime | None: ...

    @abstractmethod
    def check(self, entity: str, record: Record) -> None:
        """Raise `RecordError` for a record the mapping cannot use."""

    def removes(self, entity: str, record: Record, world: World) -> list[tuple[str, str]]:
        """Records this one says are gone (a Nexudus cancelled booking ends its booking)."""
        return []

    def keep(self, entity: str, record: Record, now: float) -> bool:
        """Whether the bridge keeps this record at all (paid invoices and old
        bookings are dropped, as if absent)."""
        return True

    def webhook(self, headers: Mapping[str, str], body: bytes, event: str | None) -> list[Hint]:
        """The records a webhook says changed; `WebhookRefused` when it is not genuine.
        `event` is the last part of the webhook's URL, when the operator set one
        (Nexudus sends one action per webhook, without naming it in the body)."""
        raise WebhookRefused(404, f"{self.name} sends no webhooks")

    @abstractmethod
    def mapper(
        self, world: World, site_id: str, site: SiteSection, pin_key: bytes | None
    ) -> Mapper: ...

    @abstractmethod
    def person_ref(self, holder: str) -> str | None:
        """The platform's id of an edge holder id this platform made (None: not ours)."""

    @abstractmethod
    async def write(self, w: Write, site: SiteSection, world: World) -> str:
        """Write it; the platform's id of what was written."""

    @abstractmethod
    async def find(self, w: Write, site: SiteSection, world: World) -> str | None:
        """The platform's id of this write if it was already done, else None."""

    def status(self) -> dict[str, Any]:
        return {}


# --- shared mapping rules ------------------------------------------------------------------

_HEX = re.compile(r"[0-9A-Fa-f]+\Z")


def card_credential(text: str, default_format: str) -> dict[str, Any]:
    """A card number as an operator types it into a platform, as credential fields.

    `FORMAT:FC:NUMBER` (e.g. `H10306:1000:50001`), `FC:NUMBER` (the site's
    card_format), `raw:HEX` or hex with at least one letter (a UID, `0A0B0C0D`).
    A bare decimal number is refused: it could be either.
    """
    value = text.strip()
    parts = [p.strip() for p in value.split(":")]
    if len(parts) == 2 and parts[0].lower() == "raw" and _HEX.match(parts[1]):
        return {"type": "card", "format": "raw", "value": parts[1].lower()}
    if len(parts) == 3 and parts[0].upper() in CARD_FORMATS:
        fmt, fc, number = parts[0].upper(), parts[1], parts[2]
    elif len(parts) == 2:
        fmt, fc, number = default_format, parts[0], parts[1]
    elif len(parts) == 1 and _HEX.match(value) and not value.isdigit():
        return {"type": "card", "format": "raw", "value": value.lower()}
    elif len(parts) == 1 and value.isdigit():
        raise ValueError(
            f"{value!r} is a bare number: write FC:NUMBER, FORMAT:FC:NUMBER or raw:HEX"
        )
    else:
        raise ValueError(f"{value!r} is not a card number (FC:NUMBER, FORMAT:FC:NUMBER or hex)")
    if not (fc.isdigit() and number.isdigit()):
        raise ValueError(f"{value!r}: facility code and number must be digits")
    fc_bits, num_bits = CARD_FIELD_BITS[fmt]
    if int(fc) >= 1 << fc_bits or int(number) >= 1 << num_bits:
        raise ValueError(
            f"{value!r} does not fit {fmt} ({fc_bits}-bit facility, {num_bits}-bit number)"
        )
    return {"type": "card", "format": fmt, "facility_code": int(fc), "card_number": int(number)}


def pin_credential(digits: str, pin_key: bytes | None) -> dict[str, Any]:
    """A PIN as the contract carries it: HMAC-SHA256 under the site PIN key."""
    value = digits.strip()
    if not (value.isascii() and value.isdigit() and 1 <= len(value) <= 16):
        raise ValueError("a PIN is 1 to 16 digits")
    if pin_key is None:
        raise ValueError("the site PIN key is not provisioned (pin_key_secret)")
    digest = hmac.new(pin_key, value.encode("ascii"), hashlib.sha256).hexdigest()
    return {"type": "pin", "pin_hmac": digest}


@dataclass
class Credentials:
    """Credentials of one holder, built field by field, with what was left out."""

    holder: str
    items: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def card(self, suffix: str, text: object, default_format: str, source_field: str) -> None:
        if text is None or (isinstance(text, str) and not text.strip()):
            return
        if not isinstance(text, str):
            self.problems.append((source_field, f"not a string: {text!r}"))
            return
        try:
            cred = card_credential(text, default_format)
        except ValueError as exc:
            self.problems.append((source_field, str(exc)))
            return
        self.items.append({"id": f"{self.holder}-{suffix}", "status": "active", **cred})

    def pin(self, suffix: str, text: object, pin_key: bytes | None, source_field: str) -> None:
        if text is None or (isinstance(text, str) and not text.strip()):
            return
        if not isinstance(text, str | int) or isinstance(text, bool):
            self.problems.append((source_field, f"not a PIN: {text!r}"))
            return
        try:
            cred = pin_credential(str(text), pin_key)
        except ValueError as exc:
            self.problems.append((source_field, str(exc)))
            return
        self.items.append({"id": f"{self.holder}-{suffix}", "status": "active", **cred})


def billing_status(
    unpaid_due: Iterable[float], grace_days: int, now: float, tz: ZoneInfo
) -> tuple[dict[str, Any], float | None]:
    """The contract's billing from unpaid invoices' due instants: `ok` before the
    first is due, `past_due` with grace until `grace_days` after it, then
    `suspended`. With the instant the answer changes by itself."""
    dues = sorted(unpaid_due)
    if not dues or now < dues[0]:
        return {"status": "ok", "grace_until": None}, (dues[0] if dues else None)
    # Calendar days in the site's zone: a grace across a DST change ends at the
    # same wall-clock time it would otherwise.
    grace_end = (datetime.fromtimestamp(dues[0], tz) + timedelta(days=grace_days)).timestamp()
    if now < grace_end:
        return {"status": "past_due", "grace_until": iso(grace_end, tz)}, grace_end
    return {"status": "suspended", "grace_until": None}, None


@dataclass(frozen=True)
class Span:
    """A platform contract or membership that maps to one of the site's plans."""

    plan: str
    start: date | None
    end: date | None  # the last day included
    primary: bool = True  # may be the member's own plan (a company's membership may not)
    preferred: bool = False  # the platform marks it as the main one


@dataclass
class Plans:
    """The member's plan and contract, the grants the other spans add, and the
    instants at which the answer changes by itself."""

    plan: str | None = None
    contract: dict[str, str | None] = field(default_factory=lambda: {"start": None, "end": None})
    grants: list[dict[str, Any]] = field(default_factory=list)
    rechecks: list[float] = field(default_factory=list)


def plans_of(spans: list[Span], today: date, site: SiteSection, tz: ZoneInfo) -> Plans:
    """The current (else the next, else the last) primary span is the member's plan
    and contract; every other span adds its plan's access as grants bounded by
    its own dates, so a second plan (server-room access until a date) still counts."""

    def current(s: Span) -> bool:
        return (s.start is None or s.start <= today) and (s.end is None or s.end >= today)

    spans = [s for s in spans if s.start is None or s.end is None or s.start <= s.end]
    primary = [s for s in spans if s.primary]
    # Among current spans: the one the platform marks, then an open-ended one
    # (a resident plan over a fixed-term add-on), then the latest to start.
    now_ = sorted(
        (s for s in primary if current(s)),
        key=lambda s: (not s.preferred, s.end is not None, -(s.start or date.min).toordinal()),
    )
    future = sorted(
        (s for s in primary if s.start is not None and s.start > today),
        key=lambda s: s.start or date.max,
    )
    past = sorted(
        (s for s in primary if s.end is not None and s.end < today),
        key=lambda s: s.end or date.min,
        reverse=True,
    )
    ranked = now_ or future or past
    main = ranked[0] if ranked else None
    out = Plans()
    if main is not None:
        out.plan = main.plan
        out.contract = {
            "start": main.start.isoformat() if main.start else None,
            "end": main.end.isoformat() if main.end else None,
        }
    for s in spans:
        if s is not main:
            for g in site.plans[s.plan].access:
                out.grants.append(
                    {
                        "group": g.group,
                        "schedule": g.schedule,
                        "valid_from": s.start.isoformat() if s.start else None,
                        "valid_to": s.end.isoformat() if s.end else None,
                    }
                )
        # Which span is the main one changes when one starts or ends.
        if s.start is not None and s.start > today:
            out.rechecks.append(day_start(s.start, tz))
        if s.end is not None and s.end >= today:
            out.rechecks.append(next_day_start(s.end, tz))
    return out


def iso(ts: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, tz).isoformat()


def parse_instant(value: object, naive_zone: ZoneInfo | None = None) -> datetime:
    """An ISO 8601 instant from a platform; naive text is in `naive_zone` (UTC if None)."""
    if not isinstance(value, str) or not value:
        raise ValueError("not an ISO 8601 date and time")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date and time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=naive_zone or UTC)
    return dt


def local_day(dt: datetime, tz: ZoneInfo) -> date:
    return dt.astimezone(tz).date()


def day_start(day: date, tz: ZoneInfo) -> float:
    return datetime.combine(day, time(0, 0), tzinfo=tz).timestamp()


def next_day_start(day: date, tz: ZoneInfo) -> float:
    return day_start(day + timedelta(days=1), tz)
