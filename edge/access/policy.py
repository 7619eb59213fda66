"""The access decision: a pure function of (site index, runtime state, presentation).

`decide` never awaits, never touches the store or the network, and never
changes its inputs. What a decision would change (a day pass consumed, a
guest's first entry of the day, a booking checked in, the first person in
opening a door) comes back as `Effects`; the gateway applies them and
records them durably. A dry run simply does not apply them.

The rules are the "Meaning" section of the `edge-sync/1` contract.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from edge.site.model import Booking, Credential, Door, Grant, Holder, SiteIndex
from edge.site.runtime import DayPassUse, PendingCard, RuntimeState
from edge.site.schedule import Opening
from edge.timeutil import iso_instant

CARD_THEN_PIN_SECONDS = 10.0

GRANT_REASONS = (
    "plan",
    "company",
    "grant",
    "booking",
    "day_pass",
    "guest",
    "unlocked",
    "admin",
    "facility_code",  # a door's offline policy (added by this gateway)
)
DENY_REASONS = (
    "unknown_credential",
    "credential_disabled",
    "billing_suspended",
    "contract_not_started",
    "contract_ended",
    "no_access",
    "outside_schedule",
    "no_day_pass",
    "guest_expired",
    "pin_required",
    "wrong_pin",
    "lockdown",
    "antipassback",
    "cache_stale",
    "clock_untrusted",
    # Added by this gateway (the contract allows more):
    "card_required",
    "guest_not_started",
    "ambiguous_pin",
    "unknown_door",
    "no_site",
    "database_unreadable",
    "no_site_data",
)

_HMAC_SHAPE = re.compile(r"[0-9a-f]{64}\Z").match

# When several rules deny, the decision names the most fundamental one.
_DENY_RANK = {
    reason: rank
    for rank, reason in enumerate(
        (
            "billing_suspended",
            "contract_ended",
            "contract_not_started",
            "guest_expired",
            "guest_not_started",
            "outside_schedule",
            "no_day_pass",
            "no_access",
        )
    )
}


@dataclass(frozen=True, slots=True)
class Presentation:
    """A credential shown at a door.

    `cards` are the lookup keys a card read can match, best first (its decoded
    format, then its raw bits); `pin_hmac` is HMAC-SHA256(site PIN key, digits)
    in lowercase hex, computed by the gateway so the digits go no further.
    """

    door: str
    at: float
    cards: tuple[str, ...] = ()
    pin_hmac: str | None = None


@dataclass(frozen=True, slots=True)
class Effects:
    day_pass: DayPassUse | None = None
    guest_entry: date | None = None
    check_in: str | None = None  # booking id
    first_in: Opening | None = None  # door unlocked by schedule from now on
    await_pin: PendingCard | None = None
    clear_pending: bool = False

    @property
    def any(self) -> bool:
        return any(
            (
                self.day_pass,
                self.guest_entry,
                self.check_in,
                self.first_in,
                self.await_pin,
                self.clear_pending,
            )
        )


NO_EFFECTS = Effects()


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: str
    door: str
    at: float
    holder: str | None = None
    credential: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    effects: Effects = NO_EFFECTS


# --- the decision -------------------------------------------------------------


def decide(ix: SiteIndex, st: RuntimeState, p: Presentation) -> Decision:
    if st.offline_reason is not None:
        method = st.offline_methods.get(p.door)
        if method is not None:
            return _degraded(ix, st, p, method, st.offline_reason)
    return _decide(ix, st, p)


def _degraded(
    ix: SiteIndex, st: RuntimeState, p: Presentation, method: str, offline: str
) -> Decision:
    """A door whose offline_policy applies now: the cache cannot be trusted.

    No schedule holds the door open (the clock or the schedules may be wrong);
    "unlocked" holds it open instead, "facility_code" admits the configured
    codes, and the exempt holders pass on what the cache says of them.
    """
    base: dict[str, Any] = {"offline": offline, "offline_policy": method}
    if st.in_lockdown(p.door):
        return Decision(False, "lockdown", p.door, p.at, details=base)
    if method == "unlocked":
        return Decision(True, "unlocked", p.door, p.at, details=base)
    if method == "facility_code":
        for key in p.cards:
            fmt, _, rest = key.partition(":")
            if f"{fmt}:{rest.partition(':')[0]}" in st.offline_facility_codes:
                return Decision(True, "facility_code", p.door, p.at, details={**base, "card": key})
    if not ix.loaded or p.door not in ix.doors:
        return Decision(False, offline, p.door, p.at, details=base)
    d = _decide(ix, st, p, schedules=False)
    if d.holder is not None and d.holder in st.offline_exempt:
        return d
    if d.granted or d.reason == "pin_required":
        # The cache is too old (or the clock too doubtful) to vouch for this grant.
        details = {**base, "holder_reason": d.reason}
        return Decision(False, offline, d.door, p.at, d.holder, d.credential, details)
    return replace(d, details={**d.details, **base})


def _decide(ix: SiteIndex, st: RuntimeState, p: Presentation, schedules: bool = True) -> Decision:
    if not ix.loaded:
        return Decision(False, "no_site", p.door, p.at)
    door = ix.doors.get(p.door)
    if door is None:
        return Decision(False, "unknown_door", p.door, p.at)
    local = datetime.fromtimestamp(p.at, ix.tz)
    if p.pin_hmac is not None and not _HMAC_SHAPE(p.pin_hmac):
        p = replace(p, pin_hmac="")  # not a digest we could have made: matches nothing

    cred, denial, pin_checked = _identify(ix, st, door, p)
    holder_id = cred.holder if cred else None
    cred_id = cred.id if cred else None

    if st.in_lockdown(door.id):
        return Decision(False, "lockdown", door.id, p.at, holder_id, cred_id)
    if denial is None and cred is not None and not cred.active:
        denial = "credential_disabled"
    if denial is not None or cred is None:
        reason = denial or "unknown_credential"
        return _unless_unlocked(ix, st, door, local, p, holder_id, cred_id, reason, {}, schedules)

    holder = ix.holders[cred.holder]
    granted, reason, details, effects = entitlement(ix, st, holder, door, p.at, local)
    if not granted:
        return _unless_unlocked(
            ix, st, door, local, p, holder_id, cred_id, reason, details, schedules
        )

    if door.mode == "card_and_pin" and not pin_checked:
        if schedules and door_unlocked(ix, st, door, local) is not None:
            # Held open by its schedule: nobody is asked for a PIN, entitled or not.
            return Decision(
                True,
                "unlocked",
                door.id,
                p.at,
                holder_id,
                cred_id,
                {"holder_reason": "pin_required"},
            )
        # The card alone would be enough for its holder: now ask for the PIN.
        return Decision(
            False,
            "pin_required",
            door.id,
            p.at,
            holder_id,
            cred_id,
            {"waiting_s": CARD_THEN_PIN_SECONDS},
            Effects(await_pin=PendingCard(cred, p.at)),
        )

    effects = replace(
        effects,
        check_in=_booking_to_check_in(ix, st, holder.id, door.id, p.at),
        first_in=_first_in(ix, st, door, local),
        clear_pending=door.mode == "card_and_pin",
    )
    return Decision(True, reason, door.id, p.at, holder_id, cred_id, details, effects)


# A room panel asks for a card or a PIN, like a card-or-PIN door.
_PANEL = Door("(panel)", "panel", "card_or_pin", None, False)


def identify_at_panel(
    ix: SiteIndex, st: RuntimeState, p: Presentation
) -> tuple[Holder | None, str | None]:
    """Who showed this card or PIN at a room panel, and whether they are in good
    standing; the panel itself is never trusted to say who someone is.

    The credential is matched exactly as at a card-or-PIN door. Then the holder
    must be active: billing allowing (within any grace), inside the contract, a
    guest inside their validity. Returns (holder, None) or (holder or None, denial).
    """
    if not ix.loaded:
        return None, "no_site"
    if p.pin_hmac is not None and not _HMAC_SHAPE(p.pin_hmac):
        p = replace(p, pin_hmac="")
    cred, denial, _ = _identify(ix, st, _PANEL, p)
    if cred is None or denial is not None:
        return None, denial or "unknown_credential"
    holder = ix.holders.get(cred.holder)
    if holder is None:
        return None, "unknown_credential"
    if not cred.active:
        return holder, "credential_disabled"
    if holder.kind == "guest":
        if holder.valid_from is not None and p.at < holder.valid_from:
            return holder, "guest_not_started"
        if holder.valid_to is not None and p.at >= holder.valid_to:
            return holder, "guest_expired"
        return holder, None
    if holder.kind == "member" and holder.plan is not None:
        contract = _contract_denial(holder, p.at)
        if contract is not None:
            return holder, contract
    if not holder.billing.allows(p.at):
        return holder, "billing_suspended"
    return holder, None


def _identify(
    ix: SiteIndex, st: RuntimeState, door: Door, p: Presentation
) -> tuple[Credential | None, str | None, bool]:
    """The credential presented, a denial found on the way, and whether a PIN matched."""
    if p.cards:
        cred = next((c for k in p.cards if (c := ix.cards.get(k)) is not None), None)
        if cred is None:
            return None, "unknown_credential", False
        if door.mode == "pin":
            return cred, "pin_required", False
        if p.pin_hmac is None:
            return cred, None, False
        # Card and PIN together: the PIN must be one of the card holder's.
        if door.mode != "card_and_pin":
            return cred, None, False
        return cred, (None if _pin_matches(ix, cred, p.pin_hmac) else "wrong_pin"), True

    if p.pin_hmac is None:
        return None, "unknown_credential", False
    if door.mode == "card":
        return None, "card_required", False
    if door.mode == "card_and_pin":
        pending = st.pending_cards.get(door.id)
        if pending is None or p.at - pending.at > CARD_THEN_PIN_SECONDS or p.at < pending.at:
            return None, "card_required", False
        cred = pending.credential
        return cred, (None if _pin_matches(ix, cred, p.pin_hmac) else "wrong_pin"), True
    matches = ix.pins.get(p.pin_hmac, ())
    if not matches:
        return None, "wrong_pin", False
    if len({c.holder for c in matches}) > 1:
        return None, "ambiguous_pin", False
    return matches[0], None, True


def _pin_matches(ix: SiteIndex, cred: Credential, pin_hmac: str) -> bool:
    holder = ix.holders.get(cred.holder)
    if holder is None:
        return False
    found = False
    for digest in holder.pins:  # every one compared, in constant time each
        found |= hmac.compare_digest(digest, pin_hmac)
    return found


def _unless_unlocked(
    ix: SiteIndex,
    st: RuntimeState,
    door: Door,
    local: datetime,
    p: Presentation,
    holder: str | None,
    cred: str | None,
    reason: str,
    details: dict[str, Any],
    schedules: bool = True,
) -> Decision:
    """A door held open by its unlock schedule lets anyone through: say so."""
    if schedules and door_unlocked(ix, st, door, local) is not None:
        return Decision(
            True, "unlocked", door.id, p.at, holder, cred, {"holder_reason": reason, **details}
        )
    return Decision(False, reason, door.id, p.at, holder, cred, details)


def door_unlocked(ix: SiteIndex, st: RuntimeState, door: Door, local: datetime) -> Opening | None:
    """The schedule opening that holds this door unlocked now, if any."""
    if door.unlock_schedule is None or st.in_lockdown(door.id):
        return None
    opening = door.unlock_schedule.opening(local, ix.holidays)
    if opening is None:
        return None
    if door.first_person_in and st.first_in.get(door.id) != opening:
        return None
    return opening


def _first_in(ix: SiteIndex, st: RuntimeState, door: Door, local: datetime) -> Opening | None:
    if door.unlock_schedule is None or not door.first_person_in:
        return None
    opening = door.unlock_schedule.opening(local, ix.holidays)
    if opening is None or st.first_in.get(door.id) == opening:
        return None
    return opening


def bookings_of(ix: SiteIndex, st: RuntimeState, holder: str) -> Iterator[Booking]:
    """A holder's bookings, as changed on site, and those made at a panel."""
    overrides = st.booking_overrides
    for b in ix.bookings_by_holder.get(holder, ()):
        yield overrides.get(b.id, b) if overrides else b
    yield from st.adhoc_by_holder.get(holder, ())


