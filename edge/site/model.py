"""The in-memory site: what the decision policy reads.

Built once from the store by `edge.site.index` in a worker thread and swapped in
whole. Instants are POSIX seconds; groups are already resolved to door sets,
so a decision never follows a reference it cannot find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal
from zoneinfo import ZoneInfo

from edge.site.schedule import Schedule

DoorMode = Literal["card", "pin", "card_or_pin", "card_and_pin"]
BillingStatus = Literal["ok", "past_due", "suspended"]
HolderKind = Literal["member", "nonmember", "guest"]

_EMPTY: tuple[()] = ()


@dataclass(frozen=True, slots=True)
class Grant:
    group: str
    doors: frozenset[str]
    schedule: Schedule
    valid_from: float | None = None
    valid_to: float | None = None

    def in_validity(self, at: float) -> bool:
        return (self.valid_from is None or self.valid_from <= at) and (
            self.valid_to is None or at < self.valid_to
        )


@dataclass(frozen=True, slots=True)
class DayPass:
    id: str
    valid_from: float | None
    valid_to: float | None  # None: until the end of the local day of its first use


@dataclass(frozen=True, slots=True)
class Billing:
    status: BillingStatus
    grace_until: float | None

    def allows(self, at: float) -> bool:
        if self.status == "ok":
            return True
        if self.status == "past_due":
            return self.grace_until is not None and at < self.grace_until
        return False


BILLING_OK = Billing("ok", None)


@dataclass(frozen=True, slots=True)
class Company:
    id: str
    billing: Billing
    grants: tuple[Grant, ...]
    day_passes: int
    credits: int


@dataclass(slots=True)  # not frozen: frozen __init__ costs ~2x, and there are 100,000s
class Holder:
    """A member, a nonmember or a guest: someone who can hold credentials.

    Treated as immutable: a change replaces the whole holder.
    """

    id: str
    kind: HolderKind
    billing: Billing = BILLING_OK
    company: str | None = None
    plan: str | None = None
    contract_start: float | None = None
    contract_end: float | None = None
    grants: tuple[Grant, ...] = _EMPTY
    day_passes: tuple[DayPass, ...] = _EMPTY
    day_pass_balance: int = 0
    credits: int = 0
    pins: tuple[str, ...] = _EMPTY  # active PIN HMACs, for card-then-PIN
    host: str | None = None  # guests
    valid_from: float | None = None  # guests
    valid_to: float | None = None  # guests


@dataclass(slots=True)  # not frozen, for the same reason as Holder; never mutated
class Credential:
    id: str
    holder: str
    key: str
    active: bool

    @property
    def is_pin(self) -> bool:
        return self.key.startswith("pin:")


@dataclass(frozen=True, slots=True)
class Door:
    id: str
    name: str
    mode: DoorMode
    unlock_schedule: Schedule | None
    first_person_in: bool


@dataclass(frozen=True, slots=True)
class Room:
    id: str
    name: str
    door: str | None
    no_show_release_min: int
    checkin_early_min: int
    credits_per_hour: int


@dataclass(frozen=True, slots=True)
class Booking:
    id: str
    room: str
    door: str | None
    member: str
    holders: frozenset[str]  # the booker and the attendees
    start: float
    end: float
    opens: float  # start less the room's early check-in window
    release_at: float  # start plus the room's no-show window
    status: str
    invoiced: bool

    def grants_at(self, at: float, checked_in: bool) -> bool:
        if self.status in ("cancelled", "released"):
            return False
        if not (self.opens <= at < self.end):
            return False
        return not self.released_at(at, checked_in)

    def released_at(self, at: float, checked_in: bool) -> bool:
        """A confirmed booking nobody checked into is released after the no-show window."""
        return (
            self.status == "confirmed"
            and not checked_in
            and not self.invoiced
            and at >= self.release_at
        )


@dataclass(slots=True)
class SiteIndex:
    site_id: str
    site_name: str
    tz: ZoneInfo
    cursor: str | None
    generated_at: float | None
    generation: int
    holidays: frozenset[date] = frozenset()
    schedules: dict[str, Schedule] = field(default_factory=dict)
    doors: dict[str, Door] = field(default_factory=dict)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    plans: dict[str, tuple[Grant, ...]] = field(default_factory=dict)
    companies: dict[str, Company] = field(default_factory=dict)
    day_pass_grants: tuple[Grant, ...] = _EMPTY
    holders: dict[str, Holder] = field(default_factory=dict)
    cards: dict[str, Credential] = field(default_factory=dict)
    pins: dict[str, tuple[Credential, ...]] = field(default_factory=dict)
    rooms: dict[str, Room] = field(default_factory=dict)
    bookings: dict[str, Booking] = field(default_factory=dict)
    bookings_by_holder: dict[str, tuple[Booking, ...]] = field(default_factory=dict)
    credential_count: int = 0

    @classmethod
    def empty(cls) -> SiteIndex:
        """Before the first import: no site, every credential unknown."""
        return cls(
            site_id="",
            site_name="",
            tz=ZoneInfo("UTC"),
            cursor=None,
            generated_at=None,
            generation=0,
        )

    @property
    def loaded(self) -> bool:
        return self.generation > 0
