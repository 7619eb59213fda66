"""Decisions in words, for the people at the console and the front desk."""

from __future__ import annotations

REASONS = {
    # granted
    "plan": "allowed by the member's plan",
    "company": "allowed by the member's company",
    "grant": "allowed by a personal access grant",
    "booking": "allowed by a booking of the room",
    "day_pass": "allowed by a day pass",
    "guest": "a guest, announced by a host for today",
    "unlocked": "the door is unlocked by its schedule",
    "admin": "unlocked by an operator",
    # refused
    "unknown_credential": "this card or PIN belongs to no one on this site",
    "credential_disabled": "this card or PIN has been disabled",
    "billing_suspended": "access is suspended: the member's invoices are overdue",
    "contract_not_started": "the member's contract has not started yet",
    "contract_ended": "the member's contract has ended",
    "no_access": "nothing the member holds opens this door",
    "outside_schedule": "the member's access does not cover this time",
    "no_day_pass": "no day pass left for today",
    "guest_expired": "the guest's visit is over",
    "pin_required": "this door wants the PIN after the card",
    "wrong_pin": "the PIN typed was wrong",
    "lockdown": "the door is in lockdown",
    "antipassback": "already inside: the card was not used to leave",
    "cache_stale": "the gateway has not heard from the cloud for too long",
    "clock_untrusted": "the gateway's clock cannot be trusted",
    "card_required": "this door needs a card, not a PIN alone",
    "guest_not_started": "the guest's visit has not started yet",
    "ambiguous_pin": "this PIN is shared by several people: use a card",
    "unknown_door": "no such door on this site",
    "no_site": "the gateway has no site data yet",
}


def reason_text(reason: str | None) -> str:
    if reason is None:
        return ""
    return REASONS.get(reason, reason.replace("_", " "))