def _booking_to_check_in(
    ix: SiteIndex, st: RuntimeState, holder: str, door: str, at: float
) -> str | None:
    for b in bookings_of(ix, st, holder):
        if (
            b.door == door
            and b.id not in st.checked_in
            and b.status == "confirmed"
            and b.grants_at(at, False)
        ):
            return b.id
    return None


# --- entitlements ---------------------------------------------------------------

Outcome = tuple[bool, str, dict[str, Any], Effects]


def entitlement(
    ix: SiteIndex, st: RuntimeState, h: Holder, door: Door, at: float, local: datetime
) -> Outcome:
    """Whether this holder may pass this door now, and what that entry would change.

    A guest's first entry of a site-local day is reported for billing, however
    the guest got in (own grant, booking or day pass).
    """
    granted, reason, details, effects = _entitlement(ix, st, h, door, at, local)
    if granted and h.kind == "guest" and (h.id, local.date()) not in st.guest_days:
        effects = replace(effects, guest_entry=local.date())
    return granted, reason, details, effects


def _entitlement(
    ix: SiteIndex, st: RuntimeState, h: Holder, door: Door, at: float, local: datetime
) -> Outcome:
    """Whether this holder may pass this door now, by the first source that allows it.

    Sources in order: plan (inside the contract), company, the holder's own
    grants, bookings, and last a day pass, which is only used (and consumed)
    when nothing else lets the holder in.
    """
    denials: list[tuple[str, dict[str, Any]]] = []
    own_billing_ok = h.billing.allows(at)

    if h.kind == "guest":
        if h.valid_from is not None and at < h.valid_from:
            return False, "guest_not_started", {}, NO_EFFECTS
        if h.valid_to is not None and at >= h.valid_to:
            return False, "guest_expired", {}, NO_EFFECTS
        if _grants_open(ix, h.grants, door.id, at, local, denials):
            return True, "guest", {"host": h.host}, NO_EFFECTS
    else:
        if h.kind == "member" and h.plan is not None:
            plan = ix.plans.get(h.plan, ())
            if _covers(plan, door.id, at):
                contract = _contract_denial(h, at)
                if contract is not None:
                    denials.append((contract, {}))
                elif not own_billing_ok:
                    denials.append(("billing_suspended", _billing_details(h)))
                elif _grants_open(ix, plan, door.id, at, local, denials):
                    return True, "plan", {"plan": h.plan}, NO_EFFECTS
        if h.kind == "member" and h.company is not None:
            company = ix.companies.get(h.company)
            if company is not None and _covers(company.grants, door.id, at):
                if not company.billing.allows(at):
                    denials.append(("billing_suspended", {"company": company.id}))
                elif _grants_open(ix, company.grants, door.id, at, local, denials):
                    return True, "company", {"company": company.id}, NO_EFFECTS
        if _covers(h.grants, door.id, at):
            if not own_billing_ok:
                denials.append(("billing_suspended", _billing_details(h)))
            elif _grants_open(ix, h.grants, door.id, at, local, denials):
                return True, "grant", {}, NO_EFFECTS

    booking = _booking_access(ix, st, h.id, door.id, at, denials)
    if booking is not None:
        return True, "booking", {"booking": booking.id}, NO_EFFECTS

    day_pass = _day_pass(ix, st, h, door.id, at, local, own_billing_ok, denials)
    if day_pass is not None:
        return day_pass

    if not denials:
        return False, "no_access", {}, NO_EFFECTS
    reason, details = min(denials, key=lambda d: _DENY_RANK.get(d[0], 99))
    return False, reason, details, NO_EFFECTS


