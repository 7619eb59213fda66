"""What the gateway learned on site, beside the index: consumed passes, guest
entries, check-ins, lockdowns, first-person-in openings, cards waiting for a PIN.

`decide` reads it and never writes it; the access service and the room
controller change it, and the site state mirrors it in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from edge.site.model import Booking, Credential
from edge.site.schedule import Opening


@dataclass(frozen=True, slots=True)
class DayPassUse:
    holder: str
    day: date
    source: str  # "pass", "balance" or "company"
    pass_id: str | None = None
    company: str | None = None


@dataclass(frozen=True, slots=True)
class PendingCard:
    """A card accepted at a card-and-PIN door, waiting for its holder's PIN."""

    credential: Credential
    at: float


@dataclass
class RuntimeState:
    """What the gateway learned on site: consumed passes, check-ins, lockdowns.

    Mirrored in the store by the gateway; read, never written, by `decide`.
    """

    lockdown_site: bool = False
    lockdown_doors: set[str] = field(default_factory=set)
    day_pass_uses: dict[tuple[str, date], DayPassUse] = field(default_factory=dict)
    pass_first_use: dict[str, date] = field(default_factory=dict)
    balance_used: dict[str, int] = field(default_factory=dict)  # not yet in the synced balance
    company_used: dict[str, int] = field(default_factory=dict)
    guest_days: set[tuple[str, date]] = field(default_factory=set)
    checked_in: set[str] = field(default_factory=set)
    # Bookings as the site changed them (extended, ended early, released), and
    # bookings made at a room's panel, by holder: kept by the room controller.
    booking_overrides: dict[str, Booking] = field(default_factory=dict)
    adhoc_by_holder: dict[str, tuple[Booking, ...]] = field(default_factory=dict)
    first_in: dict[str, Opening] = field(default_factory=dict)
    pending_cards: dict[str, PendingCard] = field(default_factory=dict)
    # While the cache cannot be trusted (offline_reason: cache_stale,
    # clock_untrusted, database_unreadable, no_site_data), the doors whose
    # offline_policy is not "cache", with that policy ("locked",
    # "facility_code", "unlocked"); empty otherwise.
    offline_methods: dict[str, str] = field(default_factory=dict)
    offline_reason: str | None = None
    offline_exempt: frozenset[str] = frozenset()
    offline_facility_codes: frozenset[str] = frozenset()  # "H10301:17"

    @property
    def offline_doors(self) -> frozenset[str]:
        return frozenset(self.offline_methods)

    def in_lockdown(self, door: str) -> bool:
        return self.lockdown_site or door in self.lockdown_doors


def note_day_pass(st: RuntimeState, use: DayPassUse, reflected: bool = False) -> None:
    """Count a day pass used here (`reflected`: the cloud's balance already has it)."""
    st.day_pass_uses[(use.holder, use.day)] = use
    if use.source == "pass" and use.pass_id is not None:
        first = st.pass_first_use.get(use.pass_id)
        if first is None or use.day < first:
            st.pass_first_use[use.pass_id] = use.day
    elif not reflected and use.source == "balance":
        st.balance_used[use.holder] = st.balance_used.get(use.holder, 0) + 1
    elif not reflected and use.source == "company" and use.company is not None:
        st.company_used[use.company] = st.company_used.get(use.company, 0) + 1