def _covers(grants: tuple[Grant, ...], door: str, at: float) -> bool:
    return any(door in g.doors and g.in_validity(at) for g in grants)


def _grants_open(
    ix: SiteIndex,
    grants: tuple[Grant, ...],
    door: str,
    at: float,
    local: datetime,
    denials: list[tuple[str, dict[str, Any]]],
) -> bool:
    covered = False
    for g in grants:
        if door in g.doors and g.in_validity(at):
            covered = True
            if g.schedule.is_open(local, ix.holidays):
                return True
    if covered:
        denials.append(("outside_schedule", {}))
    return False


def _contract_denial(h: Holder, at: float) -> str | None:
    if h.contract_start is not None and at < h.contract_start:
        return "contract_not_started"
    if h.contract_end is not None and at >= h.contract_end:
        return "contract_ended"
    return None


def _billing_details(h: Holder) -> dict[str, Any]:
    details: dict[str, Any] = {"billing": h.billing.status}
    if h.billing.grace_until is not None:
        details["grace_until"] = iso_instant(h.billing.grace_until)
    return details


def _booking_access(
    ix: SiteIndex,
    st: RuntimeState,
    holder: str,
    door: str,
    at: float,
    denials: list[tuple[str, dict[str, Any]]],
) -> Booking | None:
    for b in bookings_of(ix, st, holder):
        if b.door != door:
            continue
        checked_in = b.id in st.checked_in or b.status == "checked_in"
        if b.grants_at(at, checked_in):
            return b
        if b.status in ("confirmed", "checked_in") and b.opens <= at < b.end:
            denials.append(("no_access", {"booking": b.id, "released": True}))
    return None


def _day_pass(
    ix: SiteIndex,
    st: RuntimeState,
    h: Holder,
    door: str,
    at: float,
    local: datetime,
    own_billing_ok: bool,
    denials: list[tuple[str, dict[str, Any]]],
) -> Outcome | None:
    if not _covers(ix.day_pass_grants, door, at):
        return None
    if not _grants_open(ix, ix.day_pass_grants, door, at, local, denials):
        return None
    today = local.date()
    company = ix.companies.get(h.company) if h.company else None
    company_ok = company is not None and company.billing.allows(at)

    used = st.day_pass_uses.get((h.id, today))
    if used is not None and (own_billing_ok if used.source != "company" else company_ok):
        return True, "day_pass", _pass_details(used, consumed=False), NO_EFFECTS

    own_available = False
    for dp in h.day_passes:
        if not _pass_valid(st, dp.id, dp.valid_from, dp.valid_to, at, today):
            continue
        own_available = True
        if own_billing_ok:
            use = DayPassUse(h.id, today, "pass", pass_id=dp.id)
            return True, "day_pass", _pass_details(use, consumed=True), Effects(day_pass=use)
    if h.day_pass_balance - st.balance_used.get(h.id, 0) > 0:
        own_available = True
        if own_billing_ok:
            use = DayPassUse(h.id, today, "balance")
            return True, "day_pass", _pass_details(use, consumed=True), Effects(day_pass=use)
    if company is not None and company.day_passes - st.company_used.get(company.id, 0) > 0:
        if company_ok:
            use = DayPassUse(h.id, today, "company", company=company.id)
            return True, "day_pass", _pass_details(use, consumed=True), Effects(day_pass=use)
        denials.append(("billing_suspended", {"company": company.id}))
        return None
    if own_available:
        denials.append(("billing_suspended", _billing_details(h)))
    else:
        denials.append(("no_day_pass", {}))
    return None


def _pass_valid(
    st: RuntimeState,
    pass_id: str,
    valid_from: float | None,
    valid_to: float | None,
    at: float,
    today: date,
) -> bool:
    if valid_from is not None and at < valid_from:
        return False
    if valid_to is not None:
        return at < valid_to
    first = st.pass_first_use.get(pass_id)
    return first is None or first == today


def _pass_details(use: DayPassUse, consumed: bool) -> dict[str, Any]:
    details: dict[str, Any] = {"source": use.source, "consumed": consumed}
    if use.pass_id:
        details["pass"] = use.pass_id
    if use.company:
        details["company"] = use.company
    return details
